package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

// newLoader returns a Loader over b, closed when t ends.
func newLoader(t testing.TB, name string, b cache.Backend, o cache.LoaderOptions) *cache.Loader {
	l := cache.NewLoader(name, b, o)
	t.Cleanup(func() { l.Close() })
	return l
}

// memLoader is a Loader over a fresh Memory backend, both on clk.
func memLoader(t testing.TB, clk *storetest.ManualClock, o cache.LoaderOptions) (*cache.Loader, *cache.Memory) {
	m := cache.NewMemory(cache.MemoryOptions{Now: clk.Now})
	o.Now = clk.Now
	return newLoader(t, "test", m, o), m
}

func value(s string) cache.LoadFunc {
	return func(context.Context) (cache.Entry, error) { return cache.Entry{Value: []byte(s)}, nil }
}

// wait waits for ch to close or ctx to end, so that a load blocked by a
// failing test is released by the Loader's Close.
func wait(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func mustLoad(t *testing.T, l *cache.Loader, tenant, scope, key string, ttl time.Duration, load cache.LoadFunc, wantValue string, wantHit bool) cache.Entry {
	t.Helper()
	e, hit, err := l.GetOrLoad(testCtx(t), tenant, scope, key, ttl, load)
	if err != nil {
		t.Fatalf("GetOrLoad(%s, %s, %s): %v", tenant, scope, key, err)
	}
	if string(e.Value) != wantValue || hit != wantHit {
		t.Fatalf("GetOrLoad(%s, %s, %s) = %q, hit %v; want %q, hit %v", tenant, scope, key, e.Value, hit, wantValue, wantHit)
	}
	return e
}

func wantStats(t *testing.T, l *cache.Loader, want cache.Stats) {
	t.Helper()
	want.Name = l.Name()
	if got := l.Stats(); got != want {
		t.Fatalf("Stats() = %+v\nwant      %+v", got, want)
	}
}

func TestLoaderHitMiss(t *testing.T) {
	clk := storetest.NewManualClock(time.Time{})
	l, _ := memLoader(t, clk, cache.LoaderOptions{})
	e := mustLoad(t, l, "t1", "s", "k", time.Minute, value("v1"), "v1", false)
	if !e.StoredAt.Equal(clk.Now()) || e.TTL != time.Minute {
		t.Fatalf("loaded entry StoredAt %v TTL %v, want %v and 1m", e.StoredAt, e.TTL, clk.Now())
	}
	mustLoad(t, l, "t1", "s", "k", time.Minute, value("other"), "v1", true)
	// Another tenant, same scope and key: its own entry.
	mustLoad(t, l, "t2", "s", "k", time.Minute, value("v2"), "v2", false)
	mustLoad(t, l, "t2", "s", "k", time.Minute, value("other"), "v2", true)
	mustLoad(t, l, "t1", "s", "k", time.Minute, value("other"), "v1", true)
	// Expiry.
	clk.Advance(time.Minute)
	mustLoad(t, l, "t1", "s", "k", time.Minute, value("v3"), "v3", false)
	wantStats(t, l, cache.Stats{Hits: 3, Misses: 3, Loads: 3})
}

func TestLoaderInvalidate(t *testing.T) {
	clk := storetest.NewManualClock(time.Time{})
	l, _ := memLoader(t, clk, cache.LoaderOptions{})
	ctx := testCtx(t)
	mustLoad(t, l, "t1", "s", "k", time.Minute, value("v1"), "v1", false)
	mustLoad(t, l, "t2", "s", "k", time.Minute, value("w1"), "w1", false)
	mustLoad(t, l, "t1", "s2", "k", time.Minute, value("x1"), "x1", false)
	if err := l.Invalidate(ctx, "t1", "s"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, l, "t1", "s", "k", time.Minute, value("v2"), "v2", false)
	mustLoad(t, l, "t2", "s", "k", time.Minute, value("-"), "w1", true)
	mustLoad(t, l, "t1", "s2", "k", time.Minute, value("-"), "x1", true)
	if err := l.Invalidate(ctx, "", "s"); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Fatalf("Invalidate with no tenant: %v, want KindInvalid", err)
	}
}

