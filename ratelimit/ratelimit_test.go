package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/ratelimit"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

const restToken = "ratelimit-test-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

func dialNative(t *testing.T, url string) *native.Client {
	return kvtest.Native(t, native.Options{URL: url})
}

func newREST(t *testing.T, base string) *rest.Client { return kvtest.REST(t, base, restToken) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startREST serves the REST API over the Redis at url for t.
func startREST(t *testing.T, url string) string {
	t.Helper()
	base, _ := restserver.StartTest(t, url, restToken)
	return base
}

func TestMemoryConformance(t *testing.T) {
	storetest.RunRateLimiter(t, func(t *testing.T) (agentapi.RateLimiter, storetest.Clock) {
		clk := storetest.NewManualClock(time.Time{})
		return ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clk.Now}), clk
	})
}

func TestRedisConformance(t *testing.T) {
	url := redistest.URL(t)
	base := startREST(t, url)
	transports := []struct {
		name   string
		client func(t *testing.T) kv.Client
	}{
		{"native", func(t *testing.T) kv.Client { return dialNative(t, url) }},
		{"rest", func(t *testing.T) kv.Client { return newREST(t, base) }},
	}
	for _, tr := range transports {
		for _, cache := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/denycache=%v", tr.name, cache), func(t *testing.T) {
				storetest.RunRateLimiter(t, func(t *testing.T) (agentapi.RateLimiter, storetest.Clock) {
					clk := storetest.NewManualClock(time.Time{})
					return ratelimit.NewRedis(tr.client(t), ratelimit.RedisOptions{Now: clk.Now, DisableDenyCache: !cache}), clk
				})
			})
		}
	}
}

// TestRedisClusterConformance: the suite against a three-master Redis
// Cluster. Each decision is a one-key script, so it runs on whichever
// node serves the key.
func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	for _, cache := range []bool{true, false} {
		t.Run(fmt.Sprintf("denycache=%v", cache), func(t *testing.T) {
			storetest.RunRateLimiter(t, func(t *testing.T) (agentapi.RateLimiter, storetest.Clock) {
				c := dialNative(t, url)
				if !c.Cluster() {
					t.Fatal("client of a cluster: Cluster() = false")
				}
				clk := storetest.NewManualClock(time.Time{})
				return ratelimit.NewRedis(c, ratelimit.RedisOptions{Now: clk.Now, DisableDenyCache: !cache}), clk
			})
		})
	}
}

// TestRedisMatchesMemory drives Memory and Redis (without deny cache, so
// that every decision is the script's) with the same random sequence of
// requests, limits and time steps, and wants identical decisions: the Lua
// script and the Go rule must not drift apart.
func TestRedisMatchesMemory(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	mem := ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clk.Now})
	red := ratelimit.NewRedis(dialNative(t, redistest.URL(t)), ratelimit.RedisOptions{Now: clk.Now, DisableDenyCache: true})
	cached := ratelimit.NewRedis(dialNative(t, redistest.URL(t)), ratelimit.RedisOptions{Now: clk.Now})
	limits := []agentapi.RateLimit{
		// Intervals are whole µs, so Memory's ns and Redis's µs agree.
		{Rate: 4, Period: time.Second, Burst: 4},       // 250ms
		{Rate: 8, Period: 10 * time.Second, Burst: 0},  // 1.25s
		{Rate: 1000, Period: time.Hour, Burst: 25},     // 3.6s
		{Rate: 60, Period: time.Minute, Burst: 10},     // 1s
		{Rate: 100000, Period: time.Second, Burst: 50}, // 10µs
		{Rate: 7, Period: 7 * time.Millisecond, Burst: 3},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	prefix := fmt.Sprintf("rlx:%d:", time.Now().UnixNano())
	for i := range 3000 {
		key := prefix + "{t:x}:rl:" + fmt.Sprint(rng.IntN(4))
		l := limits[rng.IntN(len(limits))]
		if rng.IntN(3) > 0 { // mostly one limit per key, sometimes another
			l = limits[len(key)%len(limits)]
		}
		cost := rng.IntN(4)
		if rng.IntN(20) == 0 {
			cost = 30
		}
		dm, err := mem.Allow(ctx, key, l, cost)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := red.Allow(ctx, key, l, cost)
		if err != nil {
			t.Fatal(err)
		}
		if dm != dr {
			t.Fatalf("step %d, %s %+v cost %d:\nmemory %+v\nredis  %+v", i, key, l, cost, dm, dr)
		}
		// The deny cache over its own copy of the keys answers the same.
		dc, err := cached.Allow(ctx, "c"+key, l, cost)
		if err != nil {
			t.Fatal(err)
		}
		if dc != dr {
			t.Fatalf("step %d, %s %+v cost %d:\ndeny cache %+v\nredis      %+v", i, key, l, cost, dc, dr)
		}
		clk.Advance(time.Duration(rng.IntN(400_000)) * time.Microsecond)
	}
	if s := cached.Stats(); s.LocalDenials == 0 {
		t.Errorf("deny cache never used: %+v", s)
	}
}

