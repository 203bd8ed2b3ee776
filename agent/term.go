package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/hinshun/vt10x"
)

// Terminal runs a program in a pseudo-terminal and keeps its screen in a
// VT emulator. It is safe for concurrent use.
type Terminal struct {
	cmd  *exec.Cmd
	ptmx *os.File
	vt   vt10x.Terminal

	width, height int

	mu          sync.Mutex
	version     uint64 // bumped on every chunk of output
	bracketed   bool   // the program enabled bracketed paste (ESC[?2004h)
	onOutput    func()
	writeMu     sync.Mutex
	done        chan struct{}
	exitErr     error
	closeOnce   sync.Once
	readerDone  chan struct{}
	outputTotal int64
}

// TermOptions configure StartTerminal.
type TermOptions struct {
	Width, Height int      // terminal size; default 80x1000
	Dir           string   // working directory; default the current one
	Env           []string // environment; default the current one
	// OnOutput, when set, is called (from the reader goroutine, without
	// locks held) after each chunk of output reached the screen.
	OnOutput func()
	// Credential, when set, runs the program as that user (and group, with
	// no supplementary groups); the terminal is handed to the user too.
	// Needs root.
	Credential *syscall.Credential
}

// StartTerminal starts argv in a new pseudo-terminal.
func StartTerminal(argv []string, o TermOptions) (*Terminal, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("no agent command given")
	}
	if o.Width <= 0 {
		o.Width = 80
	}
	if o.Height <= 0 {
		o.Height = 1000
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = o.Dir
	cmd.Env = o.Env
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "TERM=xterm-256color", "COLORTERM=truecolor")
	raw, err := startPTY(cmd, &pty.Winsize{Cols: uint16(o.Width), Rows: uint16(o.Height)}, o.Credential)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	ptmx, err := pollable(raw)
	if err != nil {
		raw.Close()
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	t := &Terminal{
		cmd: cmd, ptmx: ptmx, width: o.Width, height: o.Height,
		onOutput: o.OnOutput, done: make(chan struct{}), readerDone: make(chan struct{}),
	}
	// The emulator answers the program's queries (cursor position, device
	// attributes) through the pty, as a real terminal would.
	t.vt = vt10x.New(vt10x.WithSize(o.Width, o.Height), vt10x.WithWriter(lockedWriter{t}))
	go t.read()
	go func() {
		err := cmd.Wait()
		// Let the reader drain what the program printed last. A leftover
		// child holding the pty open would keep it reading forever, so the
		// wait is bounded.
		select {
		case <-t.readerDone:
		case <-time.After(2 * time.Second):
			t.ptmx.Close()
			<-t.readerDone
		}
		t.mu.Lock()
		t.exitErr = err
		t.mu.Unlock()
		close(t.done)
	}()
	return t, nil
}

// startPTY starts cmd on a new pseudo-terminal as its session leader and
// controlling terminal, as cred's user when cred is set.
func startPTY(cmd *exec.Cmd, ws *pty.Winsize, cred *syscall.Credential) (*os.File, error) {
	if cred == nil {
		return pty.StartWithSize(cmd, ws)
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer tty.Close()
	if err := pty.Setsize(ptmx, ws); err != nil {
		ptmx.Close()
		return nil, err
	}
	// Programs that reopen their terminal by name need to own it.
	if err := tty.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
		ptmx.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cred.Groups = []uint32{} // drop the server's supplementary groups
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		ptmx.Close()
		return nil, err
	}
	return ptmx, nil
}

// pollable returns the pty master as a non-blocking file served by Go's
// poller. creack/pty leaves it in blocking mode, where Close cannot
// interrupt a pending Read: the reader would hang whenever a leftover child
// keeps the terminal open.
func pollable(f *os.File) (*os.File, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), nil
}

type lockedWriter struct{ t *Terminal }

func (w lockedWriter) Write(p []byte) (int, error) { return w.t.write(p) }

func (t *Terminal) read() {
	defer close(t.readerDone)
	buf := make([]byte, 32*1024)
	var pending []byte // an incomplete UTF-8 sequence from the last read
	var tail []byte    // the last bytes of output, to spot split escape codes
	for {
		n, err := t.ptmx.Read(buf)
		if n > 0 {
			chunk := append(pending, buf[:n]...)
			w, _ := t.vt.Write(chunk)
			pending = append([]byte(nil), chunk[w:]...)
			scan := append(tail, buf[:n]...)
			t.mu.Lock()
			if i, j := bytes.LastIndex(scan, []byte("\x1b[?2004h")), bytes.LastIndex(scan, []byte("\x1b[?2004l")); i >= 0 || j >= 0 {
				t.bracketed = i > j
			}
			t.version++
			t.outputTotal += int64(n)
			t.mu.Unlock()
			if len(scan) > 16 {
				scan = scan[len(scan)-16:]
			}
			tail = append(tail[:0], scan...)
			if t.onOutput != nil {
				t.onOutput()
			}
		}
		if err != nil {
			// EIO: the program exited and closed the pty's other side.
			return
		}
	}
}

// Screen returns the screen's rows joined by "\n", each padded to the
// terminal width, as the emulator holds them.
func (t *Terminal) Screen() string {
	s := t.vt.String()
	return strings.TrimSuffix(s, "\n")
}

// Version changes every time output arrives; equal versions mean an
// unchanged screen, which spares rendering it.
func (t *Terminal) Version() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version
}

// BracketedPaste reports whether the program asked for bracketed paste.
func (t *Terminal) BracketedPaste() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bracketed
}

// Size is the terminal's width and height.
func (t *Terminal) Size() (int, int) { return t.width, t.height }

// Write sends bytes to the program as if typed.
func (t *Terminal) Write(p []byte) (int, error) { return t.write(p) }

func (t *Terminal) write(p []byte) (int, error) {
	select {
	case <-t.done:
		return 0, ErrAgentExited
	default:
	}
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	return t.ptmx.Write(p)
}

// Done is closed when the program has exited and its output was read.
func (t *Terminal) Done() <-chan struct{} { return t.done }

// ExitErr is the program's exit status once Done is closed.
func (t *Terminal) ExitErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.exitErr
}

// Pid is the program's process id.
func (t *Terminal) Pid() int { return t.cmd.Process.Pid }

// Close asks the program to stop (SIGTERM, then SIGKILL after grace) and
// waits for it.
func (t *Terminal) Close(grace time.Duration) error {
	t.closeOnce.Do(func() {
		select {
		case <-t.done:
		default:
			// The pty made the program a session leader: signal its whole
			// process group so that children it spawned stop too.
			pgid := t.cmd.Process.Pid
			syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-t.done:
			case <-time.After(grace):
				syscall.Kill(-pgid, syscall.SIGKILL)
				<-t.done
			}
		}
		t.ptmx.Close()
	})
	return nil
}

// ErrAgentExited is returned when writing to an agent that has exited.
var ErrAgentExited = errors.New("the agent process has exited")

var _ io.Writer = (*Terminal)(nil)
