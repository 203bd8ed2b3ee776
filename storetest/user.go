package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// RunUserStore tests a UserStore made by newStore; tenants are created
// through the same store.
func RunUserStore(t *testing.T, newStore func(t *testing.T) UserStores) {
	t.Helper()
	run(t, newStore, userBehaviours)
}

// user returns a valid member of tenantID created at at(n).
func user(tenantID, id string, n int) agentapi.User {
	return agentapi.User{ID: id, TenantID: tenantID, Name: "User " + id, Role: agentapi.RoleMember, CreatedAt: at(n), UpdatedAt: at(n)}
}

// createUsers creates the given users or fails the test.
func createUsers(t *testing.T, s agentapi.UserStore, us ...agentapi.User) {
	t.Helper()
	for _, u := range us {
		must(t, s.CreateUser(ctxFor(t), u), "CreateUser "+u.ID)
	}
}

// wantUser checks that user want.ID is stored as want.
func wantUser(t *testing.T, s agentapi.UserStore, want agentapi.User) {
	t.Helper()
	got, err := s.GetUser(ctxFor(t), want.TenantID, want.ID)
	must(t, err, "GetUser "+want.ID)
	wantEqual(t, got, want, "GetUser "+want.ID)
}

// wantUsers checks the listing of a tenant's users.
func wantUsers(t *testing.T, s agentapi.UserStore, tenantID string, want ...agentapi.User) {
	t.Helper()
	got, err := s.ListUsers(ctxFor(t), tenantID)
	must(t, err, "ListUsers "+tenantID)
	if want == nil {
		want = []agentapi.User{}
	}
	wantEqual(t, got, want, "ListUsers "+tenantID)
}

// twoTenants creates the tenants "acme" and "globex".
func twoTenants(t *testing.T, s agentapi.TenantStore) {
	t.Helper()
	createTenants(t, s, tenant("acme", 0), tenant("globex", 0))
}

