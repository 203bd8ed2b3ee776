package storetest

// The RateLimiter suite.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Clock is the time of a limiter under RunRateLimiter. The limiter reads it
// (Now) for every decision and the suite moves it (Advance); it never moves
// by itself, so every expected value is exact.
type Clock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// ManualClock is a Clock that moves only when Advance is called. It is safe
// for concurrent use.
type ManualClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewManualClock returns a clock at start, or at 2030-01-01T00:00:00Z when
// start is zero.
func NewManualClock(start time.Time) *ManualClock {
	if start.IsZero() {
		start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &ManualClock{t: start}
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rlCallTimeout bounds each subtest's calls.
const rlCallTimeout = 20 * time.Second

// RunRateLimiter runs the agentapi.RateLimiter conformance suite against
// limiters whose time the suite controls. newLimiter returns a new limiter
// and the Clock it reads (for Redis: the clock whose time the limiter sends
// with each decision), closing what it opens with t.Cleanup. It is called
// once per subtest. Limiters of different subtests may share a backend: the
// suite puts a random namespace into every key, in a hash tag, as
// <ns>{t:<tenant>}:rl:<name>.
//
// The clock only moves when the suite says so, but a backend may expire
// keys on real time (Redis's PX): the suite's limits use request intervals
// of seconds or more, so that a key never expires in real time before the
// fake time says it is back to a full burst. Every time step is a whole
// number of milliseconds, so limiters counting in ns, µs or ms agree.
//
// What is checked, beyond the interface's comments (package ratelimit's
// doc states the same rules):
//
//   - A fresh key admits Burst requests at once, then denies; every
//     decision's Remaining, RetryAfter and ResetAfter are exact, and Limit
//     is the limit passed in.
//   - Refill is exact: after the burst, one request more each Period/Rate,
//     not a millisecond earlier.
//   - Denied requests (of any cost) consume nothing and do not delay the
//     next admission.
//   - Cost n takes n intervals; a cost above the burst is denied with
//     RetryAfter -1 and consumes nothing; cost 0 is a peek that is allowed
//     and consumes nothing.
//   - Keys are independent, also when they differ only in the tenant.
//   - Burst 0 counts as 1.
//   - Limits with different periods refill at their own pace.
//   - Changing the limit of a key reads the state left by the old limit
//     (a raised burst admits at once; a local cache must not hide that).
//   - Rate < 1, Period <= 0, Burst < 0 and cost < 0 are KindInvalid and
//     consume nothing.
//   - Exactness under concurrency: 50 goroutines making 40 attempts each
//     on a fresh key at a frozen time get exactly Burst admissions, whose
//     Remaining values are Burst-1 ... 0, each once.
func RunRateLimiter(t *testing.T, newLimiter func(t *testing.T) (agentapi.RateLimiter, Clock)) {
	t.Helper()
	for _, tc := range rlCases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(newRLEnv(t, newLimiter))
		})
	}
}

var rlCases = []struct {
	name string
	fn   func(e *rlEnv)
}{
	{"FreshKeyBurst", testRLFreshBurst},
	{"SteadyRefill", testRLRefill},
	{"DeniedConsumesNothing", testRLDeniedConsumesNothing},
	{"Cost", testRLCost},
	{"CostAboveBurst", testRLCostAboveBurst},
	{"PeekCostZero", testRLPeek},
	{"ExactValues", testRLExactValues},
	{"KeysIndependent", testRLKeysIndependent},
	{"BurstZero", testRLBurstZero},
	{"Periods", testRLPeriods},
	{"LimitChange", testRLLimitChange},
	{"Invalid", testRLInvalid},
	{"ConcurrentExact", testRLConcurrent},
}

type rlEnv struct {
	t   *testing.T
	ctx context.Context
	l   agentapi.RateLimiter
	clk Clock
	ns  string
}

func newRLEnv(t *testing.T, newLimiter func(*testing.T) (agentapi.RateLimiter, Clock)) *rlEnv {
	ctx, cancel := context.WithTimeout(context.Background(), rlCallTimeout)
	t.Cleanup(cancel)
	var b [6]byte
	rand.Read(b[:])
	l, clk := newLimiter(t)
	return &rlEnv{t: t, ctx: ctx, l: l, clk: clk, ns: hex.EncodeToString(b[:])}
}

// key names a key of the default tenant.
func (e *rlEnv) key(name string) string { return e.tenantKey("acme", name) }

func (e *rlEnv) tenantKey(tenant, name string) string {
	return "rlt:" + e.ns + ":{t:" + tenant + "}:rl:" + name
}

func (e *rlEnv) allow(key string, l agentapi.RateLimit, cost int) agentapi.RateDecision {
	e.t.Helper()
	d, err := e.l.Allow(e.ctx, key, l, cost)
	if err != nil {
		e.t.Fatalf("Allow(%s, %+v, cost %d): %v", key, l, cost, err)
	}
	return d
}

