// Package agent runs a terminal coding agent in a pseudo-terminal and turns
// its screen into a conversation: a status (running or stable), a list of
// messages, and a stream of events.
//
// The screen is read from a VT emulator. Status is "running" while the
// screen changes and "stable" once it has not changed for a settling window
// (2 s by default). A user message is typed with bracketed paste and Enter
// and counts as delivered once the screen reacts; the agent's reply is the
// part of the screen that changed since, with the echoed input, the input
// box and other chrome removed by package msgfmt for the agent's type.
//
// Screens are sampled only after the agent printed something (at most once
// per sampling interval), so an idle agent costs no CPU. Time comes from a
// Clock so that tests drive it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// Screen is what an Agent needs of a terminal. *Terminal implements it.
type Screen interface {
	// Screen returns the rows of the screen joined by "\n".
	Screen() string
	// Version changes whenever output arrived since the last call.
	Version() uint64
	// Write types bytes into the program.
	Write(p []byte) (int, error)
	// BracketedPaste reports whether the program enabled bracketed paste.
	BracketedPaste() bool
}

// Clock is an Agent's time source.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f after d, in its own goroutine; stop cancels it and
	// reports whether it did.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Options configure an Agent.
type Options struct {
	Type msgfmt.AgentType
	// SettleWindow is how long the screen must stay unchanged for the
	// status to become stable. Default 2s, as upstream.
	SettleWindow time.Duration
	// SampleInterval bounds how often the screen is read while output
	// arrives. Default 25ms, as upstream.
	SampleInterval time.Duration
	// ReadyTimeout is how long the agent may take to show its prompt before
	// an agent_error says it never did. Default 60s.
	ReadyTimeout time.Duration
	// ReactTimeout is how long a typed message may take to change the
	// screen before Send reports that the agent ignored it. Default 15s.
	ReactTimeout time.Duration
	// InitialPrompt, when set, is sent once the agent is first ready.
	InitialPrompt string
	// Restore, when set, is the conversation to continue (from a state
	// file). The new process's first screen is not recorded as a message.
	Restore []agentapi.Message
	Clock   Clock
	Logger  *slog.Logger
	// Guard, when set, admits each delivery of a message and is told how it
	// ended (a circuit breaker per agent type). A refusal fails Send with
	// the guard's error and types nothing.
	Guard func(ctx context.Context) (done func(error), err error)
}

// Errors from Send, each an *agentapi.Error with the kind the HTTP layer
// maps to a status.
var (
	ErrBusy     = agentapi.E("agent.send", agentapi.KindConflict, errors.New("the agent is busy: wait until its status is \"stable\" before sending a message"))
	ErrNotReady = agentapi.E("agent.send", agentapi.KindConflict, errors.New("the agent is not showing its input prompt yet"))
	ErrEmpty    = agentapi.E("agent.send", agentapi.KindInvalid, errors.New("message content is empty"))
	ErrIgnored  = agentapi.E("agent.send", agentapi.KindUnavailable, errors.New("the agent's screen did not react to the message"))
	ErrExited   = agentapi.E("agent", agentapi.KindUnavailable, ErrAgentExited)
	// ErrStopped: the session was stopped while a message was delivered.
	// A caller's doing, not the agent's failure.
	ErrStopped = agentapi.E("agent.send", agentapi.KindConflict, errors.New("the agent session was stopped"))
)

// Agent is one conversation with one terminal agent.
type Agent struct {
	o      Options
	scr    Screen
	clock  Clock
	log    *slog.Logger
	events *eventLog

	mu            sync.Mutex
	messages      []agentapi.Message
	status        agentapi.AgentStatus
	screen        string    // last sampled screen
	version       uint64    // Version of the last sample
	lastChange    time.Time // when the sampled screen last changed
	samplePending bool
	stopSettle    func() bool
	sending       bool
	baseline      []string // screen lines when the current reply started
	userInput     string   // the message the current reply answers
	replyOpen     bool     // a reply to userInput may still grow
	replyIndex    int      // index in messages of the reply; -1 until it has text
	ready         bool     // the prompt has been seen at least once
	promptSent    bool
	stopReady     func() bool
	exited        bool
	exitReported  bool          // exited by itself (Exited), not stopped (Stopping)
	changed       chan struct{} // closed and replaced on every screen change
	screenSubs    map[chan string]struct{}
	closedCh      chan struct{}
	closeOnce     sync.Once
}

