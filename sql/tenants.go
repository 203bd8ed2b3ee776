package sql

import (
	"context"
	dbsql "database/sql"
	"errors"

	agentapi "github.com/agentapi-mt/agentapi"
)

const tenantColumns = `id, name, disabled, created_at, updated_at`

func scanTenant(row interface{ Scan(...any) error }) (agentapi.Tenant, error) {
	var (
		t                agentapi.Tenant
		created, updated int64
	)
	if err := row.Scan(&t.ID, &t.Name, &t.Disabled, &created, &updated); err != nil {
		return agentapi.Tenant{}, err
	}
	t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
	return t, nil
}

// CreateTenant stores a new tenant. ID and Name are required. A zero
// CreatedAt is set to now, a zero UpdatedAt to CreatedAt.
func (d *DB) CreateTenant(ctx context.Context, t agentapi.Tenant) error {
	const op = "sql.CreateTenant"
	switch {
	case t.ID == "":
		return invalid(op, "tenant id is required")
	case t.Name == "":
		return invalid(op, "tenant name is required")
	}
	created := orNow(t.CreatedAt)
	updated := t.UpdatedAt
	if updated.IsZero() {
		updated = created
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO tenants (`+tenantColumns+`) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.Disabled, toMillis(created), toMillis(updated))
	return err
}

// GetTenant returns the tenant with the given id.
func (d *DB) GetTenant(ctx context.Context, id string) (agentapi.Tenant, error) {
	const op = "sql.GetTenant"
	t, err := scanTenant(d.queryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return agentapi.Tenant{}, notFound(op, "tenant", id)
	}
	if err != nil {
		return agentapi.Tenant{}, d.fail(op, err)
	}
	return t, nil
}

// ListTenants returns every tenant, oldest first.
func (d *DB) ListTenants(ctx context.Context) ([]agentapi.Tenant, error) {
	const op = "sql.ListTenants"
	ts := []agentapi.Tenant{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		t, err := scanTenant(rows)
		ts = append(ts, t)
		return err
	}, `SELECT `+tenantColumns+` FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// UpdateTenant changes the Name and Disabled of tenant t.ID and sets its
// UpdatedAt to t.UpdatedAt, or to now when that is zero.
func (d *DB) UpdateTenant(ctx context.Context, t agentapi.Tenant) error {
	const op = "sql.UpdateTenant"
	switch {
	case t.ID == "":
		return invalid(op, "tenant id is required")
	case t.Name == "":
		return invalid(op, "tenant name is required")
	}
	n, err := d.exec(ctx, op,
		`UPDATE tenants SET name = ?, disabled = ?, updated_at = ? WHERE id = ?`,
		t.Name, t.Disabled, toMillis(orNow(t.UpdatedAt)), t.ID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "tenant", t.ID)
	}
	return nil
}

// DeleteTenant removes the tenant with its users, their API keys, and its
// agent sessions with their transcripts. Its audit entries remain.
func (d *DB) DeleteTenant(ctx context.Context, id string) error {
	const op = "sql.DeleteTenant"
	n, err := d.exec(ctx, op, `DELETE FROM tenants WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "tenant", id)
	}
	return nil
}
