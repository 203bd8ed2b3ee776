package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// RunAgentSessionStore tests an AgentSessionStore made by newStore; tenants
// are created through the same store.
func RunAgentSessionStore(t *testing.T, newStore func(t *testing.T) AgentSessionStores) {
	t.Helper()
	run(t, newStore, sessionBehaviours)
}

// session returns a valid running session of user userID in tenantID,
// created at at(n).
func session(tenantID, userID, id string, n int) agentapi.AgentSession {
	return agentapi.AgentSession{
		ID: id, TenantID: tenantID, UserID: userID, Name: "session " + id,
		AgentType: "claude", State: agentapi.SessionRunning, Instance: "instance-1",
		CreatedAt: at(n), LastActivityAt: at(n),
	}
}

// message returns message id written at at(n).
func message(id int, role agentapi.Role, content string, n int) agentapi.Message {
	return agentapi.Message{ID: id, Role: role, Content: content, Time: at(n)}
}

// createSessions creates the given sessions or fails the test.
func createSessions(t *testing.T, s agentapi.AgentSessionStore, ss ...agentapi.AgentSession) {
	t.Helper()
	for _, se := range ss {
		must(t, s.CreateAgentSession(ctxFor(t), se), "CreateAgentSession "+se.ID)
	}
}

// putMessages writes the given messages or fails the test.
func putMessages(t *testing.T, s agentapi.AgentSessionStore, tenantID, sessionID string, ms ...agentapi.Message) {
	t.Helper()
	for _, m := range ms {
		must(t, s.PutMessage(ctxFor(t), tenantID, sessionID, m), fmt.Sprintf("PutMessage %s/%d", sessionID, m.ID))
	}
}

// wantSession checks that session want.ID is stored as want.
func wantSession(t *testing.T, s agentapi.AgentSessionStore, want agentapi.AgentSession) {
	t.Helper()
	got, err := s.GetAgentSession(ctxFor(t), want.TenantID, want.ID)
	must(t, err, "GetAgentSession "+want.ID)
	wantEqual(t, got, want, "GetAgentSession "+want.ID)
}

// wantSessions checks a listing of sessions.
func wantSessions(t *testing.T, s agentapi.AgentSessionStore, tenantID, userID string, want ...agentapi.AgentSession) {
	t.Helper()
	got, err := s.ListAgentSessions(ctxFor(t), tenantID, userID)
	what := fmt.Sprintf("ListAgentSessions(%q, %q)", tenantID, userID)
	must(t, err, what)
	if want == nil {
		want = []agentapi.AgentSession{}
	}
	wantEqual(t, got, want, what)
}

// wantMessages checks a transcript.
func wantMessages(t *testing.T, s agentapi.AgentSessionStore, tenantID, sessionID string, want ...agentapi.Message) {
	t.Helper()
	got, err := s.Messages(ctxFor(t), tenantID, sessionID)
	what := fmt.Sprintf("Messages(%q, %q)", tenantID, sessionID)
	must(t, err, what)
	if want == nil {
		want = []agentapi.Message{}
	}
	wantEqual(t, got, want, what)
}

