package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
)

// brkSettings are the thresholds the breaker suite runs with.
var brkSettings = breaker.Settings{FailureThreshold: 3, SuccessThreshold: 2, Timeout: 10 * time.Second, MaxProbes: 1}

var brkCases = []struct {
	name string
	fn   func(e *brkEnv)
}{
	{"ClosedAllows", testBreakerClosedAllows},
	{"OpensAfterFailures", testBreakerOpens},
	{"OpenRefusesFast", testBreakerOpenRefusesFast},
	{"RetryAfterCountsDown", testBreakerRetryAfter},
	{"HalfOpenOneProbe", testBreakerOneProbe},
	{"HalfOpenConcurrentProbes", testBreakerConcurrentProbes},
	{"HalfOpenMaxProbes", testBreakerMaxProbes},
	{"SuccessesClose", testBreakerSuccessesClose},
	{"HalfOpenFailureReopens", testBreakerHalfOpenFailure},
	{"LostProbeSlotReturns", testBreakerLostProbe},
	{"CancelledCallsDoNotCount", testBreakerCancelled},
	{"CancelledProbeFreesSlot", testBreakerCancelledProbe},
	{"SuccessResetsFailures", testBreakerSuccessResets},
	{"LateOutcomeIgnored", testBreakerLateOutcome},
	{"DoneTwiceCountsOnce", testBreakerDoneTwice},
	{"Reset", testBreakerReset},
	{"Disabled", testBreakerDisabled},
	{"NamesIndependent", testBreakerNames},
	{"Do", testBreakerDo},
	{"List", testBreakerList},
}

// RunBreaker tests a breaker.Registry wherever its state lives (in the
// process, or shared through Redis over either transport). newRegistry
// returns a registry with the settings given and the clock to use, whose
// breakers no other registry shares (a fresh key prefix), released at the
// cleanup of t. The suite drives the clock itself, so that timeouts pass
// without waiting; the shared mode passes the time into its scripts, so a
// fake clock works there too. Subtests run in parallel.
//
// What every mode must do:
//
//   - closed: calls go through; FailureThreshold consecutive failures open
//     the breaker; a success in between resets the count;
//   - open: calls are refused at once with an error wrapping
//     agentapi.ErrBreakerOpen (KindUnavailable) whose RetryAfter is the
//     time left until Timeout has passed since the opening;
//   - after Timeout: MaxProbes calls at a time go through, the others are
//     refused; SuccessThreshold successes close it, a failure reopens it;
//     a probe that does not report within Timeout frees its slot;
//   - a call ending with context.Canceled, or after its context was
//     cancelled, is neither a failure nor a success; a cancelled probe
//     frees its slot;
//   - outcomes of calls admitted before the last change of state, and
//     second calls of a done function, are ignored;
//   - Reset closes an open breaker; a disabled registry allows everything
//     and records nothing; breakers of different names are independent.
func RunBreaker(t *testing.T, newRegistry func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry) {
	for _, c := range brkCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(newBrkEnv(t, brkSettings, newRegistry))
		})
	}
}

// brkClock is a settable clock.
type brkClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *brkClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *brkClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type brkEnv struct {
	t     *testing.T
	ctx   context.Context
	clock *brkClock
	s     breaker.Settings
	r     *breaker.Registry
	b     *breaker.Breaker
	newR  func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry
}

var errBrkFail = errors.New("dependency failed")

func newBrkEnv(t *testing.T, s breaker.Settings, newRegistry func(t *testing.T, s breaker.Settings, clock func() time.Time) *breaker.Registry) *brkEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	clock := &brkClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := &brkEnv{t: t, ctx: ctx, clock: clock, s: s, newR: newRegistry}
	e.r = newRegistry(t, s, clock.Now)
	e.b = e.r.Get("dep")
	return e
}

// with replaces the registry by one with settings s.
func (e *brkEnv) with(s breaker.Settings) {
	e.s = s
	e.r = e.newR(e.t, s, e.clock.Now)
	e.b = e.r.Get("dep")
}

// allow asks b for a call and fails the test when refused.
func (e *brkEnv) allow(b *breaker.Breaker) func(error) {
	e.t.Helper()
	done, err := b.Allow(e.ctx)
	if err != nil {
		e.t.Fatalf("%s: Allow refused: %v (state %s)", b.Name(), err, b.State())
	}
	return done
}

