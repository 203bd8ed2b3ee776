package sql

import (
	"context"
	dbsql "database/sql"
	"errors"

	agentapi "github.com/agentapi-mt/agentapi"
)

const userColumns = `id, tenant_id, name, role, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (agentapi.User, error) {
	var (
		u                agentapi.User
		created, updated int64
	)
	if err := row.Scan(&u.ID, &u.TenantID, &u.Name, &u.Role, &created, &updated); err != nil {
		return agentapi.User{}, err
	}
	u.CreatedAt, u.UpdatedAt = fromMillis(created), fromMillis(updated)
	return u, nil
}

func validateUser(op string, u agentapi.User) error {
	switch {
	case u.ID == "":
		return invalid(op, "user id is required")
	case u.TenantID == "":
		return invalid(op, "user tenant id is required")
	case u.Name == "":
		return invalid(op, "user name is required")
	case u.Role == "":
		return invalid(op, "user role is required")
	}
	return nil
}

// CreateUser stores a new user in tenant u.TenantID, which must exist
// (KindNotFound otherwise). ID, TenantID, Name and Role are required. A zero
// CreatedAt is set to now, a zero UpdatedAt to CreatedAt.
func (d *DB) CreateUser(ctx context.Context, u agentapi.User) error {
	const op = "sql.CreateUser"
	if err := validateUser(op, u); err != nil {
		return err
	}
	created := orNow(u.CreatedAt)
	updated := u.UpdatedAt
	if updated.IsZero() {
		updated = created
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.TenantID, u.Name, string(u.Role), toMillis(created), toMillis(updated))
	return err
}

// GetUser returns user id of tenant tenantID.
func (d *DB) GetUser(ctx context.Context, tenantID, id string) (agentapi.User, error) {
	const op = "sql.GetUser"
	u, err := scanUser(d.queryRow(ctx,
		`SELECT `+userColumns+` FROM users WHERE tenant_id = ? AND id = ?`, tenantID, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return agentapi.User{}, notFound(op, "user", id)
	}
	if err != nil {
		return agentapi.User{}, d.fail(op, err)
	}
	return u, nil
}

// ListUsers returns the users of tenant tenantID, oldest first.
func (d *DB) ListUsers(ctx context.Context, tenantID string) ([]agentapi.User, error) {
	const op = "sql.ListUsers"
	us := []agentapi.User{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		u, err := scanUser(rows)
		us = append(us, u)
		return err
	}, `SELECT `+userColumns+` FROM users WHERE tenant_id = ? ORDER BY created_at, id`, tenantID)
	if err != nil {
		return nil, err
	}
	return us, nil
}

// UpdateUser changes the Name and Role of user u.ID in tenant u.TenantID and
// sets its UpdatedAt to u.UpdatedAt, or to now when that is zero.
func (d *DB) UpdateUser(ctx context.Context, u agentapi.User) error {
	const op = "sql.UpdateUser"
	if err := validateUser(op, u); err != nil {
		return err
	}
	n, err := d.exec(ctx, op,
		`UPDATE users SET name = ?, role = ?, updated_at = ? WHERE tenant_id = ? AND id = ?`,
		u.Name, string(u.Role), toMillis(orNow(u.UpdatedAt)), u.TenantID, u.ID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "user", u.ID)
	}
	return nil
}

// DeleteUser removes user id of tenant tenantID and their API keys. Their
// agent sessions remain.
func (d *DB) DeleteUser(ctx context.Context, tenantID, id string) error {
	const op = "sql.DeleteUser"
	n, err := d.exec(ctx, op, `DELETE FROM users WHERE tenant_id = ? AND id = ?`, tenantID, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "user", id)
	}
	return nil
}
