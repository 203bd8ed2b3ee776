// Command agentbench measures what terminal agent sessions cost, with the
// built-in demo agent running as a real process (`agentapi demo-agent`):
//
//	go run ./bench/agentbench [-sessions 100] [-idle 10s] [-active 3s] [-active-subset 10] [-latency-rounds 20]
//
// It builds the agentapi binary once, then:
//
//  1. Sessions, in this process: N pairs of agent.StartTerminal (80x1000,
//     as the server) and agent.New (type echo). Once every session is
//     stable it measures, over -idle, this process's CPU (getrusage) and
//     the demo agents' CPU (/proc/<pid>/stat), and the memory per session:
//     Go heap in use after GC and this process's RSS, both against a
//     baseline taken before any session started, and the demo agents' RSS
//     and PSS. Then it sends -active-subset sessions, and then all of them,
//     a message, so that their demo agents show the spinner for -think,
//     and measures CPU again over -active each time.
//  2. Latency, through the real server: `agentapi server --type echo
//     --port 0 -- agentapi demo-agent --think 0s`. For each round it waits
//     until GET /status is stable, POSTs /message and times the POST, the
//     reply's appearance in GET /messages (polled every 5 ms) and the
//     return to stable.
//
// Markdown tables go to stdout, progress to stderr. Every child is stopped
// at exit, on Ctrl-C too; on Linux the kernel also kills them (parent-death
// signal) should agentbench itself be killed. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentapi-mt/agentapi/agent"
)

// wrapArg, as agentbench's first argument, makes it exec the rest of its
// arguments with a parent-death signal set (see execWithParentDeath). The
// demo agents of in-process sessions are started through it.
const wrapArg = "__agentbench-exec"

func main() {
	if len(os.Args) > 3 && os.Args[1] == wrapArg {
		ppid, _ := strconv.Atoi(os.Args[2])
		err := execWithParentDeath(ppid, os.Args[3:])
		fmt.Fprintln(os.Stderr, "agentbench: exec:", err)
		os.Exit(127)
	}
	os.Exit(run())
}

type config struct {
	sessions int
	baseline time.Duration
	idle     time.Duration
	active   time.Duration
	think    time.Duration

	activeSubset int
	rounds       int
	settle       time.Duration
	bin          string
}

func run() int {
	var cfg config
	flag.IntVar(&cfg.sessions, "sessions", 100, "in-process agent sessions (0 skips the session measurements)")
	flag.DurationVar(&cfg.baseline, "baseline", 5*time.Second, "CPU measurement window with no session, subtracted from the others")
	flag.DurationVar(&cfg.idle, "idle", 10*time.Second, "CPU measurement window with every session idle")
	flag.DurationVar(&cfg.active, "active", 3*time.Second, "CPU measurement window with every demo agent's spinner running")
	flag.IntVar(&cfg.activeSubset, "active-subset", 10, "also measure with only this many sessions active, the others idle (0: only all of them)")
	flag.DurationVar(&cfg.think, "think", 0, "demo agent --think for the sessions (default -active + 4s, so that spinners outlast the window)")
	flag.IntVar(&cfg.rounds, "latency-rounds", 20, "POST /message rounds against the real server (0 skips them)")
	flag.DurationVar(&cfg.settle, "settle-window", 2*time.Second, "the server's --settle-window in the latency rounds")
	flag.StringVar(&cfg.bin, "bin", "", "use this agentapi binary instead of building one")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "agentbench: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	if cfg.think == 0 {
		cfg.think = cfg.active + 4*time.Second
	}
	if cfg.sessions < 0 || cfg.rounds < 0 || cfg.activeSubset < 0 || cfg.idle <= 0 || cfg.active <= 0 || cfg.baseline <= 0 || cfg.think <= cfg.active {
		fmt.Fprintln(os.Stderr, "agentbench: -sessions and -latency-rounds must be >= 0, windows > 0, and -think longer than -active")
		return 2
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cl := &cleaner{}
	defer cl.run()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "agentbench: %v: stopping every child\n", s)
		stop()
		cl.run()
		os.Exit(130)
	}()

	tmp, err := os.MkdirTemp("", "agentbench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		return 1
	}
	cl.add(func() { os.RemoveAll(tmp) })

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		return 1
	}
	bin := cfg.bin
	if bin == "" {
		bin = filepath.Join(tmp, "agentapi")
		start := time.Now()
		progress("building %s", bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/agentapi-mt/agentapi/cmd/agentapi")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "agentbench: building agentapi:", err)
			return 1
		}
		progress("built in %s", time.Since(start).Round(100*time.Millisecond))
	}

	started := time.Now()
	printHeader(cfg)
	code := 0
	if cfg.sessions > 0 {
		res, err := measureSessions(ctx, cfg, self, bin, cl)
		if err != nil {
			fmt.Fprintln(os.Stderr, "agentbench: sessions:", err)
			code = 1
		} else {
			res.print(cfg)
		}
	}
	if cfg.rounds > 0 && ctx.Err() == nil {
		res, err := measureLatency(ctx, cfg, bin, cl)
		if err != nil {
			fmt.Fprintln(os.Stderr, "agentbench: latency:", err)
			code = 1
		}
		if res != nil {
			res.print(cfg)
		}
	}
	progress("done in %s", time.Since(started).Round(100*time.Millisecond))
	return code
}

func printHeader(cfg config) {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	fmt.Printf("# agentbench\n\n")
	fmt.Printf("%s, %s; %d CPUs (%s), GOMAXPROCS=%d, %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), model, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("`go run ./bench/agentbench -sessions %d -baseline %s -idle %s -active %s -active-subset %d -think %s -latency-rounds %d -settle-window %s`\n\n",
		cfg.sessions, cfg.baseline, cfg.idle, cfg.active, cfg.activeSubset, cfg.think, cfg.rounds, cfg.settle)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "agentbench: "+format+"\n", args...)
}

// cleaner runs the registered cleanups once, newest first; one added after
// it ran runs at once.
type cleaner struct {
	mu   sync.Mutex
	fns  []func()
	done bool
	once sync.Once
}

func (c *cleaner) add(f func()) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		f()
		return
	}
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *cleaner) run() {
	c.once.Do(func() {
		c.mu.Lock()
		fns := c.fns
		c.fns, c.done = nil, true
		c.mu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}

// closeTerminals stops the programs of ts concurrently, SIGTERM first.
func closeTerminals(ts []*agent.Terminal, grace time.Duration) {
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Close(grace)
		}()
	}
	wg.Wait()
}
