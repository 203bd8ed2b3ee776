package bench

// Rate limiting: package ratelimit's Redis limiter against
// github.com/go-redis/redis_rate/v10, github.com/ulule/limiter/v3 (Redis
// store) and github.com/throttled/throttled/v2 (GCRA over its go-redis v9
// store), on one Redis. Shared by bench/ratelimitbench and
// ratelimit_bench_test.go; see README.md, "Rate limiting".

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/throttled/throttled/v2"
	goredisstore "github.com/throttled/throttled/v2/store/goredisstore.v9"
	limiter "github.com/ulule/limiter/v3"
	ululeredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/ratelimit"
)

// RLScenario is a rate-limit workload.
type RLScenario string

const (
	// RLDistinct: every call goes to one of RLNumKeys keys, each far under
	// its limit, so every request is admitted: pure decision throughput.
	RLDistinct RLScenario = "distinct"
	// RLHot: every call goes to one key far over its limit (RLHotLimit),
	// so nearly every request is denied: where a deny cache matters.
	RLHot RLScenario = "hot"
)

// RLScenarios lists the scenarios in table order.
var RLScenarios = []RLScenario{RLDistinct, RLHot}

// RLNumKeys is how many keys RLDistinct cycles through.
const RLNumKeys = 10000

// RLDistinctLimit is the limit of each key in RLDistinct: 1000/s with a
// burst of 1000, far above what one of 10,000 keys receives.
var RLDistinctLimit = agentapi.RateLimit{Rate: 1000, Period: time.Second, Burst: 1000}

// RLHotLimit is the limit of the hot key, and of the exactness workload:
// 1000/s, burst 50.
var RLHotLimit = agentapi.RateLimit{Rate: 1000, Period: time.Second, Burst: 50}

// RLLimitFor is the limit a scenario enforces.
func RLLimitFor(s RLScenario) agentapi.RateLimit {
	if s == RLHot {
		return RLHotLimit
	}
	return RLDistinctLimit
}

// RLDriver makes one rate-limit decision of cost 1 through one library,
// against the limit it was created with.
type RLDriver interface {
	Name() string
	// Algorithm names what the library enforces, for the tables.
	Algorithm() string
	Allow(ctx context.Context, key string) (bool, error)
	Close() error
}

// RLDriverNames lists the drivers a run compares by default, in table
// order.
var RLDriverNames = []string{"ours", "ours-nocache", "redis_rate", "ulule", "throttled"}

// RLExtraDriverNames are drivers for investigation only: "ours-notracking"
// is ours without deny cache over a kv/native client with client-side
// caching off (DisableCache), so without CLIENT TRACKING.
var RLExtraDriverNames = []string{"ours-notracking"}

// NewRLDriver creates the named driver over the Redis at url for limit l.
// The go-redis based ones get a pool of poolSize connections (one per
// goroutine, so none waits for a connection). prefix namespaces its keys.
func NewRLDriver(ctx context.Context, name, url string, l agentapi.RateLimit, poolSize int, prefix string) (RLDriver, error) {
	switch name {
	case "ours", "ours-nocache", "ours-notracking":
		c, err := native.Dial(ctx, native.Options{URL: url, DisableCache: name == "ours-notracking"})
		if err != nil {
			return nil, err
		}
		return &RLOurs{label: name, c: c, l: l, prefix: prefix,
			r: ratelimit.NewRedis(c, ratelimit.RedisOptions{DisableDenyCache: name != "ours"})}, nil
	case "redis_rate":
		rdb, err := NewGoRedisClient(url, poolSize)
		if err != nil {
			return nil, err
		}
		return &RLRedisRate{rdb: rdb, lim: redis_rate.NewLimiter(rdb), prefix: prefix,
			l: redis_rate.Limit{Rate: l.Rate, Burst: l.Burst, Period: l.Period}}, nil
	case "ulule":
		rdb, err := NewGoRedisClient(url, poolSize)
		if err != nil {
			return nil, err
		}
		store, err := ululeredis.NewStoreWithOptions(rdb, limiter.StoreOptions{Prefix: prefix + "ulule"})
		if err != nil {
			rdb.Close()
			return nil, err
		}
		return &RLUlule{rdb: rdb, lim: limiter.New(store, limiter.Rate{Period: l.Period, Limit: int64(l.Rate)})}, nil
	case "throttled":
		rdb, err := NewGoRedisClient(url, poolSize)
		if err != nil {
			return nil, err
		}
		store, err := goredisstore.NewCtx(rdb, prefix+"throttled:")
		if err != nil {
			rdb.Close()
			return nil, err
		}
		// MaxBurst counts the requests beyond the first: burst B is B-1.
		lim, err := throttled.NewGCRARateLimiterCtx(store, throttled.RateQuota{
			MaxRate: throttled.PerDuration(l.Rate, l.Period), MaxBurst: max(l.Burst, 1) - 1})
		if err != nil {
			rdb.Close()
			return nil, err
		}
		return &RLThrottled{rdb: rdb, lim: lim}, nil
	}
	return nil, fmt.Errorf("unknown rate-limit driver %q (have %v)", name, RLDriverNames)
}

