package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Policy is what a Fallback does while its shared limiter fails.
type Policy uint8

// Policies.
const (
	// FailOpen decides with the local limiter, with the same limits, while
	// the shared one fails. Each instance then enforces every limit on its
	// own, so N instances together admit up to N times the limit.
	FailOpen Policy = iota
	// FailClosed makes no decision while the shared limiter fails: Allow
	// returns an error of kind agentapi.KindUnavailable, which the HTTP
	// layer answers with 503. It does not return a denial, because a 429
	// would tell a client that it is over its limit when it is not.
	FailClosed
)

// String is "fail_open" or "fail_closed".
func (p Policy) String() string {
	if p == FailClosed {
		return "fail_closed"
	}
	return "fail_open"
}

// DefaultBackoff is how long a Fallback skips its shared limiter after an
// error when FallbackOptions leave Backoff zero.
const DefaultBackoff = time.Second

// FallbackOptions configure a Fallback. The zero value is ready to use.
type FallbackOptions struct {
	// Policy is FailOpen (the default) or FailClosed.
	Policy Policy
	// Backoff is how long the shared limiter is skipped after it failed.
	// Default DefaultBackoff.
	Backoff time.Duration
	// Now is the clock for the backoff. Default time.Now.
	Now func() time.Time
	// Logger gets one line when the shared limiter fails and one when it
	// is used again. Default: discard.
	Logger *slog.Logger
}

// Fallback is a RateLimiter over a shared limiter (Redis) that keeps
// deciding when the shared one cannot: with a local limiter (Memory) under
// FailOpen, or with a fast KindUnavailable error under FailClosed.
//
// It never adds a timeout of its own. While Redis is down, requests must
// not each wait for one, and two things see to that:
//
//   - The shared limiter's kv client should be a kv.Switch, which after
//     one failed call fails every later call at once (its breaker) until
//     its prober finds Redis again. Only calls already in flight when Redis
//     went away wait for the transport to give up.
//   - In addition, after a shared-limiter error the Fallback itself does
//     not call the shared limiter for Backoff; requests go straight to the
//     local limiter (or fail, under FailClosed). When the backoff is over,
//     one request, and only one at a time, tries the shared limiter again;
//     the rest stay local until it answers. When it succeeds, every
//     request uses the shared limiter again; when it fails, the backoff
//     starts over. So even over a client without a breaker, at most one
//     request per Backoff pays a timeout.
//
// Errors that say nothing about the shared limiter's health are returned
// as they are, without falling back: KindInvalid (bad arguments, which the
// local limiter would refuse too), and any error after ctx was cancelled
// or reached its deadline (the caller gave up; whether Redis is healthy is
// unknown, and kv.Switch does not count those either). Every other error —
// unreachable, breaker open, a reply error such as OOM or a script error,
// a malformed reply — switches to the local limiter.
//
// State is not carried between the two limiters: at each switch a key
// continues from the state the other one has, which has not seen the
// requests admitted meanwhile (at the first outage, the local limiter
// starts with every key at a full burst; back in Redis, a key finds the
// state it had before the outage, if it has not expired). So around each
// switch a key may be admitted up to one extra burst per instance.
type Fallback struct {
	shared, local agentapi.RateLimiter
	policy        Policy
	backoff       time.Duration
	now           func() time.Time
	log           *slog.Logger

	down atomic.Bool // fast path: false means use the shared limiter

	mu        sync.Mutex
	retryAt   time.Time // when down: the shared limiter may be tried from then
	probing   bool      // a request is trying the shared limiter
	lastErr   error
	lastErrAt time.Time

	fallbacks, localDecisions, fastFailures atomic.Int64
}

var _ agentapi.RateLimiter = (*Fallback)(nil)

