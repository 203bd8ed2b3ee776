package agent

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// fakeClock is a Clock whose time moves only when a test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	seq     int
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves time forward by d, running every timer that falls due, in
// order, each at its own time.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.Slice(c.timers, func(i, j int) bool {
			if c.timers[i].at.Equal(c.timers[j].at) {
				return c.timers[i].seq < c.timers[j].seq
			}
			return c.timers[i].at.Before(c.timers[j].at)
		})
		var next *fakeTimer
		for i, t := range c.timers {
			if t.stopped {
				continue
			}
			if !t.at.After(end) {
				next = t
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
			}
			break
		}
		if next == nil {
			c.now = end
			c.timers = compact(c.timers)
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.stopped = true
		c.mu.Unlock()
		next.f()
	}
}

func compact(ts []*fakeTimer) []*fakeTimer {
	out := ts[:0]
	for _, t := range ts {
		if !t.stopped {
			out = append(out, t)
		}
	}
	return out
}

// fakeScreen is a Screen a test draws on. Writes (typed input) go to a
// channel so the test can react like an agent would.
type fakeScreen struct {
	mu        sync.Mutex
	text      string
	version   uint64
	bracketed bool
	writes    chan string
	closed    bool
}

func newFakeScreen(text string) *fakeScreen {
	return &fakeScreen{text: text, version: 1, bracketed: true, writes: make(chan string, 16)}
}

func (s *fakeScreen) Screen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text
}

func (s *fakeScreen) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

func (s *fakeScreen) Write(p []byte) (int, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrAgentExited
	}
	s.writes <- string(p)
	return len(p), nil
}

func (s *fakeScreen) BracketedPaste() bool { return s.bracketed }

// draw replaces the screen's lines.
func (s *fakeScreen) draw(lines ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text = strings.Join(lines, "\n")
	s.version++
}

// awaitTimer waits (bounded) until a timer due d from now is pending: a
// goroutine under test has registered it, so advancing the clock by d
// fires it rather than passing it by.
func (c *fakeClock) awaitTimer(t interface{ Fatalf(string, ...any) }, d time.Duration) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		due := c.now.Add(d)
		for _, tm := range c.timers {
			if !tm.stopped && tm.at.Equal(due) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no timer due in %v was registered", d)
		}
		time.Sleep(time.Millisecond)
	}
}
