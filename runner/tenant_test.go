package runner

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

func TestTenantConfigurationReplacesTheServerLimits(t *testing.T) {
	var cfg atomic.Pointer[agentapi.TenantConfig]
	cfg.Store(&agentapi.TenantConfig{AllowedAgents: []string{"claude"}})
	m, _ := newManager(t, Options{MaxPerTenant: 10, MaxPerUser: 10, Tenant: func(ctx context.Context, id string) (agentapi.TenantConfig, error) {
		if id != "acme" {
			return agentapi.TenantConfig{}, agentapi.E("test", agentapi.KindNotFound, nil)
		}
		return *cfg.Load(), nil
	}})
	ctx := context.Background()
	if _, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"}); agentapi.KindOf(err) != agentapi.KindForbidden {
		t.Fatalf("an agent outside allowed_agents: %v, want KindForbidden", err)
	}
	cfg.Store(&agentapi.TenantConfig{MaxSessions: 2, MaxSessionsPerUser: 1})
	if _, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"}); agentapi.KindOf(err) != agentapi.KindRateLimited {
		t.Fatalf("second session of a user with max_sessions_per_user 1: %v", err)
	}
	if _, err := m.Start(ctx, "acme", "u2", StartRequest{Agent: "echo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "acme", "u3", StartRequest{Agent: "echo"}); agentapi.KindOf(err) != agentapi.KindRateLimited {
		t.Fatalf("third session of a tenant with max_sessions 2: %v", err)
	}
	if m.Running() != 2 {
		t.Fatalf("running %d, want 2", m.Running())
	}
}

func TestTenantIdleTimeoutAndRunTimeAccounting(t *testing.T) {
	var mu sync.Mutex
	seconds := map[string]int64{}
	m, db := newManager(t, Options{
		IdleTimeout: time.Hour, // the tenant's own, shorter timeout applies
		Tenant: func(ctx context.Context, id string) (agentapi.TenantConfig, error) {
			return agentapi.TenantConfig{IdleTimeoutSeconds: 60}, nil
		},
		SessionSeconds: func(tenant, user string, n int64) {
			mu.Lock()
			seconds[tenant+"/"+user] += n
			mu.Unlock()
		},
	})
	ctx := context.Background()
	rec, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the agent to settle (idle stops only stable agents).
	s := stableSession(t, m, rec.ID)
	// As if it had run for 90.7 s, the last 61 of them unused.
	s.accounted.Store(time.Now().Add(-90*time.Second - 700*time.Millisecond).UnixNano())
	s.lastUsed.Store(time.Now().Add(-30 * time.Second).UnixNano())
	m.sweep(ctx)
	if m.Running() != 1 {
		t.Fatal("a session used 30 s ago was stopped with a 60 s timeout")
	}
	mu.Lock()
	if got := seconds["acme/u1"]; got != 90 {
		t.Fatalf("accounted %d s at the sweep, want 90", got)
	}
	mu.Unlock()
	s.lastUsed.Store(time.Now().Add(-61 * time.Second).UnixNano())
	before := time.Now()
	m.sweep(ctx)
	took := time.Since(before)
	if m.Running() != 0 {
		t.Fatal("the tenant's idle timeout did not stop the session")
	}
	got, _ := db.GetAgentSession(ctx, "acme", rec.ID)
	if got.State != agentapi.SessionStopped {
		t.Fatalf("state %s", got.State)
	}
	mu.Lock()
	defer mu.Unlock()
	// 0.7 s were left at the first sweep, plus the time until the stop
	// (at most what the second sweep took), rounded to the nearest second.
	most := 90 + int64(math.Floor(0.7+took.Seconds()+0.5+0.1))
	if got := seconds["acme/u1"]; got < 91 || got > most {
		t.Fatalf("accounted %d s in all, want 91..%d", got, most)
	}
}

func TestChangedIsToldOfEverySessionWrite(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	m, _ := newManager(t, Options{Changed: func(tenant, session string, transcript bool) {
		if transcript {
			return
		}
		mu.Lock()
		seen = append(seen, tenant+"/"+session)
		mu.Unlock()
	}})
	ctx := context.Background()
	s, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "acme/"+s.ID {
		t.Fatalf("after start: %v", seen)
	}
	mu.Unlock()
	if err := m.Stop(ctx, "acme", s.ID); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[1] != "acme/"+s.ID {
		t.Fatalf("after stop: %v", seen)
	}
}

// TestSweepStopsSessionsMarkedEndedElsewhere: a session another instance
// marked lost (this one was presumed dead) is stopped here at the next
// sweep; its record stays lost and its transcript is complete.
func TestSweepStopsSessionsMarkedEndedElsewhere(t *testing.T) {
	m, db := newManager(t, Options{})
	ctx := context.Background()
	rec, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	stableSession(t, m, rec.ID) // it greeted: there is a transcript
	lost := rec
	lost.State = agentapi.SessionLost
	now := time.Now().UTC()
	lost.StoppedAt = &now
	if err := db.UpdateAgentSession(ctx, lost); err != nil {
		t.Fatal(err)
	}
	m.sweep(ctx)
	if _, ok := m.Handler("acme", rec.ID); ok {
		t.Fatal("the session marked lost still runs after the sweep")
	}
	if _, ok := m.Handler("acme", keep.ID); !ok {
		t.Fatal("the sweep stopped a session still recorded as running")
	}
	got, err := db.GetAgentSession(ctx, "acme", rec.ID)
	if err != nil || got.State != agentapi.SessionLost {
		t.Fatalf("record after the sweep: %+v %v, want lost", got, err)
	}
	msgs, err := db.Messages(ctx, "acme", rec.ID)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("transcript of the stopped session: %v %v", msgs, err)
	}
}

// TestSharedLimitsHoldAcrossInstances: two instances on one store, each
// with SharedLimits, together run no more than the tenant's limit; a
// session that ends frees its place for either.
func TestSharedLimitsHoldAcrossInstances(t *testing.T) {
	a, db := newManager(t, Options{SharedLimits: true, Instance: "a", Tenant: func(ctx context.Context, id string) (agentapi.TenantConfig, error) {
		return agentapi.TenantConfig{MaxSessions: 1}, nil
	}})
	b := New(Options{Store: db, SharedLimits: true, Instance: "b", Self: a.o.Self, WorkRoot: t.TempDir(), SettleWindow: 200 * time.Millisecond,
		Tenant: func(ctx context.Context, id string) (agentapi.TenantConfig, error) {
			return agentapi.TenantConfig{MaxSessions: 1}, nil
		}})
	t.Cleanup(b.Close)
	ctx := context.Background()
	rec, err := a.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(ctx, "acme", "u2", StartRequest{Agent: "echo"}); agentapi.KindOf(err) != agentapi.KindRateLimited || !errors.Is(err, ErrLimit) {
		t.Fatalf("a second session of a tenant limited to 1, on the other instance: %v", err)
	}
	if b.Running() != 0 {
		t.Fatalf("the refused start left %d sessions running on b", b.Running())
	}
	if err := a.Stop(ctx, "acme", rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(ctx, "acme", "u2", StartRequest{Agent: "echo"}); err != nil {
		t.Fatalf("after the stop: %v", err)
	}
}
