//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package demo

import (
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var watchedSignals = []os.Signal{unix.SIGWINCH, unix.SIGTERM, unix.SIGHUP, unix.SIGINT}

func isResize(s os.Signal) bool { return s == unix.SIGWINCH }

// signalCode is the conventional exit code for a process ended by s.
func signalCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}

// fileFd returns f's descriptor without switching f to blocking mode (as
// f.Fd would), or -1.
func fileFd(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// terminal is the agent's terminal: in's settings are switched to raw mode
// (when in is a terminal) and restored by restore.
type terminal struct {
	fd, outFd int
	saved     *unix.Termios
}

func openTerminal(in, out *os.File) *terminal {
	t := &terminal{fd: fileFd(in), outFd: fileFd(out)}
	if t.fd < 0 {
		return t
	}
	tio, err := unix.IoctlGetTermios(t.fd, ioctlGetTermios)
	if err != nil {
		return t // not a terminal: work on plain pipes
	}
	saved := *tio
	raw := *tio
	raw.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Iflag &^= unix.ICRNL
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if unix.IoctlSetTermios(t.fd, ioctlSetTermios, &raw) == nil {
		t.saved = &saved
	}
	return t
}

func (t *terminal) restore() {
	if t.saved != nil {
		_ = unix.IoctlSetTermios(t.fd, ioctlSetTermios, t.saved)
		t.saved = nil
	}
}

// size returns the terminal's columns and rows, or 80 columns and 0 (unknown)
// rows when neither in nor out is a terminal with a size.
func (t *terminal) size() (cols, rows int) {
	for _, fd := range []int{t.fd, t.outFd} {
		if fd < 0 {
			continue
		}
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err == nil && ws.Col > 0 {
			return int(ws.Col), int(ws.Row)
		}
	}
	return 80, 0
}

// reader reads the terminal in its own goroutine. It waits with poll on the
// input and a wake-up pipe, so stop can end it without closing the input.
type reader struct {
	events       chan readResult
	quit, done   chan struct{}
	wakeR, wakeW int
}

func startReader(in *os.File) (*reader, error) {
	fd := fileFd(in)
	if fd < 0 {
		return nil, os.ErrInvalid
	}
	p, err := makePipe()
	if err != nil {
		return nil, err
	}
	r := &reader{
		events: make(chan readResult),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		wakeR:  p[0],
		wakeW:  p[1],
	}
	go r.run(fd)
	return r, nil
}

func (r *reader) run(fd int) {
	defer close(r.done)
	buf := make([]byte, 4096)
	for {
		fds := []unix.PollFd{
			{Fd: int32(fd), Events: unix.POLLIN},
			{Fd: int32(r.wakeR), Events: unix.POLLIN},
		}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			r.send(readResult{err: err})
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if n > 0 {
			if !r.send(readResult{data: append([]byte(nil), buf[:n]...)}) {
				return
			}
			continue
		}
		if err == nil {
			err = io.EOF
		}
		r.send(readResult{err: err})
		return
	}
}

func (r *reader) send(res readResult) bool {
	select {
	case r.events <- res:
		return true
	case <-r.quit:
		return false
	}
}

// stop ends the reading goroutine and waits for it.
func (r *reader) stop() {
	close(r.quit)
	_, _ = unix.Write(r.wakeW, []byte{0})
	<-r.done
	_ = unix.Close(r.wakeR)
	_ = unix.Close(r.wakeW)
}
