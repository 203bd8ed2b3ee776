// Command kvbench measures kv/native (our Redis transport over rueidis)
// against go-redis v9 on the same Redis server, and with -rest kv/rest's
// Pipeline against single commands over an in-process Upstash REST server.
//
//	go run ./bench/kvbench [-redis URL] [-duration 2s] [-goroutines 1,16,64,256] [-rest]
//
// Without -redis it uses $REDIS_URL, or else starts a private redis-server
// (no persistence) on a free port and kills it at exit. It prints markdown
// tables on stdout and progress on stderr.
//
// Investigation flags: -variants "all" (or name substrings) adds rueidis
// option variants run through a benchmark-only adapter; -goredis-autopipeline
// adds go-redis's experimental AutoPipeline; -ops, -rounds, -warmup and
// -cpuprofile narrow or inspect a run. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/agentapi-mt/agentapi/bench"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/redis/rueidis"
)

func main() {
	os.Exit(run())
}

type config struct {
	redisURL   string
	duration   time.Duration
	warmup     time.Duration
	goroutines []int
	ops        []bench.Op
	rest       bool
	restBatch  int
	variants   []bench.Variant
	apGoRedis  bool
	rounds     int
}

func run() int {
	var cfg config
	var gs, ops string
	flag.StringVar(&cfg.redisURL, "redis", "", "Redis URL (default $REDIS_URL, else a private redis-server)")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "measured time per client per cell (run as two alternating halves)")
	flag.DurationVar(&cfg.warmup, "warmup", 200*time.Millisecond, "unmeasured run per client before each cell")
	flag.StringVar(&gs, "goroutines", "1,16,64,256", "comma-separated goroutine counts")
	flag.StringVar(&ops, "ops", "GET,SET,EVALSHA", "comma-separated operations")
	flag.BoolVar(&cfg.rest, "rest", false, "also compare kv/rest Pipeline of N SETs with N single SETs")
	flag.IntVar(&cfg.restBatch, "rest-batch", 100, "commands per REST batch")
	flag.IntVar(&cfg.rounds, "rounds", 2, "each client's time per cell is cut into 2*rounds slices, alternating the client order")
	variants := flag.String("variants", "", `also try rueidis option variants: "all" or comma-separated name substrings, e.g. "opts,flushdelay=20us" (slow: use few goroutine counts)`)
	flag.BoolVar(&cfg.apGoRedis, "goredis-autopipeline", false, "also run go-redis's experimental AutoPipeline (PoolSize = goroutines)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvbench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "kvbench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	cfg.variants = bench.SelectVariants(*variants)
	if *variants != "" && len(cfg.variants) == 0 {
		fmt.Fprintf(os.Stderr, "kvbench: -variants %q matches none of:\n", *variants)
		for _, v := range bench.Variants {
			fmt.Fprintln(os.Stderr, "  ", v.Name)
		}
		return 2
	}

	var err error
	if cfg.goroutines, err = bench.ParseInts(gs); err != nil {
		fmt.Fprintln(os.Stderr, "kvbench: -goroutines:", err)
		return 2
	}
	for _, o := range strings.Split(ops, ",") {
		op := bench.Op(strings.ToUpper(strings.TrimSpace(o)))
		switch op {
		case bench.OpGet, bench.OpSet, bench.OpEvalSHA:
			cfg.ops = append(cfg.ops, op)
		default:
			fmt.Fprintf(os.Stderr, "kvbench: -ops: unknown %q\n", o)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	serverNote := "given by -redis"
	if cfg.redisURL == "" {
		cfg.redisURL = os.Getenv("REDIS_URL")
		serverNote = "from $REDIS_URL"
	}
	if cfg.redisURL == "" {
		srv, err := bench.StartRedis()
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvbench:", err)
			return 1
		}
		defer srv.Close()
		cfg.redisURL = srv.URL()
		serverNote = "private redis-server --save '' --appendonly no, started by kvbench"
	}

	if err := benchmark(ctx, cfg, serverNote, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kvbench:", err)
		return 1
	}
	return 0
}

func benchmark(ctx context.Context, cfg config, serverNote string, w io.Writer) error {
	ours, err := native.Dial(ctx, native.Options{URL: cfg.redisURL})
	if err != nil {
		return fmt.Errorf("dial kv/native: %w", err)
	}
	defer ours.Close()

	ks := bench.NewKeyspace(bench.UniquePrefix())
	if err := ks.Prepare(ctx, ours); err != nil {
		return err
	}
	defer ks.Cleanup(context.Background(), ours)

	fmt.Fprintf(w, "## kvbench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- machine: %s/%s, %s, NumCPU=%d, GOMAXPROCS=%d, %s\n",
		runtime.GOOS, runtime.GOARCH, cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(w, "- redis: %s (%s, %s)\n", bench.RedisVersion(ctx, ours), redactURL(cfg.redisURL), serverNote)
	fmt.Fprintf(w, "- ours: kv/native.Dial with default Options (client-side caching %v), called through kv.Client (Do / Eval); a fresh client per cell\n", onOff(ours.Caching()))
	fmt.Fprintf(w, "- go-redis: v9 redis.NewClient with PoolSize = goroutines (one connection per goroutine, so it is never starved), a fresh client per cell; EVALSHA via redis.Script.Run\n")
	fmt.Fprintf(w, "- each cell: %v unmeasured warm-up per client, then %v measured per client in %d slices alternating the order (ours, go-redis, go-redis, ours, ...); closed loop, %d keys, %d-byte values\n\n",
		cfg.warmup, cfg.duration, 2*max(cfg.rounds, 1), bench.NumKeys, bench.ValueSize)

	type row struct {
		op      bench.Op
		g       int
		results []bench.Result
		names   []string
	}
	var rows []row
	failed := false
	for _, op := range cfg.ops {
		for _, g := range cfg.goroutines {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			drivers, closeAll, err := cellDrivers(ctx, cfg, g)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "kvbench: %s g=%d ...", op, g)
			rs := bench.Compare(ctx, ks, drivers, op, g, cfg.duration, cfg.warmup, cfg.rounds)
			closeAll()
			names := make([]string, len(drivers))
			for i, d := range drivers {
				names[i] = d.Name()
			}
			fmt.Fprintf(os.Stderr, " ours %s/s, go-redis %s/s\n", bench.FormatRate(rs[0].PerSec()), bench.FormatRate(rs[1].PerSec()))
			for _, r := range rs {
				if r.Err != nil {
					failed = true
					fmt.Fprintln(os.Stderr, "kvbench: error:", r.Err)
				}
			}
			rows = append(rows, row{op, g, rs, names})
		}
	}

	fmt.Fprintln(w, "| op | goroutines | ours ops/s | go-redis ops/s | ratio ours/go-redis |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", r.op, r.g, rate(r.results[0]), rate(r.results[1]),
			ratio(r.results[0], r.results[1]))
	}
	fmt.Fprintln(w)

	if len(cfg.variants) > 0 || cfg.apGoRedis {
		fmt.Fprintln(w, "### rueidis option variants (benchmark-only adapter over rueidis.Client, same call path as kv/native) and go-redis AutoPipeline")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| op | goroutines | client | ops/s | vs go-redis | vs ours |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|")
		for _, r := range rows {
			for i := range r.results {
				fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", r.op, r.g, r.names[i], rate(r.results[i]),
					ratio(r.results[i], r.results[1]), ratio(r.results[i], r.results[0]))
			}
		}
		fmt.Fprintln(w)
	}

	if cfg.rest {
		if err := restTable(ctx, cfg, ks, w); err != nil {
			return err
		}
	}
	if failed {
		return fmt.Errorf("some runs failed; see errors above")
	}
	return nil
}

