package demo

import (
	"io"
	"os"
	"os/signal"
	"strings"
	"time"
)

const (
	spinnerInterval = 80 * time.Millisecond
	// escTimeout is how long a lone ESC (or the start of an unfinished
	// sequence) waits for more bytes before it counts as the Esc key.
	escTimeout = 100 * time.Millisecond
)

const (
	replyConfirmed   = "Confirmed: ran `rm -rf build`."
	replyDeclined    = "Declined."
	replyCancelled   = "Cancelled."
	replyInterrupted = "Interrupted."
)

type mode int

const (
	modeIdle     mode = iota // input box shown
	modeThinking             // spinner shown, reply being produced
	modeConfirm              // permission box shown
)

// exchange is one user message and the reply segments produced for it.
type exchange struct {
	msg   string
	reply []string // nil while no part of the reply is shown yet
}

// agent is the demo agent's state. It is owned by the goroutine running loop.
type agent struct {
	cfg  config
	out  io.Writer
	now  func() time.Time
	keys keyParser

	cols, rows int // terminal size; rows 0 = unknown

	input   []rune     // current (possibly multi-line) input
	history []exchange // finished exchanges
	cur     exchange   // the exchange being answered (thinking, confirm)
	mode    mode

	pending    []string // reply segments still to show
	thinkStart time.Time
	frame      int // spinner frame counter
	sel        int // confirm marker: 0 = Yes, 1 = No

	messages int // messages submitted
	replies  int // replies finished

	escTimer   *time.Timer
	thinkTimer *time.Timer
	spinTicker *time.Ticker

	dirty   bool // screen must be redrawn
	exiting bool
	code    int
}

// readResult is one read from the terminal: data, or the error that ended
// reading (io.EOF at end of input).
type readResult struct {
	data []byte
	err  error
}

// run drives the agent on the terminal until it exits, restoring the terminal
// on every exit path.
func run(cfg config, in, out *os.File) int {
	t := openTerminal(in, out)
	defer t.restore()

	_, _ = io.WriteString(out, "\x1b[?2004h")
	defer func() { _, _ = io.WriteString(out, "\x1b[?2004l") }()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, watchedSignals...)
	defer signal.Stop(sigs)

	rd, err := startReader(in)
	if err != nil {
		return 1
	}
	defer rd.stop()

	a := &agent{cfg: cfg, out: out, now: time.Now}
	a.cols, a.rows = t.size()
	return a.loop(rd.events, sigs, t)
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func tickerC(t *time.Ticker) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// loop is the event loop: input, timers and signals change the state, and
// the screen is redrawn after every change.
func (a *agent) loop(input <-chan readResult, sigs <-chan os.Signal, t *terminal) int {
	defer a.stopTimers()
	a.draw()
	for !a.exiting {
		select {
		case r := <-input:
			if r.err != nil {
				a.exit(0)
				break
			}
			a.handleKeys(a.keys.feed(r.data))
			if a.keys.waiting() {
				a.escTimer = resetTimer(a.escTimer, escTimeout)
			} else {
				a.escTimer = stopTimer(a.escTimer)
			}
		case <-timerC(a.escTimer):
			a.escTimer = nil
			a.handleKeys(a.keys.flush())
		case <-tickerC(a.spinTicker):
			a.frame++
			a.dirty = true
		case <-timerC(a.thinkTimer):
			a.thinkDone()
		case s := <-sigs:
			if isResize(s) {
				a.cols, a.rows = t.size()
				a.dirty = true
			} else {
				a.exit(signalCode(s))
			}
		}
		if a.dirty {
			a.draw()
		}
	}
	return a.code
}

func resetTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		return time.NewTimer(d)
	}
	t.Reset(d)
	return t
}

func stopTimer(t *time.Timer) *time.Timer {
	if t != nil {
		t.Stop()
	}
	return nil
}

func (a *agent) stopTimers() {
	a.escTimer = stopTimer(a.escTimer)
	a.stopThinking()
}

func (a *agent) stopThinking() {
	a.thinkTimer = stopTimer(a.thinkTimer)
	if a.spinTicker != nil {
		a.spinTicker.Stop()
		a.spinTicker = nil
	}
}

// exit ends the loop with code without drawing again.
func (a *agent) exit(code int) {
	a.exiting = true
	a.code = code
	a.dirty = false
}

func (a *agent) draw() {
	a.dirty = false
	_, _ = io.WriteString(a.out, a.render())
}

