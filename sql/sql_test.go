package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	agentapi "github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens a DB that is closed at cleanup.
func open(t *testing.T, databaseURL, sqlitePath string) *DB {
	t.Helper()
	d, err := Open(testCtx(t), databaseURL, sqlitePath)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func openSQLiteTemp(t *testing.T) *DB {
	return open(t, "", filepath.Join(t.TempDir(), "records.db"))
}

// postgresURLs returns a function handing out URLs of fresh databases: on
// the server of DATABASE_TEST_URL when set, else on one private server
// shared by the calls.
func postgresURLs(t *testing.T) func(t *testing.T) string {
	if os.Getenv("DATABASE_TEST_URL") != "" {
		return func(t *testing.T) string { return pgtest.URL(t) }
	}
	srv := pgtest.Start(t)
	return func(t *testing.T) string { return srv.CreateDatabase(t) }
}

// fresh opens an empty database of driver, closed at cleanup.
func fresh(t *testing.T, newURL func(*testing.T) string, driver string) *DB {
	if driver == DriverSQLite {
		return openSQLiteTemp(t)
	}
	return open(t, newURL(t), "")
}

// both runs test against SQLite and PostgreSQL, the latter with newURL.
func both(t *testing.T, test func(t *testing.T, newURL func(*testing.T) string, driver string)) {
	t.Run(DriverSQLite, func(t *testing.T) {
		t.Parallel()
		test(t, nil, DriverSQLite)
	})
	t.Run(DriverPostgres, func(t *testing.T) {
		t.Parallel()
		test(t, postgresURLs(t), DriverPostgres)
	})
}

func TestConformance(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		storetest.RunRecords(t, func(t *testing.T) storetest.Records {
			return fresh(t, newURL, driver)
		})
	})
}

func TestSecretsConformance(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		storetest.RunTenantSecretStore(t, func(t *testing.T) storetest.SecretStores {
			return fresh(t, newURL, driver)
		})
	})
}

func TestTenantConfigConformance(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		storetest.RunTenantConfigStore(t, func(t *testing.T) storetest.ConfigStores {
			return fresh(t, newURL, driver)
		})
	})
}

func TestMigrationsApplyOnce(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		var dbURL, path string
		if driver == DriverSQLite {
			path = filepath.Join(t.TempDir(), "m.db")
		} else {
			dbURL = newURL(t)
		}
		ms, err := loadMigrations(driver)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			t.Fatal("no migrations embedded")
		}
		for _, m := range ms {
			if strings.Contains(m.body, "{{") {
				t.Errorf("%s: token left after replacement for %s", m.name, driver)
			}
		}

		applied := func(d *DB) map[int64]int64 {
			t.Helper()
			got := map[int64]int64{}
			rows, err := d.w.QueryContext(testCtx(t), `SELECT version, applied_at FROM schema_migrations`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var v, at int64
				if err := rows.Scan(&v, &at); err != nil {
					t.Fatal(err)
				}
				got[v] = at
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return got
		}

		d := open(t, dbURL, path)
		if d.Driver() != driver {
			t.Errorf("Driver() = %q, want %q", d.Driver(), driver)
		}
		first := applied(d)
		if len(first) != len(ms) {
			t.Fatalf("schema_migrations has %d rows, want %d", len(first), len(ms))
		}
		for _, m := range ms {
			if _, ok := first[m.version]; !ok {
				t.Errorf("migration %s not recorded", m.name)
			}
		}
		// Some data that a re-applied migration would lose or trip over.
		if err := d.CreateTenant(testCtx(t), agentapi.Tenant{ID: "acme", Name: "Acme"}); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}

		for range 2 {
			d := open(t, dbURL, path)
			if got := applied(d); fmt.Sprint(got) != fmt.Sprint(first) {
				t.Errorf("schema_migrations after re-open = %v, want %v unchanged", got, first)
			}
			if _, err := d.GetTenant(testCtx(t), "acme"); err != nil {
				t.Errorf("GetTenant after re-open: %v", err)
			}
			d.Close()
		}
	})
}

