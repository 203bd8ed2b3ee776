package sql

import (
	"context"
	dbsql "database/sql"

	agentapi "github.com/agentapi-mt/agentapi"
)

// Audit appends an entry; the database assigns its ID (e.ID is ignored).
// TenantID and Action are required; a zero At is set to now. Entries are
// kept when their tenant is deleted.
func (d *DB) Audit(ctx context.Context, e agentapi.AuditEntry) error {
	const op = "sql.Audit"
	switch {
	case e.TenantID == "":
		return invalid(op, "audit entry tenant id is required")
	case e.Action == "":
		return invalid(op, "audit entry action is required")
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO audit_log (occurred_at, tenant_id, actor_id, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)`,
		toMillis(orNow(e.At)), e.TenantID, e.ActorID, e.Action, e.Target, e.Detail)
	return err
}

// ListAudit returns at most limit entries of tenant tenantID, newest first
// (by At, then by insertion order). A limit of zero or less returns none.
func (d *DB) ListAudit(ctx context.Context, tenantID string, limit int) ([]agentapi.AuditEntry, error) {
	const op = "sql.ListAudit"
	es := []agentapi.AuditEntry{}
	if limit <= 0 {
		return es, nil
	}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var (
			e  agentapi.AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.TenantID, &e.ActorID, &e.Action, &e.Target, &e.Detail); err != nil {
			return err
		}
		e.At = fromMillis(at)
		es = append(es, e)
		return nil
	}, `SELECT id, occurred_at, tenant_id, actor_id, action, target, detail
		FROM audit_log WHERE tenant_id = ?
		ORDER BY occurred_at DESC, id DESC
		LIMIT ?`, tenantID, int64(limit))
	if err != nil {
		return nil, err
	}
	return es, nil
}
