package pgtest_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func connect(t *testing.T, u string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), u)
	if err != nil {
		t.Fatalf("connect %s: %v", u, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func selectOne(t *testing.T, u string) {
	t.Helper()
	var n int
	if err := connect(t, u).QueryRow(ctx(t), "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1 on %s = %d, %v", u, n, err)
	}
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx(t), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func processGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still exists (kill -0: %v)", pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	var pid int
	t.Run("server", func(t *testing.T) {
		s := pgtest.Start(t)
		want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.Port()) + "/postgres?sslmode=disable"
		if s.URL() != want {
			t.Fatalf("URL = %q, want %q", s.URL(), want)
		}
		pid = s.Pid()
		if pid <= 0 {
			t.Fatalf("Pid = %d", pid)
		}
		selectOne(t, s.URL())

		conn := connect(t, s.URL())
		if got := queryString(t, conn, "SHOW fsync"); got != "off" {
			t.Errorf("fsync = %q, want off", got)
		}
		if got := queryString(t, conn, "SELECT current_user"); got != "postgres" {
			t.Errorf("current_user = %q, want postgres", got)
		}
		if os.Geteuid() == 0 {
			status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
			if err == nil && strings.Contains(string(status), "\nUid:\t0\t") {
				t.Errorf("postmaster runs as root:\n%s", status)
			}
		}

		s.Stop(t)
		if s.Pid() != 0 {
			t.Fatalf("Pid after Stop = %d", s.Pid())
		}
		processGone(t, pid)
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(c, s.URL()); err == nil {
			conn.Close(context.Background())
			t.Fatal("connect succeeded after Stop")
		}
		s.Stop(t) // idempotent

		port := s.Port()
		s.Restart(t)
		if s.Port() != port || s.URL() != want {
			t.Fatalf("after Restart: port %d URL %q, want %d %q", s.Port(), s.URL(), port, want)
		}
		selectOne(t, s.URL())
		pid = s.Pid()

		s.Restart(t) // restarting a running server works too
		selectOne(t, s.URL())
		processGone(t, pid)
		pid = s.Pid()
	})
	// Cleanup of the subtest stopped the server.
	processGone(t, pid)
}

func TestCreateDatabase(t *testing.T) {
	t.Parallel()
	s := pgtest.Start(t)
	admin := connect(t, s.URL())

	var names []string
	outer := t
	t.Run("isolated", func(t *testing.T) {
		u1, u2 := s.CreateDatabase(t), s.CreateDatabase(t)
		if u1 == u2 {
			t.Fatalf("CreateDatabase returned the same URL twice: %s", u1)
		}
		c1, c2 := connect(t, u1), connect(t, u2)
		for _, c := range []*pgx.Conn{c1, c2} {
			names = append(names, queryString(t, c, "SELECT current_database()"))
			n := queryString(t, c, "SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
			if n != "0" {
				t.Fatalf("new database %s is not empty: %s relations in public", names[len(names)-1], n)
			}
		}
		if _, err := c1.Exec(ctx(t), "CREATE TABLE items (id int); INSERT INTO items VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.Exec(ctx(t), "SELECT * FROM items"); err == nil {
			t.Fatal("table created in the first database is visible in the second")
		}
		if got := queryString(t, c1, "SELECT id::text FROM items"); got != "1" {
			t.Fatalf("items = %s", got)
		}

		// A session still open when the cleanup drops the database
		// (closed only by the parent test's cleanup): DROP needs FORCE.
		open, err := pgx.Connect(ctx(t), u1)
		if err != nil {
			t.Fatal(err)
		}
		outer.Cleanup(func() { open.Close(context.Background()) })
	})

	for _, name := range names {
		var exists bool
		if err := admin.QueryRow(ctx(t), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("database %s still exists after cleanup", name)
		}
	}
}

func TestURLWithDatabaseTestURL(t *testing.T) {
	s := pgtest.Start(t)
	t.Setenv("DATABASE_TEST_URL", s.URL())

	var name string
	t.Run("sub", func(t *testing.T) {
		u := pgtest.URL(t)
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Host != "127.0.0.1:"+strconv.Itoa(s.Port()) || parsed.Query().Get("sslmode") != "disable" {
			t.Fatalf("URL(t) = %s, want a database on %s", u, s.URL())
		}
		name = queryString(t, connect(t, u), "SELECT current_database()")
		if name == "postgres" || "/"+name != parsed.Path {
			t.Fatalf("URL(t) = %s points at database %q", u, name)
		}
	})

	var exists bool
	if err := connect(t, s.URL()).QueryRow(ctx(t), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("database %s created via DATABASE_TEST_URL still exists after cleanup", name)
	}
}

func TestURLPrivate(t *testing.T) {
	t.Setenv("DATABASE_TEST_URL", "")
	u := pgtest.URL(t)
	selectOne(t, u)
	if strings.Contains(u, "/postgres?") {
		t.Fatalf("URL(t) = %s, want a fresh database, not the maintenance one", u)
	}
}

// TestDurableKeepsCommitsThroughStop: every commit a Durable server
// acknowledged is there after a Stop (immediate shutdown) and Restart.
func TestDurableKeepsCommitsThroughStop(t *testing.T) {
	t.Parallel()
	s := pgtest.StartWith(t, pgtest.Options{Durable: true})
	conn := connect(t, s.URL())
	if got := queryString(t, conn, "SHOW synchronous_commit"); got != "on" {
		t.Fatalf("synchronous_commit = %q, want on", got)
	}
	if _, err := conn.Exec(ctx(t), "CREATE TABLE t (n int)"); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := conn.Exec(ctx(t), "INSERT INTO t VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(context.Background())
	s.Stop(t)
	s.Restart(t)
	if got := queryString(t, connect(t, s.URL()), "SELECT count(*)::text FROM t"); got != "200" {
		t.Fatalf("%s rows after the restart, want 200", got)
	}
}