// New starts tracking scr. Call Output whenever the program printed
// something (StartTerminal's OnOutput), and Exited when it exits.
func New(scr Screen, o Options) *Agent {
	if o.SettleWindow <= 0 {
		o.SettleWindow = 2 * time.Second
	}
	if o.SampleInterval <= 0 {
		o.SampleInterval = 25 * time.Millisecond
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.ReactTimeout <= 0 {
		o.ReactTimeout = 15 * time.Second
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Type == "" {
		o.Type = msgfmt.AgentCustom
	}
	// A blank initial prompt is no prompt (it would be refused as empty).
	o.InitialPrompt = strings.TrimSpace(o.InitialPrompt)
	a := &Agent{
		o: o, scr: scr, clock: o.Clock, log: o.Logger, events: newEventLog(1024),
		status: agentapi.StatusRunning, replyIndex: -1, changed: make(chan struct{}),
		screenSubs: map[chan string]struct{}{}, closedCh: make(chan struct{}),
	}
	a.lastChange = a.clock.Now()
	if len(o.Restore) > 0 {
		a.messages = append([]agentapi.Message(nil), o.Restore...)
		for i := range a.messages {
			a.messages[i].ID = i
		}
	} else {
		// The agent's first screen (its greeting) is the first message.
		a.replyOpen = true
	}
	a.mu.Lock()
	a.armSettle()
	a.stopReady = a.clock.AfterFunc(o.ReadyTimeout, a.readyTimeout)
	a.mu.Unlock()
	return a
}

// Type is the agent's type.
func (a *Agent) Type() msgfmt.AgentType { return a.o.Type }

// Status reports running or stable. It never waits for a delivery.
func (a *Agent) Status() agentapi.AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Messages returns a copy of the conversation. It never waits for a
// delivery.
func (a *Agent) Messages() []agentapi.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agentapi.Message(nil), a.messages...)
}

// ScreenText is the last sampled screen without trailing padding.
func (a *Agent) ScreenText() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return msgfmt.TrimPadding(a.screen)
}

// Output tells the Agent that the program printed something. It schedules
// a sample of the screen unless one is pending.
func (a *Agent) Output() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.samplePending || a.exited {
		return
	}
	a.samplePending = true
	a.clock.AfterFunc(a.o.SampleInterval, a.sample)
}

// sample reads the screen and updates status and messages.
func (a *Agent) sample() {
	v := a.scr.Version()
	a.mu.Lock()
	a.samplePending = false
	same := v == a.version
	a.mu.Unlock()
	if same {
		return
	}
	screen := a.scr.Screen() // rendering happens outside the lock
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version = v
	if screen == a.screen {
		return
	}
	a.screen = screen
	a.lastChange = a.clock.Now()
	close(a.changed)
	a.changed = make(chan struct{})
	a.setStatus(agentapi.StatusRunning)
	a.updateReply()
	a.armSettle()
	trimmed := msgfmt.TrimPadding(screen)
	for ch := range a.screenSubs {
		select {
		case <-ch: // drop a screen the subscriber has not read yet
		default:
		}
		ch <- trimmed
	}
}

// armSettle (re)schedules the settle check one window after lastChange.
// Caller holds a.mu.
func (a *Agent) armSettle() {
	if a.stopSettle != nil {
		a.stopSettle()
	}
	wait := a.o.SettleWindow - a.clock.Now().Sub(a.lastChange)
	if wait < 0 {
		wait = 0
	}
	a.stopSettle = a.clock.AfterFunc(wait, a.settle)
}

func (a *Agent) settle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.exited || a.sending {
		return
	}
	if since := a.clock.Now().Sub(a.lastChange); since < a.o.SettleWindow {
		a.armSettle()
		return
	}
	if msgfmt.IsReady(a.o.Type, a.screen) {
		if !a.ready {
			a.ready = true
			if a.stopReady != nil {
				a.stopReady()
			}
		}
		if a.o.InitialPrompt != "" && !a.promptSent {
			a.promptSent = true
			a.sending = true // stays running: the prompt goes out now
			go a.sendInitialPrompt()
			return
		}
	}
	a.updateReply()
	a.setStatus(agentapi.StatusStable)
}

func (a *Agent) sendInitialPrompt() {
	a.mu.Lock()
	a.sending = false
	a.mu.Unlock()
	if err := a.send(context.Background(), a.o.InitialPrompt, true); err != nil {
		a.agentError(fmt.Sprintf("sending the initial prompt failed: %v", err))
		// Nothing was typed: let the status settle again.
		a.mu.Lock()
		a.armSettle()
		a.mu.Unlock()
	}
}

func (a *Agent) readyTimeout() {
	a.mu.Lock()
	ready, exited := a.ready, a.exited
	a.mu.Unlock()
	if !ready && !exited {
		a.agentError(fmt.Sprintf("the agent did not show a recognisable %s input prompt within %s; check --type, or that the agent started correctly (GET /internal/screen shows its screen)", a.o.Type, a.o.ReadyTimeout))
	}
}

