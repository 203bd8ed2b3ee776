package sql

import (
	"context"
	dbsql "database/sql"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// SessionRef names one agent session.
type SessionRef struct{ TenantID, ID string }

// RunningInstances lists the instances that have sessions recorded as
// running, across tenants.
func (d *DB) RunningInstances(ctx context.Context) ([]string, error) {
	const op = "sql.RunningInstances"
	var out []string
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var s string
		err := rows.Scan(&s)
		out = append(out, s)
		return err
	}, `SELECT DISTINCT instance FROM agent_sessions WHERE state = ?`, agentapi.SessionRunning)
	return out, err
}

// MarkInstanceLost records every session still running on instance as
// lost at at, across tenants, and returns them.
func (d *DB) MarkInstanceLost(ctx context.Context, instance string, at time.Time) ([]SessionRef, error) {
	const op = "sql.MarkInstanceLost"
	var refs []SessionRef
	done, err := d.admit(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { done(err) }()
	err = d.inTx(ctx, func(tx *dbsql.Tx) error {
		rows, err := tx.QueryContext(ctx, d.rebind(`SELECT tenant_id, id FROM agent_sessions WHERE state = ? AND instance = ?`), agentapi.SessionRunning, instance)
		if err != nil {
			return err
		}
		for rows.Next() {
			var r SessionRef
			if err := rows.Scan(&r.TenantID, &r.ID); err != nil {
				rows.Close()
				return err
			}
			refs = append(refs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, d.rebind(`UPDATE agent_sessions SET state = ?, stopped_at = ? WHERE state = ? AND instance = ?`),
			agentapi.SessionLost, toMillis(orNow(at)), agentapi.SessionRunning, instance)
		return err
	})
	if err != nil {
		return nil, d.fail(op, err)
	}
	return refs, nil
}