func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		var dbURL, path string
		if driver == DriverSQLite {
			path = filepath.Join(t.TempDir(), "shared.db")
		} else {
			dbURL = newURL(t)
		}
		// Like instances starting at once against one database.
		const n = 4
		dbs := make([]*DB, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { dbs[i], errs[i] = Open(testCtx(t), dbURL, path) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("Open %d: %v", i, errs[i])
				continue
			}
			defer dbs[i].Close()
		}
		if t.Failed() {
			return
		}
		ms, err := loadMigrations(driver)
		if err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := dbs[0].w.QueryRowContext(testCtx(t), `SELECT COUNT(*) FROM schema_migrations`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != len(ms) {
			t.Errorf("schema_migrations has %d rows after %d concurrent opens, want %d", rows, n, len(ms))
		}
		// Every instance works, and sees the others' writes.
		for i, d := range dbs {
			id := fmt.Sprint("t", i)
			if err := d.CreateTenant(testCtx(t), agentapi.Tenant{ID: id, Name: id}); err != nil {
				t.Errorf("CreateTenant through instance %d: %v", i, err)
			}
		}
		for i, d := range dbs {
			ts, err := d.ListTenants(testCtx(t))
			if err != nil || len(ts) != n {
				t.Errorf("ListTenants through instance %d = %d tenants, %v; want %d", i, len(ts), err, n)
			}
		}
	})
}

func TestPostgresUnavailable(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	dbURL := srv.CreateDatabase(t)
	d := open(t, dbURL, "")
	ctx := testCtx(t)
	if err := d.CreateTenant(ctx, agentapi.Tenant{ID: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	// pgtest runs the server with synchronous_commit off, and Stop is an
	// immediate shutdown: without a checkpoint, the last commits (the
	// schema included) would be lost in the crash recovery.
	if _, err := d.w.ExecContext(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return d.Ping(ctx) }},
		{"GetTenant", func() error { _, err := d.GetTenant(ctx, "acme"); return err }},
		{"ListTenants", func() error { _, err := d.ListTenants(ctx); return err }},
		{"CreateTenant", func() error { return d.CreateTenant(ctx, agentapi.Tenant{ID: "globex", Name: "Globex"}) }},
		{"PutMessage", func() error {
			return d.PutMessage(ctx, "acme", "s1", agentapi.Message{ID: 0, Role: agentapi.RoleUser})
		}},
		{"Open", func() error {
			d2, err := Open(ctx, dbURL, "")
			if err == nil {
				d2.Close()
			}
			return err
		}},
	} {
		err := tc.call()
		t.Logf("%s with the server stopped: %v", tc.name, err)
		if k := agentapi.KindOf(err); k != agentapi.KindUnavailable {
			t.Errorf("%s with the server stopped: error %v of kind %q, want %q", tc.name, err, k, agentapi.KindUnavailable)
		}
		var e *agentapi.Error
		if err != nil && !errors.As(err, &e) {
			t.Errorf("%s: error %T is not an *agentapi.Error", tc.name, err)
		}
	}

	srv.Restart(t)
	// The pool drops its dead connections as it meets them; calls work
	// again at the latest after a few attempts.
	deadline := time.Now().Add(10 * time.Second)
	for attempt := 1; ; attempt++ {
		_, err := d.GetTenant(ctx, "acme")
		if err == nil {
			t.Logf("GetTenant works again after %d attempts", attempt)
			break
		}
		t.Logf("GetTenant after Restart, attempt %d: %v", attempt, err)
		if time.Now().After(deadline) {
			t.Fatalf("GetTenant after Restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := d.CreateTenant(ctx, agentapi.Tenant{ID: "globex", Name: "Globex"}); err != nil {
		t.Errorf("CreateTenant after Restart: %v", err)
	}
	if err := d.Ping(ctx); err != nil {
		t.Errorf("Ping after Restart: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		raw := postgresURLs(t)(t)
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		// Trust authentication: the password is never asked for.
		const secret = "s3cr3t-pa55"
		u.User = url.UserPassword(u.User.Username(), secret)
		d := open(t, u.String(), "")
		desc := d.Describe()
		if strings.Contains(desc, secret) || strings.Contains(desc, "@") {
			t.Errorf("Describe() = %q contains credentials", desc)
		}
		if want := u.Host + u.Path; desc != want {
			t.Errorf("Describe() = %q, want %q", desc, want)
		}

		// Nor do errors of a failed Open.
		u.Host = "127.0.0.1:1"
		q := u.Query()
		q.Set("password", secret)
		u.RawQuery = q.Encode()
		_, err = Open(testCtx(t), u.String(), "")
		if agentapi.KindOf(err) != agentapi.KindUnavailable {
			t.Errorf("Open of a closed port: %v, want kind %q", err, agentapi.KindUnavailable)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Open error %q contains the password", err)
		}
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "nested", "dir")
		d := open(t, "", filepath.Join(dir, "records.db"))
		if want := filepath.Join(dir, "records.db"); d.Describe() != want {
			t.Errorf("Describe() = %q, want %q", d.Describe(), want)
		}
		for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "records.db"): 0o600} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("mode of %s = %v, want %v", path, fi.Mode().Perm(), want)
			}
		}
	})
	for _, tc := range []struct{ in, want string }{
		{"postgres://user:pw@db.example.com:5432/records?sslmode=require&password=x", "db.example.com:5432/records"},
		{"postgresql://db1,db2/records", "db1,db2/records"},
		{"postgres:///records", "localhost/records"},
		{"postgres:///records?host=/run/postgresql&password=x", "/run/postgresql/records"},
	} {
		u, err := url.Parse(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := describeURL(u); got != tc.want {
			t.Errorf("describeURL(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSQLitePragmas(t *testing.T) {
	t.Parallel()
	d := openSQLiteTemp(t)
	for _, tc := range []struct {
		pool   *dbsql.DB
		pragma string
		want   string
	}{
		{d.w, "journal_mode", "wal"},
		{d.w, "foreign_keys", "1"},
		{d.w, "busy_timeout", "5000"},
		{d.w, "synchronous", "1"}, // NORMAL
		{d.r, "journal_mode", "wal"},
		{d.r, "foreign_keys", "1"},
		{d.r, "busy_timeout", "5000"},
		{d.r, "query_only", "1"},
	} {
		var got string
		if err := tc.pool.QueryRowContext(testCtx(t), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
		}
	}
}

func TestOpenInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, path string }{
		{"", ""},
		{"mysql://user:pw@host/db", ""},
		{"host=localhost dbname=x", ""},
		{"", "file:records.db"},
		{"", ":memory:"},
		{"", "records.db?mode=ro"},
	} {
		d, err := Open(testCtx(t), tc.url, tc.path)
		if err == nil {
			d.Close()
		}
		if agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("Open(%q, %q) = %v, want kind %q", tc.url, tc.path, err, agentapi.KindInvalid)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("Open(%q, %q) error %q quotes the password", tc.url, tc.path, err)
		}
	}
}