// NewFallback returns a limiter that uses shared and, while shared fails,
// local (which under FailClosed is never used and may be nil).
func NewFallback(shared, local agentapi.RateLimiter, o FallbackOptions) *Fallback {
	f := &Fallback{shared: shared, local: local, policy: o.Policy, backoff: o.Backoff, now: o.Now, log: o.Logger}
	if f.backoff <= 0 {
		f.backoff = DefaultBackoff
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f
}

// Allow decides with the shared limiter while it works and as the policy
// says while it does not; see Fallback.
func (f *Fallback) Allow(ctx context.Context, key string, limit agentapi.RateLimit, cost int) (agentapi.RateDecision, error) {
	shared, probe := true, false
	if f.down.Load() {
		shared, probe = f.tryProbe()
	}
	if shared {
		d, err := f.shared.Allow(ctx, key, limit, cost)
		switch {
		case err == nil:
			if probe {
				f.recovered()
			}
			return d, nil
		case agentapi.KindOf(err) == agentapi.KindInvalid || ctx.Err() != nil:
			if probe {
				f.endProbe()
			}
			return d, err
		}
		f.failed(err)
	}
	if f.policy == FailClosed {
		f.fastFailures.Add(1)
		return agentapi.RateDecision{}, agentapi.E("ratelimit.fallback", agentapi.KindUnavailable, f.lastError())
	}
	f.localDecisions.Add(1)
	return f.local.Allow(ctx, key, limit, cost)
}

// tryProbe reports whether this request should use the shared limiter
// while it is marked down: once the backoff is over, for one request at a
// time.
func (f *Fallback) tryProbe() (shared, probe bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.down.Load() {
		return true, false // recovered meanwhile
	}
	if f.probing || f.now().Before(f.retryAt) {
		return false, false
	}
	f.probing = true
	return true, true
}

func (f *Fallback) failed(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	f.lastErr, f.lastErrAt = err, now
	f.retryAt = now.Add(f.backoff)
	f.probing = false
	if !f.down.Load() {
		f.down.Store(true)
		f.fallbacks.Add(1)
		f.log.Warn("rate limiter: shared limiter failed; deciding locally",
			"policy", f.policy.String(), "retry_in", f.backoff, "error", err)
	}
}

func (f *Fallback) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probing = false
	if f.down.Load() {
		f.down.Store(false)
		f.log.Info("rate limiter: shared limiter answers again; using it")
	}
}

func (f *Fallback) endProbe() {
	f.mu.Lock()
	f.probing = false
	f.mu.Unlock()
}

func (f *Fallback) lastError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// FallbackStatus describes a Fallback for health reports and metrics.
type FallbackStatus struct {
	// Using is "shared" when decisions go to the shared limiter, "local"
	// when they go to the local one (FailOpen, shared failing) and "none"
	// when they fail (FailClosed, shared failing).
	Using string `json:"using"`
	// Policy is "fail_open" or "fail_closed".
	Policy string `json:"policy"`
	// LastError is the shared limiter's most recent error ("" if none ever),
	// kept after it recovers; LastErrorAt is when it happened.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Fallbacks counts switches from the shared limiter to the policy.
	Fallbacks int64 `json:"fallbacks"`
	// LocalDecisions counts requests decided by the local limiter.
	LocalDecisions int64 `json:"local_decisions"`
	// Unavailable counts requests refused with an error under FailClosed
	// because the shared limiter was failing.
	Unavailable int64 `json:"unavailable"`
}

// Status reports which limiter is in use and the last error.
func (f *Fallback) Status() FallbackStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := FallbackStatus{
		Using:          "shared",
		Policy:         f.policy.String(),
		LastErrorAt:    f.lastErrAt,
		Fallbacks:      f.fallbacks.Load(),
		LocalDecisions: f.localDecisions.Load(),
		Unavailable:    f.fastFailures.Load(),
	}
	if f.lastErr != nil {
		s.LastError = f.lastErr.Error()
	}
	if f.down.Load() {
		s.Using = "local"
		if f.policy == FailClosed {
			s.Using = "none"
		}
	}
	return s
}
