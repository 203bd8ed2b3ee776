package cache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

// origin is the wrapped handler of the handler tests: it answers
// "<tenant> <path> #<n>" (n counts its calls), with the status, headers
// and content type the request's query asks for.
type origin struct{ calls atomic.Int32 }

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.calls.Add(1)
	q := r.URL.Query()
	if ct := q.Get("ct"); ct != "" {
		w.Header().Set("Content-Type", ct)
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	if q.Get("cookie") != "" {
		w.Header().Set("Set-Cookie", "a=b")
	}
	if q.Get("nostore") != "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Header().Set("X-Origin", "yes")
	status := http.StatusOK
	if s := q.Get("status"); s != "" {
		fmt.Sscan(s, &status)
	}
	if r.Method != http.MethodGet {
		status = http.StatusTeapot // the cache must always ask with GET
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "%s %s #%d", r.Header.Get("X-Tenant"), r.URL.Path, n)
}

// keyOf caches requests carrying X-Tenant, keyed by path and query, in
// scope "pages"; /nocache is never cached.
func keyOf(r *http.Request) (tenant, scope, key string, ok bool) {
	tenant = r.Header.Get("X-Tenant")
	if r.URL.Path == "/nocache" {
		return "", "", "", false
	}
	return tenant, "pages", r.URL.RequestURI(), true
}

type handlerEnv struct {
	t      *testing.T
	o      *origin
	l      *cache.Loader
	h      http.Handler
	clk    *storetest.ManualClock
	server *httptest.Server
}

func newHandlerEnv(t *testing.T, b cache.Backend) *handlerEnv {
	e := &handlerEnv{t: t, o: &origin{}, clk: storetest.NewManualClock(time.Time{})}
	if b == nil {
		b = cache.NewMemory(cache.MemoryOptions{Now: e.clk.Now})
	}
	e.l = newLoader(t, "http", b, cache.LoaderOptions{Now: e.clk.Now})
	e.h = e.l.Handler(keyOf, time.Minute, e.o)
	return e
}

type response struct {
	status int
	header http.Header
	body   string
}

func (e *handlerEnv) do(method, target, tenant string, header ...string) response {
	e.t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if tenant != "" {
		r.Header.Set("X-Tenant", tenant)
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	res := w.Result()
	body, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(body)}
}

func (r response) want(t *testing.T, status int, xcache, body string) {
	t.Helper()
	if r.status != status || r.header.Get("X-Cache") != xcache || r.body != body {
		t.Fatalf("got %d X-Cache %q body %q; want %d X-Cache %q body %q", r.status, r.header.Get("X-Cache"), r.body, status, xcache, body)
	}
}

func TestHandlerHitMissETag(t *testing.T) {
	e := newHandlerEnv(t, nil)
	r1 := e.do("GET", "/a?x=1", "t1")
	r1.want(t, 200, "MISS", "t1 /a #1")
	etag := r1.header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 10 {
		t.Fatalf("ETag %q, want a strong quoted tag", etag)
	}
	for _, h := range []struct{ name, want string }{
		{"Cache-Control", "private, no-cache"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Length", fmt.Sprint(len("t1 /a #1"))},
	} {
		if got := r1.header.Get(h.name); got != h.want {
			t.Errorf("%s = %q, want %q", h.name, got, h.want)
		}
	}
	r2 := e.do("GET", "/a?x=1", "t1")
	r2.want(t, 200, "HIT", "t1 /a #1")
	if r2.header.Get("ETag") != etag || r2.header.Get("Cache-Control") != "private, no-cache" {
		t.Fatalf("hit headers %v, want the same ETag and Cache-Control", r2.header)
	}
	if r2.header.Get("X-Origin") != "" {
		t.Error("a hit carries a header the origin set: only Content-Type is kept")
	}
	// Revalidation.
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		r := e.do("GET", "/a?x=1", "t1", "If-None-Match", inm)
		r.want(t, 304, "HIT", "")
		if r.header.Get("ETag") != etag {
			t.Fatalf("304 without the ETag: %v", r.header)
		}
	}
	e.do("GET", "/a?x=1", "t1", "If-None-Match", `"other"`).want(t, 200, "HIT", "t1 /a #1")
	// A different query is a different entry.
	e.do("GET", "/a?x=2", "t1").want(t, 200, "MISS", "t1 /a #2")
	// A miss that computes a body whose tag the client has: 304 too.
	if err := e.l.Invalidate(testCtx(t), "t1", "pages"); err != nil {
		t.Fatal(err)
	}
	e.o.calls.Store(0) // the origin will compute "t1 /a #1" again
	e.do("GET", "/a?x=1", "t1", "If-None-Match", etag).want(t, 304, "MISS", "")
	if c := e.o.calls.Load(); c != 1 {
		t.Fatalf("origin called %d times, want 1", c)
	}
}

