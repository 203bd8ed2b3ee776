package agentapi

import (
	"context"
	"time"
)

// UserRole is what a user may do within a tenant.
type UserRole string

// Roles. A platform admin belongs to the platform tenant and manages every
// tenant; a tenant admin manages its own tenant's users and keys; a member
// uses agents.
const (
	RolePlatformAdmin UserRole = "platform_admin"
	RoleAdmin         UserRole = "admin"
	RoleMember        UserRole = "member"
)

// PlatformTenantID is the tenant that holds the platform admins. It is
// created with the first admin key and cannot be deleted or disabled.
const PlatformTenantID = "platform"

// Tenant is one customer of the platform. Everything else belongs to one.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// User is a person or service account in a tenant.
type User struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name"`
	Role      UserRole  `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// APIKey is a long-lived credential of a user. Only a hash of the secret is
// stored; Prefix is a short, non-secret part shown in listings so people
// can tell their keys apart.
type APIKey struct {
	ID         string     `json:"id"`
	TenantID   string     `json:"tenant_id"`
	UserID     string     `json:"user_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Hash       []byte     `json:"-"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// Agent session states.
const (
	SessionRunning = "running" // its agent runs on Instance
	SessionStopped = "stopped" // stopped by a user, the idle timeout, or shutdown
	SessionExited  = "exited"  // the agent process exited by itself
	SessionLost    = "lost"    // its instance died; the transcript remains
)

