package sql

import (
	"context"
	dbsql "database/sql"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

var _ agentapi.TenantSecretStore = (*DB)(nil)

// PutSecret creates or replaces secret name of tenant tenantID, which must
// exist (KindNotFound otherwise).
func (d *DB) PutSecret(ctx context.Context, tenantID, name string, sealed []byte, at time.Time) error {
	const op = "sql.PutSecret"
	if tenantID == "" || name == "" || len(sealed) == 0 {
		return invalid(op, "tenant id, secret name and value are required")
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO tenant_secrets (tenant_id, name, sealed, updated_at) VALUES (?, ?, ?, ?)
		 ON CONFLICT (tenant_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`,
		tenantID, name, sealed, toMillis(orNow(at)))
	return err
}

// DeleteSecret removes secret name of tenant tenantID.
func (d *DB) DeleteSecret(ctx context.Context, tenantID, name string) error {
	const op = "sql.DeleteSecret"
	n, err := d.exec(ctx, op, `DELETE FROM tenant_secrets WHERE tenant_id = ? AND name = ?`, tenantID, name)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "secret", name)
	}
	return nil
}

// SecretNames lists the names of tenant tenantID's secrets, sorted.
func (d *DB) SecretNames(ctx context.Context, tenantID string) ([]agentapi.SecretInfo, error) {
	const op = "sql.SecretNames"
	if _, err := d.GetTenant(ctx, tenantID); err != nil {
		return nil, err
	}
	out := []agentapi.SecretInfo{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var s agentapi.SecretInfo
		var at int64
		err := rows.Scan(&s.Name, &at)
		s.UpdatedAt = fromMillis(at)
		out = append(out, s)
		return err
	}, `SELECT name, updated_at FROM tenant_secrets WHERE tenant_id = ? ORDER BY name`, tenantID)
	return out, err
}

// Secrets returns tenant tenantID's sealed secrets by name.
func (d *DB) Secrets(ctx context.Context, tenantID string) (map[string][]byte, error) {
	const op = "sql.Secrets"
	out := map[string][]byte{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var name string
		var sealed []byte
		err := rows.Scan(&name, &sealed)
		out[name] = sealed
		return err
	}, `SELECT name, sealed FROM tenant_secrets WHERE tenant_id = ?`, tenantID)
	return out, err
}