// TestLoaderNames: two Loaders over one Backend never share entries.
func TestLoaderNames(t *testing.T) {
	m := cache.NewMemory(cache.MemoryOptions{})
	a := newLoader(t, "a", m, cache.LoaderOptions{})
	b := newLoader(t, "b", m, cache.LoaderOptions{})
	mustLoad(t, a, "t", "s", "k", time.Minute, value("from a"), "from a", false)
	mustLoad(t, b, "t", "s", "k", time.Minute, value("from b"), "from b", false)
	mustLoad(t, a, "t", "s", "k", time.Minute, value("-"), "from a", true)
	if err := a.Invalidate(testCtx(t), "t", "s"); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, b, "t", "s", "k", time.Minute, value("-"), "from b", true)
	for _, name := range []string{"", "a/b", "a:b", "ä"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewLoader(%q) did not panic", name)
				}
			}()
			cache.NewLoader(name, m, cache.LoaderOptions{})
		}()
	}
}

func TestLoaderInvalidArguments(t *testing.T) {
	l, _ := memLoader(t, storetest.NewManualClock(time.Time{}), cache.LoaderOptions{})
	ctx := testCtx(t)
	called := false
	load := func(context.Context) (cache.Entry, error) { called = true; return cache.Entry{}, nil }
	for _, c := range []struct {
		tenant string
		ttl    time.Duration
		load   cache.LoadFunc
	}{{"", time.Minute, load}, {"t", 0, load}, {"t", -1, load}, {"t", time.Minute, nil}} {
		if _, _, err := l.GetOrLoad(ctx, c.tenant, "s", "k", c.ttl, c.load); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("GetOrLoad(tenant %q, ttl %v): %v, want KindInvalid", c.tenant, c.ttl, err)
		}
		if _, err := l.Reload(ctx, c.tenant, "s", "k", c.ttl, c.load); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("Reload(tenant %q, ttl %v): %v, want KindInvalid", c.tenant, c.ttl, err)
		}
	}
	if called {
		t.Error("load was called for invalid arguments")
	}
	wantStats(t, l, cache.Stats{})
}

// TestLoaderSingleflight: N concurrent misses of one key run load once
// and all get its result.
func TestLoaderSingleflight(t *testing.T) {
	l, _ := memLoader(t, storetest.NewManualClock(time.Time{}), cache.LoaderOptions{})
	const n = 20
	joined := make(chan struct{}, n)
	cache.SetTestHooks(l, func() { joined <- struct{}{} }, nil)
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	load := func(ctx context.Context) (cache.Entry, error) {
		if calls.Add(1) == 1 {
			close(started)
		}
		if err := wait(ctx, release); err != nil {
			return cache.Entry{}, err
		}
		return cache.Entry{Value: []byte("shared")}, nil
	}
	type result struct {
		e   cache.Entry
		hit bool
		err error
	}
	results := make(chan result, n)
	ctx := testCtx(t)
	for range n {
		go func() {
			e, hit, err := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, load)
			results <- result{e, hit, err}
		}()
	}
	<-started
	for range n - 1 {
		<-joined // every other caller waits for the running load
	}
	close(release)
	for range n {
		r := <-results
		if r.err != nil || r.hit || string(r.e.Value) != "shared" {
			t.Fatalf("GetOrLoad = %q, hit %v, %v; want \"shared\", miss", r.e.Value, r.hit, r.err)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Fatalf("load ran %d times, want 1", c)
	}
	wantStats(t, l, cache.Stats{Misses: n, Loads: 1})
	mustLoad(t, l, "t", "s", "k", time.Minute, value("-"), "shared", true)
}

