package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/ratelimit"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

// fakeShared is a shared limiter whose error the test sets; it admits
// everything otherwise. block, when set, holds each call until closed.
type fakeShared struct {
	mu    sync.Mutex
	err   error
	block chan struct{}
	calls atomic.Int64
}

func (f *fakeShared) set(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeShared) Allow(ctx context.Context, key string, l agentapi.RateLimit, cost int) (agentapi.RateDecision, error) {
	f.calls.Add(1)
	f.mu.Lock()
	err, block := f.err, f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	if err != nil {
		return agentapi.RateDecision{}, err
	}
	return agentapi.RateDecision{Allowed: true, Limit: l, Remaining: 1000}, nil
}

var fbLimit = agentapi.RateLimit{Rate: 1, Period: time.Hour, Burst: 1}

func newFB(t *testing.T, policy ratelimit.Policy) (*ratelimit.Fallback, *fakeShared, *storetest.ManualClock) {
	t.Helper()
	clk := storetest.NewManualClock(time.Time{})
	sh := &fakeShared{}
	fb := ratelimit.NewFallback(sh, ratelimit.NewMemory(ratelimit.MemoryOptions{Now: clk.Now}),
		ratelimit.FallbackOptions{Policy: policy, Backoff: time.Second, Now: clk.Now})
	return fb, sh, clk
}

// isShared reports whether d came from fakeShared (which reports 1000 left).
func isShared(d agentapi.RateDecision) bool { return d.Remaining == 1000 }

func TestFallbackFailOpen(t *testing.T) {
	ctx := testCtx(t)
	fb, sh, clk := newFB(t, ratelimit.FailOpen)
	d, err := fb.Allow(ctx, "k", fbLimit, 1)
	if err != nil || !isShared(d) {
		t.Fatalf("healthy: %+v, %v; want the shared decision", d, err)
	}
	if s := fb.Status(); s.Using != "shared" || s.Policy != "fail_open" || s.Fallbacks != 0 || s.LastError != "" {
		t.Fatalf("healthy status %+v", s)
	}

	sh.set(kv.Unavailable("test", errors.New("connection refused")))
	d, err = fb.Allow(ctx, "k", fbLimit, 1)
	if err != nil || isShared(d) || !d.Allowed {
		t.Fatalf("first failure: %+v, %v; want a local admission", d, err)
	}
	// The local limiter applies the same limit.
	if d, _ := fb.Allow(ctx, "k", fbLimit, 1); d.Allowed || d.RetryAfter != time.Hour {
		t.Fatalf("second local request: %+v, want denied by the local limiter", d)
	}
	s := fb.Status()
	if s.Using != "local" || s.Fallbacks != 1 || s.LastError == "" || !s.LastErrorAt.Equal(clk.Now()) || s.LocalDecisions != 2 {
		t.Fatalf("status after failure %+v", s)
	}
	calls := sh.calls.Load()
	for range 100 {
		fb.Allow(ctx, "other", fbLimit, 1)
		clk.Advance(9 * time.Millisecond)
	}
	if n := sh.calls.Load(); n != calls {
		t.Fatalf("shared limiter called %d times during the backoff", n-calls)
	}

	// After the backoff: one probe; it fails, the backoff starts over.
	clk.Advance(100 * time.Millisecond)
	fb.Allow(ctx, "k2", fbLimit, 1)
	if n := sh.calls.Load(); n != calls+1 {
		t.Fatalf("%d shared calls after the backoff, want 1 probe", n-calls)
	}
	fb.Allow(ctx, "k2", fbLimit, 1)
	if n := sh.calls.Load(); n != calls+1 {
		t.Fatalf("failed probe did not restart the backoff")
	}
	if s := fb.Status(); s.Fallbacks != 1 || s.Using != "local" {
		t.Fatalf("status after a failed probe %+v, want still one fallback", s)
	}

	// Recovery: while one probe is in flight the others stay local; when it
	// succeeds everything goes back to the shared limiter by itself.
	sh.set(nil)
	block := make(chan struct{})
	sh.mu.Lock()
	sh.block = block
	sh.mu.Unlock()
	clk.Advance(time.Second)
	probeDone := make(chan agentapi.RateDecision)
	go func() {
		d, _ := fb.Allow(ctx, "probe", fbLimit, 1)
		probeDone <- d
	}()
	for sh.calls.Load() != calls+2 {
		time.Sleep(time.Millisecond)
	}
	for i := range 20 {
		d, err := fb.Allow(ctx, fmt.Sprintf("during-probe-%d", i), fbLimit, 1)
		if err != nil || isShared(d) {
			t.Fatalf("during the probe: %+v, %v; want local", d, err)
		}
	}
	sh.mu.Lock()
	sh.block = nil
	sh.mu.Unlock()
	close(block)
	if d := <-probeDone; !isShared(d) {
		t.Fatalf("probe decision %+v, want the shared one", d)
	}
	if d, _ := fb.Allow(ctx, "k", fbLimit, 1); !isShared(d) {
		t.Fatalf("after recovery: %+v, want the shared decision", d)
	}
	if s := fb.Status(); s.Using != "shared" || s.LastError == "" {
		t.Fatalf("status after recovery %+v, want shared with the last error kept", s)
	}
}

