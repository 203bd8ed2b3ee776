package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// privateRedis is a redis-server this command started for its run.
type privateRedis struct {
	cmd    *exec.Cmd
	dir    string
	addr   string
	exited chan struct{}
}

// launchRedis starts redis-server on a free loopback port without
// persistence and returns once it answers PING.
func launchRedis() (*privateRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("no -redis, no $REDIS_URL, and redis-server is not on PATH (apt-get install redis-server)")
	}
	dir, err := os.MkdirTemp("", "ratelimitbench-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logFile := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", logFile)
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r := &privateRedis{cmd: cmd, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{})}
	go func() { cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := pingRESP(r.addr)
		if err == nil {
			return r, nil
		}
		select {
		case <-r.exited:
			log, _ := os.ReadFile(logFile)
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server exited: %s", strings.TrimSpace(string(log)))
		default:
		}
		if time.Now().After(deadline) {
			r.Close()
			return nil, fmt.Errorf("redis-server on %s did not answer PING: %w", r.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the server's redis:// URL.
func (r *privateRedis) URL() string { return "redis://" + r.addr }

// Close kills the server and removes its directory.
func (r *privateRedis) Close() {
	if r.cmd.Process != nil {
		r.cmd.Process.Kill()
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
		}
	}
	os.RemoveAll(r.dir)
}

// pingRESP sends an inline PING and wants +PONG.
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
