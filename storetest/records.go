package storetest

import (
	"fmt"
	"sync"
	"testing"

	agentapi "github.com/agentapi-mt/agentapi"
)

// tenantContents is what one tenant holds in the cross-store tests.
type tenantContents struct {
	tenant   agentapi.Tenant
	users    []agentapi.User
	keys     []agentapi.APIKey
	sessions []agentapi.AgentSession
	messages []agentapi.Message // of every session
	audit    []agentapi.AuditEntry
}

// populate fills tenant id with two users with a key each, two sessions with
// a transcript each, and an audit entry.
func populate(t *testing.T, s Records, id string) tenantContents {
	t.Helper()
	c := tenantContents{
		tenant:   tenant(id, 0),
		users:    []agentapi.User{user(id, id+"-ann", 1), user(id, id+"-bob", 2)},
		keys:     []agentapi.APIKey{apiKey(id, id+"-ann", id+"-k1", 3), apiKey(id, id+"-bob", id+"-k2", 4)},
		sessions: []agentapi.AgentSession{session(id, id+"-ann", id+"-s1", 5), session(id, id+"-bob", id+"-s2", 6)},
		messages: []agentapi.Message{message(0, agentapi.RoleUser, "hi from "+id, 7), message(1, agentapi.RoleAgent, "hello", 8)},
		audit:    []agentapi.AuditEntry{entry(id, "tenant.create", id, 9)},
	}
	createTenants(t, s, c.tenant)
	createUsers(t, s, c.users...)
	createKeys(t, s, c.keys...)
	createSessions(t, s, c.sessions...)
	for _, se := range c.sessions {
		putMessages(t, s, id, se.ID, c.messages...)
	}
	audit(t, s, c.audit...)
	return c
}

// wantContents checks that everything of c is stored unchanged.
func wantContents(t *testing.T, s Records, c tenantContents) {
	t.Helper()
	id := c.tenant.ID
	wantTenant(t, s, c.tenant)
	wantUsers(t, s, id, c.users...)
	wantKeys(t, s, id, "", c.keys...)
	for _, k := range c.keys {
		wantKey(t, s, k)
	}
	wantSessions(t, s, id, "", c.sessions...)
	for _, se := range c.sessions {
		wantMessages(t, s, id, se.ID, c.messages...)
	}
	wantAudit(t, s, id, 10, c.audit...)
}