// setStatus changes the status and publishes the change. Caller holds a.mu.
func (a *Agent) setStatus(s agentapi.AgentStatus) {
	if a.status == s {
		return
	}
	a.status = s
	a.events.publish(EventStatusChange, StatusChange{Status: s, AgentType: string(a.o.Type)})
}

// updateReply recomputes the open reply from the screen. Caller holds a.mu.
func (a *Agent) updateReply() {
	if !a.replyOpen || a.sending {
		return
	}
	content := msgfmt.FormatMessage(a.o.Type, changedRegion(a.baseline, a.screen), a.userInput)
	// Tool-call blocks (a command and its output) are the agent's working
	// noise, not its answer, for the agents that print them.
	content, _ = msgfmt.RemoveToolCalls(a.o.Type, content)
	if a.replyIndex < 0 {
		if content == "" {
			return
		}
		a.replyIndex = len(a.messages)
		a.messages = append(a.messages, agentapi.Message{ID: a.replyIndex, Role: agentapi.RoleAgent, Content: content, Time: a.clock.Now()})
		a.publishMessage(a.replyIndex)
		return
	}
	m := &a.messages[a.replyIndex]
	if m.Content != content {
		m.Content = content
		m.Time = a.clock.Now()
		a.publishMessage(a.replyIndex)
	}
}

func (a *Agent) publishMessage(i int) {
	m := a.messages[i]
	a.events.publish(EventMessageUpdate, MessageUpdate{ID: m.ID, Role: m.Role, Message: m.Content, Time: m.Time})
}

// changedRegion is the part of screen below the first line that differs
// from baseline: where the agent wrote since baseline was taken.
func changedRegion(baseline []string, screen string) string {
	lines := strings.Split(screen, "\n")
	i := 0
	for i < len(lines) && i < len(baseline) && strings.TrimRight(lines[i], " ") == baseline[i] {
		i++
	}
	return strings.Join(lines[i:], "\n")
}