// refused asks b for a call and fails the test unless it is refused; it
// returns the refusal.
func (e *brkEnv) refused(b *breaker.Breaker) error {
	e.t.Helper()
	done, err := b.Allow(e.ctx)
	if err == nil {
		done(nil)
		e.t.Fatalf("%s: Allow admitted a call in state %s, want a refusal", b.Name(), b.State())
	}
	if !errors.Is(err, agentapi.ErrBreakerOpen) {
		e.t.Fatalf("%s: refusal %v does not wrap ErrBreakerOpen", b.Name(), err)
	}
	if k := agentapi.KindOf(err); k != agentapi.KindUnavailable {
		e.t.Errorf("%s: KindOf(refusal) = %v, want KindUnavailable", b.Name(), k)
	}
	if breaker.RetryAfter(err) <= 0 {
		e.t.Errorf("%s: RetryAfter(%v) = %v, want > 0", b.Name(), err, breaker.RetryAfter(err))
	}
	return err
}

// call makes one admitted call on b ending with err.
func (e *brkEnv) call(b *breaker.Breaker, err error) {
	e.t.Helper()
	e.allow(b)(err)
}

func (e *brkEnv) fail(b *breaker.Breaker, n int) {
	e.t.Helper()
	for range n {
		e.call(b, errBrkFail)
	}
}

func (e *brkEnv) state(b *breaker.Breaker, want agentapi.BreakerState) {
	e.t.Helper()
	if got := b.State(); got != want {
		e.t.Fatalf("%s: State() = %s, want %s", b.Name(), got, want)
	}
}

// open opens e.b from closed.
func (e *brkEnv) open() {
	e.t.Helper()
	e.fail(e.b, e.s.FailureThreshold)
	e.state(e.b, agentapi.BreakerOpen)
}

// halfOpen opens e.b and lets Timeout pass.
func (e *brkEnv) halfOpen() {
	e.t.Helper()
	e.open()
	e.clock.Advance(e.s.Timeout)
}

func testBreakerClosedAllows(e *brkEnv) {
	e.state(e.b, agentapi.BreakerClosed)
	for range 50 {
		e.call(e.b, nil)
	}
	e.state(e.b, agentapi.BreakerClosed)
	if e.b.Name() != "dep" {
		e.t.Errorf("Name() = %q, want dep", e.b.Name())
	}
	if e.r.Get("dep") != e.b {
		e.t.Errorf("Get returned a different breaker for the same name")
	}
}

func testBreakerOpens(e *brkEnv) {
	e.fail(e.b, e.s.FailureThreshold-1)
	e.state(e.b, agentapi.BreakerClosed)
	e.allow(e.b)(errBrkFail)
	e.state(e.b, agentapi.BreakerOpen)
	err := e.refused(e.b)
	if got := breaker.RetryAfter(err); got != e.s.Timeout {
		e.t.Errorf("RetryAfter right after opening = %v, want %v", got, e.s.Timeout)
	}
	var oe *breaker.OpenError
	if !errors.As(err, &oe) || oe.Name != "dep" || oe.State != agentapi.BreakerOpen {
		e.t.Errorf("refusal %#v: want an *OpenError for dep, open", err)
	}
}

func testBreakerOpenRefusesFast(e *brkEnv) {
	e.open()
	const n = 200
	start := time.Now()
	for range n {
		e.refused(e.b)
	}
	// A refusal is decided from the state known; at most a few reads.
	if el := time.Since(start); el > n*5*time.Millisecond {
		e.t.Errorf("%d refusals took %v, want fast ones", n, el)
	}
}

func testBreakerRetryAfter(e *brkEnv) {
	e.open()
	e.clock.Advance(4 * time.Second)
	if got, want := breaker.RetryAfter(e.refused(e.b)), e.s.Timeout-4*time.Second; got != want {
		e.t.Errorf("RetryAfter 4s after opening = %v, want %v", got, want)
	}
	e.clock.Advance(e.s.Timeout - 4*time.Second - time.Millisecond)
	if got := breaker.RetryAfter(e.refused(e.b)); got != time.Millisecond {
		e.t.Errorf("RetryAfter 1ms before the timeout = %v, want 1ms", got)
	}
	if got := breaker.RetryAfter(errBrkFail); got != 0 {
		e.t.Errorf("RetryAfter(other error) = %v, want 0", got)
	}
}

