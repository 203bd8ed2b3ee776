package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// gcraScript decides one request atomically. It is written for Upstash as
// much as for Redis: its one key is in KEYS, it reads no server time and
// calls no redis.replicate_commands(), so it is deterministic given its
// arguments (it is replicated, and run by Upstash, as the script itself).
//
// KEYS[1] holds the key's TAT in Unix microseconds of the callers' clocks,
// with a PX expiry at the moment the key is back to a full burst. ARGV:
// now (µs, from the caller's clock), interval T (µs), burst, cost.
//
// Reply: {allowed 0|1, remaining, retry_after µs (−1: never), reset_after µs}.
// It is the same rule as decide in ratelimit.go.
//
// Arithmetic: Lua numbers are doubles, exact for integers below 2^53 (9e15).
// TATs are about 1.8e15 µs until the year 2255, and the window B·T is at
// most ten years (3.2e14 µs), so every sum is exact, and so is
// math.floor(free / interval): with both operands below 2^53 the quotient
// of non-multiples is never rounded up to the next integer. The TAT is
// written with %.0f, because tostring prints only 14 significant digits.
// The script is kept short: Redis runs it on its only thread for every
// decision.
var gcraScript = kv.NewScript(`local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local window = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local held = tat - now
if cost > burst then
  return {0, math.max(0, math.floor((window - held) / interval)), -1, held}
end
local nexttat = tat + cost * interval
if nexttat - now > window then
  return {0, math.max(0, math.floor((window - held) / interval)), nexttat - now - window, held}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', nexttat), 'PX', math.ceil((nexttat - now) / 1000))
end
return {1, math.floor((window - (nexttat - now)) / interval), 0, nexttat - now}
`)

// DefaultDenyCacheSize is the deny cache's capacity when RedisOptions leave
// it zero.
const DefaultDenyCacheSize = 65536

// RedisOptions configure a Redis limiter. The zero value is ready to use.
type RedisOptions struct {
	// Now is the clock whose time is sent with every decision. Default
	// time.Now. See Redis for why the caller's clock is used.
	Now func() time.Time
	// DenyCacheSize bounds the deny cache (entries). Default
	// DefaultDenyCacheSize.
	DenyCacheSize int
	// DisableDenyCache sends every decision to Redis.
	DisableDenyCache bool
}

// Redis is a GCRA rate limiter whose state lives in Redis, shared by every
// instance that uses the same server: each decision is one EVALSHA of a Lua
// script that reads the key's TAT, decides and writes it back atomically, so
// decisions are exact across all callers. It is safe for concurrent use.
//
// # Keys
//
// Allow takes the full Redis key; the limiter adds nothing. Callers build it
// as <prefix>{t:<tenant>}:rl:<name>: the tenant in a hash tag keeps all of
// a tenant's keys in one Redis Cluster slot, next to its other state. The
// key holds the TAT as a decimal string, with a PX expiry at the time the
// key is back to a full burst, so no key outlives its use.
//
// # The clock rule
//
// The current time is not read in Redis: the caller sends it, in
// microseconds, with each decision (from RedisOptions.Now). A script that
// reads the server's clock (TIME) is not deterministic: run again on a
// replica, or replayed from the AOF, it would compute something else. Redis
// before 5 replicates scripts verbatim and refuses a write after TIME
// unless the script first calls redis.replicate_commands(); Upstash, which
// runs scripts on its replicas too, expects them to be deterministic.
// Sending the time keeps the script deterministic everywhere, with no
// replicate_commands call, and makes the limiter testable with a fake
// clock.
//
// The price is that every instance sharing a Redis must have its clock
// synchronised (NTP). A request decided with a clock that is s ahead or
// behind the others is judged as if it arrived s later or earlier: skew
// between instances shifts the window by the skew, lets a lagging instance
// be refused until its clock catches up with a TAT written by one ahead,
// and lets one ahead fill the burst a little early. Admission over time is
// still bounded by Burst + Rate·(t + skew)/Period. With NTP's usual
// millisecond skew this is far below a request interval for any limit of
// fewer than a few hundred requests a second per key.
//
// # The deny cache
//
// A denied request consumes nothing, and nothing but time makes a key admit
// again: a TAT only grows (every caller's admission pushes it further out,
// whatever limit it used). So a TAT that Redis reported is a lower bound of
// the key's TAT from then on, and a request that this TAT already denies
// would be denied by Redis too. The limiter keeps, per key, the latest TAT
// Redis reported for it while that TAT denies a request of cost 1 under
// the limit it is read with (and so a request of any cost): after a
// denial, or after an admission that used the last of the burst. While it
// does, requests for the key are denied locally, without a round trip,
// with Remaining, RetryAfter and ResetAfter computed from it. A denial of
// a large cost that still leaves room for cost 1 is not kept, so smaller
// requests still reach Redis; and a raised limit, under which the kept TAT
// admits cost 1, reaches Redis too, so it takes effect at once. For a
// single instance a local denial is exactly Redis's decision; when other
// instances pushed the TAT further, Redis would deny too, with a longer
// RetryAfter.
//
// Once, under the limit it is read with, the kept TAT admits a request of
// cost 1 again (at most the RetryAfter of cost 1 that Redis last reported),
// the next request goes to Redis, and only that one: requests of this
// instance for the same key that arrive meanwhile wait for its answer and
// then look at the cache again (a hot key costs each instance one round
// trip per admission, not one per request arriving during a round trip).
// If that request fails, the waiting ones fail with its error rather than
// queue up behind one more attempt each. Every reply from Redis raises the
// kept TAT, so the cache never falls behind this instance's own
// admissions.
//
// The cache holds at most DenyCacheSize keys, split over shards; a full
// shard drops expired entries first, otherwise arbitrary ones (losing an
// entry only costs a round trip). A key deleted in Redis by hand (a manual
// reset), or one that expired early because its writer's clock ran ahead,
// is seen by an instance only when its entry expires, at most one
// RetryAfter later.
type Redis struct {
	c     kv.Client
	now   func() time.Time
	cache *denyCache // nil when disabled

	evals, localDenials atomic.Int64
}

