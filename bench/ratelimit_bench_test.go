package bench

// Go benchmarks for rate limiting (see README.md, "Rate limiting"):
//
//	go test -run '^$' -bench RateLimit ./bench
//	go test -run '^$' -bench 'RateLimit/distinct/goroutines=64' -count 6 ./bench | benchstat -col /lib -
//
// BenchmarkRateLimit/<scenario>/goroutines=N/lib=L splits b.N decisions over
// N goroutines and reports decisions/s and the share admitted. They use
// $REDIS_URL, else redistest.URL (REDIS_TEST_URL or a throwaway
// redis-server), and are skipped when neither is available.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/redistest"
)

var rlGoroutinesFlag = flag.String("bench.rl.goroutines", "1,16,64,256", "goroutine counts for BenchmarkRateLimit")

func rlRedisURL(b *testing.B) string {
	b.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return redistest.URL(b)
}

func BenchmarkRateLimit(b *testing.B) {
	gs, err := ParseInts(*rlGoroutinesFlag)
	if err != nil {
		b.Fatal(err)
	}
	url := rlRedisURL(b)
	ctx := context.Background()
	for _, s := range RLScenarios {
		b.Run(string(s), func(b *testing.B) {
			for _, g := range gs {
				b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
					for _, name := range RLDriverNames {
						b.Run("lib="+name, func(b *testing.B) {
							prefix := fmt.Sprintf("rlbenchtest:%d:%d:%s:", os.Getpid(), time.Now().UnixNano(), name)
							d, err := NewRLDriver(ctx, name, url, RLLimitFor(s), g, prefix)
							if err != nil {
								b.Fatal(err)
							}
							defer d.Close()
							RLRunFor(ctx, d, s, g, 50*time.Millisecond) // connections up, scripts loaded
							b.ResetTimer()
							allowed, errs := rlRunN(ctx, d, s, g, b.N)
							b.StopTimer()
							b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
							b.ReportMetric(float64(allowed)/float64(b.N), "admitted/op")
							if errs > 0 {
								b.ReportMetric(float64(errs)/float64(b.N), "errors/op")
							}
						})
					}
				})
			}
		})
	}
}

// rlRunN makes n decisions on d, split over g goroutines.
func rlRunN(ctx context.Context, d RLDriver, s RLScenario, g, n int) (allowed, errs int64) {
	var wg sync.WaitGroup
	var a, e atomic.Int64
	for gi := range g {
		share := n / g
		if gi < n%g {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ok, bad int64
			for i := range share {
				yes, err := d.Allow(ctx, RLKey(s, gi, i))
				if err != nil {
					bad++
				} else if yes {
					ok++
				}
			}
			a.Add(ok)
			e.Add(bad)
		}()
	}
	wg.Wait()
	return a.Load(), e.Load()
}