func testBreakerOneProbe(e *brkEnv) {
	e.halfOpen()
	e.state(e.b, agentapi.BreakerHalfOpen)
	probe := e.allow(e.b)
	err := e.refused(e.b)
	if ra := breaker.RetryAfter(err); ra > e.s.Timeout {
		e.t.Errorf("RetryAfter while the probe runs = %v, want at most Timeout", ra)
	}
	e.state(e.b, agentapi.BreakerHalfOpen)
	probe(nil)
	// The slot is free again (one success is not enough to close).
	e.state(e.b, agentapi.BreakerHalfOpen)
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerConcurrentProbes(e *brkEnv) {
	e.halfOpen()
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		admits  []func(error)
		refusal int
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			done, err := e.b.Allow(e.ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admits = append(admits, done)
			case errors.Is(err, agentapi.ErrBreakerOpen):
				refusal++
			default:
				e.t.Errorf("Allow: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(admits) != e.s.MaxProbes || refusal != n-e.s.MaxProbes {
		e.t.Errorf("%d concurrent calls after the timeout: %d admitted, %d refused; want %d admitted",
			n, len(admits), refusal, e.s.MaxProbes)
	}
	for _, d := range admits {
		d(nil)
	}
}

func testBreakerMaxProbes(e *brkEnv) {
	s := brkSettings
	s.MaxProbes, s.SuccessThreshold = 2, 3
	e.with(s)
	e.halfOpen()
	p1, p2 := e.allow(e.b), e.allow(e.b)
	e.refused(e.b)
	p1(nil)
	p3 := e.allow(e.b)
	e.refused(e.b)
	p2(nil)
	e.state(e.b, agentapi.BreakerHalfOpen)
	p3(nil)
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerSuccessesClose(e *brkEnv) {
	e.halfOpen()
	for range e.s.SuccessThreshold {
		e.state(e.b, agentapi.BreakerHalfOpen)
		e.allow(e.b)(nil)
	}
	e.state(e.b, agentapi.BreakerClosed)
	for range 20 {
		e.call(e.b, nil)
	}
	// Closed afresh: the failures that opened it are forgotten.
	e.fail(e.b, e.s.FailureThreshold-1)
	e.state(e.b, agentapi.BreakerClosed)
	e.fail(e.b, 1)
	e.state(e.b, agentapi.BreakerOpen)
}

func testBreakerHalfOpenFailure(e *brkEnv) {
	e.halfOpen()
	e.allow(e.b)(nil) // one success, not enough
	e.allow(e.b)(errBrkFail)
	e.state(e.b, agentapi.BreakerOpen)
	if got := breaker.RetryAfter(e.refused(e.b)); got != e.s.Timeout {
		e.t.Errorf("RetryAfter after a failed probe = %v, want a full Timeout %v", got, e.s.Timeout)
	}
	e.clock.Advance(e.s.Timeout)
	// The success before the reopening does not count any more.
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerHalfOpen)
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerLostProbe(e *brkEnv) {
	e.halfOpen()
	lost := e.allow(e.b) // never reports in time
	e.clock.Advance(e.s.Timeout / 2)
	e.refused(e.b)
	e.clock.Advance(e.s.Timeout / 2)
	e.allow(e.b)(nil)
	lost(nil)
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerCancelled(e *brkEnv) {
	e.fail(e.b, e.s.FailureThreshold-1)
	for range 5 {
		e.call(e.b, context.Canceled)
		e.call(e.b, fmt.Errorf("wrapped: %w", context.Canceled))
	}
	// A call whose context was cancelled, failing with whatever error.
	for range 5 {
		ctx, cancel := context.WithCancel(e.ctx)
		done, err := e.b.Allow(ctx)
		if err != nil {
			e.t.Fatalf("Allow: %v", err)
		}
		cancel()
		done(errors.New("connection reset after the caller went away"))
	}
	e.state(e.b, agentapi.BreakerClosed)
	// Nor did they count as successes: one more failure opens it.
	e.fail(e.b, 1)
	e.state(e.b, agentapi.BreakerOpen)
}

func testBreakerCancelledProbe(e *brkEnv) {
	e.halfOpen()
	e.allow(e.b)(context.Canceled)
	e.state(e.b, agentapi.BreakerHalfOpen)
	// The slot is back and the cancelled probe was no success.
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerHalfOpen)
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerSuccessResets(e *brkEnv) {
	for range 3 {
		e.fail(e.b, e.s.FailureThreshold-1)
		e.call(e.b, nil)
	}
	e.state(e.b, agentapi.BreakerClosed)
	e.fail(e.b, e.s.FailureThreshold)
	e.state(e.b, agentapi.BreakerOpen)
}

func testBreakerLateOutcome(e *brkEnv) {
	early := e.allow(e.b) // admitted while closed, ends late
	e.halfOpen()
	probe := e.allow(e.b)
	early(errBrkFail) // must not reopen the half-open breaker
	e.state(e.b, agentapi.BreakerHalfOpen)
	probe(nil)
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerClosed)

	// Nor does a late success count towards closing.
	early = e.allow(e.b)
	e.halfOpen()
	early(nil)
	e.state(e.b, agentapi.BreakerHalfOpen)
	e.allow(e.b)(nil)
	e.state(e.b, agentapi.BreakerHalfOpen)
}

func testBreakerDoneTwice(e *brkEnv) {
	done := e.allow(e.b)
	for range e.s.FailureThreshold + 1 {
		done(errBrkFail)
	}
	e.state(e.b, agentapi.BreakerClosed)
}

func testBreakerReset(e *brkEnv) {
	e.open()
	if err := e.r.Reset(e.ctx, "dep"); err != nil {
		e.t.Fatalf("Reset: %v", err)
	}
	e.state(e.b, agentapi.BreakerClosed)
	e.call(e.b, nil)
	e.fail(e.b, e.s.FailureThreshold-1)
	e.state(e.b, agentapi.BreakerClosed)
	// Reset of a half-open breaker, and of one never used.
	e.fail(e.b, 1)
	e.clock.Advance(e.s.Timeout)
	probe := e.allow(e.b)
	if err := e.r.Reset(e.ctx, "dep"); err != nil {
		e.t.Fatalf("Reset: %v", err)
	}
	probe(errBrkFail) // admitted before the reset: ignored
	e.state(e.b, agentapi.BreakerClosed)
	if err := e.r.Reset(e.ctx, "never-used"); err != nil {
		e.t.Fatalf("Reset of a new breaker: %v", err)
	}
	e.state(e.r.Get("never-used"), agentapi.BreakerClosed)
}

func testBreakerDisabled(e *brkEnv) {
	e.r.SetEnabled(false)
	if e.r.Enabled() {
		e.t.Fatal("Enabled() after SetEnabled(false)")
	}
	e.fail(e.b, 3*e.s.FailureThreshold)
	e.state(e.b, agentapi.BreakerClosed)
	e.r.SetEnabled(true)
	e.call(e.b, nil)
	e.state(e.b, agentapi.BreakerClosed)
	// Switched off while open: everything goes through.
	e.open()
	e.r.SetEnabled(false)
	for range 10 {
		e.call(e.b, nil)
	}
	if err := e.b.Do(e.ctx, func(context.Context) error { return nil }); err != nil {
		e.t.Errorf("Do on a disabled registry: %v", err)
	}
}

func testBreakerNames(e *brkEnv) {
	other := e.r.Get("other")
	e.open()
	e.call(other, nil)
	e.fail(other, e.s.FailureThreshold-1)
	e.state(other, agentapi.BreakerClosed)
	e.refused(e.b)
}

func testBreakerDo(e *brkEnv) {
	ran := 0
	fn := func(err error) func(context.Context) error {
		return func(context.Context) error { ran++; return err }
	}
	if err := e.b.Do(e.ctx, fn(nil)); err != nil || ran != 1 {
		e.t.Fatalf("Do = %v, ran %d", err, ran)
	}
	for range e.s.FailureThreshold {
		if err := e.b.Do(e.ctx, fn(errBrkFail)); !errors.Is(err, errBrkFail) {
			e.t.Fatalf("Do returned %v, want fn's error", err)
		}
	}
	err := e.b.Do(e.ctx, fn(nil))
	if !errors.Is(err, agentapi.ErrBreakerOpen) || ran != 1+e.s.FailureThreshold {
		e.t.Fatalf("Do on an open breaker = %v after %d runs, want a refusal without running", err, ran)
	}
}

func testBreakerList(e *brkEnv) {
	opened := e.clock.Now()
	e.open()
	e.call(e.r.Get("b-closed"), errBrkFail)
	e.clock.Advance(time.Second)
	list := e.r.List()
	if len(list) != 2 || list[0].Name != "b-closed" || list[1].Name != "dep" {
		e.t.Fatalf("List = %+v, want b-closed and dep, in that order", list)
	}
	c, o := list[0], list[1]
	if c.State != agentapi.BreakerClosed || c.Failures != 1 || c.OpenedAt != nil || c.RetryAfter != 0 {
		e.t.Errorf("closed breaker status %+v, want closed with 1 failure", c)
	}
	if o.State != agentapi.BreakerOpen || o.Failures != e.s.FailureThreshold || o.OpenedAt == nil ||
		!o.OpenedAt.Equal(opened) || o.RetryAfter != e.s.Timeout-time.Second {
		e.t.Errorf("open breaker status %+v, want open since %v with %d failures, retry after %v",
			o, opened, e.s.FailureThreshold, e.s.Timeout-time.Second)
	}
}
