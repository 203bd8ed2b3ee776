package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// session is one in-process agent session, wired as cmd/agentapi's server
// wires its single agent.
type session struct {
	id   int
	term *agent.Terminal
	ag   *agent.Agent
}

// counters count, over all sessions, the chunks of output read from the
// ptys and the screens rendered (vt10x String) by the agents' sampling.
type counters struct{ renders, outputs atomic.Int64 }

// countingScreen is the agent.Screen the Agents get: the terminal, with
// its renders counted.
type countingScreen struct {
	*agent.Terminal
	c *counters
}

func (s countingScreen) Screen() string {
	s.c.renders.Add(1)
	return s.Terminal.Screen()
}

// fleet is the set of running sessions.
type fleet struct {
	c       counters
	exited  atomic.Int64 // programs that exited before close
	mu      sync.Mutex
	list    []*session
	closing bool
}

func (f *fleet) sessions() []*session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*session(nil), f.list...)
}

// start starts one session running argv.
func (f *fleet) start(id int, argv []string) error {
	var ag atomic.Pointer[agent.Agent]
	term, err := agent.StartTerminal(argv, agent.TermOptions{
		OnOutput: func() {
			f.c.outputs.Add(1)
			if a := ag.Load(); a != nil {
				a.Output()
			}
		},
	})
	if err != nil {
		return err
	}
	a := agent.New(countingScreen{term, &f.c}, agent.Options{Type: msgfmt.AgentEcho})
	ag.Store(a)
	a.Output() // sample whatever was printed before the agent existed
	f.mu.Lock()
	closing := f.closing
	f.list = append(f.list, &session{id: id, term: term, ag: a})
	f.mu.Unlock()
	if closing {
		term.Close(time.Second)
		a.Close()
		return context.Canceled
	}
	go func() {
		<-term.Done()
		a.Exited(term.ExitErr())
		f.mu.Lock()
		closing := f.closing
		f.mu.Unlock()
		if !closing {
			f.exited.Add(1)
		}
	}()
	return nil
}

// close stops every session's program (SIGTERM, then SIGKILL after 2 s).
func (f *fleet) close() {
	f.mu.Lock()
	f.closing = true
	list := f.list
	f.mu.Unlock()
	terms := make([]*agent.Terminal, len(list))
	for i, s := range list {
		terms[i] = s.term
	}
	closeTerminals(terms, 2*time.Second)
	for _, s := range list {
		s.ag.Close()
	}
}

