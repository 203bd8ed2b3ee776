//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package demo

import "os"

// On other systems the demo agent works on plain streams: no raw mode, no
// window size (80 columns), no resize signal.

var watchedSignals = []os.Signal{os.Interrupt}

func isResize(os.Signal) bool { return false }

func signalCode(s os.Signal) int {
	if s == os.Interrupt {
		return 130
	}
	return 1
}

type terminal struct{}

func openTerminal(in, out *os.File) *terminal { return &terminal{} }

func (t *terminal) restore() {}

func (t *terminal) size() (cols, rows int) { return 80, 0 }

// reader reads in a goroutine with blocking reads; on these systems the
// goroutine ends only when the input does.
type reader struct {
	events chan readResult
	quit   chan struct{}
}

func startReader(in *os.File) (*reader, error) {
	r := &reader{events: make(chan readResult), quit: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				select {
				case r.events <- readResult{data: append([]byte(nil), buf[:n]...)}:
				case <-r.quit:
					return
				}
			}
			if err != nil {
				select {
				case r.events <- readResult{err: err}:
				case <-r.quit:
				}
				return
			}
		}
	}()
	return r, nil
}

func (r *reader) stop() { close(r.quit) }