var recordsBehaviours = []behaviour[Records]{
	{"DeleteTenantCascades", func(t *testing.T, s Records) {
		acme := populate(t, s, "acme")
		globex := populate(t, s, "globex")
		wantKeyCount(t, s, 4)

		must(t, s.DeleteTenant(ctxFor(t), "acme"), "DeleteTenant")
		_, err := s.GetTenant(ctxFor(t), "acme")
		wantKind(t, err, agentapi.KindNotFound, "GetTenant of the deleted tenant")
		for _, u := range acme.users {
			_, err := s.GetUser(ctxFor(t), "acme", u.ID)
			wantKind(t, err, agentapi.KindNotFound, "GetUser of the deleted tenant's "+u.ID)
		}
		for _, k := range acme.keys {
			_, err := s.APIKeyByHash(ctxFor(t), k.Hash)
			wantKind(t, err, agentapi.KindNotFound, "APIKeyByHash of the deleted tenant's "+k.ID)
			wantKind(t, s.TouchAPIKey(ctxFor(t), k.ID, at(100)), agentapi.KindNotFound, "TouchAPIKey of the deleted tenant's "+k.ID)
		}
		for _, se := range acme.sessions {
			_, err := s.GetAgentSession(ctxFor(t), "acme", se.ID)
			wantKind(t, err, agentapi.KindNotFound, "GetAgentSession of the deleted tenant's "+se.ID)
			_, err = s.Messages(ctxFor(t), "acme", se.ID)
			wantKind(t, err, agentapi.KindNotFound, "Messages of the deleted tenant's "+se.ID)
		}
		wantUsers(t, s, "acme")
		wantKeys(t, s, "acme", "")
		wantSessions(t, s, "acme", "")
		wantAudit(t, s, "acme", 10, acme.audit...) // the audit trail stays
		wantKeyCount(t, s, 2)
		wantContents(t, s, globex)

		// A new tenant with the same id starts empty.
		createTenants(t, s, tenant("acme", 50))
		wantUsers(t, s, "acme")
		wantKeys(t, s, "acme", "")
		wantSessions(t, s, "acme", "")
		createSessions(t, s, acme.sessions[0])
		wantMessages(t, s, "acme", acme.sessions[0].ID)
	}},
	{"CrossTenant", func(t *testing.T, s Records) {
		acme := populate(t, s, "acme")
		globex := populate(t, s, "globex")
		ann, key, ses := acme.users[0], acme.keys[0], acme.sessions[0]
		// Every tenant-scoped call, made by globex with acme's ids.
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"GetUser", func() error { _, err := s.GetUser(ctxFor(t), "globex", ann.ID); return err }},
			{"UpdateUser", func() error {
				u := ann
				u.TenantID, u.Role = "globex", agentapi.RoleAdmin
				return s.UpdateUser(ctxFor(t), u)
			}},
			{"DeleteUser", func() error { return s.DeleteUser(ctxFor(t), "globex", ann.ID) }},
			{"CreateAPIKey", func() error { return s.CreateAPIKey(ctxFor(t), apiKey("globex", ann.ID, "stolen", 20)) }},
			{"RevokeAPIKey", func() error { return s.RevokeAPIKey(ctxFor(t), "globex", key.ID, at(20)) }},
			{"GetAgentSession", func() error { _, err := s.GetAgentSession(ctxFor(t), "globex", ses.ID); return err }},
			{"UpdateAgentSession", func() error {
				se := ses
				se.TenantID, se.State = "globex", agentapi.SessionLost
				return s.UpdateAgentSession(ctxFor(t), se)
			}},
			{"PutMessage", func() error {
				return s.PutMessage(ctxFor(t), "globex", ses.ID, message(0, agentapi.RoleUser, "overwritten", 20))
			}},
			{"Messages", func() error { _, err := s.Messages(ctxFor(t), "globex", ses.ID); return err }},
		} {
			wantKind(t, tc.call(), agentapi.KindNotFound, tc.name+" with another tenant's id")
		}
		wantContents(t, s, acme)
		wantContents(t, s, globex)
		wantKeys(t, s, "globex", ann.ID)
		wantSessions(t, s, "globex", ann.ID)
		wantKeyCount(t, s, 4)
	}},
	{"Concurrent", func(t *testing.T, s Records) {
		createTenants(t, s, tenant("acme", 0))
		createSessions(t, s, session("acme", "ann", "s1", 0))
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		for g := range Goroutines {
			wg.Go(func() {
				u := user("acme", fmt.Sprintf("u%02d", g), g)
				k := apiKey("acme", u.ID, "k-"+u.ID, g)
				steps := []struct {
					name string
					call func() error
				}{
					{"CreateUser", func() error { return s.CreateUser(ctx, u) }},
					{"CreateAPIKey", func() error { return s.CreateAPIKey(ctx, k) }},
					{"PutMessage", func() error {
						return s.PutMessage(ctx, "acme", "s1", message(g, agentapi.RoleUser, u.ID, g))
					}},
					{"TouchAPIKey", func() error { return s.TouchAPIKey(ctx, k.ID, at(1000+g)) }},
					{"Audit", func() error { return s.Audit(ctx, entry("acme", "user.create", u.ID, g)) }},
					{"ListUsers", func() error { _, err := s.ListUsers(ctx, "acme"); return err }},
					{"APIKeyByHash", func() error { _, err := s.APIKeyByHash(ctx, k.Hash); return err }},
					{"Messages", func() error { _, err := s.Messages(ctx, "acme", "s1"); return err }},
					{"ListAudit", func() error { _, err := s.ListAudit(ctx, "acme", 5); return err }},
				}
				for _, st := range steps {
					if err := st.call(); err != nil {
						t.Errorf("goroutine %d: %s: %v", g, st.name, err)
						return
					}
				}
			})
		}
		wg.Wait()
		us, err := s.ListUsers(ctx, "acme")
		must(t, err, "ListUsers")
		ms, err := s.Messages(ctx, "acme", "s1")
		must(t, err, "Messages")
		es, err := s.ListAudit(ctx, "acme", 100)
		must(t, err, "ListAudit")
		if len(us) != Goroutines || len(ms) != Goroutines || len(es) != Goroutines {
			t.Errorf("after concurrent use: %d users, %d messages, %d audit entries; want %d of each", len(us), len(ms), len(es), Goroutines)
		}
		wantKeyCount(t, s, Goroutines)
	}},
}
