package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"strings"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/usage"
)

// Usage is kept in two tables (migration 0003_usage): usage_counts, one row
// per tenant, UTC day, user and metric, and usage_flush_marks, the Seq of
// the last flush applied per tenant, which makes flushes idempotent.

var _ usage.DB = (*DB)(nil)

// usageRowsPerInsert bounds the rows of one multi-row INSERT (5 parameters
// each, well below SQLite's and PostgreSQL's parameter limits).
const usageRowsPerInsert = 200

// usageTenantsPerQuery bounds the ids of one IN (...) list.
const usageTenantsPerQuery = 500

// errStaleFlush rolls back a flush whose Seq is not above the tenant's mark.
var errStaleFlush = errors.New("flush already applied")

// ApplyUsage implements usage.DB: in one transaction it raises the
// tenant's mark to f.Seq -- an upsert that changes no row when the mark is
// already at or above it, in which case the transaction is rolled back
// and ApplyUsage returns false -- and adds the rows with INSERT ... ON
// CONFLICT DO UPDATE SET count = count + excluded.count. On PostgreSQL
// the upsert of the mark locks its row, so concurrent flushes of a tenant
// queue there and the later one sees the new mark; SQLite has a single
// writer.
func (d *DB) ApplyUsage(ctx context.Context, f usage.Flush) (applied bool, err error) {
	const op = "sql.ApplyUsage"
	if f.TenantID == "" || f.Seq < 1 {
		return false, invalid(op, "a flush needs a tenant id and a Seq above 0")
	}
	for _, r := range f.Rows {
		if err := r.Check(); err != nil {
			return false, agentapi.E(op, agentapi.KindInvalid, err)
		}
		if r.TenantID != f.TenantID {
			return false, invalid(op, "a row of tenant %q in a flush of tenant %q", r.TenantID, f.TenantID)
		}
	}
	rows := usage.MergeRows(f.Rows) // one row per key: PostgreSQL refuses to upsert a row twice in a statement

	done, err := d.admit(ctx)
	if err != nil {
		return false, err
	}
	defer func() { done(err) }()
	err = d.inTx(ctx, func(tx *dbsql.Tx) error {
		res, err := tx.ExecContext(ctx, d.rebind(
			`INSERT INTO usage_flush_marks (tenant_id, last_seq, updated_at) VALUES (?, ?, ?)
			 ON CONFLICT (tenant_id) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at
			 WHERE usage_flush_marks.last_seq < excluded.last_seq`),
			f.TenantID, f.Seq, toMillis(time.Now()))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return errStaleFlush
		}
		for len(rows) > 0 {
			batch := rows[:min(len(rows), usageRowsPerInsert)]
			rows = rows[len(batch):]
			var q strings.Builder
			q.WriteString(`INSERT INTO usage_counts (tenant_id, user_id, day, metric, count) VALUES `)
			args := make([]any, 0, 5*len(batch))
			for i, r := range batch {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?)")
				args = append(args, r.TenantID, r.UserID, r.Day, string(r.Metric), r.Count)
			}
			q.WriteString(` ON CONFLICT (tenant_id, day, user_id, metric) DO UPDATE SET count = usage_counts.count + excluded.count`)
			if _, err := tx.ExecContext(ctx, d.rebind(q.String()), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errStaleFlush) {
		return false, nil
	}
	if err != nil {
		return false, d.fail(op, err)
	}
	return true, nil
}

// UsageMarks implements usage.DB.
func (d *DB) UsageMarks(ctx context.Context, tenants []string) (map[string]int64, error) {
	const op = "sql.UsageMarks"
	out := map[string]int64{}
	for len(tenants) > 0 {
		batch := tenants[:min(len(tenants), usageTenantsPerQuery)]
		tenants = tenants[len(batch):]
		args := make([]any, len(batch))
		for i, t := range batch {
			args[i] = t
		}
		err := d.query(ctx, op, func(rows *dbsql.Rows) error {
			var t string
			var seq int64
			err := rows.Scan(&t, &seq)
			out[t] = seq
			return err
		}, `SELECT tenant_id, last_seq FROM usage_flush_marks WHERE tenant_id IN (`+usagePlaceholders(len(batch))+`)`, args...)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// usagePlaceholders returns "?, ?, ..." with n marks.
func usagePlaceholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// UsageSnapshot implements usage.DB with a read-only transaction: REPEATABLE
// READ on PostgreSQL, and on SQLite a read transaction, whose WAL snapshot
// is taken by its first SELECT and kept until it ends.
func (d *DB) UsageSnapshot(ctx context.Context, q usage.Query) (snap usage.Snapshot, err error) {
	const op = "sql.UsageSnapshot"
	if err := q.Check(); err != nil {
		return usage.Snapshot{}, err
	}
	from, to := q.From, q.To
	if from == "" {
		from = "0000-00-00"
	}
	if to == "" {
		to = "9999-99-99"
	}
	rowsQuery := `SELECT tenant_id, user_id, day, metric, count FROM usage_counts WHERE day >= ? AND day <= ?`
	marksQuery := `SELECT tenant_id, last_seq FROM usage_flush_marks`
	rowsArgs := []any{from, to}
	var marksArgs []any
	if q.TenantID != "" {
		rowsQuery += ` AND tenant_id = ?`
		rowsArgs = append(rowsArgs, q.TenantID)
		marksQuery += ` WHERE tenant_id = ?`
		marksArgs = append(marksArgs, q.TenantID)
	}

	done, err := d.admit(ctx)
	if err != nil {
		return usage.Snapshot{}, err
	}
	defer func() { done(err) }()
	opts := &dbsql.TxOptions{ReadOnly: true}
	if d.driver == DriverPostgres {
		opts.Isolation = dbsql.LevelRepeatableRead
	}
	tx, err := d.r.BeginTx(ctx, opts)
	if err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	defer tx.Rollback()

	snap = usage.Snapshot{Rows: []usage.Row{}, Marks: map[string]int64{}}
	rows, err := tx.QueryContext(ctx, d.rebind(rowsQuery), rowsArgs...)
	if err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	for rows.Next() {
		var r usage.Row
		var metric string
		if err := rows.Scan(&r.TenantID, &r.UserID, &r.Day, &metric, &r.Count); err != nil {
			rows.Close()
			return usage.Snapshot{}, d.fail(op, err)
		}
		r.Metric = usage.Metric(metric)
		snap.Rows = append(snap.Rows, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	marks, err := tx.QueryContext(ctx, d.rebind(marksQuery), marksArgs...)
	if err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	for marks.Next() {
		var t string
		var seq int64
		if err := marks.Scan(&t, &seq); err != nil {
			marks.Close()
			return usage.Snapshot{}, d.fail(op, err)
		}
		snap.Marks[t] = seq
	}
	if err := errors.Join(marks.Err(), marks.Close()); err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	if err := tx.Commit(); err != nil {
		return usage.Snapshot{}, d.fail(op, err)
	}
	usage.SortRows(snap.Rows) // in Go: byte order, whatever the database's collation
	return snap, nil
}
