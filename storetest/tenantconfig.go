package storetest

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// ConfigStores is what RunTenantConfigStore needs: tenants to configure.
type ConfigStores interface {
	agentapi.TenantStore
	agentapi.TenantConfigStore
}

// RunTenantConfigStore checks the TenantConfigStore contract.
func RunTenantConfigStore(t *testing.T, newStore func(t *testing.T) ConfigStores) {
	ctx := context.Background()
	setup := func(t *testing.T) ConfigStores {
		s := newStore(t)
		now := time.Now().UTC()
		for _, id := range []string{"t1", "t2"} {
			must(t, s.CreateTenant(ctx, agentapi.Tenant{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}), "create tenant")
		}
		return s
	}
	pct := func(n int) *int { return &n }
	full := agentapi.TenantConfig{
		RateLimitPerMinute: 120, RateLimitBurst: 20, UserRateLimitPerMinute: 30, UserRateLimitBurst: 5,
		MaxSessions: 7, MaxSessionsPerUser: 2, IdleTimeoutSeconds: 600,
		AllowedAgents: []string{"claude", "demo"}, MonthlyMessageQuota: 1000,
		Flags: map[string]agentapi.Flag{"raw_input": {Enabled: false}, "beta": {Enabled: true, Percent: pct(25)}},
	}
	t.Run("ZeroUntilSet", func(t *testing.T) {
		s := setup(t)
		c, err := s.TenantConfig(ctx, "t1")
		if err != nil || !reflect.DeepEqual(c, agentapi.TenantConfig{}) {
			t.Fatalf("fresh tenant: %+v %v", c, err)
		}
		if _, err := s.TenantConfig(ctx, "nope"); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("missing tenant: %v", err)
		}
	})
	t.Run("PutRoundTripAndVersion", func(t *testing.T) {
		s := setup(t)
		at := time.Date(2026, 11, 21, 10, 0, 0, 123_000_000, time.UTC)
		got, err := s.PutTenantConfig(ctx, "t1", full, at)
		if err != nil || got.Version != 1 || !got.UpdatedAt.Equal(at) {
			t.Fatalf("first put: %+v %v", got, err)
		}
		read, err := s.TenantConfig(ctx, "t1")
		if err != nil {
			t.Fatal(err)
		}
		want := full
		want.Version, want.UpdatedAt = 1, at
		if !reflect.DeepEqual(read, want) {
			t.Fatalf("read back\n got %+v\nwant %+v", read, want)
		}
		// A replacement drops what it does not set, and counts a version.
		got, err = s.PutTenantConfig(ctx, "t1", agentapi.TenantConfig{MaxSessions: 3, Version: 99}, at.Add(time.Second))
		if err != nil || got.Version != 2 {
			t.Fatalf("second put: %+v %v", got, err)
		}
		read, _ = s.TenantConfig(ctx, "t1")
		if read.MaxSessions != 3 || read.RateLimitPerMinute != 0 || len(read.Flags) != 0 || read.Version != 2 {
			t.Fatalf("after replacement: %+v", read)
		}
		if other, _ := s.TenantConfig(ctx, "t2"); other.Version != 0 || other.MaxSessions != 0 {
			t.Fatalf("t2 sees t1's configuration: %+v", other)
		}
	})
	t.Run("ConcurrentPutsCountEveryVersion", func(t *testing.T) {
		s := setup(t)
		const n = 8
		var wg sync.WaitGroup
		seen := make(chan int64, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := s.PutTenantConfig(ctx, "t1", agentapi.TenantConfig{MaxSessions: i + 1}, time.Time{})
				if err != nil {
					t.Error(err)
					return
				}
				seen <- c.Version
			}()
		}
		wg.Wait()
		close(seen)
		versions := map[int64]bool{}
		for v := range seen {
			versions[v] = true
		}
		if len(versions) != n {
			t.Fatalf("versions returned %v, want %d distinct", versions, n)
		}
		if c, _ := s.TenantConfig(ctx, "t1"); c.Version != n {
			t.Fatalf("final version %d, want %d", c.Version, n)
		}
	})
	t.Run("MissingTenant", func(t *testing.T) {
		s := setup(t)
		if _, err := s.PutTenantConfig(ctx, "nope", full, time.Time{}); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("put for a missing tenant: %v", err)
		}
	})
	t.Run("DeletedWithTenant", func(t *testing.T) {
		s := setup(t)
		_, err := s.PutTenantConfig(ctx, "t1", full, time.Time{})
		must(t, err, "put")
		must(t, s.DeleteTenant(ctx, "t1"), "delete tenant")
		must(t, s.CreateTenant(ctx, agentapi.Tenant{ID: "t1", Name: "again", CreatedAt: time.Now(), UpdatedAt: time.Now()}), "create tenant")
		if c, err := s.TenantConfig(ctx, "t1"); err != nil || c.Version != 0 || c.MaxSessions != 0 {
			t.Fatalf("configuration survived its tenant: %+v %v", c, err)
		}
	})
	t.Run("GlobalFlags", func(t *testing.T) {
		s := setup(t)
		flags, err := s.GlobalFlags(ctx)
		if err != nil || len(flags) != 0 {
			t.Fatalf("fresh flags: %v %v", flags, err)
		}
		must(t, s.PutGlobalFlag(ctx, "beta", agentapi.Flag{Enabled: true, Percent: pct(40)}, time.Time{}), "put flag")
		must(t, s.PutGlobalFlag(ctx, "web_ui", agentapi.Flag{Enabled: false}, time.Time{}), "put flag")
		must(t, s.PutGlobalFlag(ctx, "beta", agentapi.Flag{Enabled: true, Percent: pct(50)}, time.Time{}), "replace flag")
		flags, err = s.GlobalFlags(ctx)
		want := map[string]agentapi.Flag{"beta": {Enabled: true, Percent: pct(50)}, "web_ui": {Enabled: false}}
		if err != nil || !reflect.DeepEqual(flags, want) {
			t.Fatalf("flags %+v %v, want %+v", flags, err, want)
		}
		must(t, s.DeleteGlobalFlag(ctx, "beta"), "delete flag")
		if err := s.DeleteGlobalFlag(ctx, "beta"); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("deleting twice: %v", err)
		}
		for _, bad := range []struct {
			name string
			f    agentapi.Flag
		}{{"", agentapi.Flag{}}, {"Bad Name", agentapi.Flag{}}, {"ok", agentapi.Flag{Enabled: true, Percent: pct(101)}}, {"ok", agentapi.Flag{Percent: pct(-1)}}} {
			if err := s.PutGlobalFlag(ctx, bad.name, bad.f, time.Time{}); agentapi.KindOf(err) != agentapi.KindInvalid {
				t.Errorf("flag %q %+v: %v, want KindInvalid", bad.name, bad.f, err)
			}
		}
		if flags, _ := s.GlobalFlags(ctx); len(flags) != 1 {
			t.Fatalf("a refused flag was stored: %+v", flags)
		}
	})
}
