package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/metrics"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/runner"
	"github.com/agentapi-mt/agentapi/storetest"
)

// The server's objects plug in as they are.
var (
	_ metrics.RedisSource        = (*kv.Switch)(nil)
	_ metrics.BreakerSource      = (*breaker.Registry)(nil)
	_ metrics.AgentSessionSource = (*runner.Manager)(nil)
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scrape GETs /metrics from m's handler and parses the text format.
func scrape(t *testing.T, m *metrics.Metrics) families {
	t.Helper()
	return scrapeHandler(t, m.Handler(), "")
}

func scrapeHandler(t *testing.T, h http.Handler, auth string) families {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, rec.Body)
	}
	return families{fams, rec.Body.String()}
}

type families struct {
	m    map[string]*dto.MetricFamily
	text string
}

// find returns the metric of family name whose labels are exactly lv
// (name, value, name, value...), or nil.
func (f families) find(name string, lv ...string) *dto.Metric {
	fam := f.m[name]
	if fam == nil {
		return nil
	}
	want := map[string]string{}
	for i := 0; i+1 < len(lv); i += 2 {
		want[lv[i]] = lv[i+1]
	}
	for _, m := range fam.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		ok := true
		for _, l := range m.Label {
			if v, has := want[l.GetName()]; !has || v != l.GetValue() {
				ok = false
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

// value is the counter or gauge value of a series; the test fails when the
// series is missing.
func (f families) value(t *testing.T, name string, lv ...string) float64 {
	t.Helper()
	m := f.find(name, lv...)
	if m == nil {
		t.Fatalf("no series %s%v in:\n%s", name, lv, f.grep(name))
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("series %s%v has no value", name, lv)
	return 0
}

func (f families) want(t *testing.T, want float64, name string, lv ...string) {
	t.Helper()
	if got := f.value(t, name, lv...); got != want {
		t.Errorf("%s%v = %v, want %v\n%s", name, lv, got, want, f.grep(name))
	}
}

// series counts the series of family name.
func (f families) series(name string) int {
	if fam := f.m[name]; fam != nil {
		return len(fam.Metric)
	}
	return 0
}

func (f families) grep(name string) string {
	var out []string
	for _, l := range strings.Split(f.text, "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func get(t *testing.T, h http.Handler, method, path string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code
}

// The HTTP series: counts by route pattern and status, never by raw path;
// unmatched requests; a 429 from a handler and one from a middleware that
// answered before routing.
func TestHTTPSeries(t *testing.T) {
	m := metrics.New(metrics.Sources{}, metrics.Options{})
	r := chi.NewRouter()
	r.Use(m.Middleware)
	// A rate limit that answers before routing, as httpapi.RateLimits does.
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("flood") != "" {
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	r.Get("/v1/things/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("thing")) })
	r.Post("/v1/limited", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
	})
	r.Route("/v1/sessions/{id}", func(r chi.Router) {
		r.Get("/messages", func(w http.ResponseWriter, r *http.Request) {})
	})
	r.Get("/boom", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })

	for range 2 {
		if c := get(t, r, "GET", "/v1/things/one"); c != 200 {
			t.Fatalf("GET a thing: %d", c)
		}
	}
	get(t, r, "GET", "/v1/things/two")
	get(t, r, "GET", "/v1/sessions/ses_a/messages")
	get(t, r, "GET", "/v1/sessions/ses_b/messages")
	if c := get(t, r, "GET", "/no/such/route"); c != 404 {
		t.Fatalf("unknown route: %d", c)
	}
	get(t, r, "GET", "/another/unknown")
	if c := get(t, r, "POST", "/v1/limited"); c != 429 {
		t.Fatalf("limited: %d", c)
	}
	if c := get(t, r, "GET", "/v1/things/three?flood=1"); c != 429 {
		t.Fatalf("flood: %d", c)
	}
	get(t, r, "BREW", "/v1/things/one")
	func() {
		defer func() { recover() }()
		get(t, r, "GET", "/boom")
	}()

	f := scrape(t, m)
	const reqs, dur = "agentapi_http_requests_total", "agentapi_http_request_duration_seconds"
	f.want(t, 3, reqs, "method", "GET", "route", "/v1/things/{id}", "status", "200")
	f.want(t, 2, reqs, "method", "GET", "route", "/v1/sessions/{id}/messages", "status", "200")
	f.want(t, 2, reqs, "method", "GET", "route", metrics.Unmatched, "status", "404")
	f.want(t, 1, reqs, "method", "POST", "route", "/v1/limited", "status", "429")
	// Answered by the middleware before routing: still its route's pattern.
	f.want(t, 1, reqs, "method", "GET", "route", "/v1/things/{id}", "status", "429")
	f.want(t, 1, reqs, "method", "OTHER", "route", metrics.Unmatched, "status", "405")
	f.want(t, 1, reqs, "method", "GET", "route", "/boom", "status", "500")
	if n := f.series(reqs); n != 7 {
		t.Errorf("%d request series, want 7:\n%s", n, f.grep(reqs))
	}
	f.want(t, 4, dur, "method", "GET", "route", "/v1/things/{id}")
	f.want(t, 2, dur, "method", "GET", "route", "/v1/sessions/{id}/messages")
	f.want(t, 0, "agentapi_http_requests_in_flight")
	if strings.Contains(f.text, "ses_a") || strings.Contains(f.text, "/v1/things/one") || strings.Contains(f.text, "/no/such") {
		t.Errorf("a raw path reached a label:\n%s", f.grep("agentapi_http"))
	}
}

// Wrapped around the router rather than inside it, the middleware still
// sees the pattern.
func TestMiddlewareOutsideRouter(t *testing.T) {
	m := metrics.New(metrics.Sources{}, metrics.Options{})
	r := chi.NewRouter()
	r.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if chi.URLParam(r, "id") == "" {
			t.Error("no URL parameter inside the router")
		}
	})
	h := m.Middleware(r)
	get(t, h, "GET", "/items/1")
	get(t, h, "GET", "/items/2")
	get(t, h, "GET", "/nothing")
	f := scrape(t, m)
	f.want(t, 2, "agentapi_http_requests_total", "method", "GET", "route", "/items/{id}", "status", "200")
	f.want(t, 1, "agentapi_http_requests_total", "method", "GET", "route", metrics.Unmatched, "status", "404")
}

// The in-flight gauge counts a request while its handler runs.
func TestHTTPInFlight(t *testing.T) {
	m := metrics.New(metrics.Sources{}, metrics.Options{})
	entered, release := make(chan struct{}), make(chan struct{})
	r := chi.NewRouter()
	r.Use(m.Middleware)
	r.Get("/events", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush() // event streams need the Flusher through the wrapper
		close(entered)
		<-release
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(t, r, "GET", "/events")
	}()
	<-entered
	scrape(t, m).want(t, 1, "agentapi_http_requests_in_flight")
	close(release)
	<-done
	f := scrape(t, m)
	f.want(t, 0, "agentapi_http_requests_in_flight")
	f.want(t, 1, "agentapi_http_requests_total", "method", "GET", "route", "/events", "status", "200")
}

const restToken = "metrics-token"

// A real kv.Switch over two real Redis servers: native (A) preferred, REST
// (over B) as the fallback. The protocol gauge, the command counts and
// latencies, the fallback and the endpoints going down all show.
func TestRedisSeries(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	b := redistest.Start(t, redistest.Options{})
	base, _ := restserver.StartTest(t, b.URL(), restToken)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sw := kv.NewSwitch(ctx, []kv.Endpoint{
		{Name: "native", Addr: a.Addr(), Dial: func(ctx context.Context) (kv.Client, error) {
			return native.Dial(ctx, native.Options{URL: a.URL(), ConnectTimeout: 2 * time.Second})
		}},
		{Name: "rest", Addr: base, Dial: func(ctx context.Context) (kv.Client, error) {
			return rest.New(rest.Options{URL: base, Token: restToken, MaxRetries: 1, Backoff: time.Millisecond, Timeout: 2 * time.Second})
		}},
	}, kv.SwitchOptions{ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 2 * time.Second})
	defer sw.Close()
	m := metrics.New(metrics.Sources{Redis: sw}, metrics.Options{})

	for i := range 3 {
		if _, err := sw.Do(ctx, "SET", "m:k", "v"); err != nil {
			t.Fatalf("SET %d: %v", i, err)
		}
	}
	if _, err := sw.Eval(ctx, kv.NewScript("return redis.call('GET', KEYS[1])"), []string{"m:k"}); err != nil {
		t.Fatal(err)
	}
	sw.Do(ctx, "INCR", "m:k") // WRONGTYPE-ish: not an integer

	f := scrape(t, m)
	const dur = "agentapi_redis_command_duration_seconds"
	f.want(t, 1, "agentapi_redis_protocol", "protocol", "native")
	f.want(t, 0, "agentapi_redis_protocol", "protocol", "rest")
	f.want(t, 1, "agentapi_redis_endpoint_up", "protocol", "native")
	f.want(t, 1, "agentapi_redis_endpoint_up", "protocol", "rest")
	f.want(t, 4, dur, "protocol", "native", "op", "do")
	f.want(t, 1, dur, "protocol", "native", "op", "eval")
	f.want(t, 0, dur, "protocol", "rest", "op", "do")
	f.want(t, 1, "agentapi_redis_errors_total", "protocol", "native", "kind", "server")
	f.want(t, 0, "agentapi_redis_errors_total", "protocol", "native", "kind", "unavailable")
	f.want(t, 0, "agentapi_redis_fallbacks_total")
	f.want(t, 0, "agentapi_redis_calls_in_flight", "protocol", "native")
	if n := f.value(t, "agentapi_redis_connections", "protocol", "native"); n < 1 {
		t.Errorf("native connections %v", n)
	}
	if h := f.find(dur, "protocol", "native", "op", "do").Histogram; h.GetSampleSum() <= 0 || len(h.Bucket) != len(kv.LatencyBuckets())+1 { // +Inf included
		t.Errorf("native do histogram %v", h)
	}

	// A goes away: the next call fails, and calls go over REST.
	a.Stop(t)
	if _, err := sw.Do(ctx, "GET", "m:k"); err == nil {
		t.Fatal("a call to a stopped server succeeded")
	}
	if _, err := sw.Do(ctx, "SET", "m:k", "over-rest"); err != nil {
		t.Fatalf("SET after the fallback: %v", err)
	}
	f = scrape(t, m)
	f.want(t, 0, "agentapi_redis_protocol", "protocol", "native")
	f.want(t, 1, "agentapi_redis_protocol", "protocol", "rest")
	f.want(t, 0, "agentapi_redis_endpoint_up", "protocol", "native")
	f.want(t, 1, "agentapi_redis_fallbacks_total")
	f.want(t, 1, "agentapi_redis_errors_total", "protocol", "native", "kind", "unavailable")
	f.want(t, 1, dur, "protocol", "rest", "op", "do")
	f.want(t, 2, "agentapi_redis_endpoint_transitions_total", "protocol", "native") // up at start, down
	f.want(t, 0, "agentapi_redis_rejected_calls_total")

	// B goes away too: REST retries, gives up, and calls are refused at once.
	b.Stop(t)
	sw.Do(ctx, "GET", "m:k")
	sw.Do(ctx, "GET", "m:k")
	f = scrape(t, m)
	f.want(t, 0, "agentapi_redis_protocol", "protocol", "rest")
	f.want(t, 0, "agentapi_redis_endpoint_up", "protocol", "rest")
	f.want(t, 1, "agentapi_redis_rejected_calls_total")
	f.want(t, 1, "agentapi_redis_errors_total", "protocol", "rest", "kind", "unavailable")
	if n := f.value(t, "agentapi_redis_retries_total", "protocol", "rest"); n < 1 {
		t.Errorf("REST retries %v", n)
	}

	// A comes back: the prober returns calls to it.
	a.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for sw.Stats().Protocol != "native" {
		if time.Now().After(deadline) {
			t.Fatal("native did not come back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f = scrape(t, m)
	f.want(t, 1, "agentapi_redis_protocol", "protocol", "native")
	f.want(t, 3, "agentapi_redis_endpoint_transitions_total", "protocol", "native")
}

// Breakers: the state gauge and the transitions counter, with tenant ids
// kept out of the labels unless asked for.
func TestBreakerSeries(t *testing.T) {
	clock := storetest.NewManualClock(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	reg := breaker.NewRegistry(breaker.Settings{FailureThreshold: 2, Timeout: time.Minute}, breaker.Options{Clock: clock.Now})
	fail := func(name string) {
		done, err := reg.Get(name).Allow(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		done(agentapi.E("dep", agentapi.KindUnavailable, nil))
	}
	for range 2 {
		fail("database")
		fail("agent-deliver:ten-a:claude")
	}
	reg.Get("agent-deliver:ten-b:claude")
	reg.Get("agent-start:claude")
	f := scrape(t, metrics.New(metrics.Sources{Breakers: reg}, metrics.Options{BreakerLabel: runner.BreakerGroup}))
	const state, trans = "agentapi_breaker_state", "agentapi_breaker_transitions_total"
	f.want(t, 1, state, "breaker", "database", "state", "open")
	f.want(t, 0, state, "breaker", "database", "state", "closed")
	f.want(t, 0, state, "breaker", "database", "state", "half_open")
	f.want(t, 1, trans, "breaker", "database", "to", "open")
	f.want(t, 0, trans, "breaker", "database", "to", "closed")
	f.want(t, 1, state, "breaker", "agent-deliver:claude", "state", "open")
	f.want(t, 1, state, "breaker", "agent-deliver:claude", "state", "closed")
	f.want(t, 1, trans, "breaker", "agent-deliver:claude", "to", "open")
	f.want(t, 1, state, "breaker", "agent-start:claude", "state", "closed")
	if strings.Contains(f.text, "ten-a") || strings.Contains(f.text, "ten-b") {
		t.Errorf("a tenant id reached a label:\n%s", f.grep("agentapi_breaker"))
	}

	// The default label is the name up to its first ':'.
	f = scrape(t, metrics.New(metrics.Sources{Breakers: reg}, metrics.Options{}))
	f.want(t, 1, state, "breaker", "agent-deliver", "state", "open")
	f.want(t, 1, state, "breaker", "agent-deliver", "state", "closed")
	f.want(t, 1, state, "breaker", "agent-start", "state", "closed")
	f.want(t, 1, state, "breaker", "database", "state", "open")
	if strings.Contains(f.text, "ten-a") || strings.Contains(f.text, "claude") {
		t.Errorf("default labels kept more than the first segment:\n%s", f.grep("agentapi_breaker"))
	}

	// The timeout passes: open breakers report half-open.
	clock.Advance(time.Minute)
	f = scrape(t, metrics.New(metrics.Sources{Breakers: reg}, metrics.Options{TenantLabels: true}))
	f.want(t, 1, state, "breaker", "database", "state", "half_open")
	f.want(t, 0, state, "breaker", "database", "state", "open")
	f.want(t, 1, state, "breaker", "agent-deliver:ten-a:claude", "state", "half_open")
	f.want(t, 1, trans, "breaker", "agent-deliver:ten-a:claude", "to", "open")
	f.want(t, 1, state, "breaker", "agent-deliver:ten-b:claude", "state", "closed")
}

type agentSessions struct {
	mu       sync.Mutex
	byTenant map[string]map[string]int
}

func (a *agentSessions) set(m map[string]map[string]int) {
	a.mu.Lock()
	a.byTenant = m
	a.mu.Unlock()
}

func (a *agentSessions) ActiveByType() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, byType := range a.byTenant {
		for agent, n := range byType {
			out[agent] += n
		}
	}
	return out
}

func (a *agentSessions) ActiveByTenant() map[string]map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byTenant
}

// Agent sessions by type; a type that stops running reads 0 rather than
// vanishing; tenants only with TenantLabels.
func TestAgentSessionSeries(t *testing.T) {
	src := &agentSessions{}
	src.set(map[string]map[string]int{"acme": {"claude": 2, "goose": 1}, "beta": {"claude": 1}})
	m := metrics.New(metrics.Sources{AgentSessions: src}, metrics.Options{})
	f := scrape(t, m)
	f.want(t, 3, "agentapi_agent_sessions", "agent", "claude")
	f.want(t, 1, "agentapi_agent_sessions", "agent", "goose")
	if strings.Contains(f.text, "acme") {
		t.Errorf("a tenant id reached a label:\n%s", f.grep("agentapi_agent"))
	}
	src.set(map[string]map[string]int{"beta": {"claude": 1}})
	f = scrape(t, m)
	f.want(t, 1, "agentapi_agent_sessions", "agent", "claude")
	f.want(t, 0, "agentapi_agent_sessions", "agent", "goose")

	src.set(map[string]map[string]int{"acme": {"claude": 2}, "beta": {"claude": 1}})
	f = scrape(t, metrics.New(metrics.Sources{AgentSessions: src}, metrics.Options{TenantLabels: true}))
	f.want(t, 2, "agentapi_agent_sessions", "agent", "claude", "tenant", "acme")
	f.want(t, 1, "agentapi_agent_sessions", "agent", "claude", "tenant", "beta")
}

// The function sources: login sessions, rate-limit decisions, caches and
// the usage flush lag.
func TestFuncSources(t *testing.T) {
	clock := storetest.NewManualClock(time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC))
	var mu sync.Mutex
	var lastFlush time.Time
	m := metrics.New(metrics.Sources{
		LoginSessions: func() int { return 7 },
		RateLimits: func() []metrics.RateCount {
			return []metrics.RateCount{
				{Limit: "ip", Outcome: metrics.Allowed, Count: 10},
				{Limit: "ip", Outcome: metrics.Denied, Count: 2},
				{Limit: "login", Outcome: metrics.Error, Count: 1},
				{Limit: "ip", Outcome: metrics.Allowed, Count: 5}, // summed with the first
			}
		},
		Caches: func() []metrics.CacheCount {
			return []metrics.CacheCount{{Name: "tenant-config", Hits: 9, Misses: 3, Errors: 1}, {Name: "flags", Hits: 4}}
		},
		UsageLastFlush: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return lastFlush
		},
	}, metrics.Options{Now: clock.Now})

	clock.Advance(90 * time.Second)
	f := scrape(t, m)
	f.want(t, 7, "agentapi_login_sessions")
	f.want(t, 15, "agentapi_ratelimit_decisions_total", "limit", "ip", "outcome", "allowed")
	f.want(t, 2, "agentapi_ratelimit_decisions_total", "limit", "ip", "outcome", "denied")
	f.want(t, 1, "agentapi_ratelimit_decisions_total", "limit", "login", "outcome", "error")
	f.want(t, 9, "agentapi_cache_hits_total", "cache", "tenant-config")
	f.want(t, 3, "agentapi_cache_misses_total", "cache", "tenant-config")
	f.want(t, 1, "agentapi_cache_errors_total", "cache", "tenant-config")
	f.want(t, 4, "agentapi_cache_hits_total", "cache", "flags")
	f.want(t, 0, "agentapi_cache_misses_total", "cache", "flags")
	f.want(t, 90, "agentapi_usage_flush_lag_seconds") // never flushed: since start

	mu.Lock()
	lastFlush = clock.Now().Add(-5 * time.Second)
	mu.Unlock()
	scrape(t, m).want(t, 5, "agentapi_usage_flush_lag_seconds")
}

// Without sources only the HTTP, build and process series exist; a nil
// *kv.Switch (Redis disabled) counts as no source.
func TestNoSources(t *testing.T) {
	var sw *kv.Switch
	var reg *breaker.Registry
	m := metrics.New(metrics.Sources{Redis: sw, Breakers: reg}, metrics.Options{Version: "1.2.3"})
	f := scrape(t, m)
	for name := range f.m {
		if strings.HasPrefix(name, "agentapi_redis") || strings.HasPrefix(name, "agentapi_breaker") {
			t.Errorf("series %s without its source", name)
		}
	}
	if f.find("agentapi_build_info", "version", "1.2.3", "goversion", goVersion(f)) == nil {
		t.Errorf("build info:\n%s", f.grep("agentapi_build_info"))
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_start_time_seconds"} {
		if f.m[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

func goVersion(f families) string {
	for _, m := range f.m["agentapi_build_info"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "goversion" {
				return l.GetValue()
			}
		}
	}
	return ""
}

func TestBearerToken(t *testing.T) {
	h := metrics.New(metrics.Sources{}, metrics.Options{BearerToken: "s3cret"}).Handler()
	for _, auth := range []string{"", "Bearer wrong", "s3cret"} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "go_goroutines") {
			t.Errorf("Authorization %q: %d", auth, rec.Code)
		}
	}
	scrapeHandler(t, h, "Bearer s3cret")
}

// Every series of ours passes promlint (names, units, _total suffixes,
// help text), with every source plugged in.
func TestLint(t *testing.T) {
	clock := storetest.NewManualClock(time.Now())
	reg := breaker.NewRegistry(breaker.Settings{}, breaker.Options{Clock: clock.Now})
	reg.Get("database")
	u := redistest.Start(t, redistest.Options{}).URL()
	ctx := context.Background()
	sw := kv.NewSwitch(ctx, []kv.Endpoint{{Name: "native", Dial: func(ctx context.Context) (kv.Client, error) {
		return native.Dial(ctx, native.Options{URL: u})
	}}}, kv.SwitchOptions{})
	defer sw.Close()
	m := metrics.New(metrics.Sources{
		Redis: sw, Breakers: reg, AgentSessions: &agentSessions{byTenant: map[string]map[string]int{"a": {"claude": 1}}},
		LoginSessions: func() int { return 1 },
		RateLimits: func() []metrics.RateCount {
			return []metrics.RateCount{{Limit: "ip", Outcome: metrics.Allowed, Count: 1}}
		},
		Caches:         func() []metrics.CacheCount { return []metrics.CacheCount{{Name: "c", Hits: 1}} },
		UsageLastFlush: func() time.Time { return time.Time{} },
	}, metrics.Options{})
	r := chi.NewRouter()
	r.Use(m.Middleware)
	r.Get("/x", func(w http.ResponseWriter, r *http.Request) {})
	get(t, r, "GET", "/x")
	sw.Do(ctx, "PING")

	f := scrape(t, m)
	var names []string
	for name := range f.m {
		if strings.HasPrefix(name, "agentapi_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) != 27 {
		t.Errorf("%d agentapi_ families, want 27: %v", len(names), names)
	}
	problems, err := promlint.New(strings.NewReader(f.text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "agentapi_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// A source that panics loses its series for that scrape, not the process
// nor the other series; the error is logged.
func TestPanickingSource(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	m := metrics.New(metrics.Sources{
		LoginSessions: func() int { panic("store gone") },
		RateLimits: func() []metrics.RateCount {
			return []metrics.RateCount{{Limit: "ip", Outcome: metrics.Denied, Count: 3}}
		},
	}, metrics.Options{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	f := scrape(t, m)
	f.want(t, 3, "agentapi_ratelimit_decisions_total", "limit", "ip", "outcome", "denied")
	if f.m["agentapi_login_sessions"] != nil {
		t.Errorf("series of a panicking source:\n%s", f.grep("agentapi_login"))
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "LoginSessions panicked: store gone") {
		t.Errorf("log: %s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
