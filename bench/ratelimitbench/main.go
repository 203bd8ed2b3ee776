// Command ratelimitbench measures package ratelimit's Redis limiter against
// go-redis/redis_rate v10, ulule/limiter v3 (Redis store) and throttled v2
// (GCRA over its go-redis v9 store) on one Redis server:
//
//	go run ./bench/ratelimitbench [-redis URL] [-duration 2s] [-goroutines 1,16,64,256]
//
// For each scenario (distinct keys under their limits; one hot key over its
// limit) and goroutine count it reports decisions per second and p50/p99
// latency per library, then runs the exactness workload (one fresh key,
// 1000/s with a burst of 50, 64 goroutines for 2s) and compares each
// library's admissions with what the limit allows. Without -redis it uses
// $REDIS_URL, or else starts a private redis-server and kills it at exit.
// Markdown goes to stdout, progress to stderr. See bench/README.md, "Rate
// limiting".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/agentapi-mt/agentapi/bench"
	"github.com/agentapi-mt/agentapi/kv/native"
)

func main() { os.Exit(run()) }

type config struct {
	url             string
	duration, warm  time.Duration
	rounds          int
	goroutines      []int
	scenarios       []bench.RLScenario
	drivers         []string
	exactDur        time.Duration
	exactGoroutines int
}

