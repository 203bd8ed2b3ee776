package agentapi

import (
	"context"
	"errors"
	"time"
)

// RateLimit allows Rate requests per Period on average, and at most Burst
// at once (a client idle long enough may send Burst requests together;
// Burst 0 counts as 1). Admitted requests over any span t never exceed
// Burst + Rate*t/Period.
type RateLimit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// RateDecision is the outcome of one rate-limit check.
type RateDecision struct {
	Allowed bool
	Limit   RateLimit
	// Remaining is how many more requests of cost 1 would be allowed now.
	Remaining int
	// RetryAfter is how long until this request (same cost) would be
	// allowed; 0 when allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to a full burst.
	ResetAfter time.Duration
}

// RateLimiter decides requests against limits. Contract, for every
// backend: a denied request consumes nothing; cost may exceed 1 (a cost
// above the burst is always denied, with RetryAfter -1); keys are
// independent; the decision is exact across every caller sharing the
// backend (atomic check-and-consume). An error means no decision was made
// (the caller's failure policy decides).
type RateLimiter interface {
	Allow(ctx context.Context, key string, limit RateLimit, cost int) (RateDecision, error)
}

// BreakerState is a circuit breaker's state.
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"    // calls go through; failures are counted
	BreakerOpen     BreakerState = "open"      // calls fail fast until the timeout passes
	BreakerHalfOpen BreakerState = "half_open" // a few probe calls test the dependency
)

// ErrBreakerOpen is returned (wrapped, with the time to wait) by a breaker
// that refuses a call.
var ErrBreakerOpen = E("breaker", KindUnavailable, errors.New("circuit breaker open"))

// ErrQuotaExceeded is returned (wrapped, with the quota in its text) when a
// tenant has used up a quota; it is a 429 with the problem type
// ProblemQuotaExceeded.
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrSessionLimit is returned (wrapped, KindRateLimited) when starting an
// agent session would exceed a tenant's or user's limit of running
// sessions.
var ErrSessionLimit = errors.New("session limit reached")

// ProblemQuotaExceeded is the problem+json type of quota refusals.
const ProblemQuotaExceeded = "urn:agentapi:problem:quota-exceeded"