// RLOurs is ratelimit.Redis over kv/native: one EVALSHA per decision; with
// the deny cache ("ours") or without ("ours-nocache").
type RLOurs struct {
	label  string
	c      *native.Client
	r      *ratelimit.Redis
	l      agentapi.RateLimit
	prefix string
}

func (o *RLOurs) Name() string { return o.label }

func (o *RLOurs) Algorithm() string {
	if o.label == "ours" {
		return "GCRA, 1 script, deny cache"
	}
	return "GCRA, 1 script"
}

func (o *RLOurs) Allow(ctx context.Context, key string) (bool, error) {
	d, err := o.r.Allow(ctx, o.prefix+key, o.l, 1)
	return d.Allowed, err
}

func (o *RLOurs) Close() error { return o.c.Close() }

// Stats exposes the limiter's counters (round trips, local denials).
func (o *RLOurs) Stats() ratelimit.RedisStats { return o.r.Stats() }

// RLRedisRate is go-redis/redis_rate v10: GCRA in one script, with server
// time (redis.replicate_commands + TIME).
type RLRedisRate struct {
	rdb    *redis.Client
	lim    *redis_rate.Limiter
	l      redis_rate.Limit
	prefix string
}

func (r *RLRedisRate) Name() string      { return "redis_rate" }
func (r *RLRedisRate) Algorithm() string { return "GCRA, 1 script, server time" }

func (r *RLRedisRate) Allow(ctx context.Context, key string) (bool, error) {
	res, err := r.lim.Allow(ctx, r.prefix+key, r.l)
	if err != nil {
		return false, err
	}
	return res.Allowed > 0, nil
}

func (r *RLRedisRate) Close() error { return r.rdb.Close() }

// RLUlule is ulule/limiter v3 with its Redis store: a fixed window (INCRBY
// and PEXPIRE in one script), Rate requests per Period; it has no burst.
type RLUlule struct {
	rdb *redis.Client
	lim *limiter.Limiter
}

func (u *RLUlule) Name() string      { return "ulule" }
func (u *RLUlule) Algorithm() string { return "fixed window, 1 script" }

func (u *RLUlule) Allow(ctx context.Context, key string) (bool, error) {
	c, err := u.lim.Get(ctx, key)
	if err != nil {
		return false, err
	}
	return !c.Reached, nil
}

func (u *RLUlule) Close() error { return u.rdb.Close() }

// RLThrottled is throttled v2.15's GCRARateLimiterCtx over its own go-redis
// v9 store (store/goredisstore.v9): GET with TIME in a pipeline, then a
// compare-and-swap script (SETNX + EXPIRE for a new key), retried up to 10
// times under contention.
type RLThrottled struct {
	rdb *redis.Client
	lim *throttled.GCRARateLimiterCtx
}

func (t *RLThrottled) Name() string      { return "throttled" }
func (t *RLThrottled) Algorithm() string { return "GCRA, GET+TIME then CAS script" }

func (t *RLThrottled) Allow(ctx context.Context, key string) (bool, error) {
	limited, _, err := t.lim.RateLimitCtx(ctx, key, 1)
	return !limited && err == nil, err
}

func (t *RLThrottled) Close() error { return t.rdb.Close() }

// RLKey is the i-th key of goroutine g in scenario s: the hot key, or one
// of RLNumKeys spread over the goroutines.
func RLKey(s RLScenario, g, i int) string {
	if s == RLHot {
		return "{t:bench}:rl:hot"
	}
	return "{t:bench}:rl:k" + strconv.Itoa((g*keyStride+i)%RLNumKeys)
}

// LatencyHist is a log-linear latency histogram: 16 buckets per power of
// two, so quantiles are within about 3%. The zero value is empty.
type LatencyHist struct {
	b [1024]int64
	n int64
}

func histIndex(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	e := bits.Len64(uint64(ns)) // >= 5
	return (e-4)*16 + int(ns>>(e-5))&15
}

func histValue(i int) time.Duration {
	if i < 16 {
		return time.Duration(i)
	}
	e, sub := i/16+4, int64(i%16)
	lo := (16 + sub) << (e - 5)
	return time.Duration(lo + (int64(1)<<(e-5))/2)
}