func TestRebind(t *testing.T) {
	t.Parallel()
	pg, lite := &DB{driver: DriverPostgres}, &DB{driver: DriverSQLite}
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{"SELECT '?' , \"we?ird\" FROM t WHERE x = ?", "SELECT '?' , \"we?ird\" FROM t WHERE x = $1"},
		{"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"},
	} {
		if got := pg.rebind(tc.in); got != tc.want {
			t.Errorf("rebind(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := lite.rebind(tc.in); got != tc.in {
			t.Errorf("SQLite rebind(%q) = %q, want it unchanged", tc.in, got)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want agentapi.Kind
	}{
		{dbsql.ErrNoRows, agentapi.KindNotFound},
		{fmt.Errorf("wrapped: %w", dbsql.ErrNoRows), agentapi.KindNotFound},
		{&pgconn.PgError{Code: "23505"}, agentapi.KindConflict},
		{&pgconn.PgError{Code: "23503"}, agentapi.KindNotFound},
		{&pgconn.PgError{Code: "23502"}, agentapi.KindInvalid},
		{&pgconn.PgError{Code: "08006"}, agentapi.KindUnavailable},
		{&pgconn.PgError{Code: "57P01"}, agentapi.KindUnavailable},
		{&pgconn.PgError{Code: "42601"}, agentapi.KindOther},
		{errors.New("constraint failed: UNIQUE constraint failed: tenants.id (1555)"), agentapi.KindConflict},
		{errors.New("sql: database is closed"), agentapi.KindUnavailable},
		{context.DeadlineExceeded, agentapi.KindUnavailable},
		{context.Canceled, agentapi.KindOther},
		{agentapi.E("inner", agentapi.KindInvalid, nil), agentapi.KindInvalid},
		{errors.New("something else"), agentapi.KindOther},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestDriverErrors checks the mapping of real constraint errors of both
// databases, bypassing the validation done in Go.
func TestDriverErrors(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		d := fresh(t, newURL, driver)
		ctx := testCtx(t)
		if _, err := d.exec(ctx, "test", `INSERT INTO tenants (id, name, disabled, created_at, updated_at) VALUES ('a', 'A', FALSE, 0, 0)`); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			query string
			want  agentapi.Kind
		}{
			{`INSERT INTO tenants (id, name, disabled, created_at, updated_at) VALUES ('a', 'A', FALSE, 0, 0)`, agentapi.KindConflict},
			{`INSERT INTO users (id, tenant_id, name, role, created_at, updated_at) VALUES ('u', 'nope', 'U', 'member', 0, 0)`, agentapi.KindNotFound},
			{`INSERT INTO tenants (id, name, disabled, created_at, updated_at) VALUES ('b', NULL, FALSE, 0, 0)`, agentapi.KindInvalid},
			{`INSERT INTO tenants (id, name, disabled, created_at, updated_at) VALUES ('', 'x', FALSE, 0, 0)`, agentapi.KindInvalid},
		} {
			_, err := d.exec(ctx, "test", tc.query)
			if k := agentapi.KindOf(err); k != tc.want {
				t.Errorf("%s: error %v of kind %q, want %q", tc.query, err, k, tc.want)
			}
		}
	})
}

