package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/ratelimit"
)

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func limited(t *testing.T, trusted string) (http.Handler, *fakeNow) {
	clock := &fakeNow{t: time.Unix(1_800_000_000, 0)}
	proxies, err := ParseTrustedProxies(trusted)
	if err != nil {
		t.Fatal(err)
	}
	l := &RateLimits{
		Limiter: ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clock.Now}),
		IP:      agentapi.RateLimit{Rate: 60, Period: time.Minute, Burst: 3},
		Login:   agentapi.RateLimit{Rate: 6, Period: time.Minute, Burst: 1},
		User:    agentapi.RateLimit{Rate: 60, Period: time.Minute, Burst: 2},
		Prefix:  "test:", TrustedProxies: proxies,
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	withUser := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u := r.Header.Get("X-Test-User"); u != "" {
				r = r.WithContext(contextWithPrincipal(r.Context(), &Principal{TenantID: "acme", UserID: u}))
			}
			next.ServeHTTP(w, r)
		})
	}
	return l.ByIP(withUser(l.ByUser(ok))), clock
}

func send(h http.Handler, path, remote string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	req.RemoteAddr = remote
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRateLimitHeadersAnd429(t *testing.T) {
	h, clock := limited(t, "")
	for i := 0; i < 3; i++ {
		rec := send(h, "/v1/sessions", "198.51.100.7:5000", nil)
		if rec.Code != 204 {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
		if got, want := rec.Header().Get("RateLimit-Policy"), `"ip";q=60;w=60`; got != want {
			t.Fatalf("RateLimit-Policy %q, want %q", got, want)
		}
		if got := rec.Header().Get("RateLimit"); !strings.HasPrefix(got, `"ip";r=`+string(rune('2'-i))) {
			t.Fatalf("request %d: RateLimit %q", i, got)
		}
		if rec.Header().Get("X-RateLimit-Limit") != "60" || rec.Header().Get("X-RateLimit-Remaining") != string(rune('2'-i)) || rec.Header().Get("X-RateLimit-Reset") == "" {
			t.Fatalf("X-RateLimit-*: %v", rec.Header())
		}
	}
	rec := send(h, "/v1/sessions", "198.51.100.7:5000", nil)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("over the limit: %d %v", rec.Code, rec.Header())
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != 429 || !strings.Contains(p.Detail, "rate limit exceeded") {
		t.Fatalf("429 body %q: %v", rec.Body.String(), err)
	}
	// Another client is unaffected; the first is allowed again a second later.
	if rec := send(h, "/v1/sessions", "198.51.100.8:5000", nil); rec.Code != 204 {
		t.Fatalf("another IP: %d", rec.Code)
	}
	clock.add(time.Second)
	if rec := send(h, "/v1/sessions", "198.51.100.7:5000", nil); rec.Code != 204 {
		t.Fatalf("after a second: %d", rec.Code)
	}
	// Health is exempt.
	for i := 0; i < 10; i++ {
		if rec := send(h, "/status", "198.51.100.7:5000", nil); rec.Code != 204 || rec.Header().Get("RateLimit") != "" {
			t.Fatalf("/status limited: %d", rec.Code)
		}
	}
}

func TestLoginHasItsOwnStricterLimit(t *testing.T) {
	h, _ := limited(t, "")
	if rec := send(h, "/v1/auth/login", "203.0.113.9:1", nil); rec.Code != 204 || !strings.Contains(rec.Header().Get("RateLimit-Policy"), `"login"`) {
		t.Fatalf("first login: %d %v", rec.Code, rec.Header())
	}
	if rec := send(h, "/v1/auth/login", "203.0.113.9:1", nil); rec.Code != 429 || rec.Header().Get("Retry-After") != "10" {
		t.Fatalf("second login at once: %d %v", rec.Code, rec.Header())
	}
	// Other routes from that IP still have the IP budget.
	if rec := send(h, "/v1/agents", "203.0.113.9:1", nil); rec.Code != 204 {
		t.Fatalf("other route: %d", rec.Code)
	}
}

func TestUserLimitAppliesAcrossIPs(t *testing.T) {
	h, _ := limited(t, "")
	for i, ip := range []string{"192.0.2.1:1", "192.0.2.2:1"} {
		rec := send(h, "/v1/sessions", ip, map[string]string{"X-Test-User": "alice"})
		if rec.Code != 204 {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
		if got := rec.Header().Values("RateLimit-Policy"); len(got) != 2 || !strings.Contains(got[1], `"user"`) {
			t.Fatalf("policies %q: want ip then user", got)
		}
	}
	if rec := send(h, "/v1/sessions", "192.0.2.3:1", map[string]string{"X-Test-User": "alice"}); rec.Code != 429 {
		t.Fatalf("alice's third request from a third IP: %d", rec.Code)
	}
}

func TestClientIPTrustsOnlyConfiguredProxies(t *testing.T) {
	h, _ := limited(t, "10.0.0.0/8")
	spoof := map[string]string{"X-Forwarded-For": "203.0.113.50"}
	// From an untrusted peer the header is ignored: the peer is limited.
	for i := 0; i < 3; i++ {
		send(h, "/v1/x", "198.51.100.1:1", map[string]string{"X-Forwarded-For": "203.0.113." + string(rune('1'+i))})
	}
	if rec := send(h, "/v1/x", "198.51.100.1:1", spoof); rec.Code != 429 {
		t.Fatalf("spoofed X-Forwarded-For from an untrusted peer escaped the limit: %d", rec.Code)
	}
	// Through a trusted proxy, each client has its own budget.
	for i := 0; i < 3; i++ {
		if rec := send(h, "/v1/x", "10.1.2.3:1", map[string]string{"X-Forwarded-For": "203.0.113.60, 10.9.9.9"}); rec.Code != 204 {
			t.Fatalf("client behind the proxy, request %d: %d", i, rec.Code)
		}
	}
	if rec := send(h, "/v1/x", "10.1.2.3:1", map[string]string{"X-Forwarded-For": "203.0.113.61"}); rec.Code != 204 {
		t.Fatalf("another client behind the proxy: %d", rec.Code)
	}
	l := &RateLimits{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, c := range []struct{ remote, xff, fwd, want string }{
		{"10.0.0.1:1", "", `for="[2001:db8::1]:4711";proto=https`, "2001:db8::1"},
		{"10.0.0.1:1", "", "for=192.0.2.43, for=10.0.0.2", "192.0.2.43"},
		{"10.0.0.1:1", "garbage", "", "garbage"},
		{"[::ffff:10.0.0.1]:1", "192.0.2.9", "", "192.0.2.9"},
		{"192.0.2.1:1", "192.0.2.99", "", "192.0.2.1"},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = c.remote
		if c.xff != "" {
			req.Header.Set("X-Forwarded-For", c.xff)
		}
		if c.fwd != "" {
			req.Header.Set("Forwarded", c.fwd)
		}
		if got := l.ClientIP(req); got != c.want {
			t.Errorf("ClientIP(%s, xff=%q, fwd=%q) = %q, want %q", c.remote, c.xff, c.fwd, got, c.want)
		}
	}
}

func TestStaticUIFilesDoNotSpendTheIPAllowance(t *testing.T) {
	h, _ := limited(t, "") // IP burst 3
	for i := range 10 {
		if rec := send(h, "/ui/app.js", "198.51.100.9:5000", nil); rec.Code != 204 || rec.Header().Get("RateLimit") != "" {
			t.Fatalf("static file %d: %d %v", i, rec.Code, rec.Header())
		}
	}
	for i := range 3 {
		if rec := send(h, "/v1/agents", "198.51.100.9:5000", nil); rec.Code != 204 {
			t.Fatalf("API call %d after the static files: %d", i, rec.Code)
		}
	}
	if rec := send(h, "/v1/agents", "198.51.100.9:5000", nil); rec.Code != 429 {
		t.Fatalf("the fourth API call: %d, want 429", rec.Code)
	}
}
