// Package sql keeps the records of AgentAPI Multitenant -- tenants, users,
// API keys, agent sessions with their transcripts, and the audit log -- in a
// relational database through database/sql.
//
// One implementation serves two databases: PostgreSQL (through the pgx
// driver), for deployments with several instances, and SQLite (through the
// pure-Go modernc.org/sqlite driver), for a single instance with a local
// file. The SQL is written once, in the subset both understand: TEXT ids,
// BIGINT Unix-millisecond timestamps, "?" placeholders (rewritten to $1, $2,
// ... for PostgreSQL) and INSERT ... ON CONFLICT upserts. The few schema
// differences (auto-increment keys, binary columns) are tokens in the
// embedded migrations that the migration runner spells per dialect.
//
// The schema is created and upgraded by Open from migrations embedded in the
// binary, each applied once in its own transaction and recorded in the
// schema_migrations table. On PostgreSQL an advisory lock serialises
// instances that start at the same time.
//
// Every error returned is an *agentapi.Error whose kind follows the store
// contract of package agentapi: KindNotFound for missing or foreign records,
// KindConflict for duplicates, KindInvalid for bad input and KindUnavailable
// when the database cannot be reached.
package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	agentapi "github.com/agentapi-mt/agentapi"
)

// Names returned by (*DB).Driver.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// Connection settings. SQLite has exactly one writing connection, so writers
// queue in the pool instead of contending for the file lock, and a few
// read-only connections that WAL mode lets run beside it.
const (
	pgMaxOpenConns      = 20
	pgMaxIdleConns      = 10
	pgConnMaxIdleTime   = 5 * time.Minute
	pgConnectTimeout    = 5 * time.Second
	sqliteReaders       = 4
	sqliteBusyTimeoutMS = 5000 // milliseconds
)

// DB is a connection pool to the records database. It implements
// agentapi.TenantStore, UserStore, APIKeyStore, AgentSessionStore and
// AuditLog, and is safe for concurrent use.
type DB struct {
	driver string
	desc   string
	w      *dbsql.DB // writes (and, on PostgreSQL, everything)
	r      *dbsql.DB // reads; the same pool as w on PostgreSQL
	guard  Guard
}

// Guard admits a database call and is told how it ended (a circuit
// breaker: breaker.(*Breaker).Allow has this shape). When it refuses, the
// call is not made and its error is returned.
type Guard func(ctx context.Context) (done func(err error), err error)

// SetGuard puts every later call behind g. Call it before the DB is shared.
func (d *DB) SetGuard(g Guard) { d.guard = g }

// admit asks the guard, if any, for one call.
func (d *DB) admit(ctx context.Context) (func(error), error) {
	if d.guard == nil {
		return func(error) {}, nil
	}
	return d.guard(ctx)
}

var (
	_ agentapi.TenantStore       = (*DB)(nil)
	_ agentapi.UserStore         = (*DB)(nil)
	_ agentapi.APIKeyStore       = (*DB)(nil)
	_ agentapi.AgentSessionStore = (*DB)(nil)
	_ agentapi.AuditLog          = (*DB)(nil)
)

// Open connects to PostgreSQL when databaseURL is set (a postgres:// or
// postgresql:// URL), and otherwise opens -- creating it if needed -- the
// SQLite database file at sqlitePath, whose directory is created with mode
// 0700. It applies pending migrations before returning. ctx bounds the
// connection attempt and the migrations, not the life of the DB.
func Open(ctx context.Context, databaseURL, sqlitePath string) (*DB, error) {
	const op = "sql.Open"
	var (
		d   *DB
		err error
	)
	switch {
	case databaseURL != "":
		d, err = openPostgres(databaseURL)
	case sqlitePath != "":
		d, err = openSQLite(sqlitePath)
	default:
		return nil, agentapi.E(op, agentapi.KindInvalid, errors.New("neither a database URL nor a SQLite path is set"))
	}
	if err != nil {
		return nil, err
	}
	// Several processes opening one new SQLite file at once race to switch
	// it to WAL, and the losers get BUSY at once (no busy wait for that
	// lock): they try again, for as long as a busy wait would last.
	deadline := time.Now().Add(sqliteBusyTimeoutMS * time.Millisecond)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		err = d.w.PingContext(ctx)
		if err == nil {
			break
		}
		if d.driver != DriverSQLite || !sqliteBusy(err) || time.Now().After(deadline) {
			d.Close()
			return nil, d.fail(op, fmt.Errorf("connecting to %s: %w", d.desc, err))
		}
		time.Sleep(pause)
	}
	if err := d.migrate(ctx); err != nil {
		d.Close()
		return nil, d.fail(op, fmt.Errorf("migrating %s: %w", d.desc, err))
	}
	return d, nil
}

func openPostgres(databaseURL string) (*DB, error) {
	const op = "sql.Open"
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// The parse error may quote the URL, password included.
		return nil, agentapi.E(op, agentapi.KindInvalid, errors.New("database URL must be a postgres:// or postgresql:// URL"))
	}
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("database URL for %s: %w", describeURL(u), err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(pgMaxOpenConns)
	db.SetMaxIdleConns(pgMaxIdleConns)
	db.SetConnMaxIdleTime(pgConnMaxIdleTime)
	return &DB{driver: DriverPostgres, desc: describeURL(u), w: db, r: db}, nil
}