func TestIntervalRoundsUp(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	m := ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clk.Now})
	l := agentapi.RateLimit{Rate: 3, Period: time.Nanosecond * 10, Burst: 1} // 3.33ns → 4ns
	if d, _ := m.Allow(ctx, "k", l, 1); !d.Allowed || d.ResetAfter != 4 {
		t.Fatalf("first: %+v, want allowed with ResetAfter 4ns", d)
	}
	clk.Advance(3)
	if d, _ := m.Allow(ctx, "k", l, 1); d.Allowed || d.RetryAfter != 1 {
		t.Fatalf("after 3ns: %+v, want denied with RetryAfter 1ns", d)
	}
	// A burst spanning more than ten years is refused.
	_, err := m.Allow(ctx, "k", agentapi.RateLimit{Rate: 1, Period: 24 * time.Hour, Burst: 4000}, 1)
	if agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Fatalf("burst of 4000 days: %v, want KindInvalid", err)
	}
}

// TestMemoryBounded checks the documented memory bound: keys back to a
// full burst are forgotten, and the map never holds much more than twice
// the live keys.
func TestMemoryBounded(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	m := ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clk.Now})
	l := agentapi.RateLimit{Rate: 1, Period: time.Second, Burst: 1} // every key lives 1s
	const live, rounds = 5000, 20
	peak := 0
	for round := range rounds {
		for i := range live {
			if _, err := m.Allow(ctx, fmt.Sprintf("r%d:k%d", round, i), l, 1); err != nil {
				t.Fatal(err)
			}
		}
		peak = max(peak, m.Len())
		clk.Advance(2 * time.Second) // every key of this round expires
	}
	// 100,000 keys were used, at most 5,000 alive at a time.
	if limit := 2*live + 64*64; peak > limit {
		t.Fatalf("peak %d entries with %d live keys, want at most %d", peak, live, limit)
	}
	// A read of an expired key drops it.
	before := m.Len()
	for i := range live {
		m.Allow(ctx, fmt.Sprintf("r%d:k%d", rounds-1, i), l, 0)
	}
	if after := m.Len(); after != before-live {
		t.Errorf("%d entries after peeking at %d expired keys, want %d", after, live, before-live)
	}
	t.Logf("peak %d entries for %d live keys", peak, live)
}