func TestMarkInstanceLost(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		d := fresh(t, newURL, driver)
		ctx := testCtx(t)
		now := time.Now().UTC()
		for _, id := range []string{"t1", "t2"} {
			if err := d.CreateTenant(ctx, agentapi.Tenant{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		for i, s := range []struct{ tenant, instance, state string }{
			{"t1", "a", agentapi.SessionRunning}, {"t2", "a", agentapi.SessionRunning}, {"t1", "a", agentapi.SessionStopped},
			{"t1", "b", agentapi.SessionRunning},
		} {
			rec := agentapi.AgentSession{ID: fmt.Sprintf("s%d", i), TenantID: s.tenant, UserID: "u", AgentType: "echo", State: s.state, Instance: s.instance, CreatedAt: now, LastActivityAt: now}
			if err := d.CreateAgentSession(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		inst, err := d.RunningInstances(ctx)
		if err != nil || len(inst) != 2 {
			t.Fatalf("running instances %v %v", inst, err)
		}
		refs, err := d.MarkInstanceLost(ctx, "a", now)
		if err != nil || len(refs) != 2 {
			t.Fatalf("marked %v %v", refs, err)
		}
		for _, c := range []struct{ tenant, id, want string }{{"t1", "s0", agentapi.SessionLost}, {"t2", "s1", agentapi.SessionLost}, {"t1", "s2", agentapi.SessionStopped}, {"t1", "s3", agentapi.SessionRunning}} {
			s, err := d.GetAgentSession(ctx, c.tenant, c.id)
			if err != nil || s.State != c.want {
				t.Fatalf("%s: %s %v, want %s", c.id, s.State, err, c.want)
			}
			if c.want == agentapi.SessionLost && s.StoppedAt == nil {
				t.Fatalf("%s lost without stopped_at", c.id)
			}
		}
		if refs, _ := d.MarkInstanceLost(ctx, "a", now); len(refs) != 0 {
			t.Fatalf("marked twice: %v", refs)
		}
		if inst, _ := d.RunningInstances(ctx); len(inst) != 1 || inst[0] != "b" {
			t.Fatalf("running instances after: %v", inst)
		}
	})
}

func TestConflictTextHidesTheDriver(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, newURL func(*testing.T) string, driver string) {
		d := fresh(t, newURL, driver)
		ctx := testCtx(t)
		tn := agentapi.Tenant{ID: "dup", Name: "Dup", CreatedAt: time.Now(), UpdatedAt: time.Now()}
		if err := d.CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		err := d.CreateTenant(ctx, tn)
		if agentapi.KindOf(err) != agentapi.KindConflict {
			t.Fatalf("duplicate: %v", err)
		}
		var e *agentapi.Error
		if !errors.As(err, &e) || strings.Contains(e.Err.Error(), "UNIQUE") || strings.Contains(e.Err.Error(), "constraint") || strings.Contains(e.Err.Error(), "23505") {
			t.Fatalf("the client-facing text names the driver's constraint: %q", e.Err)
		}
	})
}
