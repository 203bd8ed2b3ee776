package storetest

import (
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// RunTenantStore tests a TenantStore made by newStore.
func RunTenantStore(t *testing.T, newStore func(t *testing.T) agentapi.TenantStore) {
	t.Helper()
	run(t, newStore, tenantBehaviours)
}

// tenant returns a valid tenant created at at(n).
func tenant(id string, n int) agentapi.Tenant {
	return agentapi.Tenant{ID: id, Name: "Tenant " + id, CreatedAt: at(n), UpdatedAt: at(n)}
}

// createTenants creates the given tenants or fails the test.
func createTenants(t *testing.T, s agentapi.TenantStore, ts ...agentapi.Tenant) {
	t.Helper()
	for _, tn := range ts {
		must(t, s.CreateTenant(ctxFor(t), tn), "CreateTenant "+tn.ID)
	}
}

// wantTenant checks that tenant want.ID is stored as want.
func wantTenant(t *testing.T, s agentapi.TenantStore, want agentapi.Tenant) {
	t.Helper()
	got, err := s.GetTenant(ctxFor(t), want.ID)
	must(t, err, "GetTenant "+want.ID)
	wantEqual(t, got, want, "GetTenant "+want.ID)
}

var tenantBehaviours = []behaviour[agentapi.TenantStore]{
	{"CreateGet", func(t *testing.T, s agentapi.TenantStore) {
		ctx := ctxFor(t)
		for _, tn := range []agentapi.Tenant{
			{ID: "acme", Name: "Acme", CreatedAt: at(0), UpdatedAt: at(1)},
			{ID: "off", Name: "Disabled Inc.", Disabled: true, CreatedAt: at(2), UpdatedAt: at(2)},
			{ID: "unicode-ü", Name: "Ünïcode ✓ 'quoted' \"names\" ?", CreatedAt: at(3), UpdatedAt: at(3)},
		} {
			must(t, s.CreateTenant(ctx, tn), "CreateTenant "+tn.ID)
			wantTenant(t, s, tn)
		}
	}},
	{"CreateConflict", func(t *testing.T, s agentapi.TenantStore) {
		orig := tenant("acme", 0)
		createTenants(t, s, orig)
		dup := agentapi.Tenant{ID: "acme", Name: "Impostor", Disabled: true, CreatedAt: at(5), UpdatedAt: at(5)}
		wantKind(t, s.CreateTenant(ctxFor(t), dup), agentapi.KindConflict, "CreateTenant with an existing id")
		wantTenant(t, s, orig)
	}},
	{"CreateInvalid", func(t *testing.T, s agentapi.TenantStore) {
		ctx := ctxFor(t)
		for _, tc := range []struct {
			name string
			t    agentapi.Tenant
		}{
			{"no id", agentapi.Tenant{Name: "Acme", CreatedAt: at(0)}},
			{"no name", agentapi.Tenant{ID: "acme", CreatedAt: at(0)}},
			{"nothing", agentapi.Tenant{}},
		} {
			wantKind(t, s.CreateTenant(ctx, tc.t), agentapi.KindInvalid, "CreateTenant with "+tc.name)
		}
		ts, err := s.ListTenants(ctx)
		must(t, err, "ListTenants")
		wantEqual(t, ts, []agentapi.Tenant{}, "tenants after invalid creates")
	}},
	{"GetMissing", func(t *testing.T, s agentapi.TenantStore) {
		createTenants(t, s, tenant("acme", 0))
		for _, id := range []string{"nope", "", "ACME", "acme "} {
			_, err := s.GetTenant(ctxFor(t), id)
			wantKind(t, err, agentapi.KindNotFound, "GetTenant "+id)
		}
	}},
	{"ListOrderedByCreation", func(t *testing.T, s agentapi.TenantStore) {
		ts, err := s.ListTenants(ctxFor(t))
		must(t, err, "ListTenants of an empty store")
		wantEqual(t, ts, []agentapi.Tenant{}, "ListTenants of an empty store")

		// Created in another order than their creation times.
		a, b, c := tenant("zeta", 1), tenant("alpha", 2), tenant("mid", 3)
		createTenants(t, s, c, a, b)
		ts, err = s.ListTenants(ctxFor(t))
		must(t, err, "ListTenants")
		wantEqual(t, ts, []agentapi.Tenant{a, b, c}, "ListTenants")
	}},
	{"Update", func(t *testing.T, s agentapi.TenantStore) {
		ctx := ctxFor(t)
		acme, other := tenant("acme", 0), tenant("other", 1)
		createTenants(t, s, acme, other)

		upd := acme
		upd.Name, upd.Disabled, upd.UpdatedAt = "Acme Renamed", true, at(60)
		upd.CreatedAt = at(999) // not changed by an update
		must(t, s.UpdateTenant(ctx, upd), "UpdateTenant")
		want := acme
		want.Name, want.Disabled, want.UpdatedAt = "Acme Renamed", true, at(60)
		wantTenant(t, s, want)
		wantTenant(t, s, other)

		// Enabled again, with UpdatedAt left to the store.
		before := time.Now().Add(-time.Second)
		upd = want
		upd.Disabled, upd.UpdatedAt = false, time.Time{}
		must(t, s.UpdateTenant(ctx, upd), "UpdateTenant with zero UpdatedAt")
		got, err := s.GetTenant(ctx, "acme")
		must(t, err, "GetTenant")
		if got.Disabled || got.UpdatedAt.Before(before) {
			t.Errorf("after UpdateTenant with zero UpdatedAt: Disabled %v, UpdatedAt %s, want false and the current time", got.Disabled, got.UpdatedAt)
		}
	}},
	{"UpdateFailuresChangeNothing", func(t *testing.T, s agentapi.TenantStore) {
		ctx := ctxFor(t)
		acme := tenant("acme", 0)
		createTenants(t, s, acme)
		wantKind(t, s.UpdateTenant(ctx, agentapi.Tenant{ID: "acme", Disabled: true, UpdatedAt: at(9)}), agentapi.KindInvalid, "UpdateTenant without a name")
		wantKind(t, s.UpdateTenant(ctx, agentapi.Tenant{Name: "x", UpdatedAt: at(9)}), agentapi.KindInvalid, "UpdateTenant without an id")
		wantKind(t, s.UpdateTenant(ctx, agentapi.Tenant{ID: "nope", Name: "x", UpdatedAt: at(9)}), agentapi.KindNotFound, "UpdateTenant of a missing tenant")
		wantTenant(t, s, acme)
		ts, err := s.ListTenants(ctx)
		must(t, err, "ListTenants")
		wantEqual(t, ts, []agentapi.Tenant{acme}, "ListTenants after failed updates")
	}},
	{"Delete", func(t *testing.T, s agentapi.TenantStore) {
		ctx := ctxFor(t)
		acme, other := tenant("acme", 0), tenant("other", 1)
		createTenants(t, s, acme, other)
		must(t, s.DeleteTenant(ctx, "acme"), "DeleteTenant")
		_, err := s.GetTenant(ctx, "acme")
		wantKind(t, err, agentapi.KindNotFound, "GetTenant after DeleteTenant")
		wantKind(t, s.DeleteTenant(ctx, "acme"), agentapi.KindNotFound, "DeleteTenant again")
		wantKind(t, s.DeleteTenant(ctx, "nope"), agentapi.KindNotFound, "DeleteTenant of a missing tenant")
		ts, err := s.ListTenants(ctx)
		must(t, err, "ListTenants")
		wantEqual(t, ts, []agentapi.Tenant{other}, "ListTenants after DeleteTenant")

		// The id is free again.
		again := tenant("acme", 5)
		createTenants(t, s, again)
		wantTenant(t, s, again)
	}},
	{"TimesUTCMillisecond", func(t *testing.T, s agentapi.TenantStore) {
		zone := time.FixedZone("UTC+5:30", 5*3600+30*60)
		created := time.Date(2031, time.December, 31, 23, 59, 59, 987_654_321, zone)
		updated := time.Date(1999, time.January, 1, 0, 0, 0, 1_999_999, zone)
		createTenants(t, s, agentapi.Tenant{ID: "acme", Name: "Acme", CreatedAt: created, UpdatedAt: updated})
		got, err := s.GetTenant(ctxFor(t), "acme")
		must(t, err, "GetTenant")
		wantMillisUTC(t, got.CreatedAt, created, "CreatedAt")
		wantMillisUTC(t, got.UpdatedAt, updated, "UpdatedAt")
	}},
}

// wantMillisUTC checks that got is want to the millisecond at least, in UTC.
func wantMillisUTC(t *testing.T, got, want time.Time, what string) {
	t.Helper()
	if d := got.Sub(want); d <= -time.Millisecond || d >= time.Millisecond {
		t.Errorf("%s: got %s, want %s to the millisecond", what, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
	if got.Location() != time.UTC {
		t.Errorf("%s: got location %s, want UTC", what, got.Location())
	}
}
