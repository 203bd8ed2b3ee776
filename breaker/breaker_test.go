package breaker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

const token = "breaker-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newREST(t *testing.T, base string) *rest.Client { return kvtest.REST(t, base, token) }

var prefixes atomic.Int64

// prefix is a key prefix no other registry of this test binary uses.
func prefix() string {
	return fmt.Sprintf("bt%d-%d:", time.Now().UnixNano(), prefixes.Add(1))
}

func dialNative(t *testing.T, url string) *native.Client {
	t.Helper()
	c := kvtest.Native(t, native.Options{URL: url})
	if !c.Caching() {
		t.Fatalf("native client without client-side caching; these tests need it")
	}
	return c
}

func TestConformanceLocal(t *testing.T) {
	storetest.RunBreaker(t, func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry {
		return breaker.NewRegistry(s, breaker.Options{Clock: clock})
	})
}

func TestConformanceNative(t *testing.T) {
	c := dialNative(t, redistest.URL(t))
	storetest.RunBreaker(t, func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry {
		return breaker.NewRegistry(s, breaker.Options{KV: c, Prefix: prefix(), Clock: clock})
	})
}

// TestConformanceCluster: the suite against a three-master Redis Cluster.
// A breaker is one hash, changed by one-key scripts, so it runs on
// whichever node serves its key.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	c := dialNative(t, redistest.ClusterURL(t))
	if !c.Cluster() {
		t.Fatal("client of a cluster: Cluster() = false")
	}
	storetest.RunBreaker(t, func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry {
		return breaker.NewRegistry(s, breaker.Options{KV: c, Prefix: prefix(), Clock: clock})
	})
}

func TestConformanceREST(t *testing.T) {
	base, _ := restserver.StartTest(t, redistest.URL(t), token)
	c := newREST(t, base)
	storetest.RunBreaker(t, func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry {
		return breaker.NewRegistry(s, breaker.Options{KV: c, Prefix: prefix(), Clock: clock})
	})
}

// fakeClock is a settable clock shared by the instances of a test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var settings = breaker.Settings{FailureThreshold: 3, SuccessThreshold: 2, Timeout: 10 * time.Second, MaxProbes: 1}

var errFail = errors.New("dependency failed")

// call makes one call on b ending with outcome; it returns Allow's error.
func call(ctx context.Context, b *breaker.Breaker, outcome error) error {
	done, err := b.Allow(ctx)
	if err != nil {
		return err
	}
	done(outcome)
	return nil
}

func mustCall(t *testing.T, b *breaker.Breaker, outcome error) {
	t.Helper()
	if err := call(testCtx(t), b, outcome); err != nil {
		t.Fatalf("%s: Allow: %v", b.Name(), err)
	}
}

// waitFor is testproc.WaitFor: it returns how long cond took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testproc.WaitFor(t, within, what, cond)
}

func refuses(ctx context.Context, b *breaker.Breaker) bool {
	done, err := b.Allow(ctx)
	if err == nil {
		done(context.Canceled) // count nothing
		return false
	}
	return errors.Is(err, agentapi.ErrBreakerOpen)
}

func admits(ctx context.Context, b *breaker.Breaker) bool {
	done, err := b.Allow(ctx)
	if err == nil {
		done(context.Canceled)
		return true
	}
	return false
}

// transport is how the two instances of a shared test reach one Redis.
type transport struct {
	name string
	// within bounds how long a change made by one instance may take to be
	// seen by the other.
	within time.Duration
	// clients returns two separate clients to one fresh Redis.
	clients func(t *testing.T) (kv.Client, kv.Client)
}

var transports = []transport{
	// Generous on a loaded machine; typical figures are logged (≈1ms
	// native, ≈0.5s REST).
	{"native", time.Second, func(t *testing.T) (kv.Client, kv.Client) {
		u := redistest.URL(t)
		return dialNative(t, u), dialNative(t, u)
	}},
	{"rest", breaker.DefaultLocalCacheTTL + time.Second, func(t *testing.T) (kv.Client, kv.Client) {
		base, _ := restserver.StartTest(t, redistest.URL(t), token)
		return newREST(t, base), newREST(t, base)
	}},
}