// Add records one latency.
func (h *LatencyHist) Add(d time.Duration) {
	h.b[histIndex(int64(d))]++
	h.n++
}

// Merge adds o's counts.
func (h *LatencyHist) Merge(o *LatencyHist) {
	for i, c := range o.b {
		h.b[i] += c
	}
	h.n += o.n
}

// Quantile is the latency below which a fraction q of the calls fell.
func (h *LatencyHist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q * float64(h.n))
	var seen int64
	for i, c := range h.b {
		seen += c
		if seen > rank {
			return histValue(i)
		}
	}
	return histValue(len(h.b) - 1)
}

// RLResult is what one driver did in one or more timed runs.
type RLResult struct {
	Calls, Allowed, Errors int64
	Elapsed                time.Duration
	Hist                   LatencyHist
	FirstErr               error
}

// PerSec is decisions per second: calls that returned a decision, not
// an error.
func (r *RLResult) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls-r.Errors) / r.Elapsed.Seconds()
}

// Add accumulates another run.
func (r *RLResult) Add(o *RLResult) {
	r.Calls += o.Calls
	r.Allowed += o.Allowed
	r.Errors += o.Errors
	r.Elapsed += o.Elapsed
	r.Hist.Merge(&o.Hist)
	if r.FirstErr == nil {
		r.FirstErr = o.FirstErr
	}
}

// rlMaxErrors stops a run whose driver does nothing but fail.
const rlMaxErrors = 10000

// RLRunFor runs closed-loop decisions on d from g goroutines for dur.
// Errors are counted (throttled's compare-and-swap gives up under
// contention) and do not stop the run unless there are more than 10,000.
func RLRunFor(ctx context.Context, d RLDriver, s RLScenario, g int, dur time.Duration) *RLResult {
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		start = make(chan struct{})
		parts = make([]RLResult, g)
	)
	for gi := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &parts[gi]
			<-start
			for i := 0; !stop.Load(); i++ {
				t0 := time.Now()
				ok, err := d.Allow(ctx, RLKey(s, gi, i))
				r.Hist.Add(time.Since(t0))
				r.Calls++
				switch {
				case err != nil:
					r.Errors++
					if r.FirstErr == nil {
						r.FirstErr = err
					}
					if r.Errors > rlMaxErrors/int64(g) || ctx.Err() != nil {
						stop.Store(true)
					}
				case ok:
					r.Allowed++
				}
			}
		}()
	}
	t0 := time.Now()
	close(start)
	timer := time.NewTimer(dur)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	stop.Store(true)
	wg.Wait()
	total := &RLResult{}
	for i := range parts {
		total.Add(&parts[i])
	}
	total.Elapsed = time.Since(t0)
	return total
}

// RLCompare measures drivers on one cell (scenario, goroutines): each is
// warmed up for warm, then dur is cut into 2·rounds slices per driver, run
// in alternating order (forward, then backward), so no driver gains from
// running first or last.
func RLCompare(ctx context.Context, drivers []RLDriver, s RLScenario, g int, dur, warm time.Duration, rounds int) []*RLResult {
	for _, d := range drivers {
		if warm > 0 {
			RLRunFor(ctx, d, s, g, warm)
		}
	}
	out := make([]*RLResult, len(drivers))
	for i := range out {
		out[i] = &RLResult{}
	}
	slices := 2 * max(rounds, 1)
	slice := dur / time.Duration(slices)
	for k := range slices {
		for j := range drivers {
			i := j
			if k%2 == 1 {
				i = len(drivers) - 1 - j
			}
			out[i].Add(RLRunFor(ctx, drivers[i], s, g, slice))
		}
	}
	return out
}

// RLExact is the outcome of the exactness workload for one driver.
type RLExact struct {
	Admitted, Calls, Errors int64
	Elapsed                 time.Duration
	// Exact is what the limit allows over Elapsed: Burst + Rate·Elapsed/Period.
	Exact float64
}

// RLRunExact hammers one fresh key with limit l (the driver's) from g
// goroutines for dur and counts admissions. Elapsed runs from before the
// first call to after the last one returned.
func RLRunExact(ctx context.Context, d RLDriver, l agentapi.RateLimit, key string, g int, dur time.Duration) RLExact {
	var admitted, calls, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(dur)
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				ok, err := d.Allow(ctx, key)
				calls.Add(1)
				if err != nil {
					errs.Add(1)
				} else if ok {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	return RLExact{Admitted: admitted.Load(), Calls: calls.Load(), Errors: errs.Load(), Elapsed: el,
		Exact: float64(l.Burst) + float64(l.Rate)*el.Seconds()/l.Period.Seconds()}
}
