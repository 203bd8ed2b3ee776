package agenthttp

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// stepScreen is an agent.Screen the test draws on.
type stepScreen struct {
	mu      sync.Mutex
	text    string
	version uint64
}

func (s *stepScreen) Screen() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text
}

func (s *stepScreen) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

func (s *stepScreen) Write(p []byte) (int, error) { return len(p), nil }
func (s *stepScreen) BracketedPaste() bool        { return true }

func (s *stepScreen) draw(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.text = text
	s.version++
}

// stepClock is an agent.Clock whose timers run only when the test says,
// in the test's goroutine.
type stepClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*stepTimer
}

type stepTimer struct {
	f       func()
	stopped bool
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) AfterFunc(_ time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &stepTimer{f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// fire advances the time by d and runs the timers pending now (not the
// ones they schedule).
func (c *stepClock) fire(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	due := c.timers
	c.timers = nil
	c.mu.Unlock()
	for _, t := range due {
		c.mu.Lock()
		run := !t.stopped
		t.stopped = true
		c.mu.Unlock()
		if run {
			t.f()
		}
	}
}

// deadlineRecorder lets the SSE writer set its write deadline (it
// complains on stderr for every event otherwise).
type deadlineRecorder struct{ *httptest.ResponseRecorder }

func (deadlineRecorder) SetWriteDeadline(time.Time) error { return nil }

// FuzzEventsLastEventID sends GET /events with an arbitrary Last-Event-ID
// header to the real handler, serving an agent whose event log holds a few
// dozen events (screen changes, status changes, an agent error). It must
// never fail or panic; every event id in the stream lies in 1..head; a
// header that parses to an id inside the log (as a decimal, surrounding
// space allowed) replays exactly the events after it; anything else
// starts with the current state, whose status_change carries the head id.
func FuzzEventsLastEventID(f *testing.F) {
	scr := &stepScreen{}
	clock := &stepClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	a := agent.New(scr, agent.Options{Type: msgfmt.AgentCustom, Clock: clock})
	for i := range 12 {
		scr.draw(fmt.Sprintf("$ step %d\nline %d", i, i))
		a.Output()
		clock.fire(0)         // the sample: running, message_update
		clock.fire(time.Hour) // the settle: stable
	}
	a.Close() // the stream ends after what it sends first
	first, _, cancel := a.Subscribe(0)
	cancel()
	head := first[len(first)-1].ID
	if head < 20 {
		f.Fatalf("the event log holds %d events, want a few dozen", head)
	}

	s, err := New(Config{Agent: a, AgentType: msgfmt.AgentCustom, UploadDir: f.TempDir(), Embedded: true})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	for _, v := range []string{"", "0", "1", "5", strconv.FormatInt(head-1, 10), strconv.FormatInt(head, 10), strconv.FormatInt(head+1, 10),
		"-1", " 3 ", "+3", "03", "3x", "0x3", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "٣"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, lastID string) {
		req := httptest.NewRequest(http.MethodGet, "/events", nil)
		req.Header.Set("Last-Event-ID", lastID)
		rec := httptest.NewRecorder()
		h.ServeHTTP(deadlineRecorder{rec}, req)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
			t.Fatalf("Last-Event-ID %q: %d %s %q", lastID, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
		type event struct {
			id  int64
			typ string
		}
		var evs []event
		cur := event{}
		sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.typ != "" {
					evs = append(evs, cur)
				}
				cur = event{}
			case strings.HasPrefix(line, "id: "):
				id, err := strconv.ParseInt(line[4:], 10, 64)
				if err != nil || id < 1 || id > head {
					t.Fatalf("Last-Event-ID %q: event id %q outside 1..%d", lastID, line[4:], head)
				}
				cur.id = id
			case strings.HasPrefix(line, "event: "):
				cur.typ = line[7:]
			}
		}

		last, err := strconv.ParseInt(strings.TrimSpace(lastID), 10, 64)
		if err == nil && last > 0 && last <= head {
			if int64(len(evs)) != head-last {
				t.Fatalf("Last-Event-ID %q: replayed %d events, want %d: %s", lastID, len(evs), head-last, rec.Body.String())
			}
			for i, ev := range evs {
				if ev.id != last+1+int64(i) {
					t.Fatalf("Last-Event-ID %q: replayed event %d has id %d, want %d", lastID, i, ev.id, last+1+int64(i))
				}
			}
			return
		}
		if len(evs) == 0 || evs[len(evs)-1].typ != agent.EventStatusChange || evs[len(evs)-1].id != head {
			t.Fatalf("Last-Event-ID %q: got %+v, want the state ending with status_change id %d", lastID, evs, head)
		}
		for _, ev := range evs[:len(evs)-1] {
			if ev.id != 0 || ev.typ != agent.EventMessageUpdate {
				t.Fatalf("Last-Event-ID %q: state event %+v, want message_update without id", lastID, ev)
			}
		}
	})
}
