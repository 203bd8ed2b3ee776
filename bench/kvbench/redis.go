package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// redisServer is a private redis-server started by kvbench.
type redisServer struct {
	cmd  *exec.Cmd
	dir  string
	port int
	done chan struct{}
}

// startRedis launches redis-server on a free loopback port with persistence
// off and waits until it answers PING.
func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("no -redis URL, no REDIS_URL and redis-server is not on PATH (apt-get install redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "kvbench-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port can be taken before redis binds it
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		logPath := filepath.Join(dir, "redis.log")
		cmd := exec.Command(bin,
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--logfile", logPath,
		)
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &redisServer{cmd: cmd, dir: dir, port: port, done: make(chan struct{})}
		go func() { cmd.Wait(); close(s.done) }()
		if err := s.waitReady(5 * time.Second); err == nil {
			return s, nil
		} else {
			lastErr = fmt.Errorf("%w\n%s", err, tailFile(logPath, 20))
		}
		s.kill()
		os.Remove(logPath)
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

func (s *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d", s.port) }

func (s *redisServer) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("redis-server exited")
		default:
		}
		if err = ping(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %v", limit, err)
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// kill stops the server (SIGKILL; it persists nothing) and waits for it.
func (s *redisServer) kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
	}
}

// Close kills the server and removes its directory.
func (s *redisServer) Close() {
	s.kill()
	os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