// TestLoaderCallerGivesUp: the caller whose ctx ends gets its error; the
// load goes on for the others and is stored.
func TestLoaderCallerGivesUp(t *testing.T) {
	l, _ := memLoader(t, storetest.NewManualClock(time.Time{}), cache.LoaderOptions{})
	joined := make(chan struct{}, 1)
	cache.SetTestHooks(l, func() { joined <- struct{}{} }, nil)
	started, release := make(chan struct{}), make(chan struct{})
	load := func(ctx context.Context) (cache.Entry, error) {
		close(started)
		select {
		case <-release:
			return cache.Entry{Value: []byte("done")}, nil
		case <-ctx.Done():
			return cache.Entry{}, ctx.Err()
		}
	}
	ctx1, cancel1 := context.WithCancel(testCtx(t))
	first := make(chan error, 1)
	go func() {
		_, _, err := l.GetOrLoad(ctx1, "t", "s", "k", time.Minute, load)
		first <- err
	}()
	<-started
	second := make(chan string, 1)
	go func() {
		e, _, err := l.GetOrLoad(testCtx(t), "t", "s", "k", time.Minute, load)
		if err != nil {
			second <- err.Error()
			return
		}
		second <- string(e.Value)
	}()
	<-joined
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want context.Canceled", err)
	}
	close(release)
	if got := <-second; got != "done" {
		t.Fatalf("second caller got %q, want \"done\"", got)
	}
	mustLoad(t, l, "t", "s", "k", time.Minute, value("-"), "done", true)
}

func TestLoaderErrorsNotCached(t *testing.T) {
	l, _ := memLoader(t, storetest.NewManualClock(time.Time{}), cache.LoaderOptions{})
	ctx := testCtx(t)
	boom := errors.New("boom")
	_, hit, err := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, func(context.Context) (cache.Entry, error) {
		return cache.Entry{Value: []byte("partial")}, boom
	})
	if !errors.Is(err, boom) || hit {
		t.Fatalf("GetOrLoad: hit %v, %v; want the load's error", hit, err)
	}
	_, _, err = l.GetOrLoad(ctx, "t", "s", "k", time.Minute, func(context.Context) (cache.Entry, error) { panic("kaboom") })
	if agentapi.KindOf(err) != agentapi.KindInternal || !strings.Contains(err.Error(), "kaboom") {
		t.Fatalf("GetOrLoad with a panicking load: %v, want KindInternal naming the panic", err)
	}
	mustLoad(t, l, "t", "s", "k", time.Minute, value("ok"), "ok", false)
	mustLoad(t, l, "t", "s", "k", time.Minute, value("-"), "ok", true)
	wantStats(t, l, cache.Stats{Hits: 1, Misses: 3, Loads: 3, LoadErrors: 2})
}

// TestLoaderBumpDuringLoad: a load that started before an Invalidate does
// not store its (possibly stale) result, and callers arriving after the
// Invalidate do not share it.
func TestLoaderBumpDuringLoad(t *testing.T) {
	l, _ := memLoader(t, storetest.NewManualClock(time.Time{}), cache.LoaderOptions{})
	ctx := testCtx(t)
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, _, err := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, func(ctx context.Context) (cache.Entry, error) {
			close(started)
			if err := wait(ctx, release); err != nil {
				return cache.Entry{}, err
			}
			return cache.Entry{Value: []byte("before the write")}, nil
		})
		done <- err
	}()
	<-started
	if err := l.Invalidate(ctx, "t", "s"); err != nil { // a write happened
		t.Fatal(err)
	}
	// A caller after the Invalidate runs its own load, not the old one.
	mustLoad(t, l, "t", "s", "k", time.Minute, value("after the write"), "after the write", false)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mustLoad(t, l, "t", "s", "k", time.Minute, value("-"), "after the write", true)
}