func TestFallbackFailClosed(t *testing.T) {
	ctx := testCtx(t)
	fb, sh, clk := newFB(t, ratelimit.FailClosed)
	sh.set(kv.Unavailable("test", errors.New("connection refused")))
	for i := range 3 {
		_, err := fb.Allow(ctx, "k", fbLimit, 1)
		if agentapi.KindOf(err) != agentapi.KindUnavailable {
			t.Fatalf("call %d: %v, want KindUnavailable", i, err)
		}
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("call %d: %v does not wrap the shared limiter's error", i, err)
		}
	}
	if n := sh.calls.Load(); n != 1 {
		t.Fatalf("%d shared calls, want 1 (the rest within the backoff)", n)
	}
	if s := fb.Status(); s.Using != "none" || s.Policy != "fail_closed" || s.Unavailable != 3 || s.LocalDecisions != 0 {
		t.Fatalf("status %+v", s)
	}
	sh.set(nil)
	clk.Advance(time.Second)
	if d, err := fb.Allow(ctx, "k", fbLimit, 1); err != nil || !isShared(d) {
		t.Fatalf("after the backoff: %+v, %v", d, err)
	}
	if s := fb.Status(); s.Using != "shared" {
		t.Fatalf("status %+v, want shared", s)
	}
}

// TestFallbackPassesThrough: errors that say nothing about the shared
// limiter's health do not switch to the local one.
func TestFallbackPassesThrough(t *testing.T) {
	fb, sh, _ := newFB(t, ratelimit.FailOpen)
	sh.set(agentapi.E("test", agentapi.KindInvalid, errors.New("bad limit")))
	if _, err := fb.Allow(testCtx(t), "k", fbLimit, 1); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Fatalf("invalid: %v, want it returned", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sh.set(fmt.Errorf("wrapped: %w", context.Canceled))
	if _, err := fb.Allow(ctx, "k", fbLimit, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v, want it returned", err)
	}
	if s := fb.Status(); s.Using != "shared" || s.Fallbacks != 0 {
		t.Fatalf("status %+v, want still shared", s)
	}
}

// TestFallbackRedisStopped stops Redis under load, behind a kv.Switch, and
// wants every request decided (locally), none taking more than 50ms once
// the first failure was seen, and the shared limiter back by itself after
// Redis restarts.
func TestFallbackRedisStopped(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testCtx(t)
	sw := kv.NewSwitch(ctx, []kv.Endpoint{{
		Name: "native", Addr: srv.Addr(),
		Dial: func(ctx context.Context) (kv.Client, error) {
			return native.Dial(ctx, native.Options{URL: srv.URL(), ConnectTimeout: time.Second})
		},
	}}, kv.SwitchOptions{ProbeInterval: 100 * time.Millisecond, ProbeTimeout: time.Second})
	t.Cleanup(func() { sw.Close() })
	red := ratelimit.NewRedis(sw, ratelimit.RedisOptions{})
	fb := ratelimit.NewFallback(red, ratelimit.NewMemory(ratelimit.MemoryOptions{}), ratelimit.FallbackOptions{Backoff: 200 * time.Millisecond})
	limit := agentapi.RateLimit{Rate: 100, Period: time.Second, Burst: 10}

	type call struct {
		start time.Time
		took  time.Duration
	}
	var (
		mu       sync.Mutex
		calls    []call
		errs     []error
		stopLoad = make(chan struct{})
		wg       sync.WaitGroup
	)
	prefix := fmt.Sprintf("rlfb:%d:{t:a}:rl:", time.Now().UnixNano())
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				start := time.Now()
				_, err := fb.Allow(ctx, prefix+fmt.Sprint(rng.IntN(50)), limit, 1)
				took := time.Since(start)
				mu.Lock()
				calls = append(calls, call{start, took})
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	defer func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
		wg.Wait()
	}()
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v (status %+v)", what, within, fb.Status())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	time.Sleep(300 * time.Millisecond)
	if s := fb.Status(); s.Using != "shared" || red.Stats().Evals == 0 {
		t.Fatalf("before the stop: %+v, %+v", s, red.Stats())
	}
	stoppedAt := time.Now()
	srv.Stop(t)
	waitFor("fall back to the local limiter", 5*time.Second, func() bool { return fb.Status().Using == "local" })
	firstFailure := fb.Status().LastErrorAt
	time.Sleep(time.Second) // a second of outage under load
	outageEvals := red.Stats().Evals
	srv.Restart(t)
	restartedAt := time.Now()
	waitFor("back to the shared limiter", 5*time.Second, func() bool { return fb.Status().Using == "shared" })
	backAt := time.Now()
	waitFor("decisions in Redis again", 2*time.Second, func() bool { return red.Stats().Evals > outageEvals+100 })
	close(stopLoad)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d calls failed under FailOpen, e.g. %v", len(errs), errs[0])
	}
	var after []time.Duration
	var outage int
	for _, c := range calls {
		if c.start.After(firstFailure) {
			after = append(after, c.took)
			if c.start.Before(restartedAt) {
				outage++
			}
		}
	}
	sort.Slice(after, func(i, j int) bool { return after[i] < after[j] })
	if len(after) == 0 || outage < 100 {
		t.Fatalf("only %d calls after the first failure, %d during the outage", len(after), outage)
	}
	maxTook := after[len(after)-1]
	st := fb.Status()
	t.Logf("first failure %v after the stop; %d calls during the outage (%d after it), latency after the first failure: p50 %v, p99 %v, max %v; shared again %v after the restart; status %+v",
		firstFailure.Sub(stoppedAt).Round(time.Microsecond), outage, len(after),
		after[len(after)/2], after[len(after)*99/100], maxTook, backAt.Sub(restartedAt).Round(time.Millisecond), st)
	// A call that waited for Redis would take the connect timeout (1s);
	// a quarter of it leaves room for a loaded machine's scheduling.
	if maxTook > 250*time.Millisecond {
		t.Errorf("a call started after the first failure took %v: it waited for Redis (connect timeout 1s)", maxTook)
	}
	if st.Fallbacks < 1 || st.LocalDecisions < int64(outage) {
		t.Errorf("status %+v: want a fallback and at least %d local decisions", st, outage)
	}
}
