// Package pgtest starts throwaway PostgreSQL servers for tests and hands out
// fresh, empty databases.
//
// Start runs initdb into a private temporary directory and then the postgres
// server itself, listening on 127.0.0.1 on a free port (Unix socket inside the
// temporary directory), with fsync off and trust authentication for the
// "postgres" superuser. The server is shut down and its directory removed at
// test cleanup; on Linux the kernel also stops it if the test binary dies.
//
// The binaries are looked up on PATH first, then in the highest-versioned
// /usr/lib/postgresql/*/bin (Debian layout). When they are missing the test is
// skipped, or fails when CI=true (see redistest.Require).
//
// initdb and postgres refuse to run as root. When the tests run as root, both
// are run as the "postgres" system user (or "nobody" when there is no such
// user) and the data directory is owned by that user.
//
// URL is the usual entry point: it returns the URL of a new, empty database,
// either on the server named by DATABASE_TEST_URL or on a private server.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/agentapi-mt/agentapi/redistest"
)

const (
	// StartTimeout bounds how long Start and Restart wait for the server to
	// accept connections and how long Stop waits for it to go away.
	StartTimeout = 20 * time.Second
	// InitdbTimeout bounds the initdb run in Start.
	InitdbTimeout = 60 * time.Second
)

// Server is a PostgreSQL server owned by a test.
type Server struct {
	postgresBin string
	base        string // private temporary directory, removed at cleanup
	dataDir     string
	sockDir     string
	logPath     string
	port        int
	runAs       *account // nil: run as the current user
	opts        Options

	mu   sync.Mutex
	proc *process
}

// account is the system user the server processes run as when we are root.
type account struct {
	name     string
	uid, gid uint32
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error
}

// URL returns the URL of a fresh, empty database that is dropped at cleanup.
// When DATABASE_TEST_URL is set (a postgres:// URL of a superuser or a role
// with CREATEDB), the database is created on that server; otherwise a private
// server is started with Start.
func URL(t testing.TB) string {
	t.Helper()
	if admin := os.Getenv("DATABASE_TEST_URL"); admin != "" {
		return createDatabase(t, admin, nil)
	}
	return Start(t).CreateDatabase(t)
}

// Options change how Start runs the server.
type Options struct {
	// Durable keeps every acknowledged commit through a Stop (immediate
	// shutdown, as a crash of the server process): synchronous_commit is
	// left on. fsync stays off -- the operating system, which keeps what
	// was written, does not crash in a test. Without it commits are
	// acknowledged before their WAL is written, and the last fraction of a
	// second of them may be lost on Stop.
	Durable bool
}

// Start initialises a new cluster and starts a server for it, returning once
// the server accepts connections. The server is stopped (immediate mode) and
// its directory removed at test cleanup.
func Start(t testing.TB) *Server { t.Helper(); return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	initdb, postgres := findBinaries(t)

	runAs, err := serverAccount()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	base, err := makeBaseDir(runAs)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// Registered first, so it runs after the server has been stopped.
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("pgtest: removing %s: %v", base, err)
		}
	})

	s := &Server{
		postgresBin: postgres,
		base:        base,
		dataDir:     filepath.Join(base, "data"),
		sockDir:     filepath.Join(base, "sock"),
		logPath:     filepath.Join(base, "postgres.log"),
		runAs:       runAs,
		opts:        o,
	}
	for _, d := range []string{s.dataDir, s.sockDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if runAs != nil {
			if err := os.Chown(d, int(runAs.uid), int(runAs.gid)); err != nil {
				t.Fatalf("pgtest: chown %s to %s: %v", d, runAs.name, err)
			}
		}
	}

	if err := s.initdb(initdb); err != nil {
		t.Fatalf("pgtest: initdb failed: %v\n--- tail of %s ---\n%s", err, s.logPath, testproc.LogTail(s.logPath, 0, 40))
	}

	t.Cleanup(s.shutdown)
	// The free port can be grabbed by someone else before postgres binds it;
	// retry on that specific failure.
	const attempts = 3
	for i := 1; ; i++ {
		port, err := testproc.FreePort()
		if err != nil {
			t.Fatalf("pgtest: finding a free port: %v", err)
		}
		s.port = port
		logStart := testproc.LogSize(s.logPath)
		err = s.launch()
		if err == nil {
			err = s.waitReady(StartTimeout)
		}
		if err == nil {
			return s
		}
		s.shutdown()
		logPart := testproc.LogTail(s.logPath, logStart, 40)
		if i < attempts && strings.Contains(logPart, "Address already in use") {
			continue
		}
		t.Fatalf("pgtest: postgres on %s did not become ready: %v\n--- tail of %s ---\n%s",
			s.addr(), err, s.logPath, logPart)
		return nil
	}
}

