package ratelimit_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/ratelimit"
	"github.com/agentapi-mt/agentapi/redistest"
)

// TestExactAcrossInstances hammers one key from three limiters with
// separate kv clients ("three instances") on one Redis, on the real clock,
// and counts admissions against the bound of agentapi.RateLimit:
//
//	admitted ≤ Burst + Rate·elapsed/Period (+1)
//
// where elapsed runs from before the first request's clock reading to after
// the last one. The +1 is for rounding: the time is sent in whole
// microseconds, so the span of the times Redis saw may exceed elapsed by up
// to 1µs, which can complete one more interval. It also wants at least 90%
// of the bound: no under-admission, deny cache included.
func TestExactAcrossInstances(t *testing.T) {
	url := redistest.URL(t)
	base := startREST(t, url)
	cases := []struct {
		name   string
		client func(t *testing.T) kv.Client
		limit  agentapi.RateLimit
		cache  bool
	}{
		// Native: 1000/s, a request every ms.
		{"native/denycache=true", func(t *testing.T) kv.Client { return dialNative(t, url) }, agentapi.RateLimit{Rate: 1000, Period: time.Second, Burst: 50}, true},
		{"native/denycache=false", func(t *testing.T) kv.Client { return dialNative(t, url) }, agentapi.RateLimit{Rate: 1000, Period: time.Second, Burst: 50}, false},
		// REST is slower (one HTTP request per round trip): 200/s.
		{"rest/denycache=true", func(t *testing.T) kv.Client { return newREST(t, base) }, agentapi.RateLimit{Rate: 200, Period: time.Second, Burst: 20}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const instances, perInstance, run = 3, 8, 3 * time.Second
			var limiters []*ratelimit.Redis
			for range instances {
				limiters = append(limiters, ratelimit.NewRedis(tc.client(t), ratelimit.RedisOptions{DisableDenyCache: !tc.cache}))
			}
			key := fmt.Sprintf("rlexact:%d:{t:a}:rl:hot", time.Now().UnixNano())
			ctx := testCtx(t)
			var (
				admitted, calls atomic.Int64
				firstErr        atomic.Value
				wg              sync.WaitGroup
			)
			start := time.Now()
			stop := start.Add(run)
			for _, l := range limiters {
				for range perInstance {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(stop) {
							d, err := l.Allow(ctx, key, tc.limit, 1)
							calls.Add(1)
							if err != nil {
								firstErr.CompareAndSwap(nil, err)
								return
							}
							if d.Allowed {
								admitted.Add(1)
							}
						}
					}()
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			if err := firstErr.Load(); err != nil {
				t.Fatalf("Allow: %v", err)
			}
			T := tc.limit.Period / time.Duration(tc.limit.Rate)
			bound := int64(tc.limit.Burst) + int64(elapsed/T) + 1
			got := admitted.Load()
			var evals, local int64
			for _, l := range limiters {
				s := l.Stats()
				evals += s.Evals
				local += s.LocalDenials
			}
			t.Logf("%d instances × %d goroutines, %v: admitted %d of %d calls (bound %d, %.2f%%); %d round trips, %d local denials",
				instances, perInstance, elapsed.Round(time.Millisecond), got, calls.Load(), bound, 100*float64(got)/float64(bound), evals, local)
			if got > bound {
				t.Errorf("admitted %d, more than Burst + Rate·elapsed/Period + 1 = %d", got, bound)
			}
			// Under-admission: the callers cannot always keep the key busy on
			// a loaded machine, so the floor is loose; a limiter that
			// mis-counts misses it by far more.
			if float64(got) < 0.90*float64(bound) {
				t.Errorf("admitted %d, less than 90%% of the %d allowed", got, bound)
			}
		})
	}
}
