package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const greeting = "Demo agent ready. Type a message."

// demoScreen draws the demo agent's layout: greeting, transcript, and the
// input box holding input (or a spinner line instead, when thinking).
func demoScreen(input string, thinking bool, transcript ...string) []string {
	lines := []string{greeting, ""}
	lines = append(lines, transcript...)
	if thinking {
		return append(lines, "⠋ Thinking… (1s · esc to interrupt)")
	}
	w := 40
	pad := func(s string) string { return s + strings.Repeat(" ", max(0, w-2-len([]rune(s)))) }
	return append(lines,
		"╭"+strings.Repeat("─", w-2)+"╮",
		"│"+pad(" > "+input)+"│",
		"╰"+strings.Repeat("─", w-2)+"╯",
		"  ? for shortcuts · /confirm · /exit")
}

type rig struct {
	t   *testing.T
	clk *fakeClock
	scr *fakeScreen
	a   *Agent
}

func newRig(t *testing.T, o Options, lines ...string) *rig {
	t.Helper()
	r := &rig{t: t, clk: newFakeClock(), scr: newFakeScreen(strings.Join(lines, "\n"))}
	o.Clock = r.clk
	if o.Type == "" {
		o.Type = msgfmt.AgentEcho
	}
	r.a = New(r.scr, o)
	t.Cleanup(r.a.Close)
	return r
}

// show draws lines as the agent's new screen and lets the sampler see it.
func (r *rig) show(lines ...string) {
	r.scr.draw(lines...)
	r.a.Output()
	r.clk.Advance(25 * time.Millisecond)
}

func (r *rig) settle() { r.clk.Advance(2 * time.Second) }

func (r *rig) wantStatus(want agentapi.AgentStatus) {
	r.t.Helper()
	if got := r.a.Status(); got != want {
		r.t.Fatalf("status %s, want %s", got, want)
	}
}

func (r *rig) wantMessages(want ...string) {
	r.t.Helper()
	var got []string
	for _, m := range r.a.Messages() {
		got = append(got, string(m.Role)+":"+m.Content)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		r.t.Fatalf("messages\n got %q\nwant %q", got, want)
	}
}

// start brings a demo-agent rig to its first stable state.
func start(t *testing.T, o Options) *rig {
	r := newRig(t, o)
	r.show(demoScreen("", false)...)
	r.wantStatus(agentapi.StatusRunning)
	r.settle()
	r.wantStatus(agentapi.StatusStable)
	r.wantMessages("agent:" + greeting)
	return r
}

func TestStableOnlyAfterTheSettlingWindow(t *testing.T) {
	r := newRig(t, Options{})
	r.wantStatus(agentapi.StatusRunning)
	r.show(demoScreen("", false)...)
	r.clk.Advance(1900 * time.Millisecond)
	r.wantStatus(agentapi.StatusRunning)
	// A change restarts the window.
	r.show(demoScreen("h", false)...)
	r.clk.Advance(1900 * time.Millisecond)
	r.wantStatus(agentapi.StatusRunning)
	r.clk.Advance(100 * time.Millisecond)
	r.wantStatus(agentapi.StatusStable)
	// Output that leaves the screen as it was does not make it running.
	r.show(demoScreen("h", false)...)
	r.wantStatus(agentapi.StatusStable)
}

func TestExchange(t *testing.T) {
	r := start(t, Options{})
	errc := make(chan error, 1)
	go func() { errc <- r.a.Send(context.Background(), "  hello  ") }()

	if got := <-r.scr.writes; got != "\x1b[200~hello\x1b[201~" {
		t.Fatalf("typed %q, want a bracketed paste of the trimmed message", got)
	}
	r.wantStatus(agentapi.StatusRunning) // reported as soon as delivery starts
	// GET /messages does not wait for the delivery.
	r.wantMessages("agent:" + greeting)
	r.show(demoScreen("hello", false)...)
	if got := <-r.scr.writes; got != "\r" {
		t.Fatalf("typed %q after the paste, want Enter", got)
	}
	r.show(demoScreen("", true, "> hello", "")...)
	if err := <-errc; err != nil {
		t.Fatalf("Send: %v", err)
	}
	r.wantStatus(agentapi.StatusRunning)
	r.wantMessages("agent:"+greeting, "user:hello")

	// Thinking shows no reply yet; the reply grows in place.
	r.show(demoScreen("", true, "> hello", "", "● Echo: hel")...)
	r.wantMessages("agent:"+greeting, "user:hello", "agent:Echo: hel")
	r.show(demoScreen("", false, "> hello", "", "● Echo: hello", "")...)
	r.wantMessages("agent:"+greeting, "user:hello", "agent:Echo: hello")
	r.wantStatus(agentapi.StatusRunning)
	r.settle()
	r.wantStatus(agentapi.StatusStable)
	msgs := r.a.Messages()
	for i, m := range msgs {
		if m.ID != i {
			t.Fatalf("message %d has id %d", i, m.ID)
		}
	}
}

