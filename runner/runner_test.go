package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent/demo"
	"github.com/agentapi-mt/agentapi/sql"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "demo-agent" {
		os.Exit(demo.Main(os.Args[2:], os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}

func TestLoadCatalog(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "agents.json")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	c, err := LoadCatalog(write(`{"agents": {"claude": {"command": ["claude", "--verbose"], "env": {"A": "1"}}, "helper": {"type": "aider", "command": ["aider"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Names(), ",") != "claude,echo,helper" || c["helper"].Type != "aider" || c["claude"].Type != "claude" {
		t.Fatalf("catalog %+v", c)
	}
	for _, bad := range []string{
		`{"agents": {"x": {"type": "nonsense", "command": ["x"]}}}`,
		`{"agents": {"claude": {}}}`,
		`{"agents": {"a b": {"type": "custom", "command": ["x"]}}}`,
		`{"agents": {"claude": {"command": ["claude"], "shell": true}}}`,
		`not json`,
	} {
		if _, err := LoadCatalog(write(bad)); err == nil || !strings.Contains(err.Error(), "AGENTAPI_AGENTS_FILE") {
			t.Errorf("catalog %s: err %v", bad, err)
		}
	}
	if _, err := LoadCatalog(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing catalog file was accepted")
	}
}

func newManager(t *testing.T, o Options) (*Manager, *sql.DB) {
	t.Helper()
	db, err := sql.Open(context.Background(), "", filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	if err := db.CreateTenant(context.Background(), agentapi.Tenant{ID: "acme", Name: "Acme", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	o.Store = db
	o.Self, _ = os.Executable()
	if o.WorkRoot == "" {
		o.WorkRoot = t.TempDir()
	}
	o.SettleWindow = 200 * time.Millisecond
	m := New(o)
	t.Cleanup(m.Close)
	return m, db
}

func TestAgentEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("TOKEN_ENCRYPTION_KEY", "server-secret-must-not-leak")
	m, _ := newManager(t, Options{Env: func(ctx context.Context, tenant string) (map[string]string, error) {
		return map[string]string{"MODEL_API_KEY": "tenant-" + tenant}, nil
	}})
	env, err := m.environment(context.Background(), "acme", Agent{Env: map[string]string{"AGENT_FLAG": "1"}}, "/work/x")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(env, "\n")
	for _, want := range []string{"HOME=/work/x", "AGENT_FLAG=1", "MODEL_API_KEY=tenant-acme"} {
		if !strings.Contains(joined, want) {
			t.Errorf("environment lacks %s:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "server-secret-must-not-leak") || strings.Contains(joined, "TOKEN_ENCRYPTION_KEY") {
		t.Errorf("the server's environment leaked to the agent:\n%s", joined)
	}
}

func TestWorkspaceIsPrivate(t *testing.T) {
	root := t.TempDir()
	m, _ := newManager(t, Options{WorkRoot: root})
	s, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "acme", s.ID))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("workspace mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "sh"}); agentapi.KindOf(err) != agentapi.KindInvalid || !strings.Contains(err.Error(), "echo") {
		t.Fatalf("unknown agent: %v", err)
	}
}

func TestIdleAgentsAreStopped(t *testing.T) {
	m, db := newManager(t, Options{IdleTimeout: 500 * time.Millisecond})
	s, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for m.Running() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle agent was not stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, _ := db.GetAgentSession(context.Background(), "acme", s.ID)
	if got.State != agentapi.SessionStopped || got.StoppedAt == nil {
		t.Fatalf("after the idle stop: %+v", got)
	}
	msgs, _ := db.Messages(context.Background(), "acme", s.ID)
	if len(msgs) == 0 || !strings.Contains(msgs[0].Content, "Demo agent ready") {
		t.Fatalf("transcript after the idle stop: %+v", msgs)
	}
}

func TestRecoverMarksTheOldRunsSessionsLost(t *testing.T) {
	m, db := newManager(t, Options{Instance: "api-1"})
	now := time.Now().UTC()
	old := agentapi.AgentSession{ID: "ses_old", TenantID: "acme", UserID: "u1", AgentType: "echo", State: agentapi.SessionRunning, Instance: "api-1", CreatedAt: now, LastActivityAt: now}
	other := old
	other.ID, other.Instance = "ses_other", "api-2"
	db.CreateAgentSession(context.Background(), old)
	db.CreateAgentSession(context.Background(), other)
	n, err := m.Recover(context.Background(), db)
	if err != nil || n != 1 {
		t.Fatalf("Recover: %d %v", n, err)
	}
	got, _ := db.GetAgentSession(context.Background(), "acme", "ses_old")
	if got.State != agentapi.SessionLost {
		t.Fatalf("this instance's old session: %s", got.State)
	}
	got, _ = db.GetAgentSession(context.Background(), "acme", "ses_other")
	if got.State != agentapi.SessionRunning {
		t.Fatalf("another instance's session was touched: %s", got.State)
	}
}

func TestAgentExitIsRecorded(t *testing.T) {
	m, db := newManager(t, Options{})
	s, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "echo", InitialPrompt: "/exit"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := db.GetAgentSession(context.Background(), "acme", s.ID)
		if got.State == agentapi.SessionExited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want exited", got.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.Running() != 0 {
		t.Fatal("an exited session still counts as running")
	}
}

// TestStartRacingCloseLeavesNothingRunning: sessions starting while the
// manager closes are stopped too, and the janitor never reads a session
// that is still being started (run with -race).
func TestStartRacingCloseLeavesNothingRunning(t *testing.T) {
	m, _ := newManager(t, Options{IdleTimeout: 40 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Start(context.Background(), "acme", fmt.Sprintf("u%d", i), StartRequest{Agent: "echo"})
		}()
	}
	time.Sleep(20 * time.Millisecond) // let some starts be in flight
	m.Close()
	wg.Wait()
	if n := m.Running(); n != 0 {
		t.Fatalf("%d sessions still running after Close", n)
	}
}

// TestAgentsRunAsTheirOwnUsers: with AgentUIDBase, an agent runs under its
// own uid and can read neither the server's environment, nor another
// agent's environment, nor another session's workspace; its own workspace
// and uploads are its own.
func TestAgentsRunAsTheirOwnUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (CI runs as root)")
		}
		t.Skip("needs root to switch users")
	}
	t.Setenv("SERVER_ONLY_SECRET", "must-not-leak")
	tmp := t.TempDir()
	// The agents' users must be able to walk down to the data directory,
	// as the server checks for AGENTAPI_DATA_DIR.
	for d := tmp; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
	root := filepath.Join(tmp, "data", "workspaces")
	probe := `id -u; ` +
		`cat /proc/` + fmt.Sprint(os.Getpid()) + `/environ >/dev/null 2>&1 && echo LEAK-SERVER-ENV || echo server-env-denied; ` +
		`for p in /proc/[0-9]*; do tr '\0' '\n' < $p/environ 2>/dev/null; done | grep -q OTHER_TENANT_SECRET && echo LEAK-OTHER-ENV || echo other-env-denied; ` +
		`ls ` + root + `/globex/* >/dev/null 2>&1 && echo LEAK-OTHER-WS || echo other-ws-denied; ` +
		`touch $HOME/mine && echo own-ws-writable; sleep 30`
	catalog := DefaultCatalog()
	catalog["probe"] = Agent{Type: "custom", Command: []string{"/bin/sh", "-c", probe}}
	catalog["holder"] = Agent{Type: "custom", Command: []string{"/bin/sh", "-c", "echo holding; sleep 30"}}
	m, db := newManager(t, Options{WorkRoot: root, AgentUIDBase: 200000, Catalog: catalog,
		Env: func(ctx context.Context, tenant string) (map[string]string, error) {
			if tenant == "globex" {
				return map[string]string{"OTHER_TENANT_SECRET": "globex-secret"}, nil
			}
			return nil, nil
		}})
	now := time.Now().UTC()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(db.CreateTenant(context.Background(), agentapi.Tenant{ID: "globex", Name: "Globex", CreatedAt: now, UpdatedAt: now}))
	g, err := m.Start(context.Background(), "globex", "u2", StartRequest{Agent: "holder"})
	must(err)
	waitScreen(t, db, "globex", g.ID, "holding")
	s, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "probe"})
	must(err)
	out := waitScreen(t, db, "acme", s.ID, "own-ws-writable")
	for _, want := range []string{"server-env-denied", "other-env-denied", "other-ws-denied"} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "LEAK") || strings.HasPrefix(strings.TrimSpace(out), "0\n") {
		t.Fatalf("the agent escaped its user:\n%s", out)
	}
	fi, err := os.Stat(filepath.Join(root, "acme", s.ID))
	must(err)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid < 200000 || fi.Mode().Perm() != 0o700 {
		t.Fatalf("workspace owner %d mode %v", st.Uid, fi.Mode().Perm())
	}
	// An upload belongs to the agent's user, so the agent can read it.
	h, ok := m.Handler("acme", s.ID)
	if !ok {
		t.Fatal("no handler for the running session")
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "notes.txt")
	fw.Write([]byte("for the agent"))
	mw.Close()
	req := httptest.NewRequest("POST", "/upload", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var up struct {
		FilePath string `json:"filePath"`
	}
	json.Unmarshal(rec.Body.Bytes(), &up)
	ufi, err := os.Stat(up.FilePath)
	if rec.Code != 200 || err != nil {
		t.Fatalf("upload: %d %s %v", rec.Code, rec.Body.String(), err)
	}
	if ust := ufi.Sys().(*syscall.Stat_t); ust.Uid != st.Uid {
		t.Fatalf("upload owned by %d, the agent runs as %d", ust.Uid, st.Uid)
	}
}

// waitScreen waits until a session's first message (its screen) contains
// want, and returns it.
func waitScreen(t *testing.T, db *sql.DB, tenant, id, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		msgs, _ := db.Messages(context.Background(), tenant, id)
		if len(msgs) > 0 && strings.Contains(msgs[0].Content, want) {
			return msgs[0].Content
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s never showed %q: %+v", id, want, msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
