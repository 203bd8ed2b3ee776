package sql

import (
	"context"
	dbsql "database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	agentapi "github.com/agentapi-mt/agentapi"
)

// fail wraps a database error into an *agentapi.Error of the kind the store
// contract asks for.
func (d *DB) fail(op string, err error) error {
	k := classify(err)
	if k == agentapi.KindUnavailable && agentapi.KindOf(err) == agentapi.KindOther {
		// Driver errors name hosts, users and databases: keep them in the
		// chain (logs, errors.Is/As) but out of the text a client is shown.
		err = &unavailable{cause: err}
	}
	if k == agentapi.KindConflict && agentapi.KindOf(err) == agentapi.KindOther {
		// Likewise for constraint names and driver codes.
		err = &conflict{cause: err}
	}
	return agentapi.E(op, k, err)
}

// conflict is a duplicate whose text is fit for clients.
type conflict struct{ cause error }

func (c *conflict) Error() string { return "a record with this id (or key) already exists" }
func (c *conflict) Unwrap() error { return c.cause }

// unavailable is a database outage whose text is fit for clients; the
// driver's error stays reachable through Unwrap.
type unavailable struct{ cause error }

func (u *unavailable) Error() string { return "the database is unavailable; try again shortly" }
func (u *unavailable) Unwrap() error { return u.cause }

// classify maps a driver or database/sql error to an error kind.
func classify(err error) agentapi.Kind {
	if k := agentapi.KindOf(err); k != agentapi.KindOther {
		return k
	}
	switch {
	case errors.Is(err, dbsql.ErrNoRows):
		return agentapi.KindNotFound
	case errors.Is(err, context.Canceled):
		return agentapi.KindOther // the caller gave up; nothing is wrong
	case errors.Is(err, context.DeadlineExceeded):
		return agentapi.KindUnavailable
	}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyPostgres(pgErr.Code)
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		return classifySQLite(liteErr.Code())
	}

	// Failures to reach or keep talking to the server.
	var (
		connectErr *pgconn.ConnectError
		netErr     net.Error
	)
	switch {
	case errors.As(err, &connectErr),
		errors.As(err, &netErr),
		errors.Is(err, driver.ErrBadConn),
		errors.Is(err, dbsql.ErrConnDone),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		pgconn.Timeout(err),
		pgconn.SafeToRetry(err):
		return agentapi.KindUnavailable
	}

	// Last resort for errors that lost their type on the way.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "UNIQUE constraint failed"):
		return agentapi.KindConflict
	case strings.Contains(msg, "FOREIGN KEY constraint failed"):
		return agentapi.KindNotFound
	case strings.Contains(msg, "sql: database is closed"),
		strings.Contains(msg, "conn closed"):
		return agentapi.KindUnavailable
	}
	return agentapi.KindOther
}

// classifyPostgres maps a PostgreSQL SQLSTATE.
func classifyPostgres(code string) agentapi.Kind {
	switch code {
	case "23505": // unique_violation
		return agentapi.KindConflict
	case "23503": // foreign_key_violation: the referenced record is missing
		return agentapi.KindNotFound
	case "23502", "23514": // not_null_violation, check_violation
		return agentapi.KindInvalid
	case "40001", "40P01": // serialization_failure, deadlock_detected: retry
		return agentapi.KindUnavailable
	case "57P01", "57P02", "57P03": // admin/crash shutdown, cannot connect now
		return agentapi.KindUnavailable
	}
	switch {
	case strings.HasPrefix(code, "08"): // connection exception
		return agentapi.KindUnavailable
	case strings.HasPrefix(code, "53"): // insufficient resources
		return agentapi.KindUnavailable
	case strings.HasPrefix(code, "22"): // data exception: a bad value
		return agentapi.KindInvalid
	}
	return agentapi.KindOther
}

// sqliteBusy reports whether err is SQLite's BUSY or LOCKED: another
// connection holds the lock this one needs.
func sqliteBusy(err error) bool {
	var liteErr *sqlite.Error
	if !errors.As(err, &liteErr) {
		return false
	}
	c := liteErr.Code() & 0xff
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// classifySQLite maps a SQLite (extended) result code.
func classifySQLite(code int) agentapi.Kind {
	switch code {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return agentapi.KindConflict
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return agentapi.KindNotFound
	case sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_CHECK:
		return agentapi.KindInvalid
	}
	switch code & 0xff { // the primary result code
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_PROTOCOL:
		return agentapi.KindUnavailable
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG:
		return agentapi.KindInvalid
	}
	return agentapi.KindOther
}
