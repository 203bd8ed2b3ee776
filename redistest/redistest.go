// Package redistest starts throwaway redis-server processes for tests.
//
// Every server gets a free port on 127.0.0.1 and a private directory inside
// t.TempDir(), persists nothing (--save "" --appendonly no), and is killed when
// the test ends (t.Cleanup) or, if the test binary dies first, by the kernel
// (parent-death signal on Linux). Start waits until the server answers PING
// over a raw RESP connection, so the returned server is ready to use.
//
// Options.TLS serves TLS only, with a throwaway CA and a server certificate for
// 127.0.0.1/localhost generated in Go; use Server.TLSConfig or Server.CAFile on
// the client side. Options.Password enables --requirepass.
//
// The package-level URL helper honours REDIS_TEST_URL so that CI can point all
// tests at one shared server; tests using it must namespace their keys.
//
// StartCluster starts a Redis Cluster of throwaway masters (three by
// default, no replicas) and joins them; ClusterURL is its URL helper and
// honours REDIS_TEST_CLUSTER_URL the same way.
//
// Require is the shared "binary missing" rule used by this package and by
// pgtest: skip locally, fail when CI=true.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// StartTimeout bounds how long Start and Restart wait for the server to answer
// PING, and how long Stop waits for the port to refuse connections.
const StartTimeout = 10 * time.Second

// Options configures a server started by Start.
type Options struct {
	// Password, when set, is passed as --requirepass; clients must AUTH.
	Password string
	// TLS, when set, makes the server listen for TLS only
	// (--port 0 --tls-port P) with a generated CA and server certificate
	// valid for 127.0.0.1 and localhost. Client certificates are not required.
	TLS bool
	// AppendOnly, when set, persists every write in an append-only file in
	// the server's directory, as the Compose deployment does (appendonly
	// yes, appendfsync everysec), so a Stop (SIGKILL) and Restart keeps
	// what the server acknowledged: Redis writes the file before it
	// answers, and a killed process loses nothing the kernel already has.
	// Without it a restarted server starts empty.
	AppendOnly bool
}

// Server is a redis-server process owned by a test.
type Server struct {
	opts    Options
	bin     string
	dir     string
	logPath string
	port    int
	// busPort is the cluster bus port of a cluster node (StartCluster);
	// 0 for a standalone server.
	busPort int
	// nodeTimeout is a cluster node's --cluster-node-timeout.
	nodeTimeout time.Duration

	caFile   string
	certFile string
	keyFile  string
	tlsConf  *tls.Config

	mu   sync.Mutex
	proc *process
}

// process is one running redis-server; done is closed once it has been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Require returns the absolute path of binary as found on PATH. When it is
// missing the test is skipped with a hint to install debianPackage with
// apt-get, unless the environment variable CI is "true", in which case the
// test fails instead: CI images are expected to have every binary installed.
func Require(t testing.TB, binary, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(binary)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found on PATH (%v); install it with: apt-get install %s", binary, err, debianPackage)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is an error, not a skip)", msg)
	}
	t.Skipf("%s", msg)
	return ""
}

// URL returns the value of REDIS_TEST_URL when it is set. Otherwise it starts
// a private, plain-text server without password via Start and returns its URL.
// Callers that may run against a shared server must namespace their keys.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("REDIS_TEST_URL"); u != "" {
		return u
	}
	return Start(t, Options{}).URL()
}

// Start launches redis-server with opts and returns once it answers PING
// (after AUTH when a password is set). The server is killed at test cleanup.
// If it does not become ready within StartTimeout the test fails with the
// tail of the server's log.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return start(t, opts, 0)
}

// start is Start; with cluster set the server is a Redis Cluster node
// (--cluster-enabled) with a cluster bus port of its own.
// start starts a server; a positive nodeTimeout makes it a cluster node
// with that --cluster-node-timeout.
func start(t testing.TB, opts Options, nodeTimeout time.Duration) *Server {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	dir := t.TempDir() // registered first, so removed after the kill below
	s := &Server{
		opts:        opts,
		bin:         bin,
		dir:         dir,
		logPath:     filepath.Join(dir, "redis.log"),
		nodeTimeout: nodeTimeout,
	}
	if opts.TLS {
		if err := s.writeCerts(); err != nil {
			t.Fatalf("redistest: generating TLS material: %v", err)
		}
	}
	t.Cleanup(s.kill)

	// A port picked by freePort can be taken by someone else before
	// redis-server binds it; retry a couple of times on that specific failure.
	const attempts = 3
	for i := 1; ; i++ {
		port, err := testproc.FreePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		s.port = port
		if nodeTimeout > 0 {
			// The bus port is chosen too: the default, port+10000, may be
			// above 65535 or taken.
			if s.busPort, err = otherFreePort(port); err != nil {
				t.Fatalf("redistest: finding a free port: %v", err)
			}
		}
		logStart := testproc.LogSize(s.logPath)
		err = s.launch()
		if err == nil {
			err = s.waitReady(StartTimeout)
		}
		if err == nil {
			return s
		}
		s.kill()
		logPart := testproc.LogTail(s.logPath, logStart, 40)
		if i < attempts && strings.Contains(logPart, "Address already in use") {
			continue
		}
		t.Fatalf("redistest: redis-server on %s did not become ready: %v\n--- tail of %s ---\n%s",
			s.Addr(), err, s.logPath, logPart)
		return nil
	}
}