var _ agentapi.RateLimiter = (*Redis)(nil)

// NewRedis returns a limiter that keeps its state in c. c is not closed by
// the limiter.
func NewRedis(c kv.Client, o RedisOptions) *Redis {
	r := &Redis{c: c, now: o.Now}
	if r.now == nil {
		r.now = time.Now
	}
	if !o.DisableDenyCache {
		size := o.DenyCacheSize
		if size <= 0 {
			size = DefaultDenyCacheSize
		}
		r.cache = newDenyCache(size)
	}
	return r
}

// Allow decides one request of the given cost for key (the full Redis key)
// against limit and, when it is allowed, consumes it. Errors: KindInvalid
// for bad arguments; otherwise whatever the kv client returned (matching
// kv.ErrUnavailable when Redis cannot be reached), and no decision was
// made.
func (r *Redis) Allow(ctx context.Context, key string, limit agentapi.RateLimit, cost int) (agentapi.RateDecision, error) {
	p, err := compile("ratelimit.redis", limit, cost, time.Microsecond)
	if err != nil {
		return agentapi.RateDecision{}, err
	}
	now := r.now().UnixMicro()
	var lead *flight
	if r.cache != nil && cost > 0 && int64(cost) <= p.burst {
	lookup:
		for {
			tat, verdict, ch := r.cache.check(key, p, now)
			switch verdict {
			case denyLocal:
				// The kept TAT denies cost 1, so any cost.
				r.localDenials.Add(1)
				return decide(tat, now, p, int64(cost)).decision(limit, time.Microsecond), nil
			case waitRedis:
				select {
				case <-ch.done:
					if ch.err != nil {
						// Redis failed for the request we waited for: do
						// not queue up behind another attempt.
						return agentapi.RateDecision{}, ch.err
					}
					now = r.now().UnixMicro()
					continue
				case <-ctx.Done():
					return agentapi.RateDecision{}, agentapi.E("ratelimit.redis", agentapi.KindOther, ctx.Err())
				}
			case leadRedis:
				lead = ch
			}
			break lookup
		}
	}
	o, err := r.eval(ctx, key, p, cost, now)
	if r.cache != nil {
		if err == nil {
			// The key's TAT as Redis left it (reset is counted from our now).
			r.cache.observe(key, now+o.reset, p, now)
		}
		if lead != nil {
			ferr := err
			if ctx.Err() != nil {
				ferr = nil // our caller gave up, Redis did not fail: a waiter takes over
			}
			r.cache.finish(key, lead, ferr, p, now)
		}
	}
	if err != nil {
		return agentapi.RateDecision{}, err
	}
	return o.decision(limit, time.Microsecond), nil
}

// eval runs the script.
func (r *Redis) eval(ctx context.Context, key string, p params, cost int, now int64) (outcome, error) {
	r.evals.Add(1)
	v, err := r.c.Eval(ctx, gcraScript, []string{key},
		strconv.FormatInt(now, 10), strconv.FormatInt(p.interval, 10),
		strconv.FormatInt(p.burst, 10), strconv.Itoa(cost))
	if err != nil {
		return outcome{}, agentapi.E("ratelimit.redis", agentapi.KindOther, err)
	}
	o, err := parseReply(v)
	if err != nil {
		return outcome{}, agentapi.E("ratelimit.redis", agentapi.KindInternal, err)
	}
	return o, nil
}

func parseReply(v kv.Value) (outcome, error) {
	a, err := v.Array()
	if err != nil || len(a) != 4 {
		return outcome{}, errNoState
	}
	var n [4]int64
	for i := range n {
		if n[i], err = a[i].Int(); err != nil {
			return outcome{}, errNoState
		}
	}
	return outcome{allowed: n[0] == 1, remaining: n[1], retry: n[2], reset: n[3]}, nil
}

// RedisStats counts a Redis limiter's decisions since it was created.
type RedisStats struct {
	// Evals is the number of decisions sent to Redis (including failed
	// ones).
	Evals int64 `json:"evals"`
	// LocalDenials is the number of requests the deny cache denied
	// without a round trip.
	LocalDenials int64 `json:"local_denials"`
	// DenyCacheEntries is the deny cache's current size (0 when disabled).
	DenyCacheEntries int `json:"deny_cache_entries"`
}

// Stats reports the limiter's counters, for metrics and benchmarks.
func (r *Redis) Stats() RedisStats {
	s := RedisStats{Evals: r.evals.Load(), LocalDenials: r.localDenials.Load()}
	if r.cache != nil {
		s.DenyCacheEntries = r.cache.len()
	}
	return s
}
