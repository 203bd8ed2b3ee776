package bench

// Go benchmarks for the same comparisons as kvbench:
//
//	go test -run '^$' -bench . ./bench
//	go test -run '^$' -bench 'Get|Set|EvalSHA' -count 6 ./bench -bench.goroutines=64 | benchstat -col /client -
//
// They use $REDIS_URL, else redistest.URL (REDIS_TEST_URL or a throwaway
// redis-server), and are skipped when neither is available. There are no
// Test functions here: plain `go test ./...` only compiles this package.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
)

var goroutinesFlag = flag.String("bench.goroutines", "1,16,64,256", "goroutine counts for BenchmarkGet/Set/EvalSHA")

// benchRedisURL is $REDIS_URL, else redistest.URL, which honours
// REDIS_TEST_URL or starts a redis-server for b and skips b when there is
// none (redistest.Require; with CI=true that is a failure instead).
func benchRedisURL(b *testing.B) string {
	b.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return redistest.URL(b)
}

type benchEnv struct {
	url  string
	ours *native.Client
	ks   *Keyspace
}

func setup(b *testing.B) *benchEnv {
	b.Helper()
	url := benchRedisURL(b)
	ctx := context.Background()
	ours, err := native.Dial(ctx, native.Options{URL: url})
	if err != nil {
		b.Fatalf("dial kv/native: %v", err)
	}
	ks := NewKeyspace(UniquePrefix())
	if err := ks.Prepare(ctx, ours); err != nil {
		ours.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ks.Cleanup(context.Background(), ours)
		ours.Close()
	})
	return &benchEnv{url: url, ours: ours, ks: ks}
}

func BenchmarkGet(b *testing.B)     { benchOp(b, OpGet) }
func BenchmarkSet(b *testing.B)     { benchOp(b, OpSet) }
func BenchmarkEvalSHA(b *testing.B) { benchOp(b, OpEvalSHA) }

// benchOp runs op through ours (kv/native via kv.Client) and go-redis
// (PoolSize = goroutines) from each goroutine count; b.N operations are
// split over the goroutines, so ns/op is the inverse of throughput.
func benchOp(b *testing.B, op Op) {
	gs, err := ParseInts(*goroutinesFlag)
	if err != nil {
		b.Fatalf("-bench.goroutines: %v", err)
	}
	env := setup(b)
	ctx := context.Background()
	for _, g := range gs {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			rdb, err := NewGoRedisClient(env.url, g)
			if err != nil {
				b.Fatal(err)
			}
			defer rdb.Close()
			drivers := []Driver{NewOurs(env.ours), NewGoRedis(rdb)}
			for _, d := range drivers {
				name := "ours"
				if _, ok := d.(*GoRedis); ok {
					name = "goredis"
				}
				b.Run("client="+name, func(b *testing.B) {
					// unmeasured warm-up: fills go-redis's pool, starts
					// rueidis's pipelines
					if err := RunN(ctx, env.ks, d, op, g, 4*g); err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					if err := RunN(ctx, env.ks, d, op, g, b.N); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
				})
			}
		})
	}
}

const restToken = "bench-token"

func restClient(b *testing.B, env *benchEnv) *rest.Client {
	b.Helper()
	base, _ := restserver.StartTest(b, env.url, restToken)
	c, err := rest.New(rest.Options{URL: base, Token: restToken})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkRESTPipeline100: one op is one kv/rest Pipeline of 100 SETs.
func BenchmarkRESTPipeline100(b *testing.B) { benchREST(b, PipelineBatch) }

// BenchmarkRESTSingle100: one op is 100 kv/rest Do SETs, one after another.
func BenchmarkRESTSingle100(b *testing.B) { benchREST(b, SingleBatch) }

func benchREST(b *testing.B, f BatchFunc) {
	env := setup(b)
	c := restClient(b, env)
	ctx := context.Background()
	cmds := RESTBatch(env.ks, 100)
	b.Cleanup(func() {
		args := []string{"DEL"}
		for _, cmd := range cmds {
			args = append(args, cmd[1])
		}
		env.ours.Do(context.Background(), args...)
	})
	if err := f(ctx, c, cmds); err != nil { // warm-up: dial the connection
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := f(ctx, c, cmds); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*len(cmds))/b.Elapsed().Seconds(), "SETs/s")
}
