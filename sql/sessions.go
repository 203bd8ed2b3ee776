package sql

import (
	"context"
	dbsql "database/sql"
	"errors"
	"fmt"

	agentapi "github.com/agentapi-mt/agentapi"
)

const sessionColumns = `id, tenant_id, user_id, name, agent_type, state, instance, created_at, last_activity_at, stopped_at`

func scanSession(row interface{ Scan(...any) error }) (agentapi.AgentSession, error) {
	var (
		s                 agentapi.AgentSession
		created, activity int64
		stopped           dbsql.NullInt64
	)
	if err := row.Scan(&s.ID, &s.TenantID, &s.UserID, &s.Name, &s.AgentType, &s.State, &s.Instance,
		&created, &activity, &stopped); err != nil {
		return agentapi.AgentSession{}, err
	}
	s.CreatedAt, s.LastActivityAt = fromMillis(created), fromMillis(activity)
	s.StoppedAt = fromNullMillis(stopped)
	return s, nil
}

// CreateAgentSession stores a new session in tenant s.TenantID, which must
// exist (KindNotFound otherwise). ID, TenantID, UserID, AgentType and State
// are required. A zero CreatedAt is set to now, a zero LastActivityAt to
// CreatedAt.
func (d *DB) CreateAgentSession(ctx context.Context, s agentapi.AgentSession) error {
	const op = "sql.CreateAgentSession"
	if err := validSession(op, s); err != nil {
		return err
	}
	_, err := d.exec(ctx, op, insertSession, sessionArgs(s)...)
	return err
}

const insertSession = `INSERT INTO agent_sessions (` + sessionColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func validSession(op string, s agentapi.AgentSession) error {
	switch {
	case s.ID == "":
		return invalid(op, "agent session id is required")
	case s.TenantID == "":
		return invalid(op, "agent session tenant id is required")
	case s.UserID == "":
		return invalid(op, "agent session user id is required")
	case s.AgentType == "":
		return invalid(op, "agent session agent type is required")
	case s.State == "":
		return invalid(op, "agent session state is required")
	}
	return nil
}

func sessionArgs(s agentapi.AgentSession) []any {
	created := orNow(s.CreatedAt)
	activity := s.LastActivityAt
	if activity.IsZero() {
		activity = created
	}
	return []any{s.ID, s.TenantID, s.UserID, s.Name, s.AgentType, s.State, s.Instance,
		toMillis(created), toMillis(activity), toNullMillis(s.StoppedAt)}
}

// CreateAgentSessionWithin implements agentapi.AgentSessionStore: the
// count and the insert run in one transaction, serialized per tenant
// (PostgreSQL: a transaction-scoped advisory lock on the tenant; SQLite:
// its single writer).
func (d *DB) CreateAgentSessionWithin(ctx context.Context, s agentapi.AgentSession, maxTenant, maxUser int) (err error) {
	const op = "sql.CreateAgentSessionWithin"
	if err := validSession(op, s); err != nil {
		return err
	}
	if s.State != agentapi.SessionRunning {
		return invalid(op, "only a running session is created within limits")
	}
	done, err := d.admit(ctx)
	if err != nil {
		return err
	}
	defer func() { done(err) }()
	var over error
	// PostgreSQL: READ COMMITTED whatever the server's default, so that
	// the count, made after the lock is granted, sees every session
	// committed by the lock's previous holder (under REPEATABLE READ the
	// snapshot could predate them).
	var opts *dbsql.TxOptions
	if d.driver == DriverPostgres {
		opts = &dbsql.TxOptions{Isolation: dbsql.LevelReadCommitted}
	}
	err = d.inTxWith(ctx, opts, func(tx *dbsql.Tx) error {
		if d.driver == DriverPostgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "agent_sessions:"+s.TenantID); err != nil {
				return err
			}
		}
		var tenant, user int
		if err := tx.QueryRowContext(ctx, d.rebind(
			`SELECT count(*), COALESCE(SUM(CASE WHEN user_id = ? THEN 1 ELSE 0 END), 0)
			 FROM agent_sessions WHERE tenant_id = ? AND state = ?`),
			s.UserID, s.TenantID, agentapi.SessionRunning).Scan(&tenant, &user); err != nil {
			return err
		}
		switch {
		case maxTenant > 0 && tenant >= maxTenant:
			over = agentapi.E(op, agentapi.KindRateLimited, fmt.Errorf("%w: the tenant already runs %d sessions (the limit); stop one first", agentapi.ErrSessionLimit, tenant))
			return over
		case maxUser > 0 && user >= maxUser:
			over = agentapi.E(op, agentapi.KindRateLimited, fmt.Errorf("%w: you already run %d sessions (the limit); stop one first", agentapi.ErrSessionLimit, user))
			return over
		}
		_, err := tx.ExecContext(ctx, d.rebind(insertSession), sessionArgs(s)...)
		return err
	})
	switch {
	case over != nil:
		return over
	case err != nil:
		return d.fail(op, err)
	}
	return nil
}

