package bench

// BenchmarkAuthValidate: authenticated-request overhead, ours (session
// validation with client-side caching) against a plain go-redis GET per
// request (the scs redisstore way), and ours without the cache.
//
//	go test -run '^$' -bench AuthValidate ./bench
//	go test -run '^$' -bench AuthValidate -count 6 ./bench -bench.authgoroutines=64 | benchstat -col /client -

import (
	"context"
	"flag"
	"fmt"
	"testing"

	"github.com/agentapi-mt/agentapi/kv/native"
)

var authGoroutinesFlag = flag.String("bench.authgoroutines", "1,16,64", "goroutine counts for BenchmarkAuthValidate")

func BenchmarkAuthValidate(b *testing.B) {
	gs, err := ParseInts(*authGoroutinesFlag)
	if err != nil {
		b.Fatalf("-bench.authgoroutines: %v", err)
	}
	url := benchRedisURL(b)
	ctx := context.Background()
	setupClient, err := native.Dial(ctx, native.Options{URL: url})
	if err != nil {
		b.Fatalf("dial: %v", err)
	}
	defer setupClient.Close()
	f, err := NewAuthFixture(ctx, setupClient, AuthSessions)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Cleanup(context.Background(), setupClient)

	for _, g := range gs {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			makers := []struct {
				name string
				make func() (AuthDriver, error)
			}{
				{"ours", func() (AuthDriver, error) { return NewOursAuth(ctx, url, f, true) }},
				{"ours-nocache", func() (AuthDriver, error) { return NewOursAuth(ctx, url, f, false) }},
				{"goredis-get", func() (AuthDriver, error) { return NewGoRedisAuth(url, f, g) }},
			}
			for _, mk := range makers {
				b.Run("client="+mk.name, func(b *testing.B) {
					d, err := mk.make()
					if err != nil {
						b.Fatal(err)
					}
					defer d.Close()
					// Unmeasured warm-up: every session read (and refreshed)
					// once, pools filled.
					if err := RunAuthN(ctx, d, g, 2*AuthSessions+4*g); err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					if err := RunAuthN(ctx, d, g, b.N); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "validations/s")
				})
			}
		})
	}
}