// otherFreePort returns a free port other than not.
func otherFreePort(not int) (int, error) {
	for {
		p, err := testproc.FreePort()
		if err != nil || p != not {
			return p, err
		}
	}
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Port returns the TCP port the server listens on (the TLS port when TLS).
func (s *Server) Port() int { return s.port }

// URL returns "redis://127.0.0.1:PORT", "rediss://127.0.0.1:PORT" for TLS,
// with ":PASSWORD@" user info when a password is set.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr()}
	if s.opts.TLS {
		u.Scheme = "rediss"
	}
	if s.opts.Password != "" {
		u.User = url.UserPassword("", s.opts.Password)
	}
	return u.String()
}

// TLSConfig returns a new client configuration that trusts the generated CA
// (ServerName "localhost"; the certificate also has an IP SAN for 127.0.0.1).
// It returns nil when the server is not using TLS.
func (s *Server) TLSConfig() *tls.Config {
	if s.tlsConf == nil {
		return nil
	}
	return s.tlsConf.Clone()
}

// CAFile returns the path of the PEM encoded CA certificate, or "" when the
// server is not using TLS.
func (s *Server) CAFile() string { return s.caFile }

// Pid returns the process id of the running redis-server, or 0 when stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop kills the server with SIGKILL, reaps it, and waits until its port
// refuses connections. Stopping a stopped server only re-checks the port.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.kill()
	if err := testproc.WaitRefused(s.Addr(), StartTimeout); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// Restart starts the server again with the same options, directory and port
// and waits until it answers PING. A running server is stopped first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	logStart := testproc.LogSize(s.logPath)
	err := s.launch()
	if err == nil {
		err = s.waitReady(StartTimeout)
	}
	if err != nil {
		s.kill()
		t.Fatalf("redistest: restarted redis-server on %s did not become ready: %v\n--- tail of %s ---\n%s",
			s.Addr(), err, s.logPath, testproc.LogTail(s.logPath, logStart, 40))
	}
}

func (s *Server) args() []string {
	port := strconv.Itoa(s.port)
	args := []string{
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--logfile", "",
		// DEBUG SLEEP etc. are handy for simulating a slow server; only
		// local connections may use them.
		"--enable-debug-command", "local",
	}
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.TLS {
		args = append(args,
			"--port", "0",
			"--tls-port", port,
			"--tls-cert-file", s.certFile,
			"--tls-key-file", s.keyFile,
			"--tls-ca-cert-file", s.caFile,
			"--tls-auth-clients", "no",
		)
	} else {
		args = append(args, "--port", port)
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	if s.busPort != 0 {
		args = append(args,
			"--cluster-enabled", "yes",
			// In the server's directory, so that a Restart rejoins the
			// cluster with the same id and slots.
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-node-timeout", strconv.FormatInt(s.nodeTimeout.Milliseconds(), 10),
		)
	}
	return args
}

// launch starts a new redis-server process; it does not wait for readiness.
func (s *Server) launch() error {
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child keeps its own descriptor
	fmt.Fprintf(logFile, "=== redistest: starting %s on port %d at %s ===\n", s.bin, s.port, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	// An *os.File is handed to the child directly: no copying goroutines.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
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

// kill SIGKILLs and reaps the current process, if any.
func (s *Server) kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitReady polls PING until it succeeds, the process exits, or timeout.
func (s *Server) waitReady(timeout time.Duration) error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return errors.New("server is not running")
	}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited early: %v", p.err)
		default:
		}
		if lastErr = s.ping(); lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG within %v, last error: %w", timeout, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping opens a fresh connection, authenticates if needed and sends PING.
func (s *Server) ping() error {
	d := &net.Dialer{Timeout: time.Second}
	var (
		c   net.Conn
		err error
	)
	if s.opts.TLS {
		c, err = tls.DialWithDialer(d, "tcp", s.Addr(), s.TLSConfig())
	} else {
		c, err = d.Dial("tcp", s.Addr())
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	if s.opts.Password != "" {
		if err := roundTrip(c, r, "+OK", "AUTH", s.opts.Password); err != nil {
			return err
		}
	}
	return roundTrip(c, r, "+PONG", "PING")
}

// roundTrip writes one RESP command and checks that the reply line is want.
func roundTrip(w io.Writer, r *bufio.Reader, want string, args ...string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line != want {
		return fmt.Errorf("%s: got reply %q, want %q", args[0], line, want)
	}
	return nil
}
