// Command authbench measures the overhead of authenticating a request with
// a session token: auth.Sessions.Validate over our redis.SessionStore (with
// client-side caching), against one plain GET of the session key per
// request over go-redis v9 (the way alexedwards/scs's redisstore works),
// and against our validation without the cache. All three run on the same
// Redis in one run, interleaved.
//
//	go run ./bench/authbench [-redis URL] [-duration 2s] [-goroutines 1,16,64]
//
// Without -redis it uses $REDIS_URL, or else starts a private redis-server
// (no persistence) on a free loopback port and kills it at exit. Markdown
// goes to stdout, progress to stderr. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/agentapi-mt/agentapi/bench"
	"github.com/agentapi-mt/agentapi/kv/native"
)

func main() {
	os.Exit(run())
}

func run() int {
	redisURL := flag.String("redis", "", "Redis URL (default $REDIS_URL, else a private redis-server)")
	duration := flag.Duration("duration", 2*time.Second, "measured time per driver per cell")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured run per driver before each cell")
	gs := flag.String("goroutines", "1,16,64", "comma-separated concurrent clients")
	rounds := flag.Int("rounds", 2, "each driver's time per cell is cut into 2*rounds slices, alternating the order")
	sessions := flag.Int("sessions", bench.AuthSessions, "sessions validated round-robin")
	flag.Parse()
	goroutines, err := bench.ParseInts(*gs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authbench: -goroutines:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	url := *redisURL
	if url == "" {
		url = os.Getenv("REDIS_URL")
	}
	if url == "" {
		srv, err := bench.StartRedis()
		if err != nil {
			fmt.Fprintln(os.Stderr, "authbench:", err)
			return 1
		}
		defer srv.Close()
		url = srv.URL()
	}

	setup, err := native.Dial(ctx, native.Options{URL: url, ConnectTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "authbench:", err)
		return 1
	}
	defer setup.Close()
	fmt.Fprintf(os.Stderr, "creating %d sessions...\n", *sessions)
	f, err := bench.NewAuthFixture(ctx, setup, *sessions)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authbench:", err)
		return 1
	}
	defer f.Cleanup(context.Background(), setup)

	var redisVersion string
	if v, err := setup.Do(ctx, "INFO", "server"); err == nil {
		text, _ := v.Text()
		redisVersion = infoField(text, "redis_version")
	}

	type row struct {
		g   int
		res []bench.Result
	}
	var rows []row
	names := []string{"ours", "ours, no cache", "go-redis GET"}
	for _, g := range goroutines {
		fmt.Fprintf(os.Stderr, "goroutines=%d...\n", g)
		ours, err := bench.NewOursAuth(ctx, url, f, true)
		if err != nil {
			fmt.Fprintln(os.Stderr, "authbench:", err)
			return 1
		}
		nocache, err := bench.NewOursAuth(ctx, url, f, false)
		if err != nil {
			ours.Close()
			fmt.Fprintln(os.Stderr, "authbench:", err)
			return 1
		}
		gr, err := bench.NewGoRedisAuth(url, f, g)
		if err != nil {
			ours.Close()
			nocache.Close()
			fmt.Fprintln(os.Stderr, "authbench:", err)
			return 1
		}
		drivers := []bench.AuthDriver{ours, nocache, gr}
		res := bench.CompareAuth(ctx, drivers, g, *duration, *warmup, *rounds)
		for _, d := range drivers {
			d.Close()
		}
		for i, r := range res {
			if r.Err != nil {
				fmt.Fprintf(os.Stderr, "authbench: %s at %d goroutines: %v\n", names[i], g, r.Err)
				return 1
			}
		}
		rows = append(rows, row{g, res})
		if ctx.Err() != nil {
			return 1
		}
	}

	fmt.Printf("Run of %s: %d vCPUs, GOMAXPROCS=%d, %s, redis %s, %d sessions, `go run ./bench/authbench -duration %v -goroutines %s`.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), redisVersion, *sessions, *duration, *gs)
	fmt.Println("| concurrent clients | ours validations/s | ours, no cache | go-redis GET/s | ours / go-redis | no cache / go-redis |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		o, n, g := r.res[0].PerSec(), r.res[1].PerSec(), r.res[2].PerSec()
		fmt.Printf("| %d | %s | %s | %s | %.2f× | %.2f× |\n", r.g,
			bench.FormatRate(o), bench.FormatRate(n), bench.FormatRate(g), bench.Ratio(o, g), bench.Ratio(n, g))
	}
	return 0
}

func infoField(info, name string) string {
	for len(info) > 0 {
		line := info
		if i := indexByte(info, '\n'); i >= 0 {
			line, info = info[:i], info[i+1:]
		} else {
			info = ""
		}
		if len(line) > len(name) && line[:len(name)+1] == name+":" {
			return trimCR(line[len(name)+1:])
		}
	}
	return "?"
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimCR(s string) string {
	if len(s) > 0 && s[len(s)-1] == '\r' {
		return s[:len(s)-1]
	}
	return s
}