// waitAll waits until ok holds for every session, or timeout; it returns
// how many sessions satisfied ok when it returned.
func (f *fleet) waitAll(ctx context.Context, timeout time.Duration, ok func(*session) bool) (int, error) {
	deadline := time.Now().Add(timeout)
	list := f.sessions()
	for {
		n := 0
		for _, s := range list {
			if ok(s) {
				n++
			}
		}
		if n == len(list) {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("only %d of %d sessions got there within %s", n, len(list), timeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return n, ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sample is a reading of the CPU clocks and counters.
type sample struct {
	at                    time.Time
	self, agents, machine time.Duration
	agentErrs             int
	renders, outputs      int64
}

func (f *fleet) sample() sample {
	s := sample{at: time.Now(), self: selfCPU(), renders: f.c.renders.Load(), outputs: f.c.outputs.Load()}
	s.machine, _ = machineBusy()
	for _, ss := range f.sessions() {
		cpu, err := procCPU(ss.term.Pid())
		if err != nil {
			s.agentErrs++
			continue
		}
		s.agents += cpu
	}
	return s
}

// window is what happened between two samples.
type window struct {
	wall                  time.Duration
	self, agents, machine time.Duration
	agentErrs             int
	renders, outputs      int64
}

func between(a, b sample) window {
	return window{
		wall: b.at.Sub(a.at), self: b.self - a.self, agents: b.agents - a.agents, machine: b.machine - a.machine,
		agentErrs: a.agentErrs + b.agentErrs, renders: b.renders - a.renders, outputs: b.outputs - a.outputs,
	}
}

// selfCores and agentCores are CPU time per wall time: the number of cores
// kept busy (1 = one core).
func (w window) selfCores() float64    { return w.self.Seconds() / w.wall.Seconds() }
func (w window) agentCores() float64   { return w.agents.Seconds() / w.wall.Seconds() }
func (w window) machineCores() float64 { return w.machine.Seconds() / w.wall.Seconds() }
func (w window) rate(n int64) float64  { return float64(n) / w.wall.Seconds() }

// memory is a reading of the memory figures, after a GC.
type memory struct {
	heap, rss            uint64
	agentsRSS, agentsPSS uint64
	agentErrs            int
}

func (f *fleet) memory() memory {
	debug.FreeOSMemory() // a GC, and the freed pages returned, as at a baseline
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{heap: ms.HeapInuse}
	m.rss, _ = procRSS(0)
	for _, s := range f.sessions() {
		rss, err1 := procRSS(s.term.Pid())
		pss, err2 := procPSS(s.term.Pid())
		if err1 != nil || err2 != nil {
			m.agentErrs++
		}
		m.agentsRSS += rss
		m.agentsPSS += pss
	}
	return m
}

type sessionResult struct {
	n          int
	startup    time.Duration
	baseline   window
	idle       window
	mem0, memN memory
	idleStable int // sessions still stable at the end of the idle window
	actives    []activeResult
	exited     int64
}

// activeResult is one active round: k sessions were sent a message, so
// their demo agents showed the spinner through the window.
type activeResult struct {
	k        int
	w        window
	sendTime time.Duration
	sendErrs []string
	spinning int // sessions still showing the spinner at the end of the window
	replied  int // sessions whose reply was recorded afterwards
}

func measureSessions(ctx context.Context, cfg config, self, bin string, cl *cleaner) (*sessionResult, error) {
	res := &sessionResult{n: cfg.sessions}
	f := &fleet{}
	cl.add(f.close)
	defer f.close()

	progress("baseline: no session, measuring for %s", cfg.baseline)
	res.mem0 = f.memory()
	s0 := f.sample()
	if !sleep(ctx, cfg.baseline) {
		return nil, ctx.Err()
	}
	res.baseline = between(s0, f.sample())

	argv := []string{self, wrapArg, strconv.Itoa(os.Getpid()), bin, "demo-agent", "--think", cfg.think.String()}
	progress("starting %d sessions: %s", cfg.sessions, strings.Join(argv[3:], " "))
	start := time.Now()
	for i := range cfg.sessions {
		if err := f.start(i, argv); err != nil {
			return nil, fmt.Errorf("starting session %d: %w", i, err)
		}
	}
	if _, err := f.waitAll(ctx, 2*time.Minute, stableReady); err != nil {
		return nil, fmt.Errorf("waiting for the sessions to be stable: %w", err)
	}
	res.startup = time.Since(start)
	progress("%d sessions stable after %s", cfg.sessions, res.startup.Round(10*time.Millisecond))

	// Let whatever the start-up left behind (timers, the GC) die down.
	if !sleep(ctx, time.Second) {
		return nil, ctx.Err()
	}
	progress("idle: measuring for %s", cfg.idle)
	s1 := f.sample()
	if !sleep(ctx, cfg.idle) {
		return nil, ctx.Err()
	}
	res.idle = between(s1, f.sample())
	for _, s := range f.sessions() {
		if s.ag.Status() == agentapi.StatusStable {
			res.idleStable++
		}
	}
	res.memN = f.memory()

	rounds := []int{cfg.sessions}
	if cfg.activeSubset > 0 && cfg.activeSubset < cfg.sessions {
		rounds = []int{cfg.activeSubset, cfg.sessions}
	}
	for r, k := range rounds {
		if _, err := f.waitAll(ctx, time.Minute, stableReady); err != nil {
			return nil, fmt.Errorf("waiting for the sessions to be stable before active round %d: %w", r+1, err)
		}
		ar, err := f.active(ctx, cfg, f.sessions()[:k], r+1)
		if err != nil {
			return nil, err
		}
		res.actives = append(res.actives, ar)
	}
	res.exited = f.exited.Load()
	progress("stopping the sessions")
	return res, nil
}

func stableReady(s *session) bool {
	return s.ag.Status() == agentapi.StatusStable && msgfmt.IsReady(msgfmt.AgentEcho, s.ag.ScreenText())
}

// active sends a message to every session of list, measures CPU over
// cfg.active while their spinners run, then waits for the replies.
func (f *fleet) active(ctx context.Context, cfg config, list []*session, round int) (activeResult, error) {
	res := activeResult{k: len(list)}
	msg := func(s *session) string { return fmt.Sprintf("bench round %d session %d", round, s.id) }
	progress("active round %d: sending a message to %d of %d sessions", round, len(list), len(f.sessions()))
	sendStart := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, s := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := s.ag.Send(sctx, msg(s)); err != nil {
				mu.Lock()
				res.sendErrs = append(res.sendErrs, fmt.Sprintf("session %d: %v", s.id, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.sendTime = time.Since(sendStart)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	progress("sent in %s; measuring for %s", res.sendTime.Round(10*time.Millisecond), cfg.active)
	s0 := f.sample()
	if !sleep(ctx, cfg.active) {
		return res, ctx.Err()
	}
	res.w = between(s0, f.sample())
	for _, s := range list {
		if strings.Contains(s.ag.ScreenText(), "Thinking…") {
			res.spinning++
		}
	}

	progress("waiting for the replies")
	replied := func(s *session) bool {
		if s.ag.Status() != agentapi.StatusStable {
			return false
		}
		for _, m := range s.ag.Messages() {
			if m.Role == agentapi.RoleAgent && hasLine(m.Content, "Echo: "+msg(s)) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(cfg.think + time.Minute)
	for _, s := range list {
		for !replied(s) && time.Now().Before(deadline) {
			if !sleep(ctx, 20*time.Millisecond) {
				return res, ctx.Err()
			}
		}
		if replied(s) {
			res.replied++
		}
	}
	return res, nil
}

// hasLine reports whether a line of text, trimmed, is want.
func hasLine(text, want string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
