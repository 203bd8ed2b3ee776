package redistest_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// send writes one RESP command on c and returns the first reply line.
func send(t *testing.T, c net.Conn, r *bufio.Reader, args ...string) (string, error) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return "", err
	}
	cmd := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		cmd += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func dial(t *testing.T, addr string, cfg *tls.Config) (net.Conn, *bufio.Reader) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	if cfg != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
	} else {
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func mustReply(t *testing.T, c net.Conn, r *bufio.Reader, want string, args ...string) {
	t.Helper()
	got, err := send(t, c, r, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if got != want {
		t.Fatalf("%v: got %q, want %q", args, got, want)
	}
}

func newClient(t *testing.T, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("rueidis.NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPlainPing(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})

	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %q", s.Addr())
	}
	if want := "redis://" + s.Addr(); s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}
	if s.TLSConfig() != nil || s.CAFile() != "" {
		t.Fatalf("plain server has TLS material: %v %q", s.TLSConfig(), s.CAFile())
	}
	if s.Pid() <= 0 {
		t.Fatalf("Pid = %d", s.Pid())
	}

	c, r := dial(t, s.Addr(), nil)
	mustReply(t, c, r, "+PONG", "PING")

	// A real client agrees, and the server persists nothing.
	opt, err := rueidis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, opt)
	cfg, err := client.Do(ctx(t), client.B().ConfigGet().Parameter("save", "appendonly").Build()).AsStrMap()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	if cfg["save"] != "" || cfg["appendonly"] != "no" {
		t.Fatalf("persistence config = %v, want save=\"\" appendonly=no", cfg)
	}
}

func TestPassword(t *testing.T) {
	t.Parallel()
	const pw = "s3cret-pass"
	s := redistest.Start(t, redistest.Options{Password: pw})

	if want := "redis://:" + pw + "@" + s.Addr(); s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}

	c, r := dial(t, s.Addr(), nil)
	got, err := send(t, c, r, "PING")
	if err != nil {
		t.Fatalf("unauthenticated PING: %v", err)
	}
	if !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("unauthenticated PING: got %q, want a -NOAUTH error", got)
	}
	got, _ = send(t, c, r, "AUTH", "wrong")
	if !strings.HasPrefix(got, "-") {
		t.Fatalf("AUTH with wrong password: got %q, want an error", got)
	}
	mustReply(t, c, r, "+OK", "AUTH", pw)
	mustReply(t, c, r, "+PONG", "PING")

	// The URL carries the password for real clients.
	opt, err := rueidis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, opt)
	if err := client.Do(ctx(t), client.B().Set().Key("k").Value("v").Build()).Error(); err != nil {
		t.Fatalf("SET via URL with password: %v", err)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{TLS: true, Password: "pw"})

	if want := "rediss://:pw@" + s.Addr(); s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}
	cfg := s.TLSConfig()
	if cfg == nil || cfg.RootCAs == nil {
		t.Fatal("TLSConfig() = nil for a TLS server")
	}
	if s.TLSConfig() == cfg {
		t.Fatal("TLSConfig must return a fresh copy on each call")
	}

	// Raw RESP over TLS with the provided config.
	c, r := dial(t, s.Addr(), cfg)
	mustReply(t, c, r, "+OK", "AUTH", "pw")
	mustReply(t, c, r, "+PONG", "PING")

	// A pool built from CAFile alone also verifies, via the IP SAN.
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CAFile %s holds no certificate", s.CAFile())
	}
	c2, r2 := dial(t, s.Addr(), &tls.Config{RootCAs: pool}) // ServerName derived: 127.0.0.1
	mustReply(t, c2, r2, "+OK", "AUTH", "pw")
	mustReply(t, c2, r2, "+PONG", "PING")

	// An unknown CA is rejected.
	if c3, err := tls.Dial("tcp", s.Addr(), &tls.Config{ServerName: "localhost"}); err == nil {
		c3.Close()
		t.Fatal("TLS handshake succeeded without trusting the generated CA")
	}

	// rueidis with the config.
	client := newClient(t, rueidis.ClientOption{InitAddress: []string{s.Addr()}, Password: "pw", TLSConfig: cfg})
	if got, err := client.Do(ctx(t), client.B().Ping().Build()).ToString(); err != nil || got != "PONG" {
		t.Fatalf("rueidis PING over TLS = %q, %v", got, err)
	}

	// Plain text is not served.
	pc, err := net.DialTimeout("tcp", s.Addr(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got, err := send(t, pc, bufio.NewReader(pc), "PING"); err == nil && strings.HasPrefix(got, "+PONG") {
		t.Fatalf("plain-text PING to the TLS port answered %q", got)
	}
}

func TestStopRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	addr, pid := s.Addr(), s.Pid()

	c, r := dial(t, addr, nil)
	mustReply(t, c, r, "+OK", "SET", "k", "v")

	s.Stop(t)
	if s.Pid() != 0 {
		t.Fatalf("Pid after Stop = %d, want 0", s.Pid())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Stop (kill -0: %v)", pid, err)
	}
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		nc.Close()
		t.Fatalf("%s still accepts connections after Stop", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Stop: %v, want connection refused", err)
	}
	s.Stop(t) // idempotent

	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Addr after Restart = %s, want %s", s.Addr(), addr)
	}
	if s.Pid() == 0 || s.Pid() == pid {
		t.Fatalf("Pid after Restart = %d (before: %d)", s.Pid(), pid)
	}
	c2, r2 := dial(t, addr, nil)
	mustReply(t, c2, r2, "+PONG", "PING")
	mustReply(t, c2, r2, "$-1", "GET", "k") // nothing survived the kill

	// Restart of a running server works as well.
	s.Restart(t)
	c3, r3 := dial(t, addr, nil)
	mustReply(t, c3, r3, "+PONG", "PING")
}