// URL returns "postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable".
func (s *Server) URL() string { return s.dbURL("postgres") }

// Port returns the TCP port of the server.
func (s *Server) Port() int { return s.port }

// Pid returns the process id of the postmaster, or 0 when stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop shuts the server down in immediate mode (the equivalent of
// pg_ctl stop -m immediate) and waits until the port refuses connections.
// Stopping a stopped server only re-checks the port.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.shutdown()
	if err := testproc.WaitRefused(s.addr(), StartTimeout); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Restart starts the server again on the same port and data directory and
// waits until it accepts connections. A running server is stopped first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	logStart := testproc.LogSize(s.logPath)
	err := s.launch()
	if err == nil {
		err = s.waitReady(StartTimeout)
	}
	if err != nil {
		s.shutdown()
		t.Fatalf("pgtest: restarted postgres on %s did not become ready: %v\n--- tail of %s ---\n%s",
			s.addr(), err, s.logPath, testproc.LogTail(s.logPath, logStart, 40))
	}
}

// CreateDatabase creates a new, uniquely named, empty database on s and
// returns its URL. The database is dropped (WITH (FORCE)) at cleanup, unless
// the server is not running at that point.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, s.URL(), func() bool { return s.Pid() != 0 })
}

func (s *Server) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

func (s *Server) dbURL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     s.addr(),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// command prepares a server-side command running as s.runAs.
func (s *Server) command(ctx context.Context, name string, args ...string) (*exec.Cmd, *os.File, error) {
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(logFile, "=== pgtest: %s %s (%s) ===\n", name, strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		cmd = exec.Command(name, args...)
	}
	// A directory the server user can enter: postgres resolves its own
	// executable relative to the working directory.
	cmd.Dir = s.base
	cmd.Env = serverEnv()
	cmd.Stdout = logFile // *os.File: handed to the child, no copying goroutine
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(s.runAs)
	return cmd, logFile, nil
}

func (s *Server) initdb(initdb string) error {
	ctx, cancel := context.WithTimeout(context.Background(), InitdbTimeout)
	defer cancel()
	cmd, logFile, err := s.command(ctx, initdb,
		"-D", s.dataDir,
		"-A", "trust",
		"-U", "postgres",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
	)
	if err != nil {
		return err
	}
	defer logFile.Close()
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (timeout %v)", err, InitdbTimeout)
		}
		return err
	}
	return nil
}

// launch starts the postmaster as a direct child; it does not wait.
func (s *Server) launch() error {
	cmd, logFile, err := s.command(nil, s.postgresBin,
		"-D", s.dataDir,
		"-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.sockDir,
		"-c", "fsync=off",
		"-c", "synchronous_commit="+map[bool]string{true: "on", false: "off"}[s.opts.Durable],
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
	)
	if err != nil {
		return err
	}
	defer logFile.Close()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.postgresBin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// shutdown performs an immediate shutdown (SIGQUIT to the postmaster, as
// pg_ctl stop -m immediate does) and reaps the process; SIGKILL if it hangs.
func (s *Server) shutdown() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(StartTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls until a connection succeeds, the process exits or timeout.
func (s *Server) waitReady(timeout time.Duration) error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return errors.New("server is not running")
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited early: %v", p.err)
		default:
		}
		err := ping(s.URL())
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting connections within %v, last error: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ping(connString string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// createDatabase creates a uniquely named database on the server behind
// adminURL and returns a URL for it; it is dropped at cleanup unless alive is
// non-nil and reports that the server is no longer running.
func createDatabase(t testing.TB, adminURL string, alive func() bool) string {
	t.Helper()
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("pgtest: %q is not a postgres:// URL (err: %v)", adminURL, err)
	}
	name := databaseName(t.Name())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", redact(u), err)
	}
	defer conn.Close(context.Background())
	// template0 is guaranteed pristine and never has sessions connected,
	// which would otherwise make CREATE DATABASE fail.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: creating database %s on %s: %v", name, redact(u), err)
	}

	t.Cleanup(func() {
		if alive != nil && !alive() {
			return // the server is gone; nothing to drop
		}
		if err := dropDatabase(adminURL, name); err != nil {
			t.Errorf("pgtest: dropping database %s on %s: %v", name, redact(u), err)
		}
	})

	dbURL := *u
	dbURL.Path = "/" + name
	dbURL.RawPath = ""
	return dbURL.String()
}