// TestSharedAcrossInstances runs two instances over separate clients to one
// Redis: what one does to a breaker the other sees.
func TestSharedAcrossInstances(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			ca, cb := tr.clients(t)
			clock := newClock()
			p := prefix()
			ra := breaker.NewRegistry(settings, breaker.Options{KV: ca, Prefix: p, Clock: clock.Now})
			rb := breaker.NewRegistry(settings, breaker.Options{KV: cb, Prefix: p, Clock: clock.Now})
			a, b := ra.Get("dep"), rb.Get("dep")
			mustCall(t, a, nil)
			mustCall(t, b, nil) // b has read (and cached) the closed state

			// Failures on A open it; B refuses soon after.
			for range settings.FailureThreshold {
				mustCall(t, a, errFail)
			}
			if !refuses(ctx, a) {
				t.Fatal("A admits a call right after opening the breaker")
			}
			took := waitFor(t, tr.within, "B refuses after A opened the breaker", func() bool { return refuses(ctx, b) })
			t.Logf("%s: B refused %v after A opened the breaker", tr.name, took)
			if st := b.Status(); st.State != agentapi.BreakerOpen || st.Failures != settings.FailureThreshold || st.Mode != "shared" {
				t.Errorf("B's status %+v, want open after %d failures, shared", st, settings.FailureThreshold)
			}
			err := call(ctx, b, nil)
			if ra := breaker.RetryAfter(err); ra <= 0 || ra > settings.Timeout {
				t.Errorf("B's RetryAfter = %v, want in (0, %v]", ra, settings.Timeout)
			}

			// After the timeout: one probe across both instances.
			clock.Advance(settings.Timeout)
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				probes  []func(error)
				refused int
			)
			start := make(chan struct{})
			for i := range 16 {
				inst := a
				if i%2 == 1 {
					inst = b
				}
				wg.Go(func() {
					<-start
					done, err := inst.Allow(ctx)
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						probes = append(probes, done)
					} else if errors.Is(err, agentapi.ErrBreakerOpen) {
						refused++
					} else {
						t.Errorf("Allow: %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			if len(probes) != 1 || refused != 15 {
				t.Fatalf("16 calls on two instances after the timeout: %d probes, %d refused; want 1 probe", len(probes), refused)
			}
			probes[0](nil)

			// The second successful probe, on B, closes it for both.
			var second func(error)
			waitFor(t, tr.within, "B gets the second probe", func() bool {
				done, err := b.Allow(ctx)
				if err == nil {
					second = done
					return true
				}
				return false
			})
			second(nil)
			if s := b.State(); s != agentapi.BreakerClosed {
				t.Fatalf("B after two successful probes: %s, want closed", s)
			}
			waitFor(t, tr.within, "A sees the breaker closed", func() bool { return a.State() == agentapi.BreakerClosed && admits(ctx, a) })

			// Reset on B closes it for A.
			for range settings.FailureThreshold {
				mustCall(t, a, errFail)
			}
			waitFor(t, tr.within, "B sees it open", func() bool { return refuses(ctx, b) })
			if err := rb.Reset(ctx, "dep"); err != nil {
				t.Fatalf("Reset on B: %v", err)
			}
			if !admits(ctx, b) {
				t.Fatal("B refuses right after its own Reset")
			}
			took = waitFor(t, tr.within, "A sees B's Reset", func() bool { return admits(ctx, a) })
			t.Logf("%s: A saw B's Reset after %v", tr.name, took)
			// The failures that opened it are gone: threshold-1 more keep it closed.
			for range settings.FailureThreshold - 1 {
				mustCall(t, a, errFail)
			}
			if s := a.State(); s != agentapi.BreakerClosed {
				t.Errorf("after a Reset and %d failures: %s, want closed", settings.FailureThreshold-1, s)
			}
			// A success on B resets A's consecutive failures.
			waitFor(t, tr.within, "B sees A's failures", func() bool { return b.Status().Failures == settings.FailureThreshold-1 })
			mustCall(t, b, nil)
			waitFor(t, tr.within, "A sees B's success", func() bool { return a.Status().Failures == 0 })
			mustCall(t, a, errFail)
			if s := a.State(); s != agentapi.BreakerClosed {
				t.Errorf("one failure after B's success: %s, want closed", s)
			}
		})
	}
}

// commandCalls sums the calls of every command Redis has run, except the
// INFO used to ask.
func commandCalls(t *testing.T, c kv.Client) int64 {
	t.Helper()
	v, err := c.Do(testCtx(t), "INFO", "commandstats")
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	text, err := v.Text()
	if err != nil {
		t.Fatalf("INFO reply: %v", err)
	}
	var total int64
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cmdstat_") || strings.HasPrefix(line, "cmdstat_info:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		n, _, _ := strings.Cut(rest, ",")
		k, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			t.Fatalf("INFO line %q: %v", line, err)
		}
		total += k
	}
	return total
}

