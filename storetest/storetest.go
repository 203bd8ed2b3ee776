// Package storetest holds conformance suites for the store interfaces of
// package agentapi: the record stores TenantStore, UserStore, APIKeyStore,
// AgentSessionStore and AuditLog (RunRecords and the Run functions named
// after each), and SessionStore (RunSessionStore). Every implementation
// runs the same suites from its own tests, so that all of them honour the
// written contract the same way:
//
//	func TestConformance(t *testing.T) {
//		storetest.RunRecords(t, func(t *testing.T) storetest.Records {
//			return openFreshStore(t) // closed by t.Cleanup
//		})
//	}
//
// Each record suite is a table of behaviours, run as parallel subtests. The
// constructor is called once per subtest, possibly from several goroutines
// at once, and must return a new, empty store that is released at the
// cleanup of the *testing.T it is given.
//
// Beyond the comments in package agentapi, the record suites pin down these
// points, which every implementation must share:
//
//   - Required fields: Tenant ID and Name; User ID, TenantID, Name and Role;
//     APIKey ID, TenantID, UserID and Hash; AgentSession ID, TenantID,
//     UserID, AgentType and State; AuditEntry TenantID and Action. An empty
//     one is KindInvalid, on create and on update.
//   - Creating a record under a tenant (or, for an API key, a user of the
//     tenant) that does not exist is KindNotFound, like any foreign record.
//   - A second key with the hash of an existing key is KindConflict.
//   - UpdateTenant and UpdateUser store the UpdatedAt they are given, or
//     the current time when it is zero. Fields an update does not change
//     keep their stored value whatever the argument holds.
//   - RevokeAPIKey of a revoked key succeeds and keeps the first RevokedAt.
//   - TouchAPIKey of an unknown key is KindNotFound; a touch less than a
//     minute after the recorded one is skipped, so LastUsedAt keeps the
//     earlier time; a later one is recorded.
//   - Messages of a session without messages is an empty list, not an
//     error; PutMessage and Messages of a missing or foreign session are
//     KindNotFound.
//   - Audit entries get distinct non-zero IDs; ListAudit orders by At,
//     newest first, and entries with the same At newest-written first.
//   - Deleting a tenant deletes its users, their keys, its sessions and
//     their transcripts, but not its audit entries.
package storetest

import (
	"context"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// UserStores is what RunUserStore needs: users live in tenants.
type UserStores interface {
	agentapi.TenantStore
	agentapi.UserStore
}

// APIKeyStores is what RunAPIKeyStore needs: keys belong to users of
// tenants.
type APIKeyStores interface {
	agentapi.TenantStore
	agentapi.UserStore
	agentapi.APIKeyStore
}

// AgentSessionStores is what RunAgentSessionStore needs: sessions live in
// tenants.
type AgentSessionStores interface {
	agentapi.TenantStore
	agentapi.AgentSessionStore
}

// Records is a store implementing every record interface, as a database
// does; RunRecords tests it.
type Records interface {
	agentapi.TenantStore
	agentapi.UserStore
	agentapi.APIKeyStore
	agentapi.AgentSessionStore
	agentapi.AuditLog
}

// Goroutines is how many goroutines the concurrency tests run at once.
const Goroutines = 20

// callTimeout bounds the calls of one subtest.
const callTimeout = time.Minute

// behaviour is one row of a suite: a named test run on a fresh store.
type behaviour[S any] struct {
	name string
	test func(t *testing.T, s S)
}

// run runs each behaviour as a parallel subtest with a store of its own.
func run[S any](t *testing.T, newStore func(*testing.T) S, behaviours []behaviour[S]) {
	t.Helper()
	for _, b := range behaviours {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			b.test(t, newStore(t))
		})
	}
}

// RunRecords runs every suite of this package against stores made by
// newStore, plus the behaviours that span several stores: tenant deletion
// and concurrent use of all of them.
func RunRecords(t *testing.T, newStore func(t *testing.T) Records) {
	t.Helper()
	t.Run("TenantStore", func(t *testing.T) {
		RunTenantStore(t, func(t *testing.T) agentapi.TenantStore { return newStore(t) })
	})
	t.Run("UserStore", func(t *testing.T) {
		RunUserStore(t, func(t *testing.T) UserStores { return newStore(t) })
	})
	t.Run("APIKeyStore", func(t *testing.T) {
		RunAPIKeyStore(t, func(t *testing.T) APIKeyStores { return newStore(t) })
	})
	t.Run("AgentSessionStore", func(t *testing.T) {
		RunAgentSessionStore(t, func(t *testing.T) AgentSessionStores { return newStore(t) })
	})
	t.Run("AuditLog", func(t *testing.T) {
		RunAuditLog(t, func(t *testing.T) agentapi.AuditLog { return newStore(t) })
	})
	t.Run("Records", func(t *testing.T) {
		run(t, newStore, recordsBehaviours)
	})
}

// ctxFor returns a context for the calls of test t.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// t0 is the time the suites' records are created at: millisecond-precise,
// so that every implementation returns it unchanged (in UTC).
var t0 = time.Date(2024, time.May, 6, 7, 8, 9, 123_000_000, time.UTC)

// at returns t0 plus n seconds.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }
