package demo

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
	"github.com/hinshun/vt10x"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary run the demo agent itself (with the
// arguments after "--"), for the tests that need a separate process.
const helperEnv = "DEMO_AGENT_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		os.Exit(Main(args, os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}

const waitTimeout = 5 * time.Second

var spinnerRE = regexp.MustCompile(`^[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] Thinking… \(\d+s · esc to interrupt\)$`)

// session runs Main on the slave side of a real pty and emulates the screen
// from everything written to the master.
type session struct {
	t             *testing.T
	master, slave *os.File
	term          vt10x.Terminal

	mu  sync.Mutex
	raw bytes.Buffer // everything the agent wrote

	carry    []byte // incomplete UTF-8 held back from the emulator
	stop     chan struct{}
	readDone <-chan struct{}
	exitCh   chan int
	exited   bool
	code     int
}

func start(t *testing.T, cols, rows int, args ...string) *session {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatalf("pty.Open: %v", err)
	}
	if err := pty.Setsize(master, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)}); err != nil {
		t.Fatalf("pty.Setsize: %v", err)
	}
	s := &session{
		t:      t,
		master: master,
		slave:  slave,
		term:   vt10x.New(vt10x.WithSize(cols, rows)),
		stop:   make(chan struct{}),
		exitCh: make(chan int, 1),
	}
	s.readDone = pumpPTY(master, s.stop, s.feed)
	go func() { s.exitCh <- Main(args, slave, slave) }()
	t.Cleanup(s.close)
	return s
}

// pumpPTY copies what the agent writes to the master side of a pty into sink
// until stop is closed or the pty is hung up. It polls, because the master
// is in blocking mode (creack/pty uses Fd) and a blocked Read could not be
// interrupted by Close.
func pumpPTY(master *os.File, stop <-chan struct{}, sink func([]byte)) <-chan struct{} {
	done := make(chan struct{})
	fd := int(master.Fd())
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 20)
			if err == unix.EINTR || (err == nil && n == 0) {
				continue
			}
			if err != nil {
				return
			}
			nr, err := unix.Read(fd, buf)
			if nr > 0 {
				sink(buf[:nr])
			}
			if err != nil && err != unix.EINTR && err != unix.EAGAIN || nr == 0 && err == nil {
				return
			}
		}
	}()
	return done
}

// feed records output and hands the emulator whole UTF-8 sequences only
// (vt10x drops a rune split across two writes).
func (s *session) feed(b []byte) {
	s.mu.Lock()
	s.raw.Write(b)
	s.mu.Unlock()
	s.carry = append(s.carry, b...)
	k := completeUTF8(s.carry)
	_, _ = s.term.Write(s.carry[:k])
	s.carry = append(s.carry[:0], s.carry[k:]...)
}

// completeUTF8 is the length of the longest prefix of b not ending inside a
// UTF-8 sequence.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

func (s *session) close() {
	close(s.stop)
	<-s.readDone
	// Hang up the terminal: a running agent sees the hangup and returns.
	_ = s.master.Close()
	if !s.exited {
		select {
		case s.code = <-s.exitCh:
			s.exited = true
		case <-time.After(waitTimeout):
			s.t.Errorf("Main did not return after the pty was hung up")
		}
	}
	_ = s.slave.Close()
}

func (s *session) send(str string) {
	s.t.Helper()
	if _, err := s.master.Write([]byte(str)); err != nil {
		s.t.Fatalf("write to pty: %v", err)
	}
}

// screen returns the emulated screen, one string per row with trailing
// spaces removed.
func (s *session) screen() []string {
	s.term.Lock()
	defer s.term.Unlock()
	cols, rows := s.term.Size()
	lines := make([]string, rows)
	var b strings.Builder
	for y := 0; y < rows; y++ {
		b.Reset()
		for x := 0; x < cols; x++ {
			c := s.term.Cell(x, y).Char
			if c == 0 {
				c = ' '
			}
			b.WriteRune(c)
		}
		lines[y] = strings.TrimRight(b.String(), " ")
	}
	return lines
}

func (s *session) rawOutput() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// waitFor polls the screen until cond holds, and returns that screen.
func (s *session) waitFor(desc string, cond func(lines []string) bool) []string {
	s.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		lines := s.screen()
		if cond(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s; screen:\n%s", desc, strings.Join(lines, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *session) waitLine(line string) []string {
	s.t.Helper()
	return s.waitFor("line "+strconvQuote(line), func(l []string) bool { return hasLine(l, line) })
}

// waitIdle waits for the input box holding input (and no spinner).
func (s *session) waitIdle(input string) []string {
	s.t.Helper()
	return s.waitFor("idle input box with "+strconvQuote(input), func(l []string) bool {
		return boxInput(l) == input && spinner(l) < 0
	})
}

// waitExit waits for Main to return and returns its exit code.
func (s *session) waitExit() int {
	s.t.Helper()
	select {
	case s.code = <-s.exitCh:
		s.exited = true
		return s.code
	case <-time.After(waitTimeout):
		s.t.Fatalf("Main did not return; screen:\n%s", strings.Join(s.screen(), "\n"))
		return 0
	}
}

func strconvQuote(s string) string { return "\"" + s + "\"" }

func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func indexOf(lines []string, want string) int {
	for i, l := range lines {
		if l == want {
			return i
		}
	}
	return -1
}

func spinner(lines []string) int {
	for i, l := range lines {
		if spinnerRE.MatchString(l) {
			return i
		}
	}
	return -1
}

// boxInput returns the text of the first input box row ("" for an empty
// box), or "<none>" when no input box is shown.
func boxInput(lines []string) string {
	for i, l := range lines {
		if strings.HasPrefix(l, "╭─") && !strings.HasPrefix(l, "╭─ Permission") && i+1 < len(lines) {
			row := lines[i+1]
			if !strings.HasPrefix(row, "│ > ") && row != strings.TrimRight(row, " ") {
				return "<bad>"
			}
			return strings.TrimRight(strings.TrimSuffix(strings.TrimPrefix(row, "│ > "), "│"), " ")
		}
	}
	return "<none>"
}

func hasBox(lines []string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, "╭") || strings.HasPrefix(l, "╰") || strings.HasPrefix(l, "│") {
			return true
		}
	}
	return false
}

func boxTop(width int) string    { return "╭" + strings.Repeat("─", width-2) + "╮" }
func boxBottom(width int) string { return "╰" + strings.Repeat("─", width-2) + "╯" }
func boxLine(content string, width int) string {
	return "│ " + content + strings.Repeat(" ", width-4-utf8.RuneCountInString(content)) + " │"
}

func TestGreetingAndInputBox(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms")
	lines := s.waitIdle("")
	want := []string{
		"Demo agent ready. Type a message.",
		"",
		boxTop(80),
		boxLine("> ", 80),
		boxBottom(80),
		"  ? for shortcuts · /confirm · /exit",
	}
	for i, w := range want {
		if lines[i] != w {
			t.Fatalf("line %d = %q, want %q\nscreen:\n%s", i, lines[i], w, strings.Join(lines, "\n"))
		}
	}
	if !strings.HasPrefix(s.rawOutput(), "\x1b[?2004h") {
		t.Errorf("output does not start by enabling bracketed paste: %q", s.rawOutput()[:20])
	}
}

func TestTypeAndEcho(t *testing.T) {
	s := start(t, 80, 40, "--think", "300ms")
	s.waitIdle("")
	s.send("hellp")
	s.waitIdle("hellp")
	s.send("\x7fo")
	s.waitIdle("hello")
	s.send("\r")
	lines := s.waitFor("spinner", func(l []string) bool { return spinner(l) >= 0 })
	if hasBox(lines) {
		t.Errorf("input box shown while thinking:\n%s", strings.Join(lines, "\n"))
	}
	if i := indexOf(lines, "> hello"); i < 0 || lines[i+1] != "" || spinner(lines) != i+2 {
		t.Errorf("thinking layout wrong:\n%s", strings.Join(lines, "\n"))
	}
	lines = s.waitIdle("")
	want := []string{
		"Demo agent ready. Type a message.",
		"",
		"> hello",
		"",
		"● Echo: hello",
		"",
		boxTop(80),
	}
	for i, w := range want {
		if lines[i] != w {
			t.Fatalf("line %d = %q, want %q\nscreen:\n%s", i, lines[i], w, strings.Join(lines, "\n"))
		}
	}
}

func TestBracketedPasteMultiline(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms")
	s.waitIdle("")
	s.send("\x1b[200~first line\nsecond line\r\nthird line\x1b[201~")
	lines := s.waitIdle("first line")
	i := indexOf(lines, boxLine("> first line", 80))
	if i < 0 || lines[i+1] != boxLine("  second line", 80) || lines[i+2] != boxLine("  third line", 80) || lines[i+3] != boxBottom(80) {
		t.Fatalf("pasted lines not shown in the box:\n%s", strings.Join(lines, "\n"))
	}
	if spinner(lines) >= 0 || indexOf(lines, "> first line") >= 0 {
		t.Fatalf("paste submitted the message:\n%s", strings.Join(lines, "\n"))
	}
	s.send("\r")
	lines = s.waitLine("● Echo: first line")
	lines = s.waitIdle("")
	i = indexOf(lines, "> first line")
	want := []string{"> first line", "  second line", "  third line", "", "● Echo: first line", "  second line", "  third line", ""}
	if i < 0 || strings.Join(lines[i:i+len(want)], "\n") != strings.Join(want, "\n") {
		t.Fatalf("multi-line exchange wrong:\n%s", strings.Join(lines, "\n"))
	}
}

// TestInputSplitAcrossReads sends a paste and arrow keys in pieces, each
// read separately by the agent.
func TestInputSplitAcrossReads(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms")
	s.waitIdle("")
	for _, piece := range []string{"\x1b", "[20", "0~split ", "\xe4\xb8", "\x96\xe7\x95\x8c\npaste\x1b[2", "01", "~", "!"} {
		s.send(piece)
		time.Sleep(10 * time.Millisecond) // pacing only, well under the Esc timeout
	}
	lines := s.waitIdle("split 世界")
	if indexOf(lines, boxLine("  paste!", 80)) < 0 {
		t.Fatalf("split paste wrong:\n%s", strings.Join(lines, "\n"))
	}
	s.send("\r")
	s.waitLine("● Echo: split 世界")
	s.waitIdle("")
	s.send("/confirm\r")
	s.waitLine(boxLine("❯ 1. Yes", 80))
	for _, piece := range []string{"\x1b", "[", "B"} {
		s.send(piece)
		time.Sleep(10 * time.Millisecond)
	}
	s.waitLine(boxLine("❯ 2. No", 80))
}

