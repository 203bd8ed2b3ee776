package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// touchInterval is how old the recorded last use of a key must be before
// TouchAPIKey writes a new one.
const touchInterval = time.Minute

const apiKeyColumns = `id, tenant_id, user_id, name, prefix, hash, created_at, last_used_at, revoked_at`

func scanAPIKey(row interface{ Scan(...any) error }) (agentapi.APIKey, error) {
	var (
		k                 agentapi.APIKey
		created           int64
		lastUsed, revoked dbsql.NullInt64
	)
	if err := row.Scan(&k.ID, &k.TenantID, &k.UserID, &k.Name, &k.Prefix, &k.Hash, &created, &lastUsed, &revoked); err != nil {
		return agentapi.APIKey{}, err
	}
	k.CreatedAt = fromMillis(created)
	k.LastUsedAt = fromNullMillis(lastUsed)
	k.RevokedAt = fromNullMillis(revoked)
	return k, nil
}

// CreateAPIKey stores a new key of user k.UserID in tenant k.TenantID; that
// user must exist in that tenant (KindNotFound otherwise). ID, TenantID,
// UserID and Hash are required; a Hash already in use is a KindConflict. A
// zero CreatedAt is set to now.
func (d *DB) CreateAPIKey(ctx context.Context, k agentapi.APIKey) error {
	const op = "sql.CreateAPIKey"
	switch {
	case k.ID == "":
		return invalid(op, "API key id is required")
	case k.TenantID == "":
		return invalid(op, "API key tenant id is required")
	case k.UserID == "":
		return invalid(op, "API key user id is required")
	case len(k.Hash) == 0:
		return invalid(op, "API key hash is required")
	}
	_, err := d.exec(ctx, op,
		`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, k.UserID, k.Name, k.Prefix, k.Hash,
		toMillis(orNow(k.CreatedAt)), toNullMillis(k.LastUsedAt), toNullMillis(k.RevokedAt))
	return err
}

// APIKeyByHash returns the key whose secret hashes to hash, revoked or not.
func (d *DB) APIKeyByHash(ctx context.Context, hash []byte) (agentapi.APIKey, error) {
	const op = "sql.APIKeyByHash"
	if len(hash) == 0 {
		return agentapi.APIKey{}, agentapi.E(op, agentapi.KindNotFound, errors.New("no API key has an empty hash"))
	}
	k, err := scanAPIKey(d.queryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ?`, hash))
	if errors.Is(err, dbsql.ErrNoRows) {
		// Never quote the hash: it identifies a credential.
		return agentapi.APIKey{}, agentapi.E(op, agentapi.KindNotFound, errors.New("no API key matches"))
	}
	if err != nil {
		return agentapi.APIKey{}, d.fail(op, err)
	}
	return k, nil
}

// ListAPIKeys returns the keys of tenant tenantID, oldest first; only those
// of user userID unless userID is "".
func (d *DB) ListAPIKeys(ctx context.Context, tenantID, userID string) ([]agentapi.APIKey, error) {
	const op = "sql.ListAPIKeys"
	query := `SELECT ` + apiKeyColumns + ` FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id`
	args := []any{tenantID}
	if userID != "" {
		query = `SELECT ` + apiKeyColumns + ` FROM api_keys WHERE tenant_id = ? AND user_id = ? ORDER BY created_at, id`
		args = append(args, userID)
	}
	ks := []agentapi.APIKey{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		k, err := scanAPIKey(rows)
		ks = append(ks, k)
		return err
	}, query, args...)
	if err != nil {
		return nil, err
	}
	return ks, nil
}

// RevokeAPIKey marks key id of tenant tenantID revoked at at. Revoking a
// revoked key succeeds and keeps the first revocation time.
func (d *DB) RevokeAPIKey(ctx context.Context, tenantID, id string, at time.Time) error {
	const op = "sql.RevokeAPIKey"
	n, err := d.exec(ctx, op,
		`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?`,
		toMillis(orNow(at)), tenantID, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "API key", id)
	}
	return nil
}

// TouchAPIKey records that key id was used at at. The write is skipped when
// the recorded last use is less than a minute before at (or after it), so a
// busy key costs at most one write a minute. An unknown id is KindNotFound.
func (d *DB) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	const op = "sql.TouchAPIKey"
	at = orNow(at)
	n, err := d.exec(ctx, op,
		`UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)`,
		toMillis(at), id, toMillis(at.Add(-touchInterval)))
	if err != nil || n > 0 {
		return err
	}
	// Nothing written: skipped, or no such key.
	var one int
	err = d.queryRow(ctx, `SELECT 1 FROM api_keys WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, dbsql.ErrNoRows) {
		return notFound(op, "API key", id)
	}
	if err != nil {
		return d.fail(op, err)
	}
	return nil
}

// CountAPIKeys counts the keys of every tenant, revoked ones included.
func (d *DB) CountAPIKeys(ctx context.Context) (int, error) {
	const op = "sql.CountAPIKeys"
	var n int
	if err := d.queryRow(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, d.fail(op, err)
	}
	return n, nil
}