// expect makes one call and checks every field of its decision.
// retry -1 means "never".
func (e *rlEnv) expect(key string, l agentapi.RateLimit, cost int, allowed bool, remaining int, retry, reset time.Duration) {
	e.t.Helper()
	got := e.allow(key, l, cost)
	want := agentapi.RateDecision{Allowed: allowed, Limit: l, Remaining: remaining, RetryAfter: retry, ResetAfter: reset}
	if got != want {
		e.t.Fatalf("Allow(%s, cost %d) =\n  %s\nwant\n  %s", key[len("rlt:"+e.ns+":"):], cost, rlFmt(got), rlFmt(want))
	}
}

func (e *rlEnv) admit(key string, l agentapi.RateLimit, cost, remaining int, reset time.Duration) {
	e.t.Helper()
	e.expect(key, l, cost, true, remaining, 0, reset)
}

func (e *rlEnv) deny(key string, l agentapi.RateLimit, cost, remaining int, retry, reset time.Duration) {
	e.t.Helper()
	e.expect(key, l, cost, false, remaining, retry, reset)
}

func rlFmt(d agentapi.RateDecision) string {
	return fmt.Sprintf("{Allowed:%v Remaining:%d RetryAfter:%v ResetAfter:%v Limit:%+v}", d.Allowed, d.Remaining, d.RetryAfter, d.ResetAfter, d.Limit)
}

// rlStd is 10 a minute, 5 at once: one request every 6s, a burst spans 30s.
var rlStd = agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: 5}

const rlT = 6 * time.Second // rlStd's interval

func testRLFreshBurst(e *rlEnv) {
	k := e.key("fresh")
	for i := 1; i <= 5; i++ {
		e.admit(k, rlStd, 1, 5-i, time.Duration(i)*rlT)
	}
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
}

func testRLRefill(e *rlEnv) {
	k := e.key("refill")
	for i := 1; i <= 5; i++ {
		e.admit(k, rlStd, 1, 5-i, time.Duration(i)*rlT)
	}
	e.clk.Advance(rlT - time.Millisecond)
	e.deny(k, rlStd, 1, 0, time.Millisecond, 4*rlT+time.Millisecond)
	e.clk.Advance(time.Millisecond)
	e.admit(k, rlStd, 1, 0, 5*rlT)
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
	// Three intervals later, exactly three more.
	e.clk.Advance(3 * rlT)
	e.admit(k, rlStd, 1, 2, 3*rlT)
	e.admit(k, rlStd, 1, 1, 4*rlT)
	e.admit(k, rlStd, 1, 0, 5*rlT)
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
	// Long idle: a full burst again, nothing more.
	e.clk.Advance(time.Hour)
	for i := 1; i <= 5; i++ {
		e.admit(k, rlStd, 1, 5-i, time.Duration(i)*rlT)
	}
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
}

func testRLDeniedConsumesNothing(e *rlEnv) {
	k := e.key("denied")
	for i := 1; i <= 5; i++ {
		e.admit(k, rlStd, 1, 5-i, time.Duration(i)*rlT)
	}
	// 100 denied attempts of cost 1 and 3 over the next 5s.
	step := 50 * time.Millisecond
	for i := 0; i < 100; i++ {
		el := time.Duration(i) * step
		e.deny(k, rlStd, 1, 0, rlT-el, 5*rlT-el)
		e.deny(k, rlStd, 3, 0, 3*rlT-el, 5*rlT-el)
		e.clk.Advance(step)
	}
	// Now at 5s; the next admission is due at 6s, as if nothing happened.
	e.clk.Advance(rlT - 100*step - time.Millisecond)
	e.deny(k, rlStd, 1, 0, time.Millisecond, 4*rlT+time.Millisecond)
	e.clk.Advance(time.Millisecond)
	e.admit(k, rlStd, 1, 0, 5*rlT)
}

func testRLCost(e *rlEnv) {
	l := agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: 10} // 6s each, 60s burst
	k := e.key("cost")
	e.admit(k, l, 3, 7, 3*rlT)
	e.admit(k, l, 3, 4, 6*rlT)
	e.admit(k, l, 3, 1, 9*rlT)
	e.deny(k, l, 3, 1, 2*rlT, 9*rlT)
	e.deny(k, l, 2, 1, rlT, 9*rlT)
	e.deny(k, l, 3, 1, 2*rlT, 9*rlT)
	e.admit(k, l, 1, 0, 10*rlT) // a smaller cost fits though a larger one was just denied
	e.deny(k, l, 1, 0, rlT, 10*rlT)
	e.clk.Advance(2 * rlT)
	e.admit(k, l, 2, 0, 10*rlT)
	e.deny(k, l, 10, 0, 10*rlT, 10*rlT)
	e.clk.Advance(10 * rlT)
	e.admit(k, l, 10, 0, 10*rlT)
}