var sessionBehaviours = []behaviour[AgentSessionStores]{
	{"CreateGet", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		running := session("acme", "ann", "s1", 1)
		running.LastActivityAt = at(5)
		stopped := session("globex", "gus", "s2", 2)
		stopped.State, stopped.Instance, stopped.StoppedAt = agentapi.SessionStopped, "", ptr(at(3))
		minimal := agentapi.AgentSession{ID: "s3", TenantID: "acme", UserID: "bob", AgentType: "echo",
			State: agentapi.SessionExited, CreatedAt: at(4), LastActivityAt: at(4)}
		for _, se := range []agentapi.AgentSession{running, stopped, minimal} {
			createSessions(t, s, se)
			wantSession(t, s, se)
		}
	}},
	{"CreateConflict", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		orig := session("acme", "ann", "s1", 1)
		createSessions(t, s, orig)
		putMessages(t, s, "acme", "s1", message(0, agentapi.RoleUser, "hi", 2))
		dup := session("acme", "bob", "s1", 9)
		dup.Name = "impostor"
		wantKind(t, s.CreateAgentSession(ctxFor(t), dup), agentapi.KindConflict, "CreateAgentSession with an existing id")
		wantSession(t, s, orig)
		wantMessages(t, s, "acme", "s1", message(0, agentapi.RoleUser, "hi", 2))
	}},
	{"CreateWithinLimits", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		ctx := ctxFor(t)
		within := func(se agentapi.AgentSession, maxTenant, maxUser int) error {
			return s.CreateAgentSessionWithin(ctx, se, maxTenant, maxUser)
		}
		refused := func(err error, what string, se agentapi.AgentSession) {
			t.Helper()
			wantKind(t, err, agentapi.KindRateLimited, what)
			if !errors.Is(err, agentapi.ErrSessionLimit) {
				t.Errorf("%s: %v does not wrap ErrSessionLimit", what, err)
			}
			_, err = s.GetAgentSession(ctx, se.TenantID, se.ID)
			wantKind(t, err, agentapi.KindNotFound, what+": the refused session exists")
		}
		a1, a2, a3 := session("acme", "ann", "a1", 1), session("acme", "ann", "a2", 2), session("acme", "ann", "a3", 3)
		must(t, within(a1, 3, 2), "ann's first")
		must(t, within(a2, 3, 2), "ann's second")
		refused(within(a3, 3, 2), "ann's third over her limit of 2", a3)
		b1, c1 := session("acme", "bob", "b1", 4), session("acme", "cy", "c1", 5)
		must(t, within(b1, 3, 2), "bob's first")
		refused(within(c1, 3, 2), "a fourth session of a tenant limited to 3", c1)
		// Another tenant's sessions do not count; 0 is no limit.
		must(t, within(session("globex", "gus", "g1", 6), 1, 1), "globex's first")
		must(t, within(session("globex", "gus", "g2", 7), 0, 0), "no limits")
		// Ended sessions do not count.
		stopped := a1
		stopped.State, stopped.StoppedAt = agentapi.SessionStopped, ptr(at(8))
		must(t, s.UpdateAgentSession(ctx, stopped), "stop a1")
		must(t, within(c1, 3, 2), "cy's first once a1 stopped")
		wantSession(t, s, c1)
		notRunning := session("acme", "dee", "d1", 9)
		notRunning.State = agentapi.SessionStopped
		wantKind(t, within(notRunning, 0, 0), agentapi.KindInvalid, "a session that is not running")
		wantKind(t, within(session("acme", "dee", "b1", 9), 0, 0), agentapi.KindConflict, "an existing id")
	}},
	{"CreateWithinLimitsConcurrent", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		created, limited := 0, 0
		for i := range 10 {
			wg.Go(func() {
				err := s.CreateAgentSessionWithin(ctx, session("acme", fmt.Sprintf("u%d", i), fmt.Sprintf("s%d", i), i), 4, 0)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					created++
				case errors.Is(err, agentapi.ErrSessionLimit):
					limited++
				default:
					t.Errorf("session %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		list, err := s.ListAgentSessions(ctx, "acme", "")
		must(t, err, "ListAgentSessions")
		if created != 4 || limited != 6 || len(list) != 4 {
			t.Fatalf("10 concurrent starts under a limit of 4: %d created, %d refused, %d recorded", created, limited, len(list))
		}
	}},
	{"CreateInvalid", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		valid := session("acme", "ann", "s1", 1)
		for _, tc := range []struct {
			name   string
			modify func(*agentapi.AgentSession)
		}{
			{"no id", func(se *agentapi.AgentSession) { se.ID = "" }},
			{"no tenant", func(se *agentapi.AgentSession) { se.TenantID = "" }},
			{"no user", func(se *agentapi.AgentSession) { se.UserID = "" }},
			{"no agent type", func(se *agentapi.AgentSession) { se.AgentType = "" }},
			{"no state", func(se *agentapi.AgentSession) { se.State = "" }},
		} {
			se := valid
			tc.modify(&se)
			wantKind(t, s.CreateAgentSession(ctxFor(t), se), agentapi.KindInvalid, "CreateAgentSession with "+tc.name)
		}
		wantSessions(t, s, "acme", "")
	}},
	{"CreateInMissingTenant", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		wantKind(t, s.CreateAgentSession(ctxFor(t), session("nope", "ann", "s1", 1)), agentapi.KindNotFound, "CreateAgentSession in a missing tenant")
		_, err := s.GetAgentSession(ctxFor(t), "nope", "s1")
		wantKind(t, err, agentapi.KindNotFound, "GetAgentSession after a failed create")
	}},
	{"GetMissing", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		createSessions(t, s, session("acme", "ann", "s1", 1))
		for _, tc := range [][2]string{{"acme", "nope"}, {"acme", ""}, {"nope", "s1"}, {"", "s1"}} {
			_, err := s.GetAgentSession(ctxFor(t), tc[0], tc[1])
			wantKind(t, err, agentapi.KindNotFound, fmt.Sprintf("GetAgentSession(%q, %q)", tc[0], tc[1]))
		}
	}},
	{"ListOrderedByCreation", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		wantSessions(t, s, "acme", "")
		a1, a2 := session("acme", "ann", "z1", 1), session("acme", "ann", "a2", 3)
		b1 := session("acme", "bob", "m1", 2)
		g1 := session("globex", "gus", "g1", 0)
		createSessions(t, s, a2, g1, b1, a1)
		wantSessions(t, s, "acme", "", a1, b1, a2)
		wantSessions(t, s, "acme", "ann", a1, a2)
		wantSessions(t, s, "acme", "bob", b1)
		wantSessions(t, s, "acme", "gus")
		wantSessions(t, s, "globex", "", g1)
		wantSessions(t, s, "nope", "")
	}},
	{"Update", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		orig, other := session("acme", "ann", "s1", 1), session("acme", "ann", "s2", 2)
		createSessions(t, s, orig, other)

		upd := orig
		upd.Name, upd.State, upd.Instance = "renamed", agentapi.SessionStopped, ""
		upd.LastActivityAt, upd.StoppedAt = at(50), ptr(at(60))
		// Not changed by an update:
		upd.UserID, upd.AgentType, upd.CreatedAt = "bob", "codex", at(999)
		must(t, s.UpdateAgentSession(ctxFor(t), upd), "UpdateAgentSession")
		want := orig
		want.Name, want.State, want.Instance = "renamed", agentapi.SessionStopped, ""
		want.LastActivityAt, want.StoppedAt = at(50), ptr(at(60))
		wantSession(t, s, want)
		wantSession(t, s, other)

		// Running again on another instance: StoppedAt is cleared.
		upd = want
		upd.State, upd.Instance, upd.LastActivityAt, upd.StoppedAt = agentapi.SessionRunning, "instance-2", at(70), nil
		must(t, s.UpdateAgentSession(ctxFor(t), upd), "UpdateAgentSession back to running")
		wantSession(t, s, upd)
	}},
	{"UpdateFailuresChangeNothing", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		orig := session("acme", "ann", "s1", 1)
		createSessions(t, s, orig)
		noState := orig
		noState.Name, noState.State = "changed", ""
		missing := session("acme", "ann", "nope", 1)
		wantKind(t, s.UpdateAgentSession(ctxFor(t), noState), agentapi.KindInvalid, "UpdateAgentSession without a state")
		wantKind(t, s.UpdateAgentSession(ctxFor(t), missing), agentapi.KindNotFound, "UpdateAgentSession of a missing session")
		wantSession(t, s, orig)
		wantSessions(t, s, "acme", "", orig)
	}},
	{"Transcript", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		createSessions(t, s, session("acme", "ann", "s1", 1), session("acme", "ann", "s2", 2))
		wantMessages(t, s, "acme", "s1") // no messages yet: empty, not an error

		// Written out of order, with ids that sort differently as text.
		m0 := message(0, agentapi.RoleUser, "hello", 10)
		m1 := message(1, agentapi.RoleAgent, "", 11)
		m2 := message(2, agentapi.RoleUser, "multi\nline 'quoted' \"text\" ✓ \x01", 12)
		m10 := message(10, agentapi.RoleAgent, strings.Repeat("long reply ", 10_000), 13)
		putMessages(t, s, "acme", "s1", m10, m2, m0, m1)
		putMessages(t, s, "acme", "s2", message(0, agentapi.RoleUser, "other session", 14))
		wantMessages(t, s, "acme", "s1", m0, m1, m2, m10)

		// The agent's reply grows: the message is replaced.
		m1 = message(1, agentapi.RoleAgent, "working", 20)
		putMessages(t, s, "acme", "s1", m1)
		m1 = message(1, agentapi.RoleAgent, "working... done", 21)
		putMessages(t, s, "acme", "s1", m1)
		wantMessages(t, s, "acme", "s1", m0, m1, m2, m10)
		wantMessages(t, s, "acme", "s2", message(0, agentapi.RoleUser, "other session", 14))
	}},
	{"TranscriptOfMissingSession", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		createSessions(t, s, session("acme", "ann", "s1", 1))
		wantKind(t, s.PutMessage(ctxFor(t), "acme", "nope", message(0, agentapi.RoleUser, "x", 1)), agentapi.KindNotFound, "PutMessage to a missing session")
		_, err := s.Messages(ctxFor(t), "acme", "nope")
		wantKind(t, err, agentapi.KindNotFound, "Messages of a missing session")
		wantMessages(t, s, "acme", "s1")
	}},
	{"MessageTimesUTCMillisecond", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		createSessions(t, s, session("acme", "ann", "s1", 1))
		when := time.Date(2030, time.July, 1, 12, 0, 0, 456_789_012, time.FixedZone("PDT", -7*3600))
		putMessages(t, s, "acme", "s1", agentapi.Message{ID: 0, Role: agentapi.RoleAgent, Content: "x", Time: when})
		ms, err := s.Messages(ctxFor(t), "acme", "s1")
		must(t, err, "Messages")
		if len(ms) != 1 {
			t.Fatalf("Messages: %d messages, want 1", len(ms))
		}
		wantMillisUTC(t, ms[0].Time, when, "message Time")
	}},
	{"CrossTenant", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		mine, theirs := session("acme", "ann", "s1", 1), session("globex", "gus", "g1", 2)
		createSessions(t, s, mine, theirs)
		m0 := message(0, agentapi.RoleUser, "mine", 3)
		putMessages(t, s, "acme", "s1", m0)
		hijack := mine
		hijack.TenantID, hijack.Name, hijack.State = "globex", "hijacked", agentapi.SessionStopped
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"GetAgentSession", func() error { _, err := s.GetAgentSession(ctxFor(t), "globex", "s1"); return err }},
			{"UpdateAgentSession", func() error { return s.UpdateAgentSession(ctxFor(t), hijack) }},
			{"PutMessage (new id)", func() error {
				return s.PutMessage(ctxFor(t), "globex", "s1", message(1, agentapi.RoleUser, "injected", 4))
			}},
			{"PutMessage (existing id)", func() error {
				return s.PutMessage(ctxFor(t), "globex", "s1", message(0, agentapi.RoleUser, "overwritten", 4))
			}},
			{"Messages", func() error { _, err := s.Messages(ctxFor(t), "globex", "s1"); return err }},
		} {
			wantKind(t, tc.call(), agentapi.KindNotFound, tc.name+" of another tenant's session")
		}
		wantSession(t, s, mine)
		wantMessages(t, s, "acme", "s1", m0)
		wantSessions(t, s, "globex", "", theirs)
		wantSessions(t, s, "globex", "ann")
		wantSessions(t, s, "acme", "", mine)
	}},
	{"Concurrent", func(t *testing.T, s AgentSessionStores) {
		twoTenants(t, s)
		createSessions(t, s, session("acme", "ann", "s1", 1))
		const perGoroutine = 5
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		for g := range Goroutines {
			wg.Go(func() {
				for i := range perGoroutine {
					// Distinct messages, plus all goroutines rewriting message 0.
					m := message(1+g*perGoroutine+i, agentapi.RoleAgent, fmt.Sprintf("g%d i%d", g, i), i)
					if err := s.PutMessage(ctx, "acme", "s1", m); err != nil {
						t.Errorf("PutMessage %d: %v", m.ID, err)
					}
					if err := s.PutMessage(ctx, "acme", "s1", message(0, agentapi.RoleAgent, fmt.Sprintf("from %d", g), i)); err != nil {
						t.Errorf("PutMessage 0: %v", err)
					}
					if _, err := s.Messages(ctx, "acme", "s1"); err != nil {
						t.Errorf("Messages: %v", err)
					}
				}
			})
		}
		wg.Wait()
		ms, err := s.Messages(ctx, "acme", "s1")
		must(t, err, "Messages")
		if want := 1 + Goroutines*perGoroutine; len(ms) != want {
			t.Fatalf("Messages after concurrent writes: %d, want %d", len(ms), want)
		}
		for i, m := range ms {
			if m.ID != i {
				t.Fatalf("Messages[%d].ID = %d, want %d (ordered by ID)", i, m.ID, i)
			}
		}
	}},
}