// TestDenyCacheSavesRoundTrips: a key far over its limit costs one round
// trip per admission per instance, not one per request, even with many
// goroutines hammering it when it admits again; the cache stays within its
// size.
func TestDenyCacheSavesRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	r := ratelimit.NewRedis(dialNative(t, redistest.URL(t)), ratelimit.RedisOptions{Now: clk.Now, DenyCacheSize: 64})
	prefix := fmt.Sprintf("rlc:%d:", time.Now().UnixNano())
	l := agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: 2}
	hot := prefix + "{t:a}:rl:hot"
	var admitted atomic.Int64
	for range 60 { // 60 steps of 1s: 6s per request → 10 admissions + the burst
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					d, err := r.Allow(ctx, hot, l, 1)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		clk.Advance(time.Second)
	}
	s := r.Stats()
	if admitted.Load() != 2+9 {
		t.Errorf("admitted %d, want 11", admitted.Load())
	}
	// The first step: the burst and a few denials until one is kept (the
	// goroutines start together); then one admission every 6s, whose
	// reply is kept at once: the rest are local.
	t.Logf("24,000 requests: %+v", s)
	if s.Evals > 2+16+9 || s.LocalDenials < 24000-(2+16+9) {
		t.Errorf("stats %+v: want at most %d round trips for 24,000 requests", s, 2+16+9)
	}
	// Many denied keys: the cache stays at its size.
	for i := range 1000 {
		k := fmt.Sprintf("%s{t:a}:rl:many%d", prefix, i)
		r.Allow(ctx, k, l, 2)
		r.Allow(ctx, k, l, 1)
	}
	if n := r.Stats().DenyCacheEntries; n > 64 {
		t.Errorf("deny cache holds %d entries, size 64", n)
	}
}

// flakyKV wraps a kv.Client; while fail is set, Eval waits for release and
// then fails as an unreachable server would.
type flakyKV struct {
	kv.Client
	mu      sync.Mutex
	fail    bool
	release chan struct{}
	evals   atomic.Int64
}

func (f *flakyKV) Eval(ctx context.Context, s *kv.Script, keys []string, args ...string) (kv.Value, error) {
	f.evals.Add(1)
	f.mu.Lock()
	fail, release := f.fail, f.release
	f.mu.Unlock()
	if fail {
		<-release
		return kv.Value{}, kv.Unavailable("flaky", errors.New("connection refused"))
	}
	return f.Client.Eval(ctx, s, keys, args...)
}

// TestDenyCacheWaitersShareFailure: requests waiting for the one request
// that asks Redis about a hot key fail with its error instead of each
// trying in turn (which, over a client without a breaker, would queue
// them behind one timeout each).
func TestDenyCacheWaitersShareFailure(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	fk := &flakyKV{Client: dialNative(t, redistest.URL(t))}
	r := ratelimit.NewRedis(fk, ratelimit.RedisOptions{Now: clk.Now})
	key := fmt.Sprintf("rlw:%d:{t:a}:rl:hot", time.Now().UnixNano())
	l := agentapi.RateLimit{Rate: 1, Period: time.Minute, Burst: 1}
	if d, err := r.Allow(ctx, key, l, 1); err != nil || !d.Allowed {
		t.Fatalf("first: %+v, %v", d, err)
	}
	if d, _ := r.Allow(ctx, key, l, 1); d.Allowed || fk.evals.Load() != 1 {
		t.Fatalf("second: %+v after %d evals, want a local denial", d, fk.evals.Load())
	}
	clk.Advance(time.Minute) // the key admits again: the next request leads
	release := make(chan struct{})
	fk.mu.Lock()
	fk.fail, fk.release = true, release
	fk.mu.Unlock()
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := r.Allow(ctx, key, l, 1)
			errs <- err
		}()
	}
	for fk.evals.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the others queue up behind the leader
	close(release)
	for range n {
		if err := <-errs; !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("got %v, want the leader's unavailable error", err)
		}
	}
	if got := fk.evals.Load(); got != 2 {
		t.Fatalf("%d evals, want 2 (one before, one leader)", got)
	}
	fk.mu.Lock()
	fk.fail = false
	fk.mu.Unlock()
	if d, err := r.Allow(ctx, key, l, 1); err != nil || !d.Allowed {
		t.Fatalf("after recovery: %+v, %v; want admitted", d, err)
	}
}
