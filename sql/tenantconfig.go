package sql

import (
	"context"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

var _ agentapi.TenantConfigStore = (*DB)(nil)

// TenantConfig returns the configuration of tenant tenantID: the zero
// configuration when none was ever stored.
func (d *DB) TenantConfig(ctx context.Context, tenantID string) (agentapi.TenantConfig, error) {
	const op = "sql.TenantConfig"
	var (
		body    string
		version int64
		updated int64
	)
	err := d.queryRow(ctx, `SELECT config, version, updated_at FROM tenant_config WHERE tenant_id = ?`, tenantID).Scan(&body, &version, &updated)
	if errors.Is(err, dbsql.ErrNoRows) {
		// No configuration yet: the zero one, if the tenant exists.
		if _, err := d.GetTenant(ctx, tenantID); err != nil {
			return agentapi.TenantConfig{}, err
		}
		return agentapi.TenantConfig{}, nil
	}
	if err != nil {
		return agentapi.TenantConfig{}, d.fail(op, err)
	}
	var c agentapi.TenantConfig
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return agentapi.TenantConfig{}, agentapi.E(op, agentapi.KindInternal, err)
	}
	c.Version, c.UpdatedAt = version, fromMillis(updated)
	return c, nil
}

// PutTenantConfig replaces the configuration of tenant tenantID and returns
// it with its new version.
func (d *DB) PutTenantConfig(ctx context.Context, tenantID string, c agentapi.TenantConfig, at time.Time) (out agentapi.TenantConfig, err error) {
	const op = "sql.PutTenantConfig"
	if tenantID == "" {
		return out, invalid(op, "tenant id is required")
	}
	c.Version, c.UpdatedAt = 0, time.Time{}
	body, err := json.Marshal(c)
	if err != nil {
		return out, agentapi.E(op, agentapi.KindInvalid, err)
	}
	at = orNow(at).UTC().Truncate(time.Millisecond)
	done, err := d.admit(ctx)
	if err != nil {
		return out, err
	}
	defer func() { done(err) }()
	var version int64
	err = d.inTx(ctx, func(tx *dbsql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, d.rebind(`SELECT 1 FROM tenants WHERE id = ?`), tenantID).Scan(&one); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, d.rebind(
			`INSERT INTO tenant_config (tenant_id, config, version, updated_at) VALUES (?, ?, 1, ?)
			 ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config,
			   version = tenant_config.version + 1, updated_at = excluded.updated_at
			 RETURNING version`), tenantID, string(body), toMillis(at)).Scan(&version)
	})
	if errors.Is(err, dbsql.ErrNoRows) {
		return out, notFound(op, "tenant", tenantID)
	}
	if err != nil {
		return out, d.fail(op, err)
	}
	c.Version, c.UpdatedAt = version, at
	return c, nil
}

// GlobalFlags returns the stored global feature flags.
func (d *DB) GlobalFlags(ctx context.Context) (map[string]agentapi.Flag, error) {
	const op = "sql.GlobalFlags"
	out := map[string]agentapi.Flag{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var (
			name    string
			f       agentapi.Flag
			percent dbsql.NullInt64
		)
		if err := rows.Scan(&name, &f.Enabled, &percent); err != nil {
			return err
		}
		if percent.Valid {
			p := int(percent.Int64)
			f.Percent = &p
		}
		out[name] = f
		return nil
	}, `SELECT name, enabled, percent FROM feature_flags`)
	return out, err
}

// PutGlobalFlag creates or replaces global flag name.
func (d *DB) PutGlobalFlag(ctx context.Context, name string, f agentapi.Flag, at time.Time) error {
	const op = "sql.PutGlobalFlag"
	if err := agentapi.ValidateFlag(name, f); err != nil {
		return err
	}
	var percent any
	if f.Percent != nil {
		percent = int64(*f.Percent)
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO feature_flags (name, enabled, percent, updated_at) VALUES (?, ?, ?, ?)
		 ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, percent = excluded.percent, updated_at = excluded.updated_at`,
		name, f.Enabled, percent, toMillis(orNow(at)))
	return err
}

// DeleteGlobalFlag removes global flag name.
func (d *DB) DeleteGlobalFlag(ctx context.Context, name string) error {
	const op = "sql.DeleteGlobalFlag"
	n, err := d.exec(ctx, op, `DELETE FROM feature_flags WHERE name = ?`, name)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "flag", name)
	}
	return nil
}
