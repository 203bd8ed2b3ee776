package chaos

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
)

// adminKey is the platform admin key the instances are started with.
var adminKey, _, _ = auth.NewAPIKey()

// system is what the suite runs: Redis, PostgreSQL and three instances.
type system struct {
	t     *testing.T
	redis *redistest.Server
	pg    *pgtest.Server
	insts []*instance
}

// instance is one serve process, restartable with the same id, port and
// data directory.
type instance struct {
	id   string
	port int
	env  []string
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *logBuffer
}

func (in *instance) base() string { return fmt.Sprintf("http://127.0.0.1:%d", in.port) }

// logBuffer keeps an instance's log across its restarts, in memory and
// in a file of the run's log directory.
type logBuffer struct {
	mu   sync.Mutex
	b    strings.Builder
	file *os.File
}

func (l *logBuffer) add(line string) {
	l.mu.Lock()
	l.b.WriteString(line)
	l.b.WriteByte('\n')
	if l.file != nil {
		l.file.WriteString(line + "\n")
	}
	l.mu.Unlock()
}

// logDir returns where the run keeps the instances' logs: under
// $AGENTAPI_TEST_ARTIFACTS when set, else a temporary directory removed
// after a run that passed.
func logDir(t *testing.T) string {
	if a := os.Getenv("AGENTAPI_TEST_ARTIFACTS"); a != "" {
		dir := filepath.Join(a, "chaos-logs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "agentapi-chaos-logs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the instances' logs are in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSystem starts Redis (append-only), a PostgreSQL of its own (to
// restart) and n instances.
func startSystem(t *testing.T, n int) *system {
	s := &system{t: t}
	s.redis = redistest.Start(t, redistest.Options{AppendOnly: true})
	s.pg = pgtest.StartWith(t, pgtest.Options{Durable: true})
	dbURL := s.pg.CreateDatabase(t)
	common := []string{
		"PATH=" + os.Getenv("PATH"),
		"REDIS_ENABLE=true", "REDIS_URL=" + s.redis.URL(), "DATABASE_URL=" + dbURL,
		"TOKEN_ENCRYPTION_KEY=" + strings.Repeat("c4", 32), "AGENTAPI_ADMIN_API_KEY=" + adminKey,
		// Every client is 127.0.0.1: the per-IP and default per-user
		// limits must not be what the load runs into; the burst tenant
		// sets its own tight one.
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE=1000000", "RATE_LIMIT_IP_BURST_SIZE=100000",
		"RATE_LIMIT_REQUESTS_PER_MINUTE=100000", "RATE_LIMIT_BURST_SIZE=10000",
		"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE=100000", "RATE_LIMIT_LOGIN_BURST_SIZE=10000",
		"AGENTAPI_INSTANCE_TTL=5s",
		"LOG_FORMAT=json",
	}
	logs := logDir(t)
	for i := range n {
		port, err := testproc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("chaos-%c", 'a'+i)
		f, err := os.Create(filepath.Join(logs, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		in := &instance{id: id, port: port, dir: t.TempDir(), logs: &logBuffer{file: f}}
		in.env = append([]string{
			"HOME=" + in.dir, "AGENTAPI_INSTANCE_ID=" + in.id, fmt.Sprintf("PORT=%d", port),
			"AGENTAPI_ADVERTISE_URL=" + in.base(),
		}, common...)
		s.insts = append(s.insts, in)
		in.start(t)
		t.Cleanup(func() {
			in.kill()
			if t.Failed() {
				t.Logf("--- %s log (tail) ---\n%s", in.id, tail(in.logs.String(), 25))
			}
		})
	}
	return s
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

var listening = regexp.MustCompile(`"msg":"[^"]*listening"`)

// start runs the instance and returns once it listens and answers
// GET /status.
func (in *instance) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(binary, "serve")
	cmd.Env = in.env
	cmd.Dir = in.dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in.logs.add(fmt.Sprintf("=== chaos: started %s (pid %d) at %s ===", in.id, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano)))
	up := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for sc.Scan() {
			in.logs.add(sc.Text())
			if !signalled && listening.MatchString(sc.Text()) {
				signalled = true
				close(up)
			}
		}
		cmd.Wait()
	}()
	in.mu.Lock()
	in.cmd, in.done = cmd, done
	in.mu.Unlock()
	select {
	case <-up:
	case <-done:
		t.Fatalf("%s exited before listening:\n%s", in.id, tail(in.logs.String(), 40))
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not listen within 60s:\n%s", in.id, tail(in.logs.String(), 40))
	}
	waitFor(t, 30*time.Second, in.id+" answers /status", func() bool {
		resp, err := http.Get(in.base() + "/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// kill SIGKILLs the instance and reaps it. Its agents, each the leader of
// its own session on a terminal the instance held, get SIGHUP when the
// terminal closes (checked at the end: see agentsLeft).
func (in *instance) kill() {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.cmd = nil
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	in.logs.add(fmt.Sprintf("=== chaos: SIGKILLed %s at %s ===", in.id, time.Now().Format(time.RFC3339Nano)))
}

// stop sends SIGTERM (a graceful stop) and waits.
func (in *instance) stop() error {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.cmd = nil
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within 60s of SIGTERM", in.id)
	}
	if cmd.ProcessState != nil && !cmd.ProcessState.Success() {
		return fmt.Errorf("%s exited with %v after SIGTERM", in.id, cmd.ProcessState)
	}
	return nil
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, limit, what, cond)
}

// buildBinary builds the server into dir.
func buildBinary(dir string, race bool) (string, error) {
	out := filepath.Join(dir, "agentapi")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/agentapi-mt/agentapi/cmd/agentapi")
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, b)
	}
	return out, nil
}