// GetAgentSession returns session id of tenant tenantID.
func (d *DB) GetAgentSession(ctx context.Context, tenantID, id string) (agentapi.AgentSession, error) {
	const op = "sql.GetAgentSession"
	s, err := scanSession(d.queryRow(ctx,
		`SELECT `+sessionColumns+` FROM agent_sessions WHERE tenant_id = ? AND id = ?`, tenantID, id))
	if errors.Is(err, dbsql.ErrNoRows) {
		return agentapi.AgentSession{}, notFound(op, "agent session", id)
	}
	if err != nil {
		return agentapi.AgentSession{}, d.fail(op, err)
	}
	return s, nil
}

// ListAgentSessions returns the sessions of tenant tenantID, oldest first;
// only those of user userID unless userID is "".
func (d *DB) ListAgentSessions(ctx context.Context, tenantID, userID string) ([]agentapi.AgentSession, error) {
	const op = "sql.ListAgentSessions"
	query := `SELECT ` + sessionColumns + ` FROM agent_sessions WHERE tenant_id = ? ORDER BY created_at, id`
	args := []any{tenantID}
	if userID != "" {
		query = `SELECT ` + sessionColumns + ` FROM agent_sessions WHERE tenant_id = ? AND user_id = ? ORDER BY created_at, id`
		args = append(args, userID)
	}
	ss := []agentapi.AgentSession{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		s, err := scanSession(rows)
		ss = append(ss, s)
		return err
	}, query, args...)
	if err != nil {
		return nil, err
	}
	return ss, nil
}

// UpdateAgentSession changes the Name, State, Instance, LastActivityAt and
// StoppedAt of session s.ID in tenant s.TenantID. State is required.
func (d *DB) UpdateAgentSession(ctx context.Context, s agentapi.AgentSession) error {
	const op = "sql.UpdateAgentSession"
	switch {
	case s.ID == "":
		return invalid(op, "agent session id is required")
	case s.TenantID == "":
		return invalid(op, "agent session tenant id is required")
	case s.State == "":
		return invalid(op, "agent session state is required")
	}
	n, err := d.exec(ctx, op,
		`UPDATE agent_sessions SET name = ?, state = ?, instance = ?, last_activity_at = ?, stopped_at = ?
		WHERE tenant_id = ? AND id = ?`,
		s.Name, s.State, s.Instance, toMillis(orNow(s.LastActivityAt)), toNullMillis(s.StoppedAt),
		s.TenantID, s.ID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "agent session", s.ID)
	}
	return nil
}

// PutMessage writes message m of session sessionID in tenant tenantID,
// replacing the message with the same ID. The session check and the write
// are one statement: the row is only produced when the session belongs to
// the tenant. Role is required and ID must not be negative.
func (d *DB) PutMessage(ctx context.Context, tenantID, sessionID string, m agentapi.Message) error {
	const op = "sql.PutMessage"
	switch {
	case m.ID < 0:
		return invalid(op, "message id %d is negative", m.ID)
	case m.Role == "":
		return invalid(op, "message role is required")
	}
	// The casts give PostgreSQL the types of parameters that appear in a
	// select list rather than in a VALUES row.
	n, err := d.exec(ctx, op,
		`INSERT INTO transcript_messages (session_id, message_id, role, content, sent_at)
		SELECT id, CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT)
		FROM agent_sessions WHERE tenant_id = ? AND id = ?
		ON CONFLICT (session_id, message_id) DO UPDATE
		SET role = excluded.role, content = excluded.content, sent_at = excluded.sent_at`,
		int64(m.ID), string(m.Role), m.Content, toMillis(m.Time), tenantID, sessionID)
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(op, "agent session", sessionID)
	}
	return nil
}

// Messages returns the transcript of session sessionID in tenant tenantID,
// ordered by message ID. The session and its messages are read in one
// statement, so an empty transcript is told apart from a missing session.
func (d *DB) Messages(ctx context.Context, tenantID, sessionID string) ([]agentapi.Message, error) {
	const op = "sql.Messages"
	found := false
	ms := []agentapi.Message{}
	err := d.query(ctx, op, func(rows *dbsql.Rows) error {
		var (
			id      dbsql.NullInt64
			role    dbsql.NullString
			content dbsql.NullString
			sent    dbsql.NullInt64
		)
		if err := rows.Scan(&id, &role, &content, &sent); err != nil {
			return err
		}
		found = true
		if id.Valid { // else: the session has no messages
			ms = append(ms, agentapi.Message{
				ID:      int(id.Int64),
				Role:    agentapi.Role(role.String),
				Content: content.String,
				Time:    fromMillis(sent.Int64),
			})
		}
		return nil
	}, `SELECT m.message_id, m.role, m.content, m.sent_at
		FROM agent_sessions s LEFT JOIN transcript_messages m ON m.session_id = s.id
		WHERE s.tenant_id = ? AND s.id = ?
		ORDER BY m.message_id`, tenantID, sessionID)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound(op, "agent session", sessionID)
	}
	return ms, nil
}