// describeURL names a PostgreSQL database by host and database name; the
// user, password and parameters are left out.
func describeURL(u *url.URL) string {
	host := u.Host
	if host == "" {
		host = u.Query().Get("host") // e.g. a Unix socket directory
	}
	if host == "" {
		host = "localhost"
	}
	return host + u.Path
}

func openSQLite(path string) (*DB, error) {
	const op = "sql.Open"
	if strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return nil, agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("SQLite path %q must be a plain file name", path))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindInvalid, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, agentapi.E(op, agentapi.KindUnavailable, err)
	}
	// Create the file ourselves so that it is private: it holds key hashes.
	// SQLite gives the -wal and -shm files the same mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindUnavailable, err)
	}
	f.Close()

	pragmas := "?_pragma=busy_timeout(" + strconv.Itoa(sqliteBusyTimeoutMS) + ")" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(NORMAL)"
	// The writer also switches the file to WAL (a persistent setting) and
	// takes the write lock at BEGIN, so that a transaction never has to
	// upgrade a read lock, which fails at once instead of waiting.
	w, err := dbsql.Open("sqlite", abs+pragmas+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	r, err := dbsql.Open("sqlite", abs+pragmas+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	r.SetMaxOpenConns(sqliteReaders)
	r.SetMaxIdleConns(sqliteReaders)
	return &DB{driver: DriverSQLite, desc: abs, w: w, r: r}, nil
}

// Close closes the connection pools.
func (d *DB) Close() error {
	err := d.w.Close()
	if d.r != d.w {
		err = errors.Join(err, d.r.Close())
	}
	if err != nil {
		return agentapi.E("sql.Close", agentapi.KindOther, err)
	}
	return nil
}

// Ping checks that the database can be reached; its error is of kind
// KindUnavailable when it cannot.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.w.PingContext(ctx); err != nil {
		return d.fail("sql.Ping", err)
	}
	if d.r != d.w {
		if err := d.r.PingContext(ctx); err != nil {
			return d.fail("sql.Ping", err)
		}
	}
	return nil
}

// Driver returns "postgres" or "sqlite".
func (d *DB) Driver() string { return d.driver }

// Describe names the database for logs: host:port/database for PostgreSQL,
// the absolute file path for SQLite. It never contains credentials.
func (d *DB) Describe() string { return d.desc }

// rebind rewrites the "?" placeholders of query to PostgreSQL's $1, $2, ...
// Question marks inside quoted strings or identifiers are left alone. SQLite
// takes the query as written.
func (d *DB) rebind(query string) string {
	if d.driver != DriverPostgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	var quote byte // the quote character we are inside, or 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// exec runs a statement on the writer and returns the number of rows it
// affected.
func (d *DB) exec(ctx context.Context, op, query string, args ...any) (n int64, err error) {
	done, err := d.admit(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { done(err) }()
	res, err := d.w.ExecContext(ctx, d.rebind(query), args...)
	if err != nil {
		return 0, d.fail(op, err)
	}
	n, err = res.RowsAffected()
	if err != nil {
		return 0, d.fail(op, err)
	}
	return n, nil
}

// queryRow runs a single-row query on a reader.
func (d *DB) queryRow(ctx context.Context, query string, args ...any) *row {
	done, err := d.admit(ctx)
	if err != nil {
		return &row{err: err}
	}
	return &row{row: d.r.QueryRowContext(ctx, d.rebind(query), args...), done: done, d: d}
}

// row is a *sql.Row whose Scan reports the outcome to the guard.
type row struct {
	row  *dbsql.Row
	done func(error)
	err  error // the guard refused
	d    *DB
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	err := r.row.Scan(dest...)
	if errors.Is(err, dbsql.ErrNoRows) {
		r.done(nil) // the database answered
	} else if err != nil {
		r.done(r.d.fail("sql.query", err))
	} else {
		r.done(nil)
	}
	return err
}

// query runs a query on a reader and calls scan for each row.
func (d *DB) query(ctx context.Context, op string, scan func(*dbsql.Rows) error, query string, args ...any) (err error) {
	done, err := d.admit(ctx)
	if err != nil {
		return err
	}
	defer func() { done(err) }()
	rows, err := d.r.QueryContext(ctx, d.rebind(query), args...)
	if err != nil {
		return d.fail(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return d.fail(op, err)
		}
	}
	if err := rows.Err(); err != nil {
		return d.fail(op, err)
	}
	return nil
}

// inTx runs fn in a transaction on the writer, committing when it returns
// nil and rolling back otherwise.
func (d *DB) inTx(ctx context.Context, fn func(*dbsql.Tx) error) error {
	return d.inTxWith(ctx, nil, fn)
}

// inTxWith is inTx with transaction options.
func (d *DB) inTxWith(ctx context.Context, opts *dbsql.TxOptions, fn func(*dbsql.Tx) error) error {
	tx, err := d.w.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Times are stored as Unix milliseconds.

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func toNullMillis(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMilli()
}

func fromNullMillis(n dbsql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMillis(n.Int64)
	return &t
}

// orNow returns t, or the current time when t is zero.
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// invalid builds a KindInvalid error.
func invalid(op, format string, args ...any) error {
	return agentapi.E(op, agentapi.KindInvalid, fmt.Errorf(format, args...))
}

// notFound builds a KindNotFound error.
func notFound(op, what, id string) error {
	return agentapi.E(op, agentapi.KindNotFound, fmt.Errorf("%s %q not found", what, id))
}
