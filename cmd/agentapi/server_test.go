package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentServer is a running `agentapi server` with the demo agent.
type agentServer struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// startAgentServer runs the binary with args before `--` and the demo
// agent (with demoArgs) after it, and waits until it listens.
func startAgentServer(t *testing.T, stdin io.Reader, args []string, demoArgs ...string) *agentServer {
	t.Helper()
	full := append([]string{"server", "--port", "0", "--settle-window", "300ms"}, args...)
	full = append(full, "--", binary, "demo-agent", "--think", "150ms")
	full = append(full, demoArgs...)
	cmd := exec.Command(binary, full...)
	cmd.Stdin = stdin
	cmd.Dir = t.TempDir()
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &agentServer{t: t, cmd: cmd, logs: &syncBuffer{mu: make(chan struct{}, 1)}, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	})
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listening" addr=\[::\]:(\d+)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.logs.Write([]byte(sc.Text() + "\n"))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case port := <-addr:
		s.base = "http://localhost:" + port
	case err := <-s.done:
		t.Fatalf("server exited before listening: %v\n%s", err, s.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not listen:\n%s", s.logs.String())
	}
	return s
}

func (s *agentServer) get(path string, v any) int {
	s.t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			s.t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

type statusBody struct {
	Status    string `json:"status"`
	AgentType string `json:"agent_type"`
}

type messagesBody struct {
	Messages []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Role    string `json:"role"`
		Time    string `json:"time"`
	} `json:"messages"`
}

func (s *agentServer) status() string {
	var b statusBody
	s.get("/status", &b)
	return b.Status
}

func (s *agentServer) messages() []string {
	var b messagesBody
	s.get("/messages", &b)
	var out []string
	for i, m := range b.Messages {
		if m.ID != i {
			s.t.Fatalf("message %d has id %d", i, m.ID)
		}
		if m.Content != strings.TrimRight(m.Content, " ") || strings.Contains(m.Content, "  \n") {
			s.t.Fatalf("message %d carries terminal padding: %q", i, m.Content)
		}
		out = append(out, m.Role+":"+m.Content)
	}
	return out
}

func (s *agentServer) post(content, typ string) (int, map[string]any) {
	s.t.Helper()
	body, _ := json.Marshal(map[string]string{"content": content, "type": typ})
	resp, err := http.Post(s.base+"/message", "application/json", bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// await polls until cond holds (bounded).
func (s *agentServer) await(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s; status %s, messages %q\n%s", what, s.status(), s.messages(), s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitStable waits until the agent has greeted and is stable. A screen
// still blank while a loaded machine starts the agent can look stable for
// a moment; it is not ready until its greeting is there.
func (s *agentServer) awaitStable() {
	s.await("stable after its greeting", func() bool { return s.status() == "stable" && len(s.messages()) > 0 })
}

func (s *agentServer) awaitMessages(want ...string) {
	s.t.Helper()
	s.await(fmt.Sprintf("messages %q", want), func() bool {
		got := s.messages()
		return strings.Join(got, "|") == strings.Join(want, "|")
	})
}

func (s *agentServer) signal(sig syscall.Signal) error {
	s.t.Helper()
	s.cmd.Process.Signal(sig)
	select {
	case err := <-s.done:
		return err
	case <-time.After(20 * time.Second):
		s.t.Fatalf("server did not exit after %v", sig)
	}
	return nil
}

const greet = "agent:Demo agent ready. Type a message."

func TestServerGreetingAndThreeExchanges(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	s.awaitStable()
	var st statusBody
	s.get("/status", &st)
	if st.AgentType != "echo" {
		t.Fatalf("agent_type %q", st.AgentType)
	}
	want := []string{greet}
	s.awaitMessages(want...)
	for i, text := range []string{"hello", "second message", "third: ünïcode ✓"} {
		code, body := s.post(text, "user")
		if code != 200 || body["ok"] != true {
			t.Fatalf("POST #%d: %d %v", i+1, code, body)
		}
		// Running as soon as the call returns.
		if st := s.status(); st != "running" {
			t.Fatalf("status right after POST #%d: %s", i+1, st)
		}
		want = append(want, "user:"+text, "agent:Echo: "+text)
		s.awaitMessages(want...)
		s.awaitStable()
	}
}

func TestServerBusyIs409(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil, "--think", "3s")
	s.awaitStable()
	if code, body := s.post("slow one", "user"); code != 200 {
		t.Fatalf("first POST: %d %v", code, body)
	}
	code, body := s.post("too soon", "user")
	if code != http.StatusConflict || !strings.Contains(fmt.Sprint(body["detail"]), "busy") {
		t.Fatalf("POST while running: %d %v", code, body)
	}
	if code, body := s.post("x", "shout"); code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
		t.Fatalf("bad type: %d %v", code, body)
	}
}

func TestServerThinkingIsOneReply(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "script.txt")
	os.WriteFile(script, []byte("Looking at the code.\n[[pause]]\nFound it: a missing semicolon.\n"), 0o644)
	s := startAgentServer(t, nil, nil, "--script", script, "--think", "600ms")
	s.awaitStable()
	s.post("fix it", "user")
	s.awaitMessages(greet, "user:fix it", "agent:Looking at the code.\nFound it: a missing semicolon.")
	s.awaitStable()
	if n := len(s.messages()); n != 3 {
		t.Fatalf("%d messages, want the reply merged into one", n)
	}
}

