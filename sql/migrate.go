package sql

import (
	"context"
	dbsql "database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationFiles holds the schema, one file per version, named
// NNNN_description.sql. Files are never edited once released; a change is a
// new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the PostgreSQL advisory lock that serialises
// migrations across instances ("agentapi" in ASCII).
const migrationLockKey int64 = 0x6167656e74617069

// dialectTokens spell the non-portable parts of the migrations.
var dialectTokens = map[string]*strings.Replacer{
	DriverPostgres: strings.NewReplacer(
		"{{AUTO_ID}}", "BIGSERIAL PRIMARY KEY",
		"{{BLOB}}", "BYTEA",
	),
	DriverSQLite: strings.NewReplacer(
		"{{AUTO_ID}}", "INTEGER PRIMARY KEY AUTOINCREMENT",
		"{{BLOB}}", "BLOB",
	),
}

// migration is one schema version.
type migration struct {
	version int64
	name    string // file name
	body    string // SQL, tokens replaced
}

// loadMigrations returns the embedded migrations for driver, in version
// order.
func loadMigrations(driver string) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int64]string{}
	for _, e := range entries {
		name := e.Name()
		digits, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(digits, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version number and _", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, name)
		}
		seen[v] = name
		b, err := migrationFiles.ReadFile(path.Join("migrations", name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, body: dialectTokens[driver].Replace(string(b))})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrate brings the schema up to date. Each migration runs in its own
// transaction together with its row in schema_migrations, so a migration is
// either applied and recorded or not at all. Every transaction first takes
// the migration lock (an advisory lock on PostgreSQL, the write lock on
// SQLite) and re-checks the version, so instances starting together apply
// each migration exactly once.
func (d *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations(d.driver)
	if err != nil {
		return err
	}
	err = d.inTx(ctx, func(tx *dbsql.Tx) error {
		if err := d.lockMigrations(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version     BIGINT PRIMARY KEY,
			name        TEXT   NOT NULL,
			applied_at  BIGINT NOT NULL
		)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}

	applied, err := d.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		err := d.inTx(ctx, func(tx *dbsql.Tx) error {
			if err := d.lockMigrations(ctx, tx); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRowContext(ctx, d.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil // another instance got there first
			}
			if _, err := tx.ExecContext(ctx, m.body); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				m.version, m.name, toMillis(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("applying %s: %w", m.name, err)
		}
	}
	return nil
}

// lockMigrations takes the migration lock for the rest of tx. On SQLite the
// transaction already holds the write lock (BEGIN IMMEDIATE).
func (d *DB) lockMigrations(ctx context.Context, tx *dbsql.Tx) error {
	if d.driver != DriverPostgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey)
	return err
}

// appliedMigrations returns the versions recorded in schema_migrations.
func (d *DB) appliedMigrations(ctx context.Context) (map[int64]bool, error) {
	rows, err := d.w.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[int64]bool{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

// Migration names one schema version this binary carries.
type Migration struct {
	Version int64
	Name    string // its file name, as recorded in schema_migrations
}

// Migrations lists the schema versions this binary carries, in order (for
// diagnostics: what a database should have applied).
func Migrations() ([]Migration, error) {
	ms, err := loadMigrations(DriverSQLite)
	if err != nil {
		return nil, err
	}
	out := make([]Migration, len(ms))
	for i, m := range ms {
		out[i] = Migration{Version: m.version, Name: m.name}
	}
	return out, nil
}