// TestLoaderEarlyRefresh: a hit on an entry past RefreshAfter of its ttl
// returns it and refreshes it in the background, once.
func TestLoaderEarlyRefresh(t *testing.T) {
	clk := storetest.NewManualClock(time.Time{})
	l, _ := memLoader(t, clk, cache.LoaderOptions{RefreshAfter: 0.8})
	done := make(chan struct{}, 4)
	cache.SetTestHooks(l, nil, func() { done <- struct{}{} })
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("v1"), "v1", false)
	<-done // the miss's load

	clk.Advance(7 * time.Second) // 70%: no refresh
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("-"), "v1", true)
	wantStats(t, l, cache.Stats{Hits: 1, Misses: 1, Loads: 1})

	clk.Advance(time.Second) // 80%
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	refresh := func(ctx context.Context) (cache.Entry, error) {
		if calls.Add(1) == 1 {
			close(started)
		}
		if err := wait(ctx, release); err != nil {
			return cache.Entry{}, err
		}
		return cache.Entry{Value: []byte("v2")}, nil
	}
	mustLoad(t, l, "t", "s", "k", 10*time.Second, refresh, "v1", true)
	<-started
	for range 5 { // while it runs, hits neither wait nor start another
		mustLoad(t, l, "t", "s", "k", 10*time.Second, refresh, "v1", true)
	}
	close(release)
	<-done
	if c := calls.Load(); c != 1 {
		t.Fatalf("refresh ran %d times, want 1", c)
	}
	e := mustLoad(t, l, "t", "s", "k", 10*time.Second, refresh, "v2", true)
	if !e.StoredAt.Equal(clk.Now()) {
		t.Fatalf("refreshed entry stored at %v, want %v", e.StoredAt, clk.Now())
	}
	wantStats(t, l, cache.Stats{Hits: 8, Misses: 1, Loads: 2, Refreshes: 1})

	// A failing refresh keeps the entry and is retried by a later hit.
	clk.Advance(9 * time.Second)
	mustLoad(t, l, "t", "s", "k", 10*time.Second, func(context.Context) (cache.Entry, error) {
		return cache.Entry{}, errors.New("refresh failed")
	}, "v2", true)
	<-done
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("v3"), "v2", true)
	<-done
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("-"), "v3", true)
	wantStats(t, l, cache.Stats{Hits: 11, Misses: 1, Loads: 4, LoadErrors: 1, Refreshes: 3})
}

// TestLoaderCloseStopsRefresh: Close cancels a background refresh and
// waits for it (goleak checks that nothing is left behind).
func TestLoaderCloseStopsRefresh(t *testing.T) {
	clk := storetest.NewManualClock(time.Time{})
	m := cache.NewMemory(cache.MemoryOptions{Now: clk.Now})
	l := cache.NewLoader("test", m, cache.LoaderOptions{Now: clk.Now})
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("v1"), "v1", false)
	clk.Advance(9 * time.Second)
	started := make(chan struct{})
	stopped := make(chan error, 1)
	mustLoad(t, l, "t", "s", "k", 10*time.Second, func(ctx context.Context) (cache.Entry, error) {
		close(started)
		<-ctx.Done()
		stopped <- ctx.Err()
		return cache.Entry{}, ctx.Err()
	}, "v1", true)
	<-started
	l.Close()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("refresh's context: %v, want cancelled by Close", err)
	}
	l.Close() // idempotent
	// Closed: load runs in the caller, nothing is read or stored.
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("direct"), "direct", false)
	mustLoad(t, l, "t", "s", "k", 10*time.Second, value("direct2"), "direct2", false)
	if e, _, ok, _ := m.Get(testCtx(t), "t", "test/s", "k"); !ok || string(e.Value) != "v1" {
		t.Fatalf("backend holds %q, %v; want v1 untouched", e.Value, ok)
	}
}

// downBackend fails every call, as a Backend whose server is gone.
type downBackend struct{ calls atomic.Int32 }

func (d *downBackend) err(op string) error {
	d.calls.Add(1)
	return agentapi.E(op, agentapi.KindOther, kv.Unavailable("test", errors.New("connection refused")))
}
func (d *downBackend) Get(context.Context, string, string, string) (cache.Entry, uint64, bool, error) {
	return cache.Entry{}, 0, false, d.err("get")
}
func (d *downBackend) Put(context.Context, string, string, string, uint64, cache.Entry, time.Duration) error {
	return d.err("put")
}
func (d *downBackend) Delete(context.Context, string, string, string) error { return d.err("delete") }
func (d *downBackend) Bump(context.Context, string, string) (uint64, error) {
	return 0, d.err("bump")
}