// TestNoRoundTripWhenHealthy: a closed breaker whose calls succeed costs no
// Redis command per call over native (client-side cache), and about one
// read per LocalCacheTTL over REST.
func TestNoRoundTripWhenHealthy(t *testing.T) {
	const n = 1000
	t.Run("native", func(t *testing.T) {
		t.Parallel()
		u := redistest.Start(t, redistest.Options{}).URL()
		c := dialNative(t, u)
		admin, err := native.Dial(testCtx(t), native.Options{URL: u, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		r := breaker.NewRegistry(settings, breaker.Options{KV: c, Prefix: prefix()})
		b := r.Get("dep")
		mustCall(t, b, nil) // the first read fills the cache
		// One failure and the success that clears it cost a round trip
		// each; afterwards the count is known to be zero again.
		mustCall(t, b, errFail)
		mustCall(t, b, nil)
		mustCall(t, b, nil)
		before := commandCalls(t, admin)
		for range n {
			mustCall(t, b, nil)
		}
		if err := b.Do(testCtx(t), func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
		extra := commandCalls(t, admin) - before
		t.Logf("native: %d successful calls ran %d Redis commands", n+1, extra)
		if extra > 5 {
			t.Errorf("%d successful calls on a closed breaker ran %d Redis commands, want about 0", n+1, extra)
		}
	})
	t.Run("rest", func(t *testing.T) {
		t.Parallel()
		base, srv := restserver.StartTest(t, redistest.URL(t), token)
		c := newREST(t, base)
		r := breaker.NewRegistry(settings, breaker.Options{KV: c, Prefix: prefix()})
		b := r.Get("dep")
		mustCall(t, b, nil)
		before, start := srv.Requests(), time.Now()
		for range n {
			mustCall(t, b, nil)
		}
		reqs, el := srv.Requests()-before, time.Since(start)
		allowed := int64(el/breaker.DefaultLocalCacheTTL) + 2
		t.Logf("rest: %d successful calls in %v sent %d requests", n, el, reqs)
		if reqs > allowed {
			t.Errorf("%d successful calls in %v sent %d requests, want at most %d (one read per %v)",
				n, el, reqs, allowed, breaker.DefaultLocalCacheTTL)
		}
	})
}

// TestFallbackWhenRedisDown: with Redis stopped, breakers keep working on
// local state and no call waits for a timeout; once Redis is back they
// share their state again.
func TestFallbackWhenRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testCtx(t)
	newSwitch := func() *kv.Switch {
		ep := kv.Endpoint{
			Name: "native",
			Addr: srv.Addr(),
			Dial: func(ctx context.Context) (kv.Client, error) {
				return native.Dial(ctx, native.Options{URL: srv.URL(), ConnectTimeout: 2 * time.Second})
			},
			Describe: func(c kv.Client) map[string]string {
				return map[string]string{"client_cache": strconv.FormatBool(c.(*native.Client).Caching())}
			},
		}
		s := kv.NewSwitch(ctx, []kv.Endpoint{ep}, kv.SwitchOptions{ProbeInterval: 50 * time.Millisecond, ProbeTimeout: time.Second})
		t.Cleanup(func() { s.Close() })
		return s
	}
	clock := newClock()
	p := prefix()
	var transitions sync.Map
	opts := func(c kv.Client, inst string) breaker.Options {
		return breaker.Options{KV: c, Prefix: p, Clock: clock.Now, RetryInterval: 50 * time.Millisecond,
			OnTransition: func(name string, from, to agentapi.BreakerState) {
				transitions.Store(inst+":"+string(from)+"->"+string(to), true)
			}}
	}
	ra := breaker.NewRegistry(settings, opts(newSwitch(), "a"))
	rb := breaker.NewRegistry(settings, opts(newSwitch(), "b"))
	a, b := ra.Get("dep"), rb.Get("dep")
	mustCall(t, a, nil)
	mustCall(t, b, nil)
	if m := a.Status().Mode; m != "shared" {
		t.Fatalf("mode before the outage = %q, want shared", m)
	}

	srv.Stop(t)
	var slowest time.Duration
	timed := func(f func()) {
		start := time.Now()
		f()
		slowest = max(slowest, time.Since(start))
	}
	for _, inst := range []*breaker.Breaker{a, b} {
		for range settings.FailureThreshold {
			timed(func() { mustCall(t, inst, errFail) })
		}
		for range 20 {
			timed(func() {
				if !refuses(ctx, inst) {
					t.Errorf("%s: admits a call after %d local failures", inst.Name(), settings.FailureThreshold)
				}
			})
		}
		if st := inst.Status(); st.Mode != "fallback" || st.State != agentapi.BreakerOpen {
			t.Errorf("status during the outage %+v, want open, fallback", st)
		}
	}
	// Local timeouts work too.
	clock.Advance(settings.Timeout)
	timed(func() { mustCall(t, a, nil) })
	timed(func() { mustCall(t, a, nil) })
	if s := a.State(); s != agentapi.BreakerClosed {
		t.Errorf("A after two local probes: %s, want closed", s)
	}
	t.Logf("slowest call while Redis was down: %v", slowest)
	// A call that waited for Redis would take the 2s connect timeout.
	if slowest > 500*time.Millisecond {
		t.Errorf("a call took %v while Redis was down: it waited for Redis instead of failing over", slowest)
	}

	srv.Restart(t)
	// Redis came back empty: the shared breaker is closed, and B (open
	// locally) follows it again.
	took := waitFor(t, 5*time.Second, "B uses the shared state again", func() bool {
		return b.Status().Mode == "shared" && admits(ctx, b)
	})
	t.Logf("B back on the shared state %v after the restart", took)
	waitFor(t, 5*time.Second, "A uses the shared state again", func() bool { return a.Status().Mode == "shared" })
	for range settings.FailureThreshold {
		mustCall(t, a, errFail)
	}
	waitFor(t, time.Second, "B sees A open the breaker", func() bool { return refuses(ctx, b) })
	for _, want := range []string{"a:closed->open", "a:open->half_open", "a:half_open->closed", "b:closed->open", "b:open->closed"} {
		if _, ok := transitions.Load(want); !ok {
			var got []string
			transitions.Range(func(k, _ any) bool { got = append(got, k.(string)); return true })
			t.Errorf("transition %s not reported; got %v", want, got)
		}
	}
}

func TestOnTransitionAndLog(t *testing.T) {
	clock := newClock()
	var mu sync.Mutex
	var got []string
	r := breaker.NewRegistry(settings, breaker.Options{Clock: clock.Now,
		OnTransition: func(name string, from, to agentapi.BreakerState) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%s:%s->%s", name, from, to))
			mu.Unlock()
		}})
	b := r.Get("dep")
	for range settings.FailureThreshold {
		mustCall(t, b, errFail)
	}
	clock.Advance(settings.Timeout)
	mustCall(t, b, errFail)
	clock.Advance(settings.Timeout)
	mustCall(t, b, nil)
	mustCall(t, b, nil)
	want := []string{"dep:closed->open", "dep:open->half_open", "dep:half_open->open", "dep:open->half_open", "dep:half_open->closed"}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

func TestDisabledOption(t *testing.T) {
	r := breaker.NewRegistry(settings, breaker.Options{Disabled: true})
	if r.Enabled() {
		t.Fatal("Enabled() with Options.Disabled")
	}
	b := r.Get("dep")
	for range 10 {
		mustCall(t, b, errFail)
	}
	if s := b.State(); s != agentapi.BreakerClosed {
		t.Errorf("state %s, want closed", s)
	}
}

func TestDefaultsAndIsFailure(t *testing.T) {
	errClient := errors.New("bad request")
	clock := newClock() // time stands still: the refusal's wait is exactly the timeout
	r := breaker.NewRegistry(breaker.Settings{}, breaker.Options{Clock: clock.Now, IsFailure: func(err error) bool { return !errors.Is(err, errClient) }})
	if s := r.Settings(); s.FailureThreshold != 5 || s.SuccessThreshold != 2 || s.Timeout != 30*time.Second || s.MaxProbes != 1 {
		t.Errorf("default settings %+v", s)
	}
	b := r.Get("dep")
	for range 4 {
		mustCall(t, b, errFail)
	}
	mustCall(t, b, errClient) // the dependency answered: a success
	for range 4 {
		mustCall(t, b, errFail)
	}
	if s := b.State(); s != agentapi.BreakerClosed {
		t.Fatalf("state %s, want closed", s)
	}
	mustCall(t, b, errFail)
	err := call(testCtx(t), b, nil)
	if !errors.Is(err, agentapi.ErrBreakerOpen) || breaker.RetryAfter(err) != 30*time.Second {
		t.Errorf("refusal %v (retry after %v), want ErrBreakerOpen after 30s", err, breaker.RetryAfter(err))
	}
}

func TestDoPanicCountsAsFailure(t *testing.T) {
	r := breaker.NewRegistry(breaker.Settings{FailureThreshold: 1}, breaker.Options{})
	b := r.Get("dep")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic was not propagated")
			}
		}()
		b.Do(testCtx(t), func(context.Context) error { panic("boom") })
	}()
	if s := b.State(); s != agentapi.BreakerOpen {
		t.Errorf("state after a panic %s, want open", s)
	}
}

func TestStatusJSON(t *testing.T) {
	clock := newClock()
	r := breaker.NewRegistry(settings, breaker.Options{Clock: clock.Now})
	for range settings.FailureThreshold {
		mustCall(t, r.Get("dep"), errFail)
	}
	clock.Advance(2500 * time.Millisecond)
	raw, err := json.Marshal(r.List())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0]["name"] != "dep" || got[0]["state"] != "open" || got[0]["failures"] != 3.0 ||
		got[0]["retry_after_seconds"] != 7.5 || got[0]["mode"] != "local" || got[0]["opened_at"] == nil {
		t.Errorf("List as JSON: %s", raw)
	}
}