var userBehaviours = []behaviour[UserStores]{
	{"CreateGet", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		for _, u := range []agentapi.User{
			{ID: "root", TenantID: "acme", Name: "Root", Role: agentapi.RolePlatformAdmin, CreatedAt: at(1), UpdatedAt: at(2)},
			{ID: "ann", TenantID: "acme", Name: "Ann", Role: agentapi.RoleAdmin, CreatedAt: at(3), UpdatedAt: at(3)},
			{ID: "bob", TenantID: "globex", Name: "Bob ✓", Role: agentapi.RoleMember, CreatedAt: at(4), UpdatedAt: at(4)},
		} {
			createUsers(t, s, u)
			wantUser(t, s, u)
		}
	}},
	{"CreateConflict", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		orig := user("acme", "ann", 1)
		createUsers(t, s, orig)
		dup := agentapi.User{ID: "ann", TenantID: "acme", Name: "Impostor", Role: agentapi.RoleAdmin, CreatedAt: at(9), UpdatedAt: at(9)}
		wantKind(t, s.CreateUser(ctxFor(t), dup), agentapi.KindConflict, "CreateUser with an existing id")
		wantUser(t, s, orig)
		wantUsers(t, s, "acme", orig)
	}},
	{"CreateInvalid", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		valid := user("acme", "ann", 1)
		for _, tc := range []struct {
			name   string
			modify func(*agentapi.User)
		}{
			{"no id", func(u *agentapi.User) { u.ID = "" }},
			{"no tenant", func(u *agentapi.User) { u.TenantID = "" }},
			{"no name", func(u *agentapi.User) { u.Name = "" }},
			{"no role", func(u *agentapi.User) { u.Role = "" }},
		} {
			u := valid
			tc.modify(&u)
			wantKind(t, s.CreateUser(ctxFor(t), u), agentapi.KindInvalid, "CreateUser with "+tc.name)
		}
		wantUsers(t, s, "acme")
	}},
	{"CreateInMissingTenant", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		wantKind(t, s.CreateUser(ctxFor(t), user("nope", "ann", 1)), agentapi.KindNotFound, "CreateUser in a missing tenant")
		_, err := s.GetUser(ctxFor(t), "nope", "ann")
		wantKind(t, err, agentapi.KindNotFound, "GetUser after a failed CreateUser")
	}},
	{"GetMissing", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		createUsers(t, s, user("acme", "ann", 1))
		for _, tc := range [][2]string{{"acme", "nope"}, {"acme", ""}, {"nope", "ann"}, {"", "ann"}} {
			_, err := s.GetUser(ctxFor(t), tc[0], tc[1])
			wantKind(t, err, agentapi.KindNotFound, fmt.Sprintf("GetUser(%q, %q)", tc[0], tc[1]))
		}
	}},
	{"ListByTenantOrderedByCreation", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		wantUsers(t, s, "acme")
		a, b, c := user("acme", "zed", 1), user("acme", "amy", 2), user("acme", "kim", 3)
		g := user("globex", "gus", 0)
		createUsers(t, s, c, g, a, b)
		wantUsers(t, s, "acme", a, b, c)
		wantUsers(t, s, "globex", g)
		wantUsers(t, s, "nope")
	}},
	{"Update", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		ann, bob := user("acme", "ann", 1), user("acme", "bob", 2)
		createUsers(t, s, ann, bob)
		upd := ann
		upd.Name, upd.Role, upd.UpdatedAt = "Ann Admin", agentapi.RoleAdmin, at(60)
		upd.CreatedAt = at(999) // not changed by an update
		must(t, s.UpdateUser(ctxFor(t), upd), "UpdateUser")
		want := ann
		want.Name, want.Role, want.UpdatedAt = "Ann Admin", agentapi.RoleAdmin, at(60)
		wantUser(t, s, want)
		wantUser(t, s, bob)

		before := time.Now().Add(-time.Second)
		upd = want
		upd.UpdatedAt = time.Time{}
		must(t, s.UpdateUser(ctxFor(t), upd), "UpdateUser with zero UpdatedAt")
		got, err := s.GetUser(ctxFor(t), "acme", "ann")
		must(t, err, "GetUser")
		if got.UpdatedAt.Before(before) {
			t.Errorf("UpdatedAt after UpdateUser with zero UpdatedAt: %s, want the current time", got.UpdatedAt)
		}
	}},
	{"UpdateFailuresChangeNothing", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		ann := user("acme", "ann", 1)
		createUsers(t, s, ann)
		for _, tc := range []struct {
			name string
			kind agentapi.Kind
			u    agentapi.User
		}{
			{"no name", agentapi.KindInvalid, agentapi.User{ID: "ann", TenantID: "acme", Role: agentapi.RoleAdmin, UpdatedAt: at(9)}},
			{"no role", agentapi.KindInvalid, agentapi.User{ID: "ann", TenantID: "acme", Name: "x", UpdatedAt: at(9)}},
			{"missing user", agentapi.KindNotFound, user("acme", "nope", 9)},
			{"missing tenant", agentapi.KindNotFound, user("nope", "ann", 9)},
		} {
			wantKind(t, s.UpdateUser(ctxFor(t), tc.u), tc.kind, "UpdateUser with "+tc.name)
		}
		wantUser(t, s, ann)
		wantUsers(t, s, "acme", ann)
	}},
	{"Delete", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		ann, bob := user("acme", "ann", 1), user("acme", "bob", 2)
		createUsers(t, s, ann, bob)
		must(t, s.DeleteUser(ctxFor(t), "acme", "ann"), "DeleteUser")
		_, err := s.GetUser(ctxFor(t), "acme", "ann")
		wantKind(t, err, agentapi.KindNotFound, "GetUser after DeleteUser")
		wantKind(t, s.DeleteUser(ctxFor(t), "acme", "ann"), agentapi.KindNotFound, "DeleteUser again")
		wantUsers(t, s, "acme", bob)
		createUsers(t, s, ann) // the id is free again
		wantUsers(t, s, "acme", ann, bob)
	}},
	{"CrossTenant", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		ann, gus := user("acme", "ann", 1), user("globex", "gus", 2)
		createUsers(t, s, ann, gus)
		foreign := ann
		foreign.TenantID, foreign.Name, foreign.Role = "globex", "Hijacked", agentapi.RoleAdmin
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"GetUser", func() error { _, err := s.GetUser(ctxFor(t), "globex", "ann"); return err }},
			{"UpdateUser", func() error { return s.UpdateUser(ctxFor(t), foreign) }},
			{"DeleteUser", func() error { return s.DeleteUser(ctxFor(t), "globex", "ann") }},
		} {
			wantKind(t, tc.call(), agentapi.KindNotFound, tc.name+" of another tenant's user")
		}
		wantUser(t, s, ann)
		wantUsers(t, s, "acme", ann)
		wantUsers(t, s, "globex", gus)
	}},
	{"Concurrent", func(t *testing.T, s UserStores) {
		twoTenants(t, s)
		const perGoroutine = 5
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		for g := range Goroutines {
			wg.Go(func() {
				for i := range perGoroutine {
					u := user("acme", fmt.Sprintf("u%02d-%d", g, i), g*perGoroutine+i)
					if err := s.CreateUser(ctx, u); err != nil {
						t.Errorf("CreateUser %s: %v", u.ID, err)
						continue
					}
					if _, err := s.GetUser(ctx, "acme", u.ID); err != nil {
						t.Errorf("GetUser %s: %v", u.ID, err)
					}
					if _, err := s.ListUsers(ctx, "acme"); err != nil {
						t.Errorf("ListUsers: %v", err)
					}
				}
			})
		}
		wg.Wait()
		us, err := s.ListUsers(ctxFor(t), "acme")
		must(t, err, "ListUsers")
		if len(us) != Goroutines*perGoroutine {
			t.Errorf("ListUsers after concurrent creates: %d users, want %d", len(us), Goroutines*perGoroutine)
		}
	}},
}
