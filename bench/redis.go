package bench

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RedisServer is a private redis-server for one benchmark run.
type RedisServer struct {
	cmd  *exec.Cmd
	dir  string
	port int
	done chan struct{}
}

// StartRedis launches redis-server on a free loopback port with persistence
// off and waits until it answers PING.
func StartRedis() (*RedisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("no -redis URL, no REDIS_URL and redis-server is not on PATH (apt-get install redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port can be taken before redis binds it
		port, err := testproc.FreePort()
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
		cmd.SysProcAttr = killWithParent()
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &RedisServer{cmd: cmd, dir: dir, port: port, done: make(chan struct{})}
		go func() { cmd.Wait(); close(s.done) }()
		if err := s.waitReady(5 * time.Second); err == nil {
			return s, nil
		} else {
			lastErr = fmt.Errorf("%w\n%s", err, testproc.LogTail(logPath, 0, 20))
		}
		s.kill()
		os.Remove(logPath)
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server did not start: %w", lastErr)
}

// URL is the server's redis:// URL.
func (s *RedisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d", s.port) }

func (s *RedisServer) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("redis-server exited")
		default:
		}
		if err = pingRESP(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %v", limit, err)
}

func pingRESP(addr string) error {
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
func (s *RedisServer) kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
	}
}

// Close kills the server and removes its directory.
func (s *RedisServer) Close() {
	s.kill()
	os.RemoveAll(s.dir)
}