func TestHandlerTenantsIsolated(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.do("GET", "/same", "t1").want(t, 200, "MISS", "t1 /same #1")
	e.do("GET", "/same", "t2").want(t, 200, "MISS", "t2 /same #2")
	e.do("GET", "/same", "t1").want(t, 200, "HIT", "t1 /same #1")
	e.do("GET", "/same", "t2").want(t, 200, "HIT", "t2 /same #2")
	// Tenants whose names a careless key scheme would confuse.
	e.do("GET", "/b", "t:1").want(t, 200, "MISS", "t:1 /b #3")
	e.do("GET", "/b", "t").want(t, 200, "MISS", "t /b #4")
	e.do("GET", "/b", "t:1").want(t, 200, "HIT", "t:1 /b #3")
	// Invalidating one tenant leaves the other's entry alone.
	if err := e.l.Invalidate(testCtx(t), "t1", "pages"); err != nil {
		t.Fatal(err)
	}
	e.do("GET", "/same", "t1").want(t, 200, "MISS", "t1 /same #5")
	e.do("GET", "/same", "t2").want(t, 200, "HIT", "t2 /same #2")
}

func TestHandlerHead(t *testing.T) {
	e := newHandlerEnv(t, nil)
	r := e.do("HEAD", "/h", "t1")
	r.want(t, 200, "MISS", "")
	if r.header.Get("Content-Length") != fmt.Sprint(len("t1 /h #1")) || r.header.Get("ETag") == "" {
		t.Fatalf("HEAD miss headers %v", r.header)
	}
	// The entry HEAD computed is the GET's, body included.
	e.do("GET", "/h", "t1").want(t, 200, "HIT", "t1 /h #1")
	e.do("HEAD", "/h", "t1").want(t, 200, "HIT", "")
	e.do("HEAD", "/h", "t1", "If-None-Match", r.header.Get("ETag")).want(t, 304, "HIT", "")
}

func TestHandlerNoCache(t *testing.T) {
	e := newHandlerEnv(t, nil)
	e.do("GET", "/n", "t1").want(t, 200, "MISS", "t1 /n #1")
	e.do("GET", "/n", "t1", "Cache-Control", "no-cache").want(t, 200, "BYPASS", "t1 /n #2")
	// The bypass refreshed the stored entry.
	e.do("GET", "/n", "t1").want(t, 200, "HIT", "t1 /n #2")
	e.do("GET", "/n", "t1", "Cache-Control", "max-age=0, No-Cache").want(t, 200, "BYPASS", "t1 /n #3")
	e.do("GET", "/n", "t1", "Pragma", "no-cache").want(t, 200, "BYPASS", "t1 /n #4")
	e.do("GET", "/n", "t1").want(t, 200, "HIT", "t1 /n #4")
	// no-store: computed, not stored.
	r := e.do("GET", "/n", "t1", "Cache-Control", "no-store")
	r.want(t, 200, "BYPASS", "t1 /n #5")
	if r.header.Get("X-Origin") != "yes" {
		t.Error("no-store response is not the origin's own")
	}
	e.do("GET", "/n", "t1").want(t, 200, "HIT", "t1 /n #4")
	if s := e.l.Stats(); s.Bypasses != 3 {
		t.Fatalf("Stats.Bypasses = %d, want 3", s.Bypasses)
	}
}

func TestHandlerUncacheable(t *testing.T) {
	e := newHandlerEnv(t, nil)
	for i, target := range []string{"/e?status=404", "/e?status=500", "/e?status=201", "/e?cookie=1", "/e?nostore=1"} {
		for j := range 2 {
			n := 2*i + j + 1
			r := e.do("GET", target, "t1")
			if r.header.Get("X-Cache") != "MISS" || r.header.Get("X-Origin") != "yes" || !strings.HasSuffix(r.body, fmt.Sprintf("#%d", n)) {
				t.Fatalf("%s #%d: %d %v %q; want the origin's response, uncached", target, j, r.status, r.header, r.body)
			}
			if r.header.Get("ETag") != "" {
				t.Fatalf("%s: uncached response got an ETag", target)
			}
		}
	}
	if r := e.do("GET", "/e?status=404", "t1"); r.status != 404 {
		t.Fatalf("status %d, want the origin's 404", r.status)
	}
	if s := e.l.Stats(); s.LoadErrors != 0 || s.Hits != 0 {
		t.Fatalf("Stats %+v: uncacheable responses are neither hits nor load errors", s)
	}
}