func (a *agent) handleKeys(keys []key) {
	for _, k := range keys {
		if a.exiting {
			return
		}
		a.handleKey(k)
	}
}

func (a *agent) handleKey(k key) {
	if a.mode == modeConfirm {
		a.handleConfirmKey(k)
		return
	}
	switch k.kind {
	case keyRune:
		a.input = append(a.input, k.r)
		a.inputChanged()
	case keyPaste:
		a.input = append(a.input, []rune(k.text)...)
		a.inputChanged()
	case keyBackspace:
		if len(a.input) > 0 {
			a.input = a.input[:len(a.input)-1]
			a.inputChanged()
		}
	case keyEnter:
		if a.mode == modeIdle {
			a.submit()
		}
	case keyCtrlC:
		if len(a.input) == 0 {
			a.exit(130)
			return
		}
		a.input = a.input[:0]
		a.inputChanged()
	case keyCtrlD:
		if len(a.input) == 0 {
			a.exit(0)
		}
	case keyEsc:
		if a.mode == modeThinking {
			a.cur.reply = []string{replyInterrupted}
			a.finish()
		}
	}
}

// inputChanged marks the screen dirty when the input is visible; input typed
// while thinking is kept and shown once the box returns.
func (a *agent) inputChanged() {
	if a.mode == modeIdle && !a.cfg.noPrompt {
		a.dirty = true
	}
}

func (a *agent) handleConfirmKey(k key) {
	switch k.kind {
	case keyUp:
		a.sel = 0
		a.dirty = true
	case keyDown:
		a.sel = 1
		a.dirty = true
	case keyEnter:
		a.choose(a.sel)
	case keyRune:
		switch k.r {
		case '1':
			a.choose(0)
		case '2':
			a.choose(1)
		}
	case keyEsc:
		a.reply(replyCancelled)
	case keyCtrlC:
		if len(a.input) == 0 {
			a.exit(130)
			return
		}
		a.input = a.input[:0]
	case keyCtrlD:
		if len(a.input) == 0 {
			a.exit(0)
		}
	}
}

func (a *agent) choose(option int) {
	if option == 0 {
		a.reply(replyConfirmed)
	} else {
		a.reply(replyDeclined)
	}
}

// submit sends the current input as a message.
func (a *agent) submit() {
	msg := strings.TrimSpace(string(a.input))
	if msg == "" {
		return
	}
	a.input = a.input[:0]
	a.messages++
	a.cur = exchange{msg: msg}
	a.dirty = true
	if i := a.messages - 1; i < len(a.cfg.script) {
		a.think(a.cfg.script[i])
		return
	}
	switch msg {
	case "/exit":
		a.exit(0)
	case "/confirm":
		a.mode = modeConfirm
		a.sel = 0
	default:
		a.think([]string{"Echo: " + msg})
	}
}

// think starts showing the spinner; the reply segments appear one per
// --think interval.
func (a *agent) think(segments []string) {
	a.mode = modeThinking
	a.pending = segments
	a.thinkStart = a.now()
	a.frame = 0
	a.dirty = true
	a.thinkTimer = resetTimer(a.thinkTimer, a.cfg.think)
	a.spinTicker = time.NewTicker(spinnerInterval)
}

// thinkDone shows the next reply segment, and finishes the reply after the
// last one.
func (a *agent) thinkDone() {
	a.thinkTimer = nil
	if len(a.pending) > 0 {
		a.cur.reply = append(a.cur.reply, a.pending[0])
		a.pending = a.pending[1:]
	}
	a.dirty = true
	if len(a.pending) > 0 {
		a.thinkTimer = resetTimer(a.thinkTimer, a.cfg.think)
		return
	}
	a.finish()
}

// reply finishes the current exchange with text.
func (a *agent) reply(text string) {
	a.cur.reply = []string{text}
	a.finish()
}

// finish moves the current exchange into the transcript and shows the input
// box again (or exits after --exit-after replies, once the reply is drawn).
func (a *agent) finish() {
	a.stopThinking()
	a.pending = nil
	if a.cur.reply == nil {
		a.cur.reply = []string{""}
	}
	a.history = append(a.history, a.cur)
	a.cur = exchange{}
	a.mode = modeIdle
	a.replies++
	a.draw()
	if a.cfg.exitAfter > 0 && a.replies >= a.cfg.exitAfter {
		a.exit(0)
	}
}