func dropDatabase(adminURL, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	ident := pgx.Identifier{name}.Sanitize()
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42601" { // syntax error: server older than 13
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident)
	}
	return err
}

// databaseName builds a unique, valid, readable database name from the test
// name, e.g. "t_testfoo_sub_1a2b3c4d5e6f".
func databaseName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "_") {
				b.WriteByte('_')
			}
		}
		if b.Len() >= 40 {
			break
		}
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic(err)
	}
	return "t_" + strings.Trim(b.String(), "_") + "_" + hex.EncodeToString(rnd[:])
}

func redact(u *url.URL) string { return u.Redacted() }

// findBinaries returns the paths of initdb and postgres, which must come from
// the same installation.
func findBinaries(t testing.TB) (initdb, postgres string) {
	t.Helper()
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
			sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
			for _, d := range dirs {
				if fileExists(filepath.Join(d, "initdb")) && fileExists(filepath.Join(d, "postgres")) {
					return filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
				}
			}
		}
		// Not found anywhere: apply the common skip/fail rule.
		initdb = redistest.Require(t, "initdb", "postgresql")
	}
	// initdb on PATH is often a symlink into the real bin directory.
	if real, err := filepath.EvalSymlinks(initdb); err == nil {
		initdb = real
	}
	postgres = filepath.Join(filepath.Dir(initdb), "postgres")
	if !fileExists(postgres) {
		postgres = redistest.Require(t, "postgres", "postgresql")
	}
	return initdb, postgres
}

// versionOf extracts N from /usr/lib/postgresql/N/bin (9.6 sorts as 9).
func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// serverAccount returns the account to run the server as: nil when not root,
// else "postgres", falling back to "nobody".
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("user %s has non-numeric ids %s/%s", name, u.Uid, u.Gid))
			continue
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root but found no unprivileged user to run postgres as: %v", errors.Join(errs...))
}

// makeBaseDir creates the private directory holding data dir, socket dir and
// log. When running as another user, that user must be able to traverse every
// parent directory, so a temporary root that allows it is chosen.
func makeBaseDir(runAs *account) (string, error) {
	roots := []string{os.TempDir()}
	if runAs != nil {
		roots = append(roots, "/tmp", "/var/tmp", "/dev/shm")
	}
	var lastErr error
	for _, root := range roots {
		if runAs != nil && !traversable(root, runAs) {
			lastErr = fmt.Errorf("%s (or a parent) is not accessible to user %s", root, runAs.name)
			continue
		}
		dir, err := os.MkdirTemp(root, "pgtest-*")
		if err != nil {
			lastErr = err
			continue
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		return dir, nil
	}
	return "", fmt.Errorf("no usable temporary directory: %w", lastErr)
}

// traversable reports whether a can search dir and all of its parents.
func traversable(dir string, a *account) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		mode := fi.Mode().Perm()
		ok := mode&0o001 != 0
		if st, isUnix := fi.Sys().(*syscall.Stat_t); isUnix {
			switch {
			case st.Uid == a.uid:
				ok = mode&0o100 != 0
			case st.Gid == a.gid:
				ok = mode&0o010 != 0
			}
		}
		if !ok {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// serverEnv is the environment of initdb/postgres: ours minus libpq/PG*
// variables that could redirect them.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}