func run() int {
	var cfg config
	var gs, scen, drivers string
	flag.StringVar(&cfg.url, "redis", "", "Redis URL (default $REDIS_URL, else a private redis-server)")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "measured time per library per cell")
	flag.DurationVar(&cfg.warm, "warmup", 200*time.Millisecond, "unmeasured run per library before each cell")
	flag.IntVar(&cfg.rounds, "rounds", 2, "each library's time per cell is cut into 2*rounds slices, alternating the order")
	flag.StringVar(&gs, "goroutines", "1,16,64,256", "comma-separated goroutine counts")
	flag.StringVar(&scen, "scenarios", "distinct,hot", "comma-separated scenarios: distinct, hot")
	flag.StringVar(&drivers, "libs", strings.Join(bench.RLDriverNames, ","), "comma-separated libraries")
	flag.DurationVar(&cfg.exactDur, "exact", 2*time.Second, "duration of the exactness workload (0 skips it)")
	flag.IntVar(&cfg.exactGoroutines, "exact-goroutines", 64, "goroutines of the exactness workload")
	flag.Parse()
	var err error
	if cfg.goroutines, err = bench.ParseInts(gs); err != nil {
		return fail(err)
	}
	for _, s := range strings.Split(scen, ",") {
		s := bench.RLScenario(strings.TrimSpace(s))
		if !slices.Contains(bench.RLScenarios, s) {
			return fail(fmt.Errorf("unknown scenario %q", s))
		}
		cfg.scenarios = append(cfg.scenarios, s)
	}
	for _, d := range strings.Split(drivers, ",") {
		d = strings.TrimSpace(d)
		if !slices.Contains(bench.RLDriverNames, d) && !slices.Contains(bench.RLExtraDriverNames, d) {
			return fail(fmt.Errorf("unknown library %q (have %v, and %v)", d, bench.RLDriverNames, bench.RLExtraDriverNames))
		}
		cfg.drivers = append(cfg.drivers, d)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.url == "" {
		cfg.url = os.Getenv("REDIS_URL")
	}
	if cfg.url == "" {
		srv, err := bench.StartRedis()
		if err != nil {
			return fail(err)
		}
		defer srv.Close()
		cfg.url = srv.URL()
		progress("started redis-server at %s", cfg.url)
	}
	if err := measure(ctx, cfg, os.Stdout); err != nil {
		return fail(err)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "ratelimitbench:", err)
	return 1
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

var runID = fmt.Sprintf("rlbench:%d:%d", os.Getpid(), time.Now().UnixNano()%1e9)

// openDrivers creates the drivers for one cell, with keys under a prefix of
// their own (the libraries store different things in their keys).
func openDrivers(ctx context.Context, cfg config, cell string, s bench.RLScenario, g int) ([]bench.RLDriver, error) {
	var ds []bench.RLDriver
	for _, name := range cfg.drivers {
		d, err := bench.NewRLDriver(ctx, name, cfg.url, bench.RLLimitFor(s), g, fmt.Sprintf("%s:%s:%s:", runID, cell, name))
		if err != nil {
			closeAll(ds)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

func closeAll(ds []bench.RLDriver) {
	for _, d := range ds {
		d.Close()
	}
}

func measure(ctx context.Context, cfg config, out io.Writer) error {
	version := "unknown"
	if c, err := native.Dial(ctx, native.Options{URL: cfg.url}); err == nil {
		version = bench.RedisVersion(ctx, c)
		c.Close()
	} else {
		return err
	}
	fmt.Fprintf(out, "Run of %s: %s/%s, %d CPUs, GOMAXPROCS=%d, %s, redis %s. `-duration %v -warmup %v -rounds %d`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.Version(), version, cfg.duration, cfg.warm, cfg.rounds)
	for _, s := range cfg.scenarios {
		l := bench.RLLimitFor(s)
		switch s {
		case bench.RLDistinct:
			fmt.Fprintf(out, "### Distinct keys (%d keys, each %d/%v burst %d: every request admitted)\n\n", bench.RLNumKeys, l.Rate, l.Period, l.Burst)
		case bench.RLHot:
			fmt.Fprintf(out, "### One hot key over its limit (%d/%v, burst %d: nearly every request denied)\n\n", l.Rate, l.Period, l.Burst)
		}
		fmt.Fprintln(out, "| goroutines | library | decisions/s | p50 | p99 | admitted | failed calls | × redis_rate |")
		fmt.Fprintln(out, "|---:|---|---:|---:|---:|---:|---:|---:|")
		failures := map[string]string{}
		for _, g := range cfg.goroutines {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cell := fmt.Sprintf("%s:%d", s, g)
			progress("%s, %d goroutines", s, g)
			ds, err := openDrivers(ctx, cfg, cell, s, g)
			if err != nil {
				return err
			}
			var before []int64
			for _, d := range ds {
				if cfg.warm > 0 {
					bench.RLRunFor(ctx, d, s, g, cfg.warm)
				}
				before = append(before, evals(d))
			}
			rs := bench.RLCompare(ctx, ds, s, g, cfg.duration, 0, cfg.rounds)
			base := math.NaN()
			for i, d := range ds {
				if d.Name() == "redis_rate" {
					base = rs[i].PerSec()
				}
			}
			for i, d := range ds {
				r := rs[i]
				name := d.Name()
				if n := evals(d); n >= 0 && s == bench.RLHot {
					name = fmt.Sprintf("%s (%.1f%% to Redis)", name, 100*float64(n-before[i])/float64(max(r.Calls, 1)))
				}
				errCol := "0"
				if r.Errors > 0 {
					errCol = fmt.Sprintf("%.1f%%", 100*float64(r.Errors)/float64(r.Calls))
					if _, seen := failures[d.Name()]; !seen {
						failures[d.Name()] = short(r.FirstErr)
					}
				}
				fmt.Fprintf(out, "| %d | %s | %s | %s | %s | %.1f%% | %s | %s |\n", g, name, bench.FormatRate(r.PerSec()),
					fmtDur(r.Hist.Quantile(0.5)), fmtDur(r.Hist.Quantile(0.99)),
					100*float64(r.Allowed)/float64(max(r.Calls-r.Errors, 1)), errCol, fmtRatio(bench.Ratio(r.PerSec(), base)))
			}
			closeAll(ds)
		}
		fmt.Fprintln(out)
		for _, name := range cfg.drivers {
			if e, ok := failures[name]; ok {
				fmt.Fprintf(out, "Failed calls of %s, e.g.: `%s`\n\n", name, e)
			}
		}
	}
	if cfg.exactDur > 0 {
		l := bench.RLHotLimit
		fmt.Fprintf(out, "### Exactness: one fresh key, %d/%v burst %d, %d goroutines for %v\n\n", l.Rate, l.Period, l.Burst, cfg.exactGoroutines, cfg.exactDur)
		fmt.Fprintln(out, "| library | algorithm | calls | admitted | allowed (burst + rate·elapsed) | admitted − allowed | errors |")
		fmt.Fprintln(out, "|---|---|---:|---:|---:|---:|---:|")
		for _, name := range cfg.drivers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			progress("exactness, %s", name)
			d, err := bench.NewRLDriver(ctx, name, cfg.url, l, cfg.exactGoroutines, fmt.Sprintf("%s:exact:%s:", runID, name))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			// Warm the connections on another key first.
			bench.RLRunFor(ctx, d, bench.RLDistinct, cfg.exactGoroutines, 100*time.Millisecond)
			e := bench.RLRunExact(ctx, d, l, "{t:bench}:rl:exact", cfg.exactGoroutines, cfg.exactDur)
			d.Close()
			fmt.Fprintf(out, "| %s | %s | %s | %d | %.1f | %+.1f (%+.1f%%) | %d |\n", name, d.Algorithm(), bench.FormatRate(float64(e.Calls)),
				e.Admitted, e.Exact, float64(e.Admitted)-e.Exact, 100*(float64(e.Admitted)-e.Exact)/e.Exact, e.Errors)
		}
		fmt.Fprintln(out)
	}
	return nil
}

// evals is the number of round trips of our limiter, or -1 for others.
func evals(d bench.RLDriver) int64 {
	if o, ok := d.(*bench.RLOurs); ok {
		return o.Stats().Evals
	}
	return -1
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", r)
}

func short(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