func TestLoaderBackendDown(t *testing.T) {
	d := &downBackend{}
	var reported []error
	var mu sync.Mutex
	l := newLoader(t, "test", d, cache.LoaderOptions{OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	for i := range 3 {
		mustLoad(t, l, "t", "s", "k", time.Minute, value(fmt.Sprint(i)), fmt.Sprint(i), false)
	}
	e, err := l.Reload(testCtx(t), "t", "s", "k", time.Minute, value("r"))
	if err != nil || string(e.Value) != "r" {
		t.Fatalf("Reload = %q, %v", e.Value, err)
	}
	if err := l.Invalidate(testCtx(t), "t", "s"); !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("Invalidate: %v, want kv.ErrUnavailable", err)
	}
	// Every lookup failed and degraded; nothing was put.
	wantStats(t, l, cache.Stats{Misses: 3, Bypasses: 1, Loads: 4, Errors: 5})
	if c := d.calls.Load(); c != 5 {
		t.Fatalf("backend called %d times, want 5 (4 lookups, 1 bump, no puts)", c)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 5 || !errors.Is(reported[0], kv.ErrUnavailable) {
		t.Fatalf("OnError got %v", reported)
	}
}

// TestLoaderRedisDown: with a real Redis killed under it, the Loader keeps
// answering through load, and caches again once Redis is back.
func TestLoaderRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l := newLoader(t, "test", cache.NewRedis(dialNative(t, srv.URL()), cache.RedisOptions{Prefix: randomPrefix()}), cache.LoaderOptions{})
	mustLoad(t, l, "t", "s", "k", time.Minute, value("v1"), "v1", false)
	mustLoad(t, l, "t", "s", "k", time.Minute, value("-"), "v1", true)
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()
	e, hit, err := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, value("computed"))
	if err != nil || hit || string(e.Value) != "computed" {
		t.Fatalf("with Redis down: %q, hit %v, %v; want computed by load", e.Value, hit, err)
	}
	if s := l.Stats(); s.Errors != 1 {
		t.Fatalf("Stats.Errors = %d, want 1", s.Errors)
	}
	srv.Restart(t) // empty: it persists nothing
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, value("v2"))
		if err != nil {
			t.Fatal(err)
		}
		if _, hit, _ := l.GetOrLoad(ctx, "t", "s", "k", time.Minute, value("-")); hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hit 20s after Redis came back: %+v", l.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoaderAcrossInstances is the staleness proof end to end: two
// Loaders over two native clients (two instances) of one Redis; an
// Invalidate on one makes the next GetOrLoad on the other load afresh,
// every time.
func TestLoaderAcrossInstances(t *testing.T) {
	url := redistest.URL(t)
	p := randomPrefix()
	a := newLoader(t, "test", cache.NewRedis(dialNative(t, url), cache.RedisOptions{Prefix: p}), cache.LoaderOptions{})
	b := newLoader(t, "test", cache.NewRedis(dialNative(t, url), cache.RedisOptions{Prefix: p}), cache.LoaderOptions{})
	ctx := testCtx(t)
	for i := range 100 {
		v := fmt.Sprint("v", i)
		mustLoad(t, a, "t", "s", "k", time.Minute, value(v), v, false)
		mustLoad(t, b, "t", "s", "k", time.Minute, value("-"), v, true)
		mustLoad(t, b, "t", "s", "k", time.Minute, value("-"), v, true)
		if err := a.Invalidate(ctx, "t", "s"); err != nil {
			t.Fatal(err)
		}
		// At once, not eventually.
		mustLoad(t, b, "t", "s", "k", time.Minute, value("fresh"), "fresh", false)
		if err := b.Invalidate(ctx, "t", "s"); err != nil {
			t.Fatal(err)
		}
	}
}
