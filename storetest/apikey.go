package storetest

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
)

// RunAPIKeyStore tests an APIKeyStore made by newStore; tenants and users
// are created through the same store.
func RunAPIKeyStore(t *testing.T, newStore func(t *testing.T) APIKeyStores) {
	t.Helper()
	run(t, newStore, apiKeyBehaviours)
}

// hashOf returns the hash of a made-up secret.
func hashOf(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// apiKey returns a valid key of user userID in tenantID created at at(n).
func apiKey(tenantID, userID, id string, n int) agentapi.APIKey {
	return agentapi.APIKey{
		ID: id, TenantID: tenantID, UserID: userID,
		Name: "key " + id, Prefix: "ak_" + id, Hash: hashOf("secret of " + id),
		CreatedAt: at(n),
	}
}

// createKeys creates the given keys or fails the test.
func createKeys(t *testing.T, s agentapi.APIKeyStore, ks ...agentapi.APIKey) {
	t.Helper()
	for _, k := range ks {
		must(t, s.CreateAPIKey(ctxFor(t), k), "CreateAPIKey "+k.ID)
	}
}

// wantKey checks that the key with want's hash is stored as want.
func wantKey(t *testing.T, s agentapi.APIKeyStore, want agentapi.APIKey) {
	t.Helper()
	got, err := s.APIKeyByHash(ctxFor(t), want.Hash)
	must(t, err, "APIKeyByHash of "+want.ID)
	wantEqual(t, got, want, "APIKeyByHash of "+want.ID)
}

// wantKeys checks a listing of keys.
func wantKeys(t *testing.T, s agentapi.APIKeyStore, tenantID, userID string, want ...agentapi.APIKey) {
	t.Helper()
	got, err := s.ListAPIKeys(ctxFor(t), tenantID, userID)
	what := fmt.Sprintf("ListAPIKeys(%q, %q)", tenantID, userID)
	must(t, err, what)
	if want == nil {
		want = []agentapi.APIKey{}
	}
	wantEqual(t, got, want, what)
}

// wantKeyCount checks CountAPIKeys.
func wantKeyCount(t *testing.T, s agentapi.APIKeyStore, want int) {
	t.Helper()
	n, err := s.CountAPIKeys(ctxFor(t))
	must(t, err, "CountAPIKeys")
	if n != want {
		t.Errorf("CountAPIKeys = %d, want %d", n, want)
	}
}

// keyFixture creates tenants acme and globex, users ann and bob in acme and
// gus in globex.
func keyFixture(t *testing.T, s APIKeyStores) {
	t.Helper()
	twoTenants(t, s)
	createUsers(t, s, user("acme", "ann", 1), user("acme", "bob", 2), user("globex", "gus", 3))
}

var apiKeyBehaviours = []behaviour[APIKeyStores]{
	{"CreateAndLookUpByHash", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		wantKeyCount(t, s, 0)
		plain := apiKey("acme", "ann", "k1", 10)
		used := apiKey("acme", "ann", "k2", 11)
		used.LastUsedAt = ptr(at(12))
		revoked := apiKey("globex", "gus", "k3", 12)
		revoked.LastUsedAt, revoked.RevokedAt = ptr(at(13)), ptr(at(14))
		for _, k := range []agentapi.APIKey{plain, used, revoked} {
			createKeys(t, s, k)
			wantKey(t, s, k)
		}
		wantKeyCount(t, s, 3)
	}},
	{"LookUpMissing", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		k := apiKey("acme", "ann", "k1", 10)
		createKeys(t, s, k)
		for _, h := range [][]byte{hashOf("other"), k.Hash[:len(k.Hash)-1], append(append([]byte{}, k.Hash...), 0), nil} {
			_, err := s.APIKeyByHash(ctxFor(t), h)
			wantKind(t, err, agentapi.KindNotFound, fmt.Sprintf("APIKeyByHash(%x)", h))
		}
	}},
	{"CreateConflict", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		orig := apiKey("acme", "ann", "k1", 10)
		createKeys(t, s, orig)
		sameID := apiKey("acme", "bob", "k1", 11)
		sameID.Hash = hashOf("another secret")
		wantKind(t, s.CreateAPIKey(ctxFor(t), sameID), agentapi.KindConflict, "CreateAPIKey with an existing id")
		_, err := s.APIKeyByHash(ctxFor(t), sameID.Hash)
		wantKind(t, err, agentapi.KindNotFound, "APIKeyByHash of the key that failed to be created")
		sameHash := apiKey("acme", "bob", "k2", 12)
		sameHash.Hash = orig.Hash
		wantKind(t, s.CreateAPIKey(ctxFor(t), sameHash), agentapi.KindConflict, "CreateAPIKey with an existing hash")
		wantKey(t, s, orig)
		wantKeys(t, s, "acme", "", orig)
		wantKeyCount(t, s, 1)
	}},
	{"CreateInvalid", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		valid := apiKey("acme", "ann", "k1", 10)
		for _, tc := range []struct {
			name   string
			modify func(*agentapi.APIKey)
		}{
			{"no id", func(k *agentapi.APIKey) { k.ID = "" }},
			{"no tenant", func(k *agentapi.APIKey) { k.TenantID = "" }},
			{"no user", func(k *agentapi.APIKey) { k.UserID = "" }},
			{"no hash", func(k *agentapi.APIKey) { k.Hash = nil }},
			{"empty hash", func(k *agentapi.APIKey) { k.Hash = []byte{} }},
		} {
			k := valid
			tc.modify(&k)
			wantKind(t, s.CreateAPIKey(ctxFor(t), k), agentapi.KindInvalid, "CreateAPIKey with "+tc.name)
		}
		wantKeyCount(t, s, 0)
	}},
	{"CreateForMissingOrForeignUser", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		for _, tc := range []struct {
			name string
			k    agentapi.APIKey
		}{
			{"missing user", apiKey("acme", "nope", "k1", 10)},
			{"user of another tenant", apiKey("acme", "gus", "k2", 10)},
			{"missing tenant", apiKey("nope", "ann", "k3", 10)},
		} {
			wantKind(t, s.CreateAPIKey(ctxFor(t), tc.k), agentapi.KindNotFound, "CreateAPIKey for a "+tc.name)
		}
		wantKeyCount(t, s, 0)
	}},
	{"ListOrderedByCreation", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		wantKeys(t, s, "acme", "")
		a1, a2 := apiKey("acme", "ann", "z-ann-1", 10), apiKey("acme", "ann", "a-ann-2", 12)
		b1 := apiKey("acme", "bob", "m-bob-1", 11)
		g1 := apiKey("globex", "gus", "gus-1", 9)
		createKeys(t, s, a2, g1, b1, a1)
		wantKeys(t, s, "acme", "", a1, b1, a2)
		wantKeys(t, s, "acme", "ann", a1, a2)
		wantKeys(t, s, "acme", "bob", b1)
		wantKeys(t, s, "globex", "", g1)
		wantKeys(t, s, "acme", "nope")
		wantKeys(t, s, "nope", "")
		wantKeyCount(t, s, 4)
	}},
	{"Revoke", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		k, other := apiKey("acme", "ann", "k1", 10), apiKey("acme", "ann", "k2", 11)
		createKeys(t, s, k, other)
		must(t, s.RevokeAPIKey(ctxFor(t), "acme", "k1", at(20)), "RevokeAPIKey")
		want := k
		want.RevokedAt = ptr(at(20))
		wantKey(t, s, want) // still found, revoked
		wantKey(t, s, other)
		must(t, s.RevokeAPIKey(ctxFor(t), "acme", "k1", at(30)), "RevokeAPIKey again")
		wantKey(t, s, want) // the first revocation stays
		wantKeys(t, s, "acme", "ann", want, other)
		wantKeyCount(t, s, 2) // revoked keys count
		wantKind(t, s.RevokeAPIKey(ctxFor(t), "acme", "nope", at(30)), agentapi.KindNotFound, "RevokeAPIKey of a missing key")
	}},
	{"Touch", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		k, other := apiKey("acme", "ann", "k1", 10), apiKey("acme", "ann", "k2", 11)
		createKeys(t, s, k, other)
		first := at(100)
		must(t, s.TouchAPIKey(ctxFor(t), "k1", first), "TouchAPIKey")
		want := k
		want.LastUsedAt = &first
		wantKey(t, s, want)
		wantKey(t, s, other)

		// Within a minute of the recorded use: skipped.
		must(t, s.TouchAPIKey(ctxFor(t), "k1", first.Add(30*time.Second)), "TouchAPIKey 30s later")
		wantKey(t, s, want)
		must(t, s.TouchAPIKey(ctxFor(t), "k1", first.Add(59*time.Second)), "TouchAPIKey 59s later")
		wantKey(t, s, want)

		// Later: recorded.
		later := first.Add(2 * time.Minute)
		must(t, s.TouchAPIKey(ctxFor(t), "k1", later), "TouchAPIKey 2m later")
		want.LastUsedAt = &later
		wantKey(t, s, want)

		// Revoked keys are still touched (the caller decides what a use of a
		// revoked key means).
		must(t, s.RevokeAPIKey(ctxFor(t), "acme", "k1", later), "RevokeAPIKey")
		latest := later.Add(time.Hour)
		must(t, s.TouchAPIKey(ctxFor(t), "k1", latest), "TouchAPIKey of a revoked key")
		want.LastUsedAt, want.RevokedAt = &latest, &later
		wantKey(t, s, want)

		wantKind(t, s.TouchAPIKey(ctxFor(t), "nope", latest), agentapi.KindNotFound, "TouchAPIKey of a missing key")
	}},
	{"DeleteUserRemovesKeys", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		a1, a2 := apiKey("acme", "ann", "a1", 10), apiKey("acme", "ann", "a2", 11)
		b1 := apiKey("acme", "bob", "b1", 12)
		createKeys(t, s, a1, a2, b1)
		must(t, s.RevokeAPIKey(ctxFor(t), "acme", "a2", at(13)), "RevokeAPIKey")
		must(t, s.DeleteUser(ctxFor(t), "acme", "ann"), "DeleteUser")
		for _, k := range []agentapi.APIKey{a1, a2} {
			_, err := s.APIKeyByHash(ctxFor(t), k.Hash)
			wantKind(t, err, agentapi.KindNotFound, "APIKeyByHash of a deleted user's key "+k.ID)
			wantKind(t, s.RevokeAPIKey(ctxFor(t), "acme", k.ID, at(20)), agentapi.KindNotFound, "RevokeAPIKey of a deleted user's key "+k.ID)
		}
		wantKeys(t, s, "acme", "ann")
		wantKeys(t, s, "acme", "", b1)
		wantKey(t, s, b1)
		wantKeyCount(t, s, 1)

		// A new user with the same id does not inherit the keys.
		createUsers(t, s, user("acme", "ann", 30))
		wantKeys(t, s, "acme", "ann")
	}},
	{"CrossTenant", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		k, g := apiKey("acme", "ann", "k1", 10), apiKey("globex", "gus", "g1", 11)
		createKeys(t, s, k, g)
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"RevokeAPIKey", func() error { return s.RevokeAPIKey(ctxFor(t), "globex", "k1", at(20)) }},
			{"CreateAPIKey for its user", func() error {
				return s.CreateAPIKey(ctxFor(t), apiKey("globex", "ann", "k2", 20))
			}},
		} {
			wantKind(t, tc.call(), agentapi.KindNotFound, tc.name+" from another tenant")
		}
		wantKey(t, s, k) // not revoked
		wantKeys(t, s, "globex", "", g)
		wantKeys(t, s, "globex", "ann")
		wantKeys(t, s, "acme", "", k)
		wantKeyCount(t, s, 2)
	}},
	{"Concurrent", func(t *testing.T, s APIKeyStores) {
		keyFixture(t, s)
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		for g := range Goroutines {
			wg.Go(func() {
				k := apiKey("acme", "ann", fmt.Sprintf("k%02d", g), g)
				if err := s.CreateAPIKey(ctx, k); err != nil {
					t.Errorf("CreateAPIKey %s: %v", k.ID, err)
					return
				}
				for i := range 3 {
					if err := s.TouchAPIKey(ctx, k.ID, at(100+60*i)); err != nil {
						t.Errorf("TouchAPIKey %s: %v", k.ID, err)
					}
					if _, err := s.APIKeyByHash(ctx, k.Hash); err != nil {
						t.Errorf("APIKeyByHash %s: %v", k.ID, err)
					}
				}
				if _, err := s.CountAPIKeys(ctx); err != nil {
					t.Errorf("CountAPIKeys: %v", err)
				}
			})
		}
		wg.Wait()
		wantKeyCount(t, s, Goroutines)
	}},
}
