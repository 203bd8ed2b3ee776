// Package testproc holds what the throwaway test servers (redistest,
// pgtest) share about running a server process -- a free port, waiting for
// a killed server's port to refuse connections, the tail of its log for
// failure messages -- and the polling wait the tests use.
package testproc

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitRefused waits until addr refuses TCP connections, up to timeout.
func WaitRefused(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still accepts connections %v after the server was stopped", addr, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// LogSize is the current size of a log file (0 when it cannot be read), to
// show only what a later start wrote.
func LogSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogTail returns the last n lines a log file got after offset.
func LogTail(path string, offset int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	lines := strings.Split(strings.TrimRight(string(b[offset:]), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls cond until it holds, failing t if within passes first, and
// returns how long it took. It polls every millisecond at first, backing
// off to every 20 ms, so that a condition met at once is seen at once and
// one that costs a request is not asked a thousand times a second.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	pause := time.Millisecond
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
	return time.Since(start)
}
