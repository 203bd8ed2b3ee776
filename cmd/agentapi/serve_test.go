package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
)

var testAdminKey, _, _ = auth.NewAPIKey()

func call(t *testing.T, method, url, cred string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestTwoInstancesShareLogins runs two serve instances over one Redis and
// one PostgreSQL: a token issued by one works on the other, and a logout
// on one is refused on the other within the same second.
func TestTwoInstancesShareLogins(t *testing.T) {
	t.Parallel()
	redisURL := redistest.URL(t)
	dbURL := pgtest.URL(t)
	common := []string{
		"REDIS_ENABLE=true", "REDIS_URL=" + redisURL, "DATABASE_URL=" + dbURL,
		"TOKEN_ENCRYPTION_KEY=" + strings.Repeat("ab", 32), "AGENTAPI_ADMIN_API_KEY=" + testAdminKey,
		// The test polls quickly; rate limits are tested elsewhere.
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE=60000", "RATE_LIMIT_IP_BURST_SIZE=1000",
		"RATE_LIMIT_REQUESTS_PER_MINUTE=60000", "RATE_LIMIT_BURST_SIZE=1000",
	}
	start := func(id string) string {
		env := append([]string{"HOME=" + t.TempDir(), "AGENTAPI_INSTANCE_ID=" + id}, common...)
		_, addr, logs := started(t, env, "serve", "--port", "0")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s logs:\n%s", id, logs.String())
			}
		})
		return "http://" + addr
	}
	a := start("api-1")
	b := start("api-2")

	code, login := call(t, "POST", a+"/v1/auth/login", "", map[string]string{"api_key": testAdminKey})
	if code != 200 {
		t.Fatalf("login on A: %d %v", code, login)
	}
	token := login["token"].(string)
	if code, who := call(t, "GET", b+"/v1/auth/session", token, nil); code != 200 || who["via"] != "session" {
		t.Fatalf("A's token on B: %d %v", code, who)
	}
	// B caches the session (client-side caching); a logout on A must still
	// be refused by B at once.
	call(t, "GET", b+"/v1/auth/session", token, nil)
	if code, _ := call(t, "POST", a+"/v1/auth/logout", token, nil); code != 204 {
		t.Fatalf("logout on A: %d", code)
	}
	deadline := time.Now().Add(time.Second)
	for {
		code, _ := call(t, "GET", b+"/v1/auth/session", token, nil)
		if code == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B still accepts the token 1s after the logout on A: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Records written through A are read through B (one PostgreSQL).
	if code, body := call(t, "POST", a+"/v1/admin/tenants", testAdminKey, map[string]string{"id": "shared", "name": "Shared"}); code != 200 {
		t.Fatalf("create tenant on A: %d %v", code, body)
	}
	if code, body := call(t, "GET", b+"/v1/admin/tenants/shared", testAdminKey, nil); code != 200 || body["name"] != "Shared" {
		t.Fatalf("tenant on B: %d %v", code, body)
	}
	// A flag and a tenant configuration changed on A are honoured by B
	// within a second, although B had both cached.
	rawOn := func(base string) bool {
		_, f := call(t, "GET", base+"/v1/tenant/flags", testAdminKey, nil)
		flags, _ := f["flags"].(map[string]any)
		raw, _ := flags["raw_input"].(map[string]any)
		return raw["on"] == true
	}
	maxSessions := func(base string) any {
		_, c := call(t, "GET", base+"/v1/admin/tenants/shared/config", testAdminKey, nil)
		return c["max_sessions"]
	}
	if !rawOn(b) || maxSessions(b) != nil {
		t.Fatal("B: raw_input off or a configuration before any change")
	}
	if code, body := call(t, "PUT", a+"/v1/admin/flags/raw_input", testAdminKey, map[string]any{"enabled": false}); code != 204 {
		t.Fatalf("flag on A: %d %v", code, body)
	}
	if code, body := call(t, "PUT", a+"/v1/admin/tenants/shared/config", testAdminKey, map[string]any{"max_sessions": 7}); code != 200 {
		t.Fatalf("config on A: %d %v", code, body)
	}
	changed := time.Now()
	for rawOn(b) || maxSessions(b) != float64(7) {
		if time.Since(changed) > time.Second {
			t.Fatalf("B does not honour the flag and config changed on A after %v: raw on %v, max_sessions %v", time.Since(changed), rawOn(b), maxSessions(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("B honoured A's changes after %v", time.Since(changed))
	// A cached list on A is not served after a write on B: the session B
	// starts is in A's very next answer.
	list := func(base string) (string, string) {
		req, _ := http.NewRequest("GET", base+"/v1/sessions", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.Header.Get("X-Cache")
	}
	list(a)
	if _, mark := list(a); mark != "HIT" {
		t.Fatalf("A's second list: X-Cache %q", mark)
	}
	code, started := call(t, "POST", b+"/v1/sessions", testAdminKey, map[string]string{"agent_type": "echo"})
	if code != 200 {
		t.Fatalf("session on B: %d %v", code, started)
	}
	if body, mark := list(a); mark != "MISS" || !strings.Contains(body, started["id"].(string)) {
		t.Fatalf("A after B's write: X-Cache %q, %s", mark, body)
	}
	// B's metrics show its traffic by route pattern and Redis on native.
	resp, err := http.Get(b + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`agentapi_redis_protocol{protocol="native"} 1`,
		`agentapi_http_requests_total{method="GET",route="/v1/tenant/flags",status="200"}`,
		`agentapi_http_requests_total{method="GET",route="/v1/auth/session",status="401"} `,
		`agentapi_ratelimit_decisions_total{limit="ip",outcome="allowed"}`,
		`go_goroutines`,
		`agentapi_cache_hits_total{cache="tenant_config"}`,
		`agentapi_cache_misses_total{cache="responses"}`,
	} {
		if !strings.Contains(string(scrape), want) {
			t.Errorf("B's /metrics lacks %s", want)
		}
	}
	// Both report Redis and PostgreSQL healthy.
	for _, base := range []string{a, b} {
		code, st := call(t, "GET", base+"/status", "", nil)
		if code != 200 || st["status"] != "ok" {
			t.Fatalf("%s/status: %d %v", base, code, st)
		}
	}
}

// TestServeBootstrapKeyPrintedOnce: the first start of an empty database
// prints a platform-admin key that works; the second start prints none.
func TestServeBootstrapKeyPrintedOnce(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	cmd, addr, logs := started(t, []string{"HOME=" + home}, "serve", "--port", "0")
	key := ""
	for _, f := range strings.Fields(logs.String()) {
		if strings.HasPrefix(f, "agk_") {
			key = f
		}
	}
	if key == "" {
		t.Fatalf("no admin key printed:\n%s", logs.String())
	}
	if code, who := call(t, "GET", "http://"+addr+"/v1/auth/session", key, nil); code != 200 || who["role"] != "platform_admin" {
		t.Fatalf("the printed key: %d %v", code, who)
	}
	cmd.Process.Signal(interruptSignal)
	cmd.Wait()
	_, _, logs2 := started(t, []string{"HOME=" + home}, "serve", "--port", "0")
	if strings.Contains(logs2.String(), "agk_") {
		t.Fatalf("a second start printed a key again:\n%s", logs2.String())
	}
}

// TestTranscriptSurvivesRestart: messages exchanged with an agent session
// are read back after the server was stopped and started again.
func TestTranscriptSurvivesRestart(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	env := []string{"HOME=" + home, "AGENTAPI_ADMIN_API_KEY=" + testAdminKey, "AGENTAPI_INSTANCE_ID=one"}
	cmd, addr, _ := started(t, env, "serve", "--port", "0")
	base := "http://" + addr
	code, s := call(t, "POST", base+"/v1/sessions", testAdminKey, map[string]string{"agent_type": "echo", "initial_prompt": "keep this"})
	if code != 200 {
		t.Fatalf("start session: %d %v", code, s)
	}
	id := s["id"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, m := call(t, "GET", base+"/v1/sessions/"+id+"/messages", testAdminKey, nil)
		if strings.Contains(fmtJSON(m), "Echo: keep this") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reply: %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(interruptSignal)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	_, addr2, _ := started(t, env, "serve", "--port", "0")
	base = "http://" + addr2
	code, m := call(t, "GET", base+"/v1/sessions/"+id+"/messages", testAdminKey, nil)
	if code != 200 || !strings.Contains(fmtJSON(m), "user keep this") || !strings.Contains(fmtJSON(m), "agent Echo: keep this") {
		t.Fatalf("transcript after restart: %d %v", code, m)
	}
	if _, sess := call(t, "GET", base+"/v1/sessions/"+id, testAdminKey, nil); sess["state"] != "stopped" {
		t.Fatalf("session state after a clean restart: %v", sess)
	}
}

// fmtJSON flattens a messages answer to "role content" lines.
func fmtJSON(m map[string]any) string {
	var b strings.Builder
	list, _ := m["messages"].([]any)
	for _, x := range list {
		mm, _ := x.(map[string]any)
		b.WriteString(fmt.Sprint(mm["role"], " ", mm["content"], "\n"))
	}
	return b.String()
}

// TestRateLimitIsExactAcrossInstances: three instances share one user's
// limit through Redis; many concurrent clients for a few seconds never get
// more than burst + rate × elapsed admitted, and not much less.
func TestRateLimitIsExactAcrossInstances(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"native", "rest"} {
		t.Run(transport, func(t *testing.T) {
			redisURL := redistest.URL(t)
			env := []string{
				"REDIS_ENABLE=true", "TOKEN_ENCRYPTION_KEY=" + strings.Repeat("cd", 32),
				"DATABASE_URL=" + pgtest.URL(t), "AGENTAPI_ADMIN_API_KEY=" + testAdminKey,
				"RATE_LIMIT_REQUESTS_PER_MINUTE=1200", "RATE_LIMIT_BURST_SIZE=20", // 20/s per user
				"RATE_LIMIT_IP_REQUESTS_PER_MINUTE=1000000", "RATE_LIMIT_IP_BURST_SIZE=100000",
			}
			if transport == "rest" {
				restURL, _ := restserver.StartTest(t, redisURL, "tok")
				env = append(env, "REDIS_PROTOCOL=rest", "UPSTASH_REDIS_REST_URL="+restURL, "UPSTASH_REDIS_REST_TOKEN=tok")
			} else {
				env = append(env, "REDIS_URL="+redisURL)
			}
			var bases []string
			for i := 0; i < 3; i++ {
				_, addr, _ := started(t, append([]string{"HOME=" + t.TempDir(), fmt.Sprintf("AGENTAPI_INSTANCE_ID=i%d", i)}, env...), "serve", "--port", "0")
				bases = append(bases, "http://"+addr)
			}
			const clients = 12
			const run = 3 * time.Second
			var mu sync.Mutex
			admitted, limited, other := 0, 0, 0
			var first, last time.Time
			start := time.Now()
			var wg sync.WaitGroup
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; time.Since(start) < run; i++ {
						req, _ := http.NewRequest("GET", bases[(c+i)%3]+"/v1/auth/session", nil)
						req.Header.Set("Authorization", "Bearer "+testAdminKey)
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							continue
						}
						resp.Body.Close()
						mu.Lock()
						switch resp.StatusCode {
						case 200:
							if first.IsZero() {
								first = time.Now()
							}
							last = time.Now()
							admitted++
						case 429:
							limited++
						default:
							other++
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			elapsed := last.Sub(first).Seconds()
			allowed := 20 + 20*elapsed
			t.Logf("%s: admitted %d, limited %d, other %d over %.2fs; allowed %.1f", transport, admitted, limited, other, elapsed, allowed)
			if other != 0 || limited == 0 {
				t.Fatalf("unexpected statuses: %d other, %d limited", other, limited)
			}
			if float64(admitted) > allowed+1 {
				t.Fatalf("admitted %d > burst + rate×elapsed = %.1f", admitted, allowed)
			}
			if float64(admitted) < 0.9*allowed {
				t.Fatalf("admitted %d < 90%% of %.1f: limiting too hard", admitted, allowed)
			}
		})
	}
}
