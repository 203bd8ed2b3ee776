package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

type latencyResult struct {
	startup time.Duration // server start to the first stable status
	post    []time.Duration
	reply   []time.Duration
	stable  []time.Duration
	failed  []string
}

// listenRE finds the port in the server's "listening" log line, e.g.
// msg="agentapi server listening" addr=[::]:41234.
var listenRE = regexp.MustCompile(`msg="agentapi server listening" addr=\S*:(\d+)`)

// server is a running `agentapi server` process.
type server struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	log  []string // its last stderr lines
	once sync.Once
}

func (s *server) addLog(l string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, l)
	if len(s.log) > 20 {
		s.log = s.log[1:]
	}
}

func (s *server) lastLog() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}

// stop sends SIGTERM (the server then stops its agent) and SIGKILL after
// 5 s.
func (s *server) stop() {
	s.once.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	})
}

func startServer(ctx context.Context, bin string, args []string, cl *cleaner) (*server, string, error) {
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = serverProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	s := &server{cmd: cmd, done: make(chan struct{})}
	cl.add(s.stop)
	ports := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			s.addLog(sc.Text())
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ports <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(s.done)
	}()
	select {
	case p := <-ports:
		return s, p, nil
	case <-s.done:
		return nil, "", fmt.Errorf("the server exited before listening:\n%s", s.lastLog())
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, "", fmt.Errorf("the server did not log its address within 30s:\n%s", s.lastLog())
	case <-ctx.Done():
		s.stop()
		return nil, "", ctx.Err()
	}
}

// apiClient calls one server's HTTP API.
type apiClient struct {
	base string
	hc   *http.Client
}

func (c *apiClient) status(ctx context.Context) (string, error) {
	var body struct {
		Status string `json:"status"`
	}
	err := c.get(ctx, "/status", &body)
	return body.Status, err
}

type apiMessage struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	Role    string `json:"role"`
}

func (c *apiClient) messages(ctx context.Context) ([]apiMessage, error) {
	var body struct {
		Messages []apiMessage `json:"messages"`
	}
	err := c.get(ctx, "/messages", &body)
	return body.Messages, err
}

func (c *apiClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, v)
}

func (c *apiClient) post(ctx context.Context, content string) error {
	body, _ := json.Marshal(map[string]string{"content": content, "type": "user"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/message", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /message: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	return nil
}

// poll calls cond every 5 ms until it reports done, or timeout.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		}
	}
}

func (c *apiClient) waitStable(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, timeout, func() (bool, error) {
		st, err := c.status(ctx)
		return err == nil && st == "stable", err
	})
}

func measureLatency(ctx context.Context, cfg config, bin string, cl *cleaner) (*latencyResult, error) {
	args := []string{"server", "--type", "echo", "--port", "0", "--settle-window", cfg.settle.String(), "--", bin, "demo-agent", "--think", "0s"}
	progress("latency: starting agentapi %s", strings.Join(args, " "))
	start := time.Now()
	srv, port, err := startServer(ctx, bin, args, cl)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	c := &apiClient{base: "http://127.0.0.1:" + port, hc: &http.Client{Timeout: 30 * time.Second}}
	res := &latencyResult{}
	if err := c.waitStable(ctx, time.Minute); err != nil {
		return nil, fmt.Errorf("waiting for the first stable status: %w\n%s", err, srv.lastLog())
	}
	res.startup = time.Since(start)
	progress("server on port %s stable after %s; %d rounds", port, res.startup.Round(10*time.Millisecond), cfg.rounds)

	for i := 1; i <= cfg.rounds && ctx.Err() == nil; i++ {
		if err := c.waitStable(ctx, time.Minute); err != nil {
			res.failed = append(res.failed, fmt.Sprintf("round %d: waiting for stable: %v", i, err))
			break
		}
		content := fmt.Sprintf("ping %d", i)
		want := "Echo: " + content
		t0 := time.Now()
		replyc := make(chan error, 1)
		var replyAt time.Time
		go func() {
			replyc <- poll(ctx, 30*time.Second, func() (bool, error) {
				msgs, err := c.messages(ctx)
				for _, m := range msgs {
					if m.Role == "agent" && hasLine(m.Content, want) {
						replyAt = time.Now()
						return true, nil
					}
				}
				return false, err
			})
		}()
		postErr := c.post(ctx, content)
		postDur := time.Since(t0)
		replyErr := <-replyc
		if postErr != nil || replyErr != nil {
			res.failed = append(res.failed, fmt.Sprintf("round %d: post: %v; reply: %v", i, postErr, replyErr))
			continue
		}
		if err := c.waitStable(ctx, time.Minute); err != nil {
			res.failed = append(res.failed, fmt.Sprintf("round %d: waiting for stable after the reply: %v", i, err))
			continue
		}
		res.post = append(res.post, postDur)
		res.reply = append(res.reply, replyAt.Sub(t0))
		res.stable = append(res.stable, time.Since(t0))
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(res.post) == 0 {
		return res, errors.New("no round succeeded: " + strings.Join(res.failed, "; "))
	}
	return res, nil
}
