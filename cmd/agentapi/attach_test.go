package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/hinshun/vt10x"
)

func TestAttachShowsTheScreenAndForwardsKeys(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	s.awaitStable()

	cmd := exec.Command(binary, "attach", "--url", strings.TrimPrefix(s.base, "http://"))
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	vt := vt10x.New(vt10x.WithSize(80, 30))
	go func() {
		buf := make([]byte, 4096)
		var pending []byte
		for {
			n, err := ptmx.Read(buf)
			if n > 0 {
				chunk := append(pending, buf[:n]...)
				w, _ := vt.Write(chunk)
				pending = append([]byte(nil), chunk[w:]...)
			}
			if err != nil {
				return
			}
		}
	}()
	screenHas := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(vt.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("attach screen never showed %q:\n%s", what, vt.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	screenHas("Demo agent ready")
	screenHas("Ctrl-] detaches")

	// Keys typed into attach reach the agent as raw input.
	ptmx.Write([]byte("hi there"))
	screenHas("> hi there")
	ptmx.Write([]byte("\r"))
	screenHas("● Echo: hi there")

	ptmx.Write([]byte{0x1d}) // Ctrl-]
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("attach exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not detach on Ctrl-]")
	}
	// The agent is untouched by detaching.
	if st := s.status(); st == "" {
		t.Fatal("server gone after detach")
	}
}

func TestAttachBadURL(t *testing.T) {
	out, err := exec.Command(binary, "attach", "--url", "ftp://x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--url") {
		t.Fatalf("attach with a bad URL: %v %s", err, out)
	}
}