func TestServerRawKeys(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	s.awaitStable()
	s.post("/confirm", "user")
	s.await("the confirmation question", func() bool {
		m := s.messages()
		return len(m) == 3 && strings.Contains(m[2], "Run `rm -rf build`?")
	})
	for _, key := range []string{"\x1b[B", "\r"} { // arrow down, Enter
		if code, _ := s.post(key, "raw"); code != 200 {
			t.Fatalf("raw %q: %d", key, code)
		}
	}
	s.awaitMessages(greet, "user:/confirm", "agent:Declined.")
}

func TestServerUpload(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	upload := func(name string, data []byte) (int, map[string]any) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("file", name)
		fw.Write(data)
		mw.Close()
		resp, err := http.Post(s.base+"/upload", mw.FormDataContentType(), &buf)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, body := upload("../../etc/notes.txt", []byte("remember the milk"))
	if code != 200 || body["ok"] != true {
		t.Fatalf("upload: %d %v", code, body)
	}
	path := body["filePath"].(string)
	if filepath.Base(path) != "notes.txt" || strings.Contains(path, "etc") {
		t.Fatalf("upload landed at %s", path)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "remember the milk" {
		t.Fatalf("uploaded file: %q %v", data, err)
	}
	code, body = upload("notes.txt", []byte("again"))
	if code != 200 || body["filePath"] == path {
		t.Fatalf("second upload with the same name: %d %v", code, body)
	}
	if code, _ := upload("big.bin", make([]byte, 10<<20+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("11 MB upload: %d", code)
	}
}

// sse reads events from /events until n have arrived.
type sseEvent struct {
	id   int64
	typ  string
	data string
}

func readEvents(t *testing.T, base string, lastID int64, n int) []sseEvent {
	t.Helper()
	return readEventsUntil(t, base, lastID, func(evs []sseEvent) bool { return len(evs) >= n })
}

// readEventsUntil connects to /events (resuming after lastID when it is
// not 0) and reads until done says so (bounded by 20s).
func readEventsUntil(t *testing.T, base string, lastID int64, done func([]sseEvent) bool) []sseEvent {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/events", nil)
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	timer := time.AfterFunc(20*time.Second, func() { resp.Body.Close() })
	defer timer.Stop()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	for !done(out) && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.ParseInt(line[4:], 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		case line == "":
			if cur.typ != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		}
	}
	if !done(out) {
		t.Fatalf("stream ended early with %d events: %+v", len(out), out)
	}
	return out
}

func TestServerEventsReplayAndResume(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	s.awaitStable()
	s.awaitMessages(greet)
	// On connect: the state (one message, then the status, carrying an id).
	first := readEvents(t, s.base, 0, 2)
	if first[0].typ != "message_update" || first[1].typ != "status_change" || first[1].id == 0 {
		t.Fatalf("state on connect: %+v", first)
	}
	last := first[1].id
	// While disconnected: one exchange.
	s.post("while away", "user")
	s.awaitMessages(greet, "user:while away", "agent:Echo: while away")
	s.awaitStable()
	// Resume: exactly what was missed, in order, from last+1, through the
	// final status change.
	missed := readEventsUntil(t, s.base, last, func(evs []sseEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].typ == "status_change" && strings.Contains(evs[len(evs)-1].data, `"stable"`)
	})
	var user, reply bool
	for i, ev := range missed {
		if ev.id != last+int64(i)+1 {
			t.Fatalf("event %d has id %d, want %d (no gaps, no repeats): %+v", i, ev.id, last+int64(i)+1, missed)
		}
		user = user || (ev.typ == "message_update" && strings.Contains(ev.data, `"message":"while away"`))
		reply = reply || (ev.typ == "message_update" && strings.Contains(ev.data, `"message":"Echo: while away"`))
	}
	if !user || !reply {
		t.Fatalf("missed events lack the user message or the reply: %+v", missed)
	}
	// Resuming from the middle starts right after it.
	mid := missed[1].id
	if again := readEvents(t, s.base, mid, 1); again[0].id != mid+1 {
		t.Fatalf("resume from %d starts at %d", mid, again[0].id)
	}
}

func TestServerStatePersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state.json")
	s := startAgentServer(t, nil, []string{"--state-file", state})
	s.awaitStable()
	s.post("remember me", "user")
	s.awaitMessages(greet, "user:remember me", "agent:Echo: remember me")
	if err := s.signal(syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v\n%s", err, s.logs.String())
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file after shutdown: %v", err)
	}
	s2 := startAgentServer(t, nil, []string{"--state-file", state})
	s2.awaitStable()
	s2.awaitMessages(greet, "user:remember me", "agent:Echo: remember me")
	s2.post("and continue", "user")
	s2.awaitMessages(greet, "user:remember me", "agent:Echo: remember me", "user:and continue", "agent:Echo: and continue")
}

func TestServerSIGUSR1SavesState(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "state.json")
	s := startAgentServer(t, nil, []string{"--state-file", state})
	s.awaitStable()
	s.awaitMessages(greet)
	s.cmd.Process.Signal(syscall.SIGUSR1)
	s.await("the state file", func() bool {
		data, err := os.ReadFile(state)
		return err == nil && strings.Contains(string(data), "Demo agent ready")
	})
}

func TestServerInitialPromptFromFlag(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, []string{"--initial-prompt", "from the flag"})
	s.awaitMessages(greet, "user:from the flag", "agent:Echo: from the flag")
}

func TestServerInitialPromptFromStdin(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, strings.NewReader("from stdin\n"), nil)
	s.awaitMessages(greet, "user:from stdin", "agent:Echo: from stdin")
}

func TestServerExitsWhenTheAgentExits(t *testing.T) {
	t.Parallel()
	s := startAgentServer(t, nil, nil)
	s.awaitStable()
	s.post("/exit", "user")
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("server exit after the agent exited cleanly: %v\n%s", err, s.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("server still running after the agent exited")
	}
}

func TestServerCleanShutdownOnSIGINT(t *testing.T) {
	t.Parallel()
	pid := filepath.Join(t.TempDir(), "agentapi.pid")
	s := startAgentServer(t, nil, []string{"--pid-file", pid})
	s.awaitStable()
	if data, err := os.ReadFile(pid); err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(s.cmd.Process.Pid) {
		t.Fatalf("pid file: %q %v", data, err)
	}
	if err := s.signal(syscall.SIGINT); err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind: %v", err)
	}
}

func TestServerFlagsAndEnvironment(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	f, err := parseServerFlags([]string{"-p", "9000", "-t", "claude", "-W", "120", "--", "claude", "--model", "x"}, env(map[string]string{"AGENTAPI_PORT": "1"}))
	if err != nil {
		t.Fatal(err)
	}
	if f.port != 9000 || f.agentType != "claude" || f.termWidth != 120 || strings.Join(f.command, " ") != "claude --model x" {
		t.Fatalf("flags: %+v", f)
	}
	f, err = parseServerFlags([]string{"aider"}, env(map[string]string{
		"AGENTAPI_PORT": "4000", "AGENTAPI_ALLOWED_HOSTS": "example.com  agents.internal", "AGENTAPI_TERM_HEIGHT": "50",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if f.port != 4000 || strings.Join(f.allowedHosts, ",") != "example.com,agents.internal" || f.termHeight != 50 {
		t.Fatalf("env: %+v", f)
	}
	typ, cmd, err := f.agentCommand()
	if err != nil || typ != "aider" || cmd[0] != "aider" {
		t.Fatalf("guessed type %q %v %v", typ, cmd, err)
	}
	for _, bad := range [][]string{{"-W", "5", "x"}, {"--port", "70000", "x"}, {"--nope"}} {
		if _, err := parseServerFlags(bad, env(nil)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := parseServerFlags([]string{"x"}, env(map[string]string{"AGENTAPI_PORT": "many"})); err == nil || !strings.Contains(err.Error(), "AGENTAPI_PORT") {
		t.Errorf("bad AGENTAPI_PORT: %v", err)
	}
	f, _ = parseServerFlags([]string{"-t", "nonsense", "x"}, env(nil))
	if _, _, err := f.agentCommand(); err == nil || !strings.Contains(err.Error(), "claude") {
		t.Errorf("unknown type error should list the valid ones: %v", err)
	}
}

func TestServerPrintOpenAPIMatchesCheckedIn(t *testing.T) {
	out, err := exec.Command(binary, "server", "--print-openapi").Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../agenthttp/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want) {
		t.Fatal("--print-openapi differs from agenthttp/openapi.json")
	}
}