func screenLines(screen string) []string {
	lines := strings.Split(screen, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return lines
}

// Send types a user message and returns once the agent's screen reacted
// to it. The agent must be stable and showing its prompt.
func (a *Agent) Send(ctx context.Context, content string) error {
	return a.send(ctx, content, false)
}

func (a *Agent) send(ctx context.Context, content string, initial bool) error {
	content = strings.TrimSpace(content)
	if content == "" {
		return ErrEmpty
	}
	a.mu.Lock()
	switch {
	case a.exited:
		a.mu.Unlock()
		return ErrExited
	case a.sending || (a.status != agentapi.StatusStable && !initial):
		a.mu.Unlock()
		return ErrBusy
	case !msgfmt.IsReady(a.o.Type, a.screen):
		a.mu.Unlock()
		return ErrNotReady
	}
	a.sending = true // reserved: no other Send passes the checks above
	a.mu.Unlock()
	// The guard may ask Redis: never with the lock held, which Status and
	// Messages take.
	done := func(error) {}
	if a.o.Guard != nil {
		d, err := a.o.Guard(ctx)
		if err != nil {
			a.mu.Lock()
			a.sending = false
			a.armSettle() // samples taken meanwhile skipped the settle
			a.mu.Unlock()
			return err
		}
		done = d
	}
	a.mu.Lock()
	a.setStatus(agentapi.StatusRunning)
	before := a.screen
	baseline := screenLines(before)
	a.mu.Unlock()

	err := a.deliver(ctx, content, before)
	done(err)

	a.mu.Lock()
	defer a.mu.Unlock()
	a.sending = false
	if err != nil && !errors.Is(err, ErrIgnored) {
		// Nothing reached the agent (or it exited): no message recorded.
		a.lastChange = a.clock.Now()
		a.armSettle()
		return err
	}
	// Enter was typed: the message is the agent's now, whether or not its
	// screen reacted in time, so it is recorded.
	a.messages = append(a.messages, agentapi.Message{ID: len(a.messages), Role: agentapi.RoleUser, Content: content, Time: a.clock.Now()})
	a.publishMessage(len(a.messages) - 1)
	a.baseline, a.userInput, a.replyOpen, a.replyIndex = baseline, content, true, -1
	a.lastChange = a.clock.Now()
	a.updateReply()
	a.armSettle()
	return err
}

// deliver types content and Enter and waits for the screen to react.
func (a *Agent) deliver(ctx context.Context, content, before string) error {
	payload := content
	if a.scr.BracketedPaste() {
		payload = "\x1b[200~" + content + "\x1b[201~"
	}
	if _, err := a.scr.Write([]byte(payload)); err != nil {
		return ErrExited
	}
	// Give the agent a moment to show the pasted text, so that Enter is not
	// taken as part of the paste. Not seeing a change is fine: some agents
	// do not echo until Enter.
	afterPaste, _ := a.waitChange(ctx, before, 2*time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if _, err := a.scr.Write([]byte("\r")); err != nil {
		return ErrExited
	}
	if _, ok := a.waitChange(ctx, afterPaste, a.o.ReactTimeout); !ok {
		if ctx.Err() != nil {
			return ErrIgnored // Enter was typed; the caller went away
		}
		a.mu.Lock()
		exited, reported := a.exited, a.exitReported
		a.mu.Unlock()
		if exited && !reported {
			return ErrStopped
		}
		if exited {
			return ErrExited
		}
		a.agentError(fmt.Sprintf("the agent's screen did not change within %s of a message being typed", a.o.ReactTimeout))
		return ErrIgnored
	}
	return nil
}

// waitChange waits until the sampled screen differs from since, up to
// timeout. It returns the screen then and whether it changed.
func (a *Agent) waitChange(ctx context.Context, since string, timeout time.Duration) (string, bool) {
	timedOut := make(chan struct{})
	stop := a.clock.AfterFunc(timeout, func() { close(timedOut) })
	defer stop()
	for {
		a.mu.Lock()
		cur, ch, exited := a.screen, a.changed, a.exited
		a.mu.Unlock()
		if cur != since {
			return cur, true
		}
		if exited {
			return cur, false
		}
		select {
		case <-ch:
		case <-timedOut:
			return cur, false
		case <-ctx.Done():
			return cur, false
		}
	}
}

// SendRaw writes bytes straight to the terminal (keys, escape sequences).
// Nothing is recorded.
func (a *Agent) SendRaw(content string) error {
	if content == "" {
		return ErrEmpty
	}
	if _, err := a.scr.Write([]byte(content)); err != nil {
		return ErrExited
	}
	return nil
}

// agentError publishes an agent_error event and logs it.
func (a *Agent) agentError(msg string) {
	a.log.Warn("agent error", "type", a.o.Type, "error", msg)
	a.events.publish(EventAgentError, AgentError{Message: msg, Time: a.clock.Now()})
}

// Exited tells the Agent that the program exited with err.
func (a *Agent) Exited(err error) { a.end(err, true) }

// Stopping tells the Agent its program is being stopped on purpose: a
// delivery waiting for the screen gives up at once, and no agent_error is
// reported.
func (a *Agent) Stopping() { a.end(nil, false) }

func (a *Agent) end(err error, report bool) {
	a.mu.Lock()
	if a.exited {
		a.mu.Unlock()
		return
	}
	a.exited, a.exitReported = true, report
	close(a.changed)
	a.changed = make(chan struct{})
	if a.stopSettle != nil {
		a.stopSettle()
	}
	if a.stopReady != nil {
		a.stopReady()
	}
	a.mu.Unlock()
	if !report {
		return
	}
	msg := "the agent exited"
	if err != nil {
		msg = fmt.Sprintf("the agent exited: %v", err)
	}
	a.agentError(msg)
}

// Subscribe returns the events a client must see first and a channel of
// the ones that follow. With lastEventID from a previous connection (SSE's
// Last-Event-ID) still in the log, it replays exactly what came after it;
// otherwise it starts with the current state: a message_update per message
// then a status_change. The channel closes when the client falls too far
// behind (it should reconnect with its last ID) or the Agent closes.
func (a *Agent) Subscribe(lastEventID int64) (first []Event, ch <-chan Event, cancel func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.events.subscribe(lastEventID, func(head int64) []Event {
		evs := make([]Event, 0, len(a.messages)+1)
		for _, m := range a.messages {
			evs = append(evs, Event{Type: EventMessageUpdate, Data: MessageUpdate{ID: m.ID, Role: m.Role, Message: m.Content, Time: m.Time}})
		}
		return append(evs, Event{ID: head, Type: EventStatusChange, Data: StatusChange{Status: a.status, AgentType: string(a.o.Type)}})
	})
}

// SubscribeScreen returns the current screen and a channel of later ones
// (the latest only, when the reader is slow). cancel must be called.
func (a *Agent) SubscribeScreen() (string, <-chan string, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan string, 1)
	a.screenSubs[ch] = struct{}{}
	return msgfmt.TrimPadding(a.screen), ch, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.screenSubs, ch)
	}
}

// Closed is closed once Close has been called.
func (a *Agent) Closed() <-chan struct{} { return a.closedCh }

// Close ends every subscription.
func (a *Agent) Close() {
	a.mu.Lock()
	if a.stopSettle != nil {
		a.stopSettle()
	}
	if a.stopReady != nil {
		a.stopReady()
	}
	a.mu.Unlock()
	a.closeOnce.Do(func() { close(a.closedCh) })
	a.events.close()
}