// cellDrivers returns fresh clients for one cell, so that no client carries
// state from an earlier cell: ours (kv/native.Dial, default Options), a
// go-redis client with PoolSize g, and with -variants the rueidis variants and go-redis's
// AutoPipeline when asked. closeAll closes what was created for the cell.
func cellDrivers(ctx context.Context, cfg config, g int) ([]bench.Driver, func(), error) {
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	ours, err := native.Dial(ctx, native.Options{URL: cfg.redisURL})
	if err != nil {
		return nil, nil, fmt.Errorf("dial kv/native: %w", err)
	}
	closers = append(closers, func() { ours.Close() })
	rdb, err := bench.NewGoRedisClient(cfg.redisURL, g)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("go-redis: %w", err)
	}
	closers = append(closers, func() { rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("go-redis PING: %w", err)
	}
	drivers := []bench.Driver{bench.NewOurs(ours), bench.NewGoRedis(rdb)}
	for _, v := range cfg.variants {
		opt, err := bench.NativeLikeOption(cfg.redisURL)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		v.Mod(&opt, g)
		rc, err := rueidis.NewClient(opt)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("variant %s: %w", v.Name, err)
		}
		closers = append(closers, rc.Close)
		drivers = append(drivers, bench.NewRueidis(v.Name, rc))
	}
	if !cfg.apGoRedis {
		return drivers, closeAll, nil
	}
	// go-redis's opt-in autopipeliner (experimental API) on its own client.
	rdb2, err := bench.NewGoRedisClient(cfg.redisURL, g)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	ap, err := rdb2.AutoPipeline()
	if err != nil {
		rdb2.Close()
		closeAll()
		return nil, nil, fmt.Errorf("go-redis AutoPipeline: %w", err)
	}
	closers = append(closers, func() { ap.Close(); rdb2.Close() })
	d := bench.NewGoRedis(ap)
	d.Label = "go-redis AutoPipeline (experimental)"
	drivers = append(drivers, d)
	return drivers, closeAll, nil
}

