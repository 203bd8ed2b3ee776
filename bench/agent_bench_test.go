package bench

// Go benchmarks for the cost of an agent session's screen tracking (see
// the agentbench command and the "Agent sessions" section of README.md):
//
//	go test -run '^$' -bench 'ScreenSample|IdleSession' ./bench
//
// BenchmarkScreenSample needs nothing; BenchmarkIdleSession starts real
// demo agents: the test binary runs itself as `agentapi demo-agent` (see
// TestMain), in ptys, so it needs a Unix system (RSS figures: Linux).

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hinshun/vt10x"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agent/demo"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// demoAgentEnv set to 1 makes the test binary run the demo agent instead of
// the benchmarks.
const demoAgentEnv = "AGENTAPI_BENCH_RUN_DEMO_AGENT"

var idleSessionsFlag = flag.Int("bench.sessions", 10, "sessions started per iteration of BenchmarkIdleSession")

func TestMain(m *testing.M) {
	if os.Getenv(demoAgentEnv) == "1" {
		os.Exit(demo.Main(os.Args[1:], os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

const (
	benchCols, benchRows = 80, 1000 // the server's default terminal
	spinnerRunes         = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
)

// demoFrame is one full redraw of the demo agent's screen as the demo agent
// writes it (cursor home, clear, lines): a greeting, the given number of
// earlier exchanges, then the exchange being answered with the spinner in frame
// spin (thinking) or the input box.
func demoFrame(exchanges, spin int, thinking bool) []byte {
	wrap := func(text, first, cont string) []string {
		var out []string
		for _, para := range strings.Split(text, "\n") {
			r := []rune(para)
			for p := first; ; p = cont {
				n := min(len(r), benchCols-len([]rune(p)))
				out = append(out, strings.TrimRight(p+string(r[:n]), " "))
				r = r[n:]
				if len(r) == 0 {
					break
				}
			}
			first = cont
		}
		return out
	}
	msg := func(i int) string {
		return fmt.Sprintf("Please look at internal/store/session_%d.go and make the reconnect logic retry with backoff; keep the public API unchanged and add a test.", i)
	}
	lines := []string{"Demo agent ready. Type a message.", ""}
	for i := range exchanges {
		lines = append(lines, wrap(msg(i), "> ", "  ")...)
		lines = append(lines, "")
		reply := "Echo: " + msg(i) + "\nDone: the retry loop now waits 100ms, 200ms, 400ms (capped at 5s) between attempts.\nTests: go test ./internal/store passes."
		lines = append(lines, wrap(reply, "● ", "  ")...)
		lines = append(lines, "")
	}
	if thinking {
		lines = append(lines, wrap(msg(exchanges), "> ", "  ")...)
		lines = append(lines, "")
		sp := []rune(spinnerRunes)
		lines = append(lines, fmt.Sprintf("%c Thinking… (%ds · esc to interrupt)", sp[spin%len(sp)], spin*80/1000))
	} else {
		lines = append(lines,
			"╭"+strings.Repeat("─", benchCols-2)+"╮",
			"│ > "+strings.Repeat(" ", benchCols-6)+" │",
			"╰"+strings.Repeat("─", benchCols-2)+"╯",
			"  ? for shortcuts · /confirm · /exit")
	}
	var sb strings.Builder
	sb.WriteString("\x1b[H\x1b[2J")
	for _, l := range lines {
		sb.WriteString(l)
		sb.WriteString("\r\n")
	}
	return []byte(sb.String())
}

// vtScreen is an agent.Screen over a bare vt10x terminal, fed by the
// benchmark instead of a program.
type vtScreen struct {
	vt      vt10x.Terminal
	version uint64
}

func (s *vtScreen) Screen() string              { return strings.TrimSuffix(s.vt.String(), "\n") } // as agent.Terminal
func (s *vtScreen) Version() uint64             { return s.version }
func (s *vtScreen) Write(p []byte) (int, error) { return len(p), nil }
func (s *vtScreen) BracketedPaste() bool        { return true }

func (s *vtScreen) feed(p []byte) {
	s.vt.Write(p)
	s.version++
}

// manualClock is an agent.Clock that keeps the screen-sampling callback
// (the AfterFunc of duration sample) for the benchmark to run, and never
// runs the others (settle and ready timers).
type manualClock struct {
	sample  time.Duration
	mu      sync.Mutex
	pending func()
}

func (c *manualClock) Now() time.Time { return time.Now() }

func (c *manualClock) AfterFunc(d time.Duration, f func()) func() bool {
	if d == c.sample {
		c.mu.Lock()
		c.pending = f
		c.mu.Unlock()
	}
	return func() bool { return true }
}

func (c *manualClock) take() func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.pending
	c.pending = nil
	return f
}

// BenchmarkScreenSample measures what one spinner frame of one session
// costs the server, on an 80x1000 terminal showing a demo-agent screen
// with 10 earlier exchanges (about 90 lines) and the spinner:
//
//   - render+compare: rendering the emulator's screen to a string (what
//     agent.Terminal.Screen does) and comparing it with the previous one,
//     equal (so compared in full).
//   - emulate: feeding one full redraw (home, clear, every line) to vt10x,
//     which the pty reader does for every chunk of output.
//   - frame: both plus the Agent's processing, as when the demo agent's
//     spinner advances: feed the redraw, Output, then the sample (render,
//     compare, reply update: changed region, msgfmt.FormatMessage). The
//     %core@12.5fps metric is this cost at the demo agent's 12.5 frames a
//     second, in percent of one core: one active session's screen tracking.
func BenchmarkScreenSample(b *testing.B) {
	const exchanges = 10
	frames := make([][]byte, len([]rune(spinnerRunes)))
	for i := range frames {
		frames[i] = demoFrame(exchanges, i, true)
	}

	b.Run("render+compare", func(b *testing.B) {
		s := &vtScreen{vt: vt10x.New(vt10x.WithSize(benchCols, benchRows))}
		s.feed(frames[0])
		prev := s.Screen()
		b.SetBytes(int64(len(prev)))
		b.ReportAllocs()
		for b.Loop() {
			if cur := s.Screen(); cur != prev {
				b.Fatal("the screen changed")
			}
		}
	})

	b.Run("emulate", func(b *testing.B) {
		s := &vtScreen{vt: vt10x.New(vt10x.WithSize(benchCols, benchRows))}
		b.SetBytes(int64(len(frames[0])))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			s.feed(frames[i%len(frames)])
			i++
		}
	})

	b.Run("frame", func(b *testing.B) {
		s := &vtScreen{vt: vt10x.New(vt10x.WithSize(benchCols, benchRows))}
		clock := &manualClock{sample: 25 * time.Millisecond}
		a := agent.New(s, agent.Options{Type: msgfmt.AgentEcho, SampleInterval: clock.sample, Clock: clock})
		defer a.Close()
		step := func(i int) {
			s.feed(frames[i%len(frames)])
			a.Output()
			f := clock.take()
			if f == nil {
				b.Fatal("Output scheduled no screen sample")
			}
			f()
		}
		step(0)
		if !strings.Contains(a.ScreenText(), "Thinking…") {
			b.Fatalf("the agent did not see the frame; screen:\n%s", a.ScreenText())
		}
		b.ReportAllocs()
		i := 1
		start := time.Now()
		for b.Loop() {
			step(i)
			i++
		}
		perFrame := time.Since(start) / time.Duration(i-1)
		b.ReportMetric(perFrame.Seconds()*12.5*100, "%core@12.5fps")
	})
}

// BenchmarkIdleSession measures the memory of idle sessions: each
// iteration starts -bench.sessions demo agents (this test binary, see
// TestMain) in 80x1000 ptys with an agent.Agent each (type echo, settle
// window 200 ms), waits until all are stable at their prompt, measures,
// and stops them. Metrics per session: Go heap in use and this process's
// RSS (after a forced GC, against the same before the sessions started),
// and the demo agent process's RSS. ns/op is the time to start the
// sessions, see them stable and stop them.
func BenchmarkIdleSession(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Skip("no executable to run as the demo agent:", err)
	}
	n := *idleSessionsFlag
	env := append(os.Environ(), demoAgentEnv+"=1")
	var heapSum, rssSum, agentRSSSum float64
	rssOK := true
	iters := 0
	for b.Loop() {
		heap0, rss0, ok0 := agentBenchMemory()
		var collected atomic.Int64 // sessions of this iteration garbage collected
		terms := make([]*agent.Terminal, 0, n)
		agents := make([]*agent.Agent, 0, n)
		stop := func() {
			var wg sync.WaitGroup
			for _, t := range terms {
				wg.Add(1)
				go func() { defer wg.Done(); t.Close(2 * time.Second) }()
			}
			wg.Wait()
			for _, a := range agents {
				a.Close()
			}
		}
		for range n {
			var ap atomic.Pointer[agent.Agent]
			t, err := agent.StartTerminal([]string{self, "--think", "0s"}, agent.TermOptions{
				Env: env,
				OnOutput: func() {
					if a := ap.Load(); a != nil {
						a.Output()
					}
				},
			})
			if err != nil {
				stop()
				b.Fatal(err)
			}
			a := agent.New(t, agent.Options{Type: msgfmt.AgentEcho, SettleWindow: 200 * time.Millisecond})
			ap.Store(a)
			a.Output()
			terms, agents = append(terms, t), append(agents, a)
			runtime.AddCleanup(t, func(c *atomic.Int64) { c.Add(1) }, &collected)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for _, a := range agents {
			for a.Status() != agentapi.StatusStable || !msgfmt.IsReady(msgfmt.AgentEcho, a.ScreenText()) {
				if ctx.Err() != nil {
					cancel()
					stop()
					b.Fatalf("a session did not become stable at its prompt within 30s; screen:\n%s", a.ScreenText())
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		cancel()
		heap1, rss1, ok1 := agentBenchMemory()
		var agentRSS float64
		for _, t := range terms {
			kb, ok := procStatusKB(t.Pid(), "VmRSS")
			rssOK = rssOK && ok
			agentRSS += kb * 1024
		}
		stop()
		terms, agents = nil, nil
		// A stopped session stays reachable for a moment (until its
		// Agent's last timers have fired): wait, untimed, until every one
		// was collected, so that the next baseline holds none.
		b.StopTimer()
		for deadline := time.Now().Add(10 * time.Second); collected.Load() < int64(n); {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d stopped sessions were garbage collected within 10s", collected.Load(), n)
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		b.StartTimer()
		heapSum += heap1 - heap0
		rssSum += rss1 - rss0
		rssOK = rssOK && ok0 && ok1
		agentRSSSum += agentRSS
		iters++
	}
	per := float64(iters * n)
	b.ReportMetric(heapSum/per, "heap-B/session")
	if rssOK {
		b.ReportMetric(rssSum/per, "rss-B/session")
		b.ReportMetric(agentRSSSum/per, "agent-rss-B/session")
	}
}

// agentBenchMemory returns, after a forced GC, the Go heap in use and this
// process's RSS (ok false when /proc cannot tell).
func agentBenchMemory() (heap, rss float64, ok bool) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	kb, ok := procStatusKB(0, "VmRSS")
	return float64(ms.HeapInuse), kb * 1024, ok
}

// procStatusKB reads a "Name: N kB" field of /proc/<pid>/status (pid 0:
// this process).
func procStatusKB(pid int, name string) (float64, bool) {
	path := "/proc/self/status"
	if pid != 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				return 0, false
			}
			n, err := strconv.ParseFloat(fs[0], 64)
			return n, err == nil
		}
	}
	return 0, false
}