func TestSendRefusals(t *testing.T) {
	r := newRig(t, Options{})
	r.show(demoScreen("", false)...)
	if err := r.a.Send(context.Background(), "hi"); !errors.Is(err, ErrBusy) || agentapi.KindOf(err) != agentapi.KindConflict {
		t.Fatalf("Send while running: %v, want ErrBusy (conflict)", err)
	}
	r.settle()
	if err := r.a.Send(context.Background(), " \n "); !errors.Is(err, ErrEmpty) || agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Fatalf("Send empty: %v, want ErrEmpty (invalid)", err)
	}
	// A stable screen without the prompt is not ready.
	r.show(demoScreen("", true)...)
	r.settle()
	if err := r.a.Send(context.Background(), "hi"); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Send without a prompt: %v, want ErrNotReady", err)
	}
	select {
	case w := <-r.scr.writes:
		t.Fatalf("a refused Send typed %q", w)
	default:
	}
	r.wantMessages("agent:" + greeting)
}

func TestIgnoredMessageIsRecordedAndReported(t *testing.T) {
	r := start(t, Options{ReactTimeout: 5 * time.Second})
	first, ch, cancel := r.a.Subscribe(0)
	defer cancel()
	_ = first
	errc := make(chan error, 1)
	go func() { errc <- r.a.Send(context.Background(), "hello") }()
	<-r.scr.writes
	r.clk.awaitTimer(t, 2*time.Second)
	r.clk.Advance(2 * time.Second) // paste not shown: Enter is typed anyway
	<-r.scr.writes
	r.clk.awaitTimer(t, 5*time.Second)
	r.clk.Advance(5 * time.Second) // nothing reacts
	if err := <-errc; !errors.Is(err, ErrIgnored) {
		t.Fatalf("Send: %v, want ErrIgnored", err)
	}
	r.wantMessages("agent:"+greeting, "user:hello")
	if !sawEvent(ch, EventAgentError) {
		t.Fatal("no agent_error event for an ignored message")
	}
}

func sawEvent(ch <-chan Event, typ string) bool {
	for {
		select {
		case ev := <-ch:
			if ev.Type == typ {
				return true
			}
		default:
			return false
		}
	}
}

func TestNeverReadyIsAnAgentError(t *testing.T) {
	r := newRig(t, Options{ReadyTimeout: 10 * time.Second})
	_, ch, cancel := r.a.Subscribe(0)
	defer cancel()
	r.show(greeting, "", "loading…")
	r.settle()
	r.clk.Advance(7 * time.Second) // 9.025s since start
	if sawEvent(ch, EventAgentError) {
		t.Fatal("agent_error before the ready timeout")
	}
	r.clk.Advance(time.Second)
	if !sawEvent(ch, EventAgentError) {
		t.Fatal("no agent_error after the ready timeout")
	}
}

func TestReadyInTimeIsNoError(t *testing.T) {
	r := start(t, Options{ReadyTimeout: 10 * time.Second})
	_, ch, cancel := r.a.Subscribe(0)
	defer cancel()
	r.clk.Advance(30 * time.Second)
	if sawEvent(ch, EventAgentError) {
		t.Fatal("agent_error for an agent that showed its prompt")
	}
}

func TestInitialPromptSentWhenFirstReady(t *testing.T) {
	r := newRig(t, Options{InitialPrompt: "do the thing"})
	r.show(demoScreen("", false)...)
	r.settle()
	if got := <-r.scr.writes; got != "\x1b[200~do the thing\x1b[201~" {
		t.Fatalf("typed %q", got)
	}
	r.wantStatus(agentapi.StatusRunning)
	r.show(demoScreen("do the thing", false)...)
	<-r.scr.writes
	r.show(demoScreen("", true, "> do the thing", "")...)
	waitMessages(t, r.a, 2)
	r.wantMessages("agent:"+greeting, "user:do the thing")
}