// restTable compares one kv/rest Pipeline of N SETs with N single Do SETs,
// over restserver (Upstash REST over the same Redis) served in-process.
func restTable(ctx context.Context, cfg config, ks *bench.Keyspace, w io.Writer) error {
	const token = "kvbench-token"
	rc, err := restserver.NewRedisClient(cfg.redisURL)
	if err != nil {
		return err
	}
	defer rc.Close()
	ts := httptest.NewServer(restserver.New(rc, token))
	defer ts.Close()
	c, err := rest.New(rest.Options{URL: ts.URL, Token: token})
	if err != nil {
		return err
	}
	defer c.Close()

	cmds := bench.RESTBatch(ks, cfg.restBatch)
	defer func() {
		keys := []string{"DEL"}
		for _, cmd := range cmds {
			keys = append(keys, cmd[1])
		}
		c.Do(context.Background(), keys...)
	}()
	fmt.Fprintf(os.Stderr, "kvbench: REST %d SETs ...", cfg.restBatch)
	// warm-up: dial the keep-alive connection
	bench.TimeBatches(ctx, c, cmds, bench.PipelineBatch, cfg.warmup/2)
	bench.TimeBatches(ctx, c, cmds, bench.SingleBatch, cfg.warmup/2)
	half := cfg.duration / 2
	pipe := bench.TimeBatches(ctx, c, cmds, bench.PipelineBatch, half)
	single := bench.TimeBatches(ctx, c, cmds, bench.SingleBatch, half)
	single = single.Add(bench.TimeBatches(ctx, c, cmds, bench.SingleBatch, half))
	pipe = pipe.Add(bench.TimeBatches(ctx, c, cmds, bench.PipelineBatch, half))
	for _, r := range []bench.Result{pipe, single} {
		if r.Err != nil {
			fmt.Fprintln(os.Stderr)
			return fmt.Errorf("REST: %w", r.Err)
		}
	}
	fmt.Fprintln(os.Stderr, " done")

	per := func(r bench.Result) time.Duration {
		if r.Ops == 0 {
			return 0
		}
		return r.Elapsed / time.Duration(r.Ops)
	}
	pp, sp := per(pipe), per(single)
	fmt.Fprintf(w, "### kv/rest over restserver (httptest, same Redis): one batch of %d SETs, one goroutine\n\n", cfg.restBatch)
	fmt.Fprintln(w, "| mode | batches | time per batch | time per command | SETs/s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, x := range []struct {
		name string
		r    bench.Result
		p    time.Duration
	}{
		{fmt.Sprintf("Pipeline (1 request of %d)", cfg.restBatch), pipe, pp},
		{fmt.Sprintf("%d × Do (%d requests)", cfg.restBatch, cfg.restBatch), single, sp},
	} {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", x.name, x.r.Ops, round(x.p), round(x.p/time.Duration(cfg.restBatch)),
			bench.FormatRate(x.r.PerSec()*float64(cfg.restBatch)))
	}
	fmt.Fprintf(w, "\nPipeline is %.1f× faster than %d single commands (time per batch, single/pipeline).\n\n",
		float64(sp)/float64(pp), cfg.restBatch)
	return nil
}

func rate(r bench.Result) string {
	if r.Err != nil {
		return "error"
	}
	return bench.FormatRate(r.PerSec())
}

func ratio(a, b bench.Result) string {
	if a.Err != nil || b.Err != nil {
		return "–"
	}
	x := bench.Ratio(a.PerSec(), b.PerSec())
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "cpu unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "cpu unknown"
}

// redactURL hides a password in the URL.
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		return scheme + "://***@" + rest[at+1:]
	}
	return u
}