func testRLCostAboveBurst(e *rlEnv) {
	k := e.key("above")
	e.deny(k, rlStd, 6, 5, -1, 0) // fresh key: untouched
	e.deny(k, rlStd, 1000000, 5, -1, 0)
	e.admit(k, rlStd, 5, 0, 5*rlT) // the whole burst is still there
	e.deny(k, rlStd, 6, 0, -1, 5*rlT)
	e.clk.Advance(time.Hour)
	e.deny(k, rlStd, 6, 5, -1, 0)
	e.admit(k, rlStd, 1, 4, rlT)
}

func testRLPeek(e *rlEnv) {
	k := e.key("peek")
	e.admit(k, rlStd, 0, 5, 0)
	e.admit(k, rlStd, 1, 4, rlT)
	e.admit(k, rlStd, 1, 3, 2*rlT)
	e.admit(k, rlStd, 0, 3, 2*rlT)
	e.admit(k, rlStd, 0, 3, 2*rlT)
	e.admit(k, rlStd, 3, 0, 5*rlT)
	e.admit(k, rlStd, 0, 0, 5*rlT)
	e.deny(k, rlStd, 1, 0, rlT, 5*rlT)
	e.clk.Advance(rlT + time.Second)
	e.admit(k, rlStd, 0, 1, 4*rlT-time.Second)
}

func testRLExactValues(e *rlEnv) {
	// 3 an hour, 2 at once: one every 20 minutes, a burst spans 40.
	l := agentapi.RateLimit{Rate: 3, Period: time.Hour, Burst: 2}
	const m = time.Minute
	k := e.key("exact")
	e.admit(k, l, 1, 1, 20*m)
	e.admit(k, l, 1, 0, 40*m)
	e.deny(k, l, 1, 0, 20*m, 40*m)
	e.clk.Advance(25 * m) // TAT 40m, now 25m: 15m used of 40m, one fits
	e.admit(k, l, 0, 1, 15*m)
	e.admit(k, l, 1, 0, 35*m)
	e.deny(k, l, 1, 0, 15*m, 35*m)
	e.deny(k, l, 2, 0, 35*m, 35*m)
	e.clk.Advance(15 * m) // TAT 60m, now 40m
	e.admit(k, l, 1, 0, 40*m)
	e.clk.Advance(50 * m) // TAT 80m, now 90m: full
	e.admit(k, l, 0, 2, 0)
	e.admit(k, l, 2, 0, 40*m)
}

func testRLKeysIndependent(e *rlEnv) {
	l := agentapi.RateLimit{Rate: 1, Period: time.Minute, Burst: 2}
	a, b := e.key("a"), e.key("b")
	other := e.tenantKey("globex", "a") // same name, other tenant
	e.admit(a, l, 1, 1, time.Minute)
	e.admit(a, l, 1, 0, 2*time.Minute)
	e.deny(a, l, 1, 0, time.Minute, 2*time.Minute)
	e.admit(b, l, 1, 1, time.Minute)
	e.admit(other, l, 2, 0, 2*time.Minute)
	e.deny(a, l, 1, 0, time.Minute, 2*time.Minute)
	e.admit(b, l, 1, 0, 2*time.Minute)
	e.deny(b, l, 1, 0, time.Minute, 2*time.Minute)
	e.deny(other, l, 1, 0, time.Minute, 2*time.Minute)
}

func testRLBurstZero(e *rlEnv) {
	l := agentapi.RateLimit{Rate: 1, Period: time.Minute, Burst: 0}
	k := e.key("zero")
	e.admit(k, l, 1, 0, time.Minute)
	e.deny(k, l, 1, 0, time.Minute, time.Minute)
	e.deny(k, l, 2, 0, -1, time.Minute)
	e.clk.Advance(time.Minute - time.Millisecond)
	e.deny(k, l, 1, 0, time.Millisecond, time.Millisecond)
	e.clk.Advance(time.Millisecond)
	e.admit(k, l, 1, 0, time.Minute)
	e.clk.Advance(time.Hour)
	e.deny(k, l, 2, 1, -1, 0)
}