// AgentSession is one agent run by a user of a tenant.
type AgentSession struct {
	ID             string     `json:"id"`
	TenantID       string     `json:"tenant_id"`
	UserID         string     `json:"user_id"`
	Name           string     `json:"name"`
	AgentType      string     `json:"agent_type"`
	State          string     `json:"state"`
	Instance       string     `json:"instance,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	LastActivityAt time.Time  `json:"last_activity_at"`
	StoppedAt      *time.Time `json:"stopped_at,omitempty"`
}

// AuditEntry records one administrative action.
type AuditEntry struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	TenantID string    `json:"tenant_id"`
	ActorID  string    `json:"actor_id"`
	Action   string    `json:"action"` // e.g. "tenant.create", "apikey.revoke"
	Target   string    `json:"target"` // the id acted on
	Detail   string    `json:"detail,omitempty"`
}

// The stores below are the system of record. Their contracts, shared by
// every implementation:
//
//   - Every method takes the tenant it acts in (except the platform-wide
//     tenant listing and API key lookup by hash); a record of another
//     tenant is reported exactly like a missing one: an error of kind
//     KindNotFound. Never KindForbidden, which would reveal existence.
//   - Create fails with KindConflict when the ID exists, KindInvalid when a
//     required field is empty. Nothing is changed by a failed call.
//   - Times are stored with at least millisecond precision, returned in UTC.
//   - Lists are ordered by creation time, oldest first (audit: newest first).

// TenantStore keeps tenants.
type TenantStore interface {
	CreateTenant(ctx context.Context, t Tenant) error
	GetTenant(ctx context.Context, id string) (Tenant, error)
	ListTenants(ctx context.Context) ([]Tenant, error)
	// UpdateTenant changes Name and Disabled, and sets UpdatedAt.
	UpdateTenant(ctx context.Context, t Tenant) error
	// DeleteTenant removes the tenant and everything that belongs to it.
	DeleteTenant(ctx context.Context, id string) error
}

// UserStore keeps users.
type UserStore interface {
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, tenantID, id string) (User, error)
	ListUsers(ctx context.Context, tenantID string) ([]User, error)
	// UpdateUser changes Name and Role, and sets UpdatedAt.
	UpdateUser(ctx context.Context, u User) error
	// DeleteUser removes the user and their API keys.
	DeleteUser(ctx context.Context, tenantID, id string) error
}

// APIKeyStore keeps API keys.
type APIKeyStore interface {
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash finds a key by the hash of its secret, revoked or not
	// (the caller decides); KindNotFound when none matches.
	APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	// ListAPIKeys lists a tenant's keys; userID "" lists every user's.
	ListAPIKeys(ctx context.Context, tenantID, userID string) ([]APIKey, error)
	// RevokeAPIKey marks a key revoked (idempotent).
	RevokeAPIKey(ctx context.Context, tenantID, id string, at time.Time) error
	// TouchAPIKey records a use; it may be skipped when the last record is
	// recent, to spare writes.
	TouchAPIKey(ctx context.Context, id string, at time.Time) error
	// CountAPIKeys counts keys (revoked included) across all tenants; zero
	// means a fresh database that needs a bootstrap key.
	CountAPIKeys(ctx context.Context) (int, error)
}

// AgentSessionStore keeps agent sessions and their transcripts.
type AgentSessionStore interface {
	CreateAgentSession(ctx context.Context, s AgentSession) error
	// CreateAgentSessionWithin creates s, a running session, only if
	// fewer than maxTenant sessions of its tenant and fewer than maxUser
	// of its user are recorded as running (0: no limit). Concurrent calls
	// are serialized per tenant, so the limits hold for every instance
	// that shares the store. Over a limit the error is KindRateLimited and
	// wraps ErrSessionLimit, and nothing is created.
	CreateAgentSessionWithin(ctx context.Context, s AgentSession, maxTenant, maxUser int) error
	GetAgentSession(ctx context.Context, tenantID, id string) (AgentSession, error)
	// ListAgentSessions lists a tenant's sessions; userID "" lists all.
	ListAgentSessions(ctx context.Context, tenantID, userID string) ([]AgentSession, error)
	// UpdateAgentSession changes Name, State, Instance, LastActivityAt and
	// StoppedAt.
	UpdateAgentSession(ctx context.Context, s AgentSession) error
	// PutMessage writes a transcript message, replacing the one with the
	// same ID (an agent's reply grows while it works).
	PutMessage(ctx context.Context, tenantID, sessionID string, m Message) error
	// Messages returns a session's transcript ordered by message ID.
	Messages(ctx context.Context, tenantID, sessionID string) ([]Message, error)
}

// AuditLog records administrative actions.
type AuditLog interface {
	Audit(ctx context.Context, e AuditEntry) error
	// ListAudit returns a tenant's entries, newest first, at most limit.
	ListAudit(ctx context.Context, tenantID string, limit int) ([]AuditEntry, error)
}

// LoginSession is what a login (session token) grants. It is sealed before
// it is stored; stores never see it in the clear.
type LoginSession struct {
	TenantID  string    `json:"t"`
	UserID    string    `json:"u"`
	Role      UserRole  `json:"r"`
	KeyID     string    `json:"k"` // the API key used to log in
	CreatedAt time.Time `json:"c"`
	// ExpiresAt is the absolute end of the session, however active it is.
	ExpiresAt time.Time `json:"e"`
}

// SessionStore keeps sealed login sessions under opaque IDs (an HMAC of the
// token, never the token). Contract, for every backend:
//
//   - Put stores payload under id for ttl, and records id under owner (a
//     tenant/user key) so that DeleteOwner can find it.
//   - Get returns the payload and restarts its ttl (sliding expiry). A
//     missing, expired or deleted id is an error of kind KindNotFound.
//   - Delete removes id (idempotent). DeleteOwner removes every id recorded
//     under owner and returns how many there were. After either returns,
//     Get fails on every instance sharing the backend, caches included.
type SessionStore interface {
	Put(ctx context.Context, id, owner string, payload []byte, ttl time.Duration) error
	Get(ctx context.Context, id string, ttl time.Duration) ([]byte, error)
	Delete(ctx context.Context, id string) error
	DeleteOwner(ctx context.Context, owner string) (int, error)
}

// SecretInfo describes a tenant secret without its value.
type SecretInfo struct {
	Name      string    `json:"name"`
	UpdatedAt time.Time `json:"updated_at"`
}

// TenantSecretStore keeps a tenant's secrets (a model API key, say), which
// its agents receive as environment variables. Values arrive sealed: the
// store never sees them in the clear. Same contract as the stores above:
// a missing or foreign tenant or name is KindNotFound.
type TenantSecretStore interface {
	// PutSecret creates or replaces a secret.
	PutSecret(ctx context.Context, tenantID, name string, sealed []byte, at time.Time) error
	DeleteSecret(ctx context.Context, tenantID, name string) error
	// SecretNames lists names and update times, sorted by name.
	SecretNames(ctx context.Context, tenantID string) ([]SecretInfo, error)
	// Secrets returns every sealed value, by name.
	Secrets(ctx context.Context, tenantID string) (map[string][]byte, error)
}
