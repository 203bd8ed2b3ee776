package runner

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

func TestActiveCounts(t *testing.T) {
	m, db := newManager(t, Options{})
	ctx := context.Background()
	now := time.Now().UTC()
	if err := db.CreateTenant(ctx, agentapi.Tenant{ID: "beta", Name: "Beta", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if got := m.ActiveByType(); len(got) != 0 {
		t.Fatalf("ActiveByType with nothing running: %v", got)
	}
	var acme []string
	for range 2 {
		s, err := m.Start(ctx, "acme", "u1", StartRequest{Agent: "echo"})
		if err != nil {
			t.Fatal(err)
		}
		acme = append(acme, s.ID)
	}
	if _, err := m.Start(ctx, "beta", "u2", StartRequest{Agent: "echo"}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(m.ActiveByType()); got != "map[echo:3]" {
		t.Fatalf("ActiveByType %s", got)
	}
	if got := fmt.Sprint(m.ActiveByTenant()); got != "map[acme:map[echo:2] beta:map[echo:1]]" {
		t.Fatalf("ActiveByTenant %s", got)
	}
	if err := m.Stop(ctx, "acme", acme[0]); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(m.ActiveByTenant()); got != "map[acme:map[echo:1] beta:map[echo:1]]" {
		t.Fatalf("ActiveByTenant after a stop %s", got)
	}
	if got, n := m.ActiveByType()["echo"], m.Running(); got != n {
		t.Fatalf("ActiveByType counts %d, Running %d", got, n)
	}
}

// recordingBreakers admits everything and records the names asked for.
type recordingBreakers struct {
	mu    sync.Mutex
	names []string
}

func (r *recordingBreakers) Guard(name string) func(ctx context.Context) (func(error), error) {
	r.mu.Lock()
	r.names = append(r.names, name)
	r.mu.Unlock()
	return func(context.Context) (func(error), error) { return func(error) {}, nil }
}

// BreakerGroup drops the tenant from the names Start actually uses.
func TestBreakerGroup(t *testing.T) {
	rec := &recordingBreakers{}
	m, _ := newManager(t, Options{Breakers: rec})
	if _, err := m.Start(context.Background(), "acme", "u1", StartRequest{Agent: "echo"}); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	var groups []string
	for _, n := range rec.names {
		groups = append(groups, BreakerGroup(n))
	}
	rec.mu.Unlock()
	sort.Strings(groups)
	if got := fmt.Sprint(groups); got != "[agent-deliver:echo agent-start:echo]" {
		t.Fatalf("groups of %v: %s", rec.names, got)
	}
	for in, want := range map[string]string{
		"database":                    "database",
		"agent-start:claude":          "agent-start:claude",
		"agent-deliver:ten_abc:goose": "agent-deliver:goose",
		"agent-deliver:acme:my:agent": "agent-deliver:my:agent",
		"agent-deliver:odd":           "agent-deliver:odd",
	} {
		if got := BreakerGroup(in); got != want {
			t.Errorf("BreakerGroup(%q) = %q, want %q", in, got, want)
		}
	}
}
