package httpapi

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/ratelimit"
)

func TestTenantConfigurationSetsUserAndTenantLimits(t *testing.T) {
	clock := &fakeNow{t: time.Unix(1_800_000_000, 0)}
	var mu sync.Mutex
	limitedCount := map[string]int{}
	l := &RateLimits{
		Limiter: ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clock.Now}),
		IP:      agentapi.RateLimit{Rate: 600, Period: time.Minute, Burst: 100},
		Login:   agentapi.RateLimit{Rate: 6, Period: time.Minute, Burst: 1},
		User:    agentapi.RateLimit{Rate: 60, Period: time.Minute, Burst: 2},
		Prefix:  "test:",
		Tenant: func(ctx context.Context, id string) (agentapi.TenantConfig, error) {
			if id == "big" {
				return agentapi.TenantConfig{UserRateLimitPerMinute: 60, UserRateLimitBurst: 4, RateLimitPerMinute: 60, RateLimitBurst: 6}, nil
			}
			return agentapi.TenantConfig{}, nil
		},
		Limited: func(tenant, user string) {
			mu.Lock()
			limitedCount[tenant+"/"+user]++
			mu.Unlock()
		},
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	as := func(tenant string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r = r.WithContext(contextWithPrincipal(r.Context(), &Principal{TenantID: tenant, UserID: r.Header.Get("X-Test-User")}))
				next.ServeHTTP(w, r)
			})
		}
	}
	big, small := as("big")(l.ByUser(ok)), as("small")(l.ByUser(ok))
	user := func(u string) map[string]string { return map[string]string{"X-Test-User": u} }

	// A tenant without its own limits: the server's burst of 2 per user.
	for i, want := range []int{204, 204, 429} {
		if got := send(small, "/v1/sessions", "10.0.0.1:1", user("s1")).Code; got != want {
			t.Fatalf("small tenant request %d: %d, want %d", i, got, want)
		}
	}
	// The big tenant's users get a burst of 4 each ...
	for i := range 4 {
		if rec := send(big, "/v1/sessions", "10.0.0.1:1", user("b1")); rec.Code != 204 {
			t.Fatalf("big tenant request %d: %d", i, rec.Code)
		}
	}
	rec := send(big, "/v1/sessions", "10.0.0.1:1", user("b1"))
	if rec.Code != 429 || !strings.Contains(rec.Body.String(), "user: 60 requests per 1m0s, burst 4") {
		t.Fatalf("fifth request of b1: %d %s", rec.Code, rec.Body)
	}
	// ... and 6 for the whole tenant: b2 gets the 2 left, then the tenant
	// limit refuses, naming itself.
	for i := range 2 {
		if rec := send(big, "/v1/sessions", "10.0.0.1:1", user("b2")); rec.Code != 204 {
			t.Fatalf("b2 request %d: %d", i, rec.Code)
		}
	}
	rec = send(big, "/v1/sessions", "10.0.0.1:1", user("b2"))
	if rec.Code != 429 || !strings.Contains(rec.Body.String(), "tenant: 60 requests per 1m0s, burst 6") {
		t.Fatalf("b2 over the tenant limit: %d %s", rec.Code, rec.Body)
	}
	if pol := rec.Header().Values("RateLimit-Policy"); len(pol) != 2 || !strings.HasPrefix(pol[1], `"tenant";q=60;w=60`) {
		t.Fatalf("RateLimit-Policy %q", pol)
	}
	// b1 was refused by its own limit, which did not spend the tenant's.
	clock.add(time.Second) // one request's worth for everyone
	if rec := send(big, "/v1/sessions", "10.0.0.1:1", user("b3")); rec.Code != 204 {
		t.Fatalf("b3 after a second: %d", rec.Code)
	}
	mu.Lock()
	defer mu.Unlock()
	if limitedCount["small/s1"] != 1 || limitedCount["big/b1"] != 1 || limitedCount["big/b2"] != 1 || len(limitedCount) != 3 {
		t.Fatalf("refusals reported %v", limitedCount)
	}
	counts := map[string]RateDecisionCount{}
	for _, c := range l.Decisions() {
		counts[c.Policy] = c
	}
	// user: small 2+1, big b1 4+1, b2 3 allowed, b3 1 → 10 allowed, 2 denied.
	if u := counts["user"]; u.Allowed != 10 || u.Denied != 2 {
		t.Fatalf("user decisions %+v", u)
	}
	// tenant: b1's 4, b2's 2 allowed and 1 denied, b3's 1 allowed.
	if tc := counts["tenant"]; tc.Allowed != 7 || tc.Denied != 1 {
		t.Fatalf("tenant decisions %+v", tc)
	}
}