func TestScriptWithPause(t *testing.T) {
	script := filepath.Join(t.TempDir(), "script.txt")
	data := "Working on it.\nStep one done.\n[[pause]]\nStep two done.\n---\nSecond reply.\n"
	if err := os.WriteFile(script, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	s := start(t, 80, 40, "--think", "300ms", "--script", script)
	s.waitIdle("")
	s.send("do it\r")
	lines := s.waitFor("partial reply with spinner", func(l []string) bool {
		return hasLine(l, "● Working on it.") && spinner(l) >= 0
	})
	i := indexOf(lines, "● Working on it.")
	if lines[i+1] != "  Step one done." || lines[i+2] != "" || spinner(lines) != i+3 || hasBox(lines) {
		t.Fatalf("partial reply layout wrong:\n%s", strings.Join(lines, "\n"))
	}
	lines = s.waitIdle("")
	i = indexOf(lines, "● Working on it.")
	if i < 0 || lines[i+1] != "  Step one done." || lines[i+2] != "  Step two done." || lines[i+3] != "" {
		t.Fatalf("complete reply wrong:\n%s", strings.Join(lines, "\n"))
	}
	s.send("next\r")
	s.waitLine("● Second reply.")
	s.waitIdle("")
	s.send("third\r")
	s.waitLine("● Echo: third")
}

func TestConfirm(t *testing.T) {
	s := start(t, 40, 30, "--think", "50ms")
	s.waitIdle("")
	s.send("/confirm\r")
	lines := s.waitFor("permission box", func(l []string) bool { return hasLine(l, "╭─ Permission "+strings.Repeat("─", 25)+"╮") })
	i := indexOf(lines, "> /confirm")
	want := []string{
		"> /confirm",
		"",
		"╭─ Permission " + strings.Repeat("─", 25) + "╮",
		boxLine("Run `rm -rf build`?", 40),
		boxLine("❯ 1. Yes", 40),
		boxLine("  2. No", 40),
		boxBottom(40),
		"",
	}
	if i < 0 || strings.Join(lines[i:i+len(want)], "\n") != strings.Join(want, "\n") {
		t.Fatalf("permission box wrong:\n%s", strings.Join(lines, "\n"))
	}
	s.send("\x1b[B")
	s.waitLine(boxLine("❯ 2. No", 40))
	s.send("\x1b[A")
	s.waitLine(boxLine("❯ 1. Yes", 40))
	s.send("\x1bOB") // application-mode Down
	s.waitLine(boxLine("❯ 2. No", 40))
	s.send("\r")
	s.waitLine("● Declined.")
	s.waitIdle("")

	s.send("/confirm\r")
	s.waitLine(boxLine("❯ 1. Yes", 40))
	s.send("1")
	s.waitLine("● Confirmed: ran `rm -rf build`.")
	s.waitIdle("")

	s.send("/confirm\r")
	s.waitLine(boxLine("❯ 1. Yes", 40))
	s.send("\x1b")
	s.waitLine("● Cancelled.")
	s.waitIdle("")
}

func TestEscInterruptsThinking(t *testing.T) {
	s := start(t, 80, 40, "--think", "1m")
	s.waitIdle("")
	s.send("slow question\r")
	s.waitFor("spinner", func(l []string) bool { return spinner(l) >= 0 })
	s.send("typed ahead")
	s.send("\x1b")
	lines := s.waitIdle("typed ahead")
	i := indexOf(lines, "> slow question")
	if i < 0 || lines[i+2] != "● Interrupted." {
		t.Fatalf("interrupt not shown:\n%s", strings.Join(lines, "\n"))
	}
}

func TestCtrlCExits130AndRestoresTerminal(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms")
	s.waitIdle("")
	s.send("draft")
	s.waitIdle("draft")
	s.send("\x03")
	s.waitIdle("")
	s.send("\x03")
	if code := s.waitExit(); code != 130 {
		t.Fatalf("exit code = %d, want 130", code)
	}
	tio, err := unix.IoctlGetTermios(int(s.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 || tio.Iflag&unix.ICRNL == 0 {
		t.Errorf("terminal not restored: lflag=%#x iflag=%#x", tio.Lflag, tio.Iflag)
	}
	s.waitFor("bracketed paste disabled", func([]string) bool {
		return strings.HasSuffix(s.rawOutput(), "\x1b[?2004l")
	})
}

func TestCtrlDOnEmptyInputExits0(t *testing.T) {
	s := start(t, 80, 40)
	s.waitIdle("")
	s.send("x\x04") // ignored: input not empty
	s.waitIdle("x")
	s.send("\x7f\x04")
	if code := s.waitExit(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
}

func TestSlashExit(t *testing.T) {
	s := start(t, 80, 40)
	s.waitIdle("")
	s.send("/exit\r")
	if code := s.waitExit(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
}

func TestExitAfter(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms", "--exit-after", "1")
	s.waitIdle("")
	s.send("only one\r")
	if code := s.waitExit(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	s.waitLine("● Echo: only one")
}

func TestNoPrompt(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms", "--no-prompt")
	s.waitLine("Demo agent ready. Type a message.")
	s.send("anyone there?\r")
	lines := s.waitLine("● Echo: anyone there?")
	if hasBox(lines) {
		t.Fatalf("box drawn with --no-prompt:\n%s", strings.Join(lines, "\n"))
	}
	// Make sure the final redraw has been seen before checking all output.
	s.send("\x04")
	if code := s.waitExit(); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	s.waitFor("bracketed paste disabled", func([]string) bool {
		return strings.HasSuffix(s.rawOutput(), "\x1b[?2004l")
	})
	if raw := s.rawOutput(); strings.ContainsAny(raw, "╭╰│") {
		t.Fatalf("box characters written with --no-prompt")
	}
}

func TestResizeRedraws(t *testing.T) {
	s := start(t, 80, 40, "--think", "50ms")
	s.waitIdle("")
	s.send(strings.Repeat("x", 70))
	s.waitIdle(strings.Repeat("x", 70))

	if err := pty.Setsize(s.master, &pty.Winsize{Cols: 50, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	s.term.Resize(50, 30)
	// The pty is not this process's controlling terminal, so deliver the
	// SIGWINCH the kernel would send to the foreground process.
	if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	lines := s.waitLine(boxTop(50))
	i := indexOf(lines, boxTop(50))
	want := []string{
		boxTop(50),
		boxLine("> "+strings.Repeat("x", 44), 50),
		boxLine("  "+strings.Repeat("x", 26), 50),
		boxBottom(50),
	}
	if strings.Join(lines[i:i+len(want)], "\n") != strings.Join(want, "\n") {
		t.Fatalf("box not redrawn at 50 columns:\n%s", strings.Join(lines, "\n"))
	}
}

func TestLongTranscriptKeepsBoxVisible(t *testing.T) {
	s := start(t, 30, 12, "--think", "0s")
	s.waitIdle("")
	for _, m := range []string{"one", "two", "three", "four", "a message that is longer than thirty columns"} {
		s.send(m + "\r")
		s.waitLine("● Echo: " + m[:min(len(m), 22)])
	}
	lines := s.waitIdle("")
	if lines[len(lines)-1] != "" || lines[len(lines)-3] != "  ? for shortcuts · /confirm ·" || lines[len(lines)-2] != " /exit" {
		t.Fatalf("bottom of screen wrong:\n%s", strings.Join(lines, "\n"))
	}
	if len(lines) != 12 || !strings.HasPrefix(lines[0], "> a message") {
		t.Fatalf("screen should end with the last exchange scrolled to the top:\n%s", strings.Join(lines, "\n"))
	}
	if i := indexOf(lines, "● Echo: a message that is long"); i < 0 || lines[i+1] != "  er than thirty columns" {
		t.Fatalf("long reply not wrapped under its indent:\n%s", strings.Join(lines, "\n"))
	}
}

// TestSignalsRestoreTerminal runs the agent as its own process on a pty it
// controls, as agentapi does, and ends it with signals.
func TestSignalsRestoreTerminal(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGHUP, 129}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			master, slave, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer slave.Close()
			defer master.Close()
			if err := pty.Setsize(master, &pty.Winsize{Cols: 60, Rows: 20}); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "--think", "50ms")
			cmd.Env = append(os.Environ(), helperEnv+"=1")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var out bytes.Buffer
			stop := make(chan struct{})
			done := pumpPTY(master, stop, func(b []byte) {
				mu.Lock()
				out.Write(b)
				mu.Unlock()
			})
			defer func() { close(stop); <-done }()
			output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
			waitOutput := func(desc, want string) {
				t.Helper()
				deadline := time.Now().Add(waitTimeout)
				for !strings.Contains(output(), want) {
					if time.Now().After(deadline) {
						_ = cmd.Process.Kill()
						_ = cmd.Wait()
						t.Fatalf("timed out waiting for %s; output %q", desc, output())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			waitOutput("60-column box", boxTop(60))
			// A real resize: the kernel signals the agent's process group.
			if err := pty.Setsize(master, &pty.Winsize{Cols: 44, Rows: 20}); err != nil {
				t.Fatal(err)
			}
			waitOutput("44-column box", boxTop(44))
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != tc.code {
				t.Errorf("exit code = %d (%v), want %d", code, err, tc.code)
			}
			waitOutput("bracketed paste disabled", "\x1b[?2004l")
			tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if tio.Lflag&unix.ECHO == 0 || tio.Lflag&unix.ICANON == 0 {
				t.Errorf("terminal left in raw mode: lflag=%#x", tio.Lflag)
			}
		})
	}
}

// TestPipes runs the agent on plain pipes (no terminal): it still works.
func TestPipes(t *testing.T) {
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer outR.Close()
	exit := make(chan int, 1)
	go func() {
		exit <- Main([]string{"--think", "10ms"}, inR, outW)
		_ = outW.Close()
	}()
	var mu sync.Mutex
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := outR.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if _, err := inW.WriteString("hi there\r"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		mu.Lock()
		got := out.String()
		mu.Unlock()
		if strings.Contains(got, "● Echo: hi there\r\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo on pipes; output %q", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = inW.Close() // end of input
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Main did not return at end of input")
	}
	<-readDone
	if got := out.String(); !strings.HasSuffix(got, "\x1b[?2004l") {
		t.Errorf("bracketed paste not disabled at exit: %q", got[max(0, len(got)-40):])
	}
}

func TestBadFlags(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if code := Main([]string{"--script", filepath.Join(t.TempDir(), "missing")}, devnull, devnull); code != 2 {
		t.Errorf("Main with a missing script = %d, want 2", code)
	}
}
