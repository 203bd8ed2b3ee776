// Package ratelimit implements agentapi.RateLimiter three ways, all with the
// generic cell rate algorithm (GCRA):
//
//   - Memory decides in this process, per key, with an injectable clock.
//   - Redis decides in Redis with one atomic Lua script per decision, so
//     every instance sharing the Redis server shares the limits exactly. It
//     keeps a local deny cache so that a key far over its limit is denied
//     without a round trip (about one per admission and instance remains).
//   - Fallback puts a shared limiter (Redis) in front of a local one
//     (Memory) and keeps deciding, without waiting on timeouts, while the
//     shared one is unreachable; its Status reports which one is in use.
//
// # The algorithm
//
// A limit of Rate requests per Period with burst B admits one request every
// interval T = Period/Rate on average. Each key keeps one number, its
// theoretical arrival time (TAT): the time at which the key would be back
// to a full burst. A request of cost n at time now is admitted when
//
//	max(TAT, now) + n·T − now ≤ B·T
//
// and then TAT becomes max(TAT, now) + n·T. A denied request changes
// nothing. A key whose TAT has passed is the same as a key never seen, so
// state only has to be kept until then.
//
// Every request admitted in a span of length t pushed TAT forward by T, and
// TAT never runs more than B·T ahead of the time of an admission, so at
// most B + t/T = Burst + Rate·t/Period requests are admitted in any span t,
// as agentapi.RateLimit promises, whatever order requests arrive in.
//
// Arithmetic is on integers: T is Period/Rate rounded up to the limiter's
// unit (nanoseconds for Memory, microseconds for Redis, so at most a
// million requests a second per key for Redis). Rounding T up can only
// admit less, never more: for Rate=3, Period=1s, Redis's T is 333,334µs
// instead of 333,333.3µs, one request fewer every 46 hours.
//
// # Decisions
//
// Beyond agentapi.RateDecision's comments, every limiter here decides the
// same way:
//
//   - Burst 0 counts as 1. Rate < 1, Period ≤ 0, Burst < 0, cost < 0, and
//     limits whose burst spans more than ten years (Burst·T) are KindInvalid
//     errors.
//   - Cost 0 is a peek: allowed, consumes nothing, reports Remaining and
//     ResetAfter (it is denied only when the key holds more than a burst,
//     which happens after its limit was lowered).
//   - Cost above the burst is denied with RetryAfter −1; Remaining and
//     ResetAfter still describe the key.
//   - Remaining is how many more requests of cost 1 fit right now; after
//     an admission it counts the state the admission left. ResetAfter is
//     how long until the key is back to a full burst (0 for a fresh key).
//   - The state is per key, not per key and limit: calling with another
//     limit for the same key reads the TAT the old limit left (a plan
//     upgrade takes effect at once, with the requests already made counted
//     in the new limit's intervals).
package ratelimit

import (
	"errors"
	"fmt"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// maxWindow bounds Burst·T, so that TAT arithmetic stays far from overflow
// (and, in Lua, within the 2^53 of doubles that are exact integers).
const maxWindow = 10 * 365 * 24 * time.Hour

// params is a limit compiled for one time unit.
type params struct {
	interval int64 // T, in the unit, at least 1
	burst    int64 // at least 1
}

// window is B·T: how far TAT may run ahead of now after an admission.
func (p params) window() int64 { return p.burst * p.interval }

// compile validates l and converts it to integer parameters in unit.
func compile(op string, l agentapi.RateLimit, cost int, unit time.Duration) (params, error) {
	switch {
	case l.Rate < 1:
		return params{}, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("rate limit: rate %d, want at least 1", l.Rate))
	case l.Period <= 0:
		return params{}, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("rate limit: period %v, want > 0", l.Period))
	case l.Burst < 0:
		return params{}, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("rate limit: burst %d, want >= 0", l.Burst))
	case cost < 0:
		return params{}, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("rate limit: cost %d, want >= 0", cost))
	}
	rate := int64(l.Rate)
	ns := (int64(l.Period) + rate - 1) / rate // ceil(Period/Rate) in ns
	u := int64(unit)
	p := params{interval: (ns + u - 1) / u, burst: max(int64(l.Burst), 1)}
	if p.burst > int64(maxWindow/unit)/p.interval {
		return params{}, agentapi.E(op, agentapi.KindInvalid,
			fmt.Errorf("rate limit: burst %d × %v per request spans more than %v", l.Burst, time.Duration(p.interval)*unit, maxWindow))
	}
	return p, nil
}

// outcome is one GCRA decision in a limiter's unit.
type outcome struct {
	allowed   bool
	tat       int64 // the key's TAT after the decision (never before now)
	remaining int64
	retry     int64 // -1: never (cost above the burst)
	reset     int64
}

// decide applies GCRA to a key whose stored TAT is tat (anything not after
// now for a key without state). The Lua script in redis.go implements the
// same rule; keep them in step.
func decide(tat, now int64, p params, cost int64) outcome {
	if tat < now {
		tat = now
	}
	w := p.window()
	if cost > p.burst {
		return outcome{tat: tat, remaining: fits(w-(tat-now), p.interval), retry: -1, reset: tat - now}
	}
	next := tat + cost*p.interval
	if next-now > w {
		return outcome{tat: tat, remaining: fits(w-(tat-now), p.interval), retry: next - now - w, reset: tat - now}
	}
	return outcome{allowed: true, tat: next, remaining: fits(w-(next-now), p.interval), reset: next - now}
}

// fits is how many intervals fit in free (0 when free is negative).
func fits(free, interval int64) int64 {
	if free < interval {
		return 0
	}
	return free / interval
}

// decision converts o (in unit) to the interface's type.
func (o outcome) decision(l agentapi.RateLimit, unit time.Duration) agentapi.RateDecision {
	d := agentapi.RateDecision{
		Allowed:    o.allowed,
		Limit:      l,
		Remaining:  int(o.remaining),
		RetryAfter: time.Duration(o.retry) * unit,
		ResetAfter: time.Duration(o.reset) * unit,
	}
	if o.retry < 0 {
		d.RetryAfter = -1
	}
	return d
}

// errNoState reports an unexpected script reply.
var errNoState = errors.New("unexpected reply from the rate-limit script")