func testRLPeriods(e *rlEnv) {
	// Two a period, one at once: the interval is half the period.
	periods := []time.Duration{10 * time.Second, time.Minute, time.Hour, 24 * time.Hour}
	keys := make([]string, len(periods))
	limits := make([]agentapi.RateLimit, len(periods))
	for i, p := range periods {
		keys[i] = e.key(fmt.Sprintf("period-%d", i))
		limits[i] = agentapi.RateLimit{Rate: 2, Period: p, Burst: 1}
		e.admit(keys[i], limits[i], 1, 0, p/2)
		e.deny(keys[i], limits[i], 1, 0, p/2, p/2)
	}
	e.clk.Advance(5 * time.Second)
	e.admit(keys[0], limits[0], 1, 0, 5*time.Second)
	for i := 1; i < len(periods); i++ {
		e.deny(keys[i], limits[i], 1, 0, periods[i]/2-5*time.Second, periods[i]/2-5*time.Second)
	}
	e.clk.Advance(25 * time.Second) // 30s
	e.admit(keys[1], limits[1], 1, 0, 30*time.Second)
	e.deny(keys[2], limits[2], 1, 0, 30*time.Minute-30*time.Second, 30*time.Minute-30*time.Second)
	e.clk.Advance(30*time.Minute - 30*time.Second) // 30m
	e.admit(keys[2], limits[2], 1, 0, 30*time.Minute)
	e.deny(keys[3], limits[3], 1, 0, 11*time.Hour+30*time.Minute, 11*time.Hour+30*time.Minute)
}

func testRLLimitChange(e *rlEnv) {
	small := agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: 2}  // 6s each, 12s burst
	big := agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: 5}    // 6s each, 30s burst
	faster := agentapi.RateLimit{Rate: 20, Period: time.Minute, Burst: 2} // 3s each, 6s burst
	k := e.key("change")
	e.admit(k, small, 1, 1, rlT)
	e.admit(k, small, 1, 0, 2*rlT)
	e.deny(k, small, 1, 0, rlT, 2*rlT)
	e.deny(k, small, 1, 0, rlT, 2*rlT)
	e.admit(k, big, 1, 2, 3*rlT) // raised burst: admits at once
	e.deny(k, small, 1, 0, 2*rlT, 3*rlT)
	e.deny(k, faster, 1, 0, 15*time.Second, 18*time.Second) // 18s held, 6s allowed
	e.admit(k, big, 2, 0, 5*rlT)
	e.deny(k, big, 1, 0, rlT, 5*rlT)
}

func testRLInvalid(e *rlEnv) {
	k := e.key("invalid")
	for _, c := range []struct {
		l    agentapi.RateLimit
		cost int
	}{
		{agentapi.RateLimit{Rate: 0, Period: time.Minute, Burst: 5}, 1},
		{agentapi.RateLimit{Rate: -1, Period: time.Minute, Burst: 5}, 1},
		{agentapi.RateLimit{Rate: 10, Period: 0, Burst: 5}, 1},
		{agentapi.RateLimit{Rate: 10, Period: -time.Second, Burst: 5}, 1},
		{agentapi.RateLimit{Rate: 10, Period: time.Minute, Burst: -1}, 1},
		{rlStd, -1},
	} {
		d, err := e.l.Allow(e.ctx, k, c.l, c.cost)
		if err == nil {
			e.t.Fatalf("Allow(%+v, cost %d) = %s, want an error of kind %v", c.l, c.cost, rlFmt(d), agentapi.KindInvalid)
		}
		if kind := agentapi.KindOf(err); kind != agentapi.KindInvalid {
			e.t.Fatalf("Allow(%+v, cost %d): error %v of kind %v, want %v", c.l, c.cost, err, kind, agentapi.KindInvalid)
		}
	}
	e.admit(k, rlStd, 5, 0, 5*rlT) // nothing consumed
}

func testRLConcurrent(e *rlEnv) {
	const goroutines, attempts = 50, 40
	l := agentapi.RateLimit{Rate: 100, Period: time.Hour, Burst: 100} // 36s each
	k := e.key("concurrent")
	var (
		mu        sync.Mutex
		remaining []int
		denied    int
		wrong     []string
		wg        sync.WaitGroup
	)
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range attempts {
				d, err := e.l.Allow(e.ctx, k, l, 1)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if d.Allowed {
					remaining = append(remaining, d.Remaining)
				} else {
					denied++
					if d.Remaining != 0 || d.RetryAfter != 36*time.Second || d.ResetAfter != time.Hour {
						wrong = append(wrong, rlFmt(d))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatalf("Allow: %v", err)
	}
	if len(remaining) != l.Burst {
		e.t.Fatalf("%d of %d concurrent attempts admitted at a frozen time, want exactly the burst, %d", len(remaining), goroutines*attempts, l.Burst)
	}
	sort.Ints(remaining)
	for i, r := range remaining {
		if r != i {
			e.t.Fatalf("Remaining of the admitted requests, sorted: %v; want 0..%d each once", remaining, l.Burst-1)
		}
	}
	if len(wrong) > 0 {
		e.t.Fatalf("%d denials with wrong values, e.g. %s; want Remaining 0, RetryAfter 36s, ResetAfter 1h", len(wrong), wrong[0])
	}
	e.deny(k, l, 1, 0, 36*time.Second, time.Hour)
}
