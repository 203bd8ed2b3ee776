package storetest

import (
	"fmt"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// RunAuditLog tests an AuditLog made by newStore.
func RunAuditLog(t *testing.T, newStore func(t *testing.T) agentapi.AuditLog) {
	t.Helper()
	run(t, newStore, auditBehaviours)
}

// entry returns an audit entry of tenantID at at(n).
func entry(tenantID, action, target string, n int) agentapi.AuditEntry {
	return agentapi.AuditEntry{At: at(n), TenantID: tenantID, ActorID: "ann", Action: action, Target: target}
}

// audit appends the given entries or fails the test.
func audit(t *testing.T, s agentapi.AuditLog, es ...agentapi.AuditEntry) {
	t.Helper()
	for _, e := range es {
		must(t, s.Audit(ctxFor(t), e), "Audit "+e.Action)
	}
}

// wantAudit checks ListAudit(tenantID, limit), ignoring the IDs the store
// assigned except that they must be distinct and non-zero.
func wantAudit(t *testing.T, s agentapi.AuditLog, tenantID string, limit int, want ...agentapi.AuditEntry) []agentapi.AuditEntry {
	t.Helper()
	got, err := s.ListAudit(ctxFor(t), tenantID, limit)
	what := fmt.Sprintf("ListAudit(%q, %d)", tenantID, limit)
	must(t, err, what)
	seen := map[int64]bool{}
	cleared := make([]agentapi.AuditEntry, len(got))
	for i, e := range got {
		if e.ID == 0 || seen[e.ID] {
			t.Errorf("%s: entry %d has ID %d, want a distinct non-zero ID", what, i, e.ID)
		}
		seen[e.ID] = true
		e.ID = 0
		cleared[i] = e
	}
	if want == nil {
		want = []agentapi.AuditEntry{}
	}
	wantEqual(t, cleared, want, what)
	return got
}

var auditBehaviours = []behaviour[agentapi.AuditLog]{
	{"NewestFirst", func(t *testing.T, s agentapi.AuditLog) {
		wantAudit(t, s, "acme", 10)
		e1 := entry("acme", "tenant.create", "acme", 1)
		e2 := entry("acme", "user.create", "ann", 2)
		e2.Detail = `{"role":"admin"} ✓`
		e3 := entry("acme", "apikey.revoke", "k1", 3)
		e3.ActorID = ""
		// Written out of time order: listed by At.
		audit(t, s, e1, e3, e2)
		wantAudit(t, s, "acme", 10, e3, e2, e1)
	}},
	{"SameTimeNewestWrittenFirst", func(t *testing.T, s agentapi.AuditLog) {
		var es []agentapi.AuditEntry
		for i := range 5 {
			e := entry("acme", "user.update", fmt.Sprintf("u%d", i), 1)
			audit(t, s, e)
			es = append([]agentapi.AuditEntry{e}, es...)
		}
		got := wantAudit(t, s, "acme", 10, es...)
		for i := 1; i < len(got); i++ {
			if got[i].ID >= got[i-1].ID {
				t.Errorf("ListAudit: IDs %d then %d, want later entries to have larger IDs", got[i-1].ID, got[i].ID)
			}
		}
	}},
	{"Limit", func(t *testing.T, s agentapi.AuditLog) {
		var es []agentapi.AuditEntry
		for i := range 7 {
			e := entry("acme", "user.create", fmt.Sprintf("u%d", i), i)
			audit(t, s, e)
			es = append([]agentapi.AuditEntry{e}, es...)
		}
		wantAudit(t, s, "acme", 3, es[:3]...)
		wantAudit(t, s, "acme", 1, es[:1]...)
		wantAudit(t, s, "acme", 7, es...)
		wantAudit(t, s, "acme", 100, es...)
	}},
	{"ByTenant", func(t *testing.T, s agentapi.AuditLog) {
		a := entry("acme", "user.create", "ann", 1)
		g := entry("globex", "user.create", "gus", 2)
		p := entry(agentapi.PlatformTenantID, "tenant.create", "acme", 3)
		audit(t, s, a, g, p)
		wantAudit(t, s, "acme", 10, a)
		wantAudit(t, s, "globex", 10, g)
		wantAudit(t, s, agentapi.PlatformTenantID, 10, p)
		wantAudit(t, s, "nope", 10)
	}},
	{"Invalid", func(t *testing.T, s agentapi.AuditLog) {
		noTenant := entry("", "user.create", "ann", 1)
		noAction := entry("acme", "", "ann", 1)
		wantKind(t, s.Audit(ctxFor(t), noTenant), agentapi.KindInvalid, "Audit without a tenant")
		wantKind(t, s.Audit(ctxFor(t), noAction), agentapi.KindInvalid, "Audit without an action")
		wantAudit(t, s, "acme", 10)
		wantAudit(t, s, "", 10)
	}},
	{"TimesUTCMillisecond", func(t *testing.T, s agentapi.AuditLog) {
		when := time.Date(2027, time.February, 3, 4, 5, 6, 789_999_999, time.FixedZone("CET", 3600))
		audit(t, s, agentapi.AuditEntry{At: when, TenantID: "acme", ActorID: "ann", Action: "tenant.update", Target: "acme"})
		es, err := s.ListAudit(ctxFor(t), "acme", 1)
		must(t, err, "ListAudit")
		if len(es) != 1 {
			t.Fatalf("ListAudit: %d entries, want 1", len(es))
		}
		wantMillisUTC(t, es[0].At, when, "At")
	}},
}