// TestAppendOnlySurvivesKill: with AppendOnly, what the server answered
// OK to is there after a SIGKILL and a restart.
func TestAppendOnlySurvivesKill(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{AppendOnly: true})
	c, r := dial(t, s.Addr(), nil)
	for i := range 100 {
		mustReply(t, c, r, "+OK", "SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	mustReply(t, c, r, ":1", "INCR", "n")
	s.Stop(t)
	s.Restart(t)
	c2, r2 := dial(t, s.Addr(), nil)
	mustReply(t, c2, r2, ":101", "DBSIZE")
	mustReply(t, c2, r2, ":2", "INCR", "n")
}

func TestURLPrivate(t *testing.T) {
	t.Setenv("REDIS_TEST_URL", "")
	u := redistest.URL(t)
	opt, err := rueidis.ParseURL(u)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", u, err)
	}
	client := newClient(t, opt)
	if err := client.Do(ctx(t), client.B().Ping().Build()).Error(); err != nil {
		t.Fatalf("PING %s: %v", u, err)
	}
}

func TestURLFromEnv(t *testing.T) {
	t.Setenv("REDIS_TEST_URL", "redis://shared.example:6379/3")
	if got := redistest.URL(t); got != "redis://shared.example:6379/3" {
		t.Fatalf("URL = %q, want REDIS_TEST_URL", got)
	}
}

// fakeTB records Skipf/Fatalf instead of ending the real test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runRequire(t *testing.T, f *fakeTB, binary string) string {
	var path string
	done := make(chan struct{})
	go func() {
		defer close(done)
		path = redistest.Require(f, binary, "some-debian-pkg")
	}()
	<-done
	return path
}

func TestRequire(t *testing.T) {
	if p := runRequire(t, &fakeTB{TB: t}, "sh"); p == "" {
		t.Fatal("Require(sh) returned no path")
	}

	const missing = "redistest-no-such-binary"
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	runRequire(t, f, missing)
	if !f.skipped || f.failed || !strings.Contains(f.msg, "apt-get install some-debian-pkg") {
		t.Fatalf("outside CI: skipped=%v failed=%v msg=%q", f.skipped, f.failed, f.msg)
	}

	t.Setenv("CI", "true")
	f = &fakeTB{TB: t}
	runRequire(t, f, missing)
	if !f.failed || f.skipped || !strings.Contains(f.msg, "apt-get install some-debian-pkg") {
		t.Fatalf("CI=true: skipped=%v failed=%v msg=%q", f.skipped, f.failed, f.msg)
	}
}