func TestHandlerPassThrough(t *testing.T) {
	e := newHandlerEnv(t, nil)
	cases := []struct {
		method, target, tenant string
		header                 []string
	}{
		{"POST", "/p", "t1", nil},
		{"DELETE", "/p", "t1", nil},
		{"GET", "/nocache", "t1", nil}, // keyOf: ok false
		{"GET", "/p", "", nil},         // no tenant
		{"GET", "/p", "t1", []string{"Range", "bytes=0-1"}},
	}
	for i, c := range cases {
		for range 2 {
			r := e.do(c.method, c.target, c.tenant, c.header...)
			if r.header.Get("X-Cache") != "" || r.header.Get("ETag") != "" || r.header.Get("X-Origin") != "yes" {
				t.Fatalf("case %d %s %s: headers %v, want the origin's response untouched", i, c.method, c.target, r.header)
			}
		}
	}
	if c := e.o.calls.Load(); c != int32(2*len(cases)) {
		t.Fatalf("origin called %d times, want %d", c, 2*len(cases))
	}
}

// TestHandlerBackendDown: with the cache unreachable every request is
// served by the origin.
func TestHandlerBackendDown(t *testing.T) {
	e := newHandlerEnv(t, &downBackend{})
	e.do("GET", "/d", "t1").want(t, 200, "MISS", "t1 /d #1")
	e.do("GET", "/d", "t1").want(t, 200, "MISS", "t1 /d #2")
	e.do("GET", "/d", "t1", "Cache-Control", "no-cache").want(t, 200, "BYPASS", "t1 /d #3")
	if s := e.l.Stats(); s.Errors != 3 {
		t.Fatalf("Stats.Errors = %d, want 3", s.Errors)
	}
}

// TestHandlerPanic: a panic in the origin becomes a 500 for the request,
// not a crash of the loader's goroutine.
func TestHandlerPanic(t *testing.T) {
	l := newLoader(t, "http", cache.NewMemory(cache.MemoryOptions{}), cache.LoaderOptions{})
	h := l.Handler(keyOf, time.Minute, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("origin bug") }))
	r := httptest.NewRequest("GET", "/x", nil)
	r.Header.Set("X-Tenant", "t1")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 500 {
		t.Fatalf("status %d, want 500", w.Code)
	}
	// http.ErrAbortHandler is passed on, so that the server aborts the
	// response as the origin asked.
	h = l.Handler(keyOf, time.Minute, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("recovered %v, want http.ErrAbortHandler", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), r)
	}()
}

// TestHandlerOverHTTP runs the wrapper in a real server, over Redis, with
// two instances: a page cached by one is a hit on the other, and each
// tenant sees only its own body.
func TestHandlerOverHTTP(t *testing.T) {
	url := redistest.URL(t)
	p := randomPrefix()
	o := &origin{}
	var srvs []*httptest.Server
	for range 2 {
		l := newLoader(t, "http", cache.NewRedis(dialNative(t, url), cache.RedisOptions{Prefix: p}), cache.LoaderOptions{})
		srv := httptest.NewServer(l.Handler(keyOf, time.Minute, o))
		t.Cleanup(srv.Close) // also closes srv.Client()'s connections
		srvs = append(srvs, srv)
	}
	get := func(i int, tenant string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srvs[i].URL+"/page", nil)
		req.Header.Set("X-Tenant", tenant)
		res, err := srvs[i].Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b), res.Header.Get("X-Cache")
	}
	if b, x := get(0, "t1"); b != "t1 /page #1" || x != "MISS" {
		t.Fatalf("instance 0, t1: %q %s", b, x)
	}
	if b, x := get(1, "t1"); b != "t1 /page #1" || x != "HIT" {
		t.Fatalf("instance 1, t1: %q %s", b, x)
	}
	if b, x := get(1, "t2"); b != "t2 /page #2" || x != "MISS" {
		t.Fatalf("instance 1, t2: %q %s", b, x)
	}
	if b, x := get(0, "t2"); b != "t2 /page #2" || x != "HIT" {
		t.Fatalf("instance 0, t2: %q %s", b, x)
	}
}