func TestEventsResumeExactly(t *testing.T) {
	r := start(t, Options{})
	first, ch, cancel := r.a.Subscribe(0)
	if len(first) != 2 || first[0].Type != EventMessageUpdate || first[1].Type != EventStatusChange {
		t.Fatalf("state on connect: %+v", first)
	}
	if first[0].ID != 0 || first[1].ID == 0 {
		t.Fatalf("only the last state event carries the head id: %+v", first)
	}
	last := first[1].ID

	go r.a.Send(context.Background(), "hello")
	<-r.scr.writes
	r.show(demoScreen("hello", false)...)
	<-r.scr.writes
	r.show(demoScreen("", true, "> hello", "")...)
	waitMessages(t, r.a, 2)
	r.show(demoScreen("", false, "> hello", "", "● Echo: hello", "")...)
	r.settle()

	var live []Event
	for done := false; !done; {
		select {
		case ev := <-ch:
			live = append(live, ev)
		default:
			done = true
		}
	}
	cancel()
	if len(live) < 4 {
		t.Fatalf("want status, user message, reply and status events, got %+v", live)
	}
	// A client that saw up to `last` gets exactly the same events again.
	replay, _, cancel2 := r.a.Subscribe(last)
	defer cancel2()
	if len(replay) != len(live) {
		t.Fatalf("replay %d events, live %d", len(replay), len(live))
	}
	for i := range live {
		if replay[i].ID != live[i].ID || replay[i].Type != live[i].Type {
			t.Fatalf("event %d: replay %+v, live %+v", i, replay[i], live[i])
		}
		if i > 0 && live[i].ID != live[i-1].ID+1 {
			t.Fatalf("event ids not consecutive: %d after %d", live[i].ID, live[i-1].ID)
		}
	}
	// From the middle: only what came after.
	mid := live[1].ID
	part, _, cancel3 := r.a.Subscribe(mid)
	defer cancel3()
	if len(part) != len(live)-2 || part[0].ID != mid+1 {
		t.Fatalf("resume from %d: %+v", mid, part)
	}
	// An unknown id (another run's) gets the full state.
	full, _, cancel4 := r.a.Subscribe(99999)
	defer cancel4()
	if full[len(full)-1].Type != EventStatusChange || len(full) != len(r.a.Messages())+1 {
		t.Fatalf("unknown id: %+v", full)
	}
}

func TestRestoreContinuesTheConversation(t *testing.T) {
	old := []agentapi.Message{
		{ID: 0, Role: agentapi.RoleAgent, Content: greeting},
		{ID: 1, Role: agentapi.RoleUser, Content: "hello"},
		{ID: 2, Role: agentapi.RoleAgent, Content: "Echo: hello"},
	}
	r := newRig(t, Options{Restore: old})
	r.show(demoScreen("", false)...)
	r.settle()
	r.wantMessages("agent:"+greeting, "user:hello", "agent:Echo: hello")
}

func TestExitedAgent(t *testing.T) {
	r := start(t, Options{})
	_, ch, cancel := r.a.Subscribe(0)
	defer cancel()
	r.scr.mu.Lock()
	r.scr.closed = true
	r.scr.mu.Unlock()
	r.a.Exited(errors.New("exit status 3"))
	if !sawEvent(ch, EventAgentError) {
		t.Fatal("no agent_error when the agent exited")
	}
	if err := r.a.Send(context.Background(), "hi"); !errors.Is(err, ErrExited) {
		t.Fatalf("Send after exit: %v", err)
	}
	if err := r.a.SendRaw("x"); !errors.Is(err, ErrExited) {
		t.Fatalf("SendRaw after exit: %v", err)
	}
}

func TestSubscriberThatFallsBehindIsClosedNotBlocking(t *testing.T) {
	r := start(t, Options{})
	_, ch, cancel := r.a.Subscribe(0)
	defer cancel()
	for i := 0; i < subscriberBuffer+10; i++ {
		r.show(demoScreen(strings.Repeat("x", i%30), false)...)
		r.settle()
	}
	n := 0
	for range ch {
		n++
	}
	if n != subscriberBuffer {
		t.Fatalf("received %d events before the close, want the buffer (%d)", n, subscriberBuffer)
	}
}

func TestChangedRegion(t *testing.T) {
	base := screenLines("a\nb   \nc")
	if got := changedRegion(base, "a\nb\nX\nY"); got != "X\nY" {
		t.Fatalf("got %q", got)
	}
	if got := changedRegion(nil, "a\nb"); got != "a\nb" {
		t.Fatalf("no baseline: got %q", got)
	}
}

// waitMessages waits (bounded) until a Send running in another goroutine
// has recorded its message.
func waitMessages(t *testing.T, a *Agent, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(a.Messages()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages after 5s, want %d", len(a.Messages()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestToolCallsAreRemovedFromReplies(t *testing.T) {
	// Claude prints a tool call as "● Bash(...)" with its output under "⎿".
	prompt := []string{"╭──────────────────────────────╮", "│ >                            │", "╰──────────────────────────────╯"}
	r := newRig(t, Options{Type: msgfmt.AgentClaude})
	r.show(append([]string{"✻ Welcome to Claude Code!", ""}, prompt...)...)
	r.settle()
	go r.a.Send(context.Background(), "list files")
	<-r.scr.writes
	r.show(append([]string{"✻ Welcome to Claude Code!", ""}, "╭──────────────────────────────╮", "│ > list files                 │", "╰──────────────────────────────╯")...)
	<-r.scr.writes
	r.show(append([]string{"✻ Welcome to Claude Code!", "", "> list files", "",
		"● Bash(ls)", "  ⎿  go.mod", "     main.go", "",
		"● There are two files: go.mod and main.go.", ""}, prompt...)...)
	waitMessages(t, r.a, 3)
	got := r.a.Messages()[2].Content
	if strings.Contains(got, "Bash(ls)") || !strings.Contains(got, "There are two files") {
		t.Fatalf("reply %q: want the answer without the tool call", got)
	}
}
