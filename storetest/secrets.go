package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// SecretStores is what RunTenantSecretStore needs: tenants to own secrets.
type SecretStores interface {
	agentapi.TenantStore
	agentapi.TenantSecretStore
}

// RunTenantSecretStore checks the TenantSecretStore contract.
func RunTenantSecretStore(t *testing.T, newStore func(t *testing.T) SecretStores) {
	ctx := context.Background()
	setup := func(t *testing.T) SecretStores {
		s := newStore(t)
		now := time.Now().UTC()
		for _, id := range []string{"t1", "t2"} {
			if err := s.CreateTenant(ctx, agentapi.Tenant{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	t.Run("PutReplaceListDelete", func(t *testing.T) {
		s := setup(t)
		must(t, s.PutSecret(ctx, "t1", "B_KEY", []byte("sealed-1"), time.Time{}), "secret store call")
		must(t, s.PutSecret(ctx, "t1", "A_KEY", []byte("sealed-2"), time.Time{}), "secret store call")
		must(t, s.PutSecret(ctx, "t1", "B_KEY", []byte("sealed-3"), time.Time{}), "secret store call")
		names, err := s.SecretNames(ctx, "t1")
		if err != nil || len(names) != 2 || names[0].Name != "A_KEY" || names[1].Name != "B_KEY" {
			t.Fatalf("names %+v %v", names, err)
		}
		vals, err := s.Secrets(ctx, "t1")
		if err != nil || string(vals["B_KEY"]) != "sealed-3" || string(vals["A_KEY"]) != "sealed-2" {
			t.Fatalf("values %q %v", vals, err)
		}
		must(t, s.DeleteSecret(ctx, "t1", "A_KEY"), "secret store call")
		if err := s.DeleteSecret(ctx, "t1", "A_KEY"); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("deleting twice: %v", err)
		}
	})
	t.Run("TenantScoped", func(t *testing.T) {
		s := setup(t)
		must(t, s.PutSecret(ctx, "t1", "KEY", []byte("mine"), time.Time{}), "secret store call")
		if vals, _ := s.Secrets(ctx, "t2"); len(vals) != 0 {
			t.Fatalf("t2 sees t1's secrets: %q", vals)
		}
		if names, _ := s.SecretNames(ctx, "t2"); len(names) != 0 {
			t.Fatalf("t2 lists t1's secrets: %+v", names)
		}
		if err := s.DeleteSecret(ctx, "t2", "KEY"); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("t2 deleting t1's secret: %v", err)
		}
		if vals, _ := s.Secrets(ctx, "t1"); string(vals["KEY"]) != "mine" {
			t.Fatal("t1's secret changed")
		}
		if err := s.PutSecret(ctx, "nope", "KEY", []byte("x"), time.Time{}); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("secret of a missing tenant: %v", err)
		}
		if _, err := s.SecretNames(ctx, "nope"); agentapi.KindOf(err) != agentapi.KindNotFound {
			t.Fatalf("names of a missing tenant: %v", err)
		}
	})
	t.Run("DeletedWithTenant", func(t *testing.T) {
		s := setup(t)
		must(t, s.PutSecret(ctx, "t1", "KEY", []byte("x"), time.Time{}), "secret store call")
		must(t, s.DeleteTenant(ctx, "t1"), "secret store call")
		must(t, s.CreateTenant(ctx, agentapi.Tenant{ID: "t1", Name: "again", CreatedAt: time.Now(), UpdatedAt: time.Now()}), "secret store call")
		if vals, _ := s.Secrets(ctx, "t1"); len(vals) != 0 {
			t.Fatalf("secrets survived their tenant: %q", vals)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		s := setup(t)
		if err := s.PutSecret(ctx, "t1", "", []byte("x"), time.Time{}); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Fatalf("empty name: %v", err)
		}
		if err := s.PutSecret(ctx, "t1", "K", nil, time.Time{}); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Fatalf("empty value: %v", err)
		}
	})
}
