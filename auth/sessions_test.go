package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/memory"
)

const (
	idle     = time.Hour
	absolute = 24 * time.Hour
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingStore counts the calls that reach the store.
type countingStore struct {
	agentapi.SessionStore
	calls atomic.Int64
}

func (s *countingStore) Put(ctx context.Context, id, owner string, p []byte, ttl time.Duration) error {
	s.calls.Add(1)
	return s.SessionStore.Put(ctx, id, owner, p, ttl)
}

func (s *countingStore) Get(ctx context.Context, id string, ttl time.Duration) ([]byte, error) {
	s.calls.Add(1)
	return s.SessionStore.Get(ctx, id, ttl)
}

func (s *countingStore) Delete(ctx context.Context, id string) error {
	s.calls.Add(1)
	return s.SessionStore.Delete(ctx, id)
}

func (s *countingStore) DeleteOwner(ctx context.Context, owner string) (int, error) {
	s.calls.Add(1)
	return s.SessionStore.DeleteOwner(ctx, owner)
}

type env struct {
	t     *testing.T
	ctx   context.Context
	clock *fakeClock
	mem   *memory.SessionStore
	store *countingStore
	key   []byte
	m     *auth.Sessions
}

func newEnv(t *testing.T) *env {
	clock := &fakeClock{now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	mem := memory.NewSessionStore(clock.Now, time.Minute)
	t.Cleanup(func() { mem.Close() })
	e := &env{t: t, ctx: context.Background(), clock: clock, mem: mem, store: &countingStore{SessionStore: mem}, key: newKey(t)}
	e.m = e.manager(keyring(t, e.key))
	return e
}

// manager is another Sessions over the same store and clock.
func (e *env) manager(kr *auth.Keyring) *auth.Sessions {
	return auth.NewSessions(e.store, kr, idle, absolute, e.clock.Now)
}

func login(tenant, user string) agentapi.LoginSession {
	return agentapi.LoginSession{TenantID: tenant, UserID: user, Role: agentapi.RoleMember, KeyID: "key-1"}
}

func (e *env) create(m *auth.Sessions, s agentapi.LoginSession) string {
	e.t.Helper()
	token, _, err := m.Create(e.ctx, s)
	if err != nil {
		e.t.Fatalf("Create: %v", err)
	}
	return token
}

func (e *env) valid(m *auth.Sessions, token string) agentapi.LoginSession {
	e.t.Helper()
	s, err := m.Validate(e.ctx, token)
	if err != nil {
		e.t.Fatalf("Validate: %v, want the session", err)
	}
	return s
}

// genericError is the one error every token problem produces.
var genericError string

func (e *env) invalid(m *auth.Sessions, token, why string) {
	e.t.Helper()
	s, err := m.Validate(e.ctx, token)
	if err == nil {
		e.t.Fatalf("Validate %s: accepted (%+v)", why, s)
	}
	if k := agentapi.KindOf(err); k != agentapi.KindUnauthenticated {
		e.t.Fatalf("Validate %s: error %v of kind %v, want %v", why, err, k, agentapi.KindUnauthenticated)
	}
	if s != (agentapi.LoginSession{}) {
		e.t.Errorf("Validate %s: returned a session with the error", why)
	}
	if genericError == "" {
		genericError = err.Error()
	} else if err.Error() != genericError {
		e.t.Errorf("Validate %s: message %q differs from %q: it tells causes apart", why, err, genericError)
	}
}

func TestCreateValidate(t *testing.T) {
	e := newEnv(t)
	in := login("acme", "alice")
	in.Role = agentapi.RoleAdmin
	token, exp, err := e.m.Create(e.ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != 43 {
		t.Errorf("token %q has %d characters, want 43", token, len(token))
	}
	if raw, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(raw) != 32 {
		t.Errorf("token is not base64url of 32 bytes: %v", err)
	}
	now := e.clock.Now()
	if !exp.Equal(now.Add(absolute)) {
		t.Errorf("expiry %v, want %v", exp, now.Add(absolute))
	}
	got := e.valid(e.m, token)
	want := in
	want.CreatedAt, want.ExpiresAt = now, now.Add(absolute)
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("times %v/%v, want %v/%v", got.CreatedAt, got.ExpiresAt, want.CreatedAt, want.ExpiresAt)
	}
	got.CreatedAt, got.ExpiresAt, want.CreatedAt, want.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if got != want {
		t.Errorf("Validate = %+v, want %+v", got, want)
	}
	// Tokens differ every time, even for the same user.
	if other := e.create(e.m, in); other == token {
		t.Error("two logins got the same token")
	}
}

func TestCreateInvalid(t *testing.T) {
	e := newEnv(t)
	for _, s := range []agentapi.LoginSession{login("", "alice"), login("acme", "")} {
		_, _, err := e.m.Create(e.ctx, s)
		wantKind(t, fmt.Sprintf("Create(%+v)", s), err, agentapi.KindInvalid)
	}
	if n := e.store.calls.Load(); n != 0 {
		t.Errorf("invalid Creates made %d store calls", n)
	}
}

func TestTamperedToken(t *testing.T) {
	e := newEnv(t)
	token := e.create(e.m, login("acme", "alice"))
	for _, i := range []int{0, 10, 21, 41} {
		b := []byte(token)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		e.invalid(e.m, string(b), fmt.Sprintf("with character %d changed", i))
	}
	e.valid(e.m, token)
}

func TestMalformedTokenSparesTheStore(t *testing.T) {
	e := newEnv(t)
	token := e.create(e.m, login("acme", "alice"))
	secret, _, _ := auth.NewAPIKey()
	before := e.store.calls.Load()
	for name, bad := range map[string]string{
		"empty":          "",
		"short":          token[:42],
		"long":           token + "A",
		"padded":         token + "=",
		"std alphabet":   strings.Repeat("+", 43),
		"space":          token[:20] + " " + token[21:],
		"api key":        secret,
		"non-canonical":  nonCanonical(token),
		"bearer prefix":  "Bearer " + token,
		"unicode":        token[:41] + "é",
		"long garbage":   strings.Repeat("x", 10000),
		"all zero bytes": strings.Repeat("A", 43),
	} {
		if name == "all zero bytes" {
			// Well-formed: it reaches the store, and is not found there.
			continue
		}
		e.invalid(e.m, bad, name)
	}
	if n := e.store.calls.Load() - before; n != 0 {
		t.Errorf("malformed tokens made %d store calls, want 0", n)
	}
	e.invalid(e.m, strings.Repeat("A", 43), "well-formed but unknown")
	wantKind(t, "Revoke of a malformed token", e.m.Revoke(e.ctx, "nope"), agentapi.KindUnauthenticated)
}

// nonCanonical changes the last character of token so that it sets one
// of the two spare bits: it decodes to the same 32 bytes in lenient
// decoders, but is not what Create issued.
func nonCanonical(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	v := strings.IndexByte(alphabet, token[len(token)-1])
	return token[:len(token)-1] + string(alphabet[v|1])
}

func TestTamperedStoredPayload(t *testing.T) {
	e := newEnv(t)
	kr := keyring(t, e.key)
	token := e.create(e.m, login("acme", "alice"))
	id := kr.TokenID(token)
	sealed, err := e.mem.Get(e.ctx, id, idle)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 9, 20, len(sealed) / 2, len(sealed) - 1} {
		b := append([]byte{}, sealed...)
		b[i] ^= 0x20
		if err := e.mem.Put(e.ctx, id, "o", b, idle); err != nil {
			t.Fatal(err)
		}
		e.invalid(e.m, token, fmt.Sprintf("with stored byte %d altered", i))
	}
	// Truncated or replaced by garbage.
	for name, b := range map[string][]byte{"truncated": sealed[:len(sealed)-1], "empty": {}, "plain JSON": []byte(`{"t":"acme","u":"alice"}`)} {
		e.mem.Put(e.ctx, id, "o", b, idle)
		e.invalid(e.m, token, "with a "+name+" payload")
	}
	// Restored, it works again: the failures above were the tampering.
	e.mem.Put(e.ctx, id, "o", sealed, idle)
	e.valid(e.m, token)
}

// TestPayloadMovedToAnotherID: a sealed session copied under another
// token's id does not open (the id is the additional data), so a store
// writer cannot hand one user's session to another token.
func TestPayloadMovedToAnotherID(t *testing.T) {
	e := newEnv(t)
	kr := keyring(t, e.key)
	admin := login("acme", "root")
	admin.Role = agentapi.RoleAdmin
	adminToken := e.create(e.m, admin)
	userToken := e.create(e.m, login("acme", "mallory"))
	sealed, err := e.mem.Get(e.ctx, kr.TokenID(adminToken), idle)
	if err != nil {
		t.Fatal(err)
	}
	e.mem.Put(e.ctx, kr.TokenID(userToken), "o", sealed, idle)
	e.invalid(e.m, userToken, "with another session's payload")
}

func TestIdleExpiry(t *testing.T) {
	e := newEnv(t)
	token := e.create(e.m, login("acme", "alice"))
	// Used every 50 minutes it lives past the idle timeout...
	for range 5 {
		e.clock.Advance(50 * time.Minute)
		e.valid(e.m, token)
	}
	// ...left alone for the idle timeout it is gone.
	e.clock.Advance(idle)
	e.invalid(e.m, token, "after the idle timeout")
}

func TestAbsoluteExpiry(t *testing.T) {
	e := newEnv(t)
	kr := keyring(t, e.key)
	token := e.create(e.m, login("acme", "alice"))
	// Active all day: valid up to the absolute expiry, however active.
	end := e.clock.Now().Add(absolute)
	for e.clock.Now().Add(50 * time.Minute).Before(end) {
		e.clock.Advance(50 * time.Minute)
		e.valid(e.m, token)
	}
	e.clock.Advance(end.Sub(e.clock.Now())) // exactly ExpiresAt: over
	e.invalid(e.m, token, "past the absolute expiry")
	// And the entry was removed, not left to the idle timeout.
	if _, err := e.mem.Get(e.ctx, kr.TokenID(token), idle); agentapi.KindOf(err) != agentapi.KindNotFound {
		t.Errorf("store entry after absolute expiry: %v, want KindNotFound", err)
	}
}

func TestStoreTTLCappedByAbsolute(t *testing.T) {
	e := newEnv(t)
	// Absolute shorter than idle is raised to idle; equal: the store ttl
	// is the absolute lifetime.
	m := auth.NewSessions(e.store, keyring(t, e.key), idle, time.Minute, e.clock.Now)
	token, exp, err := m.Create(e.ctx, login("acme", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(e.clock.Now().Add(idle)) {
		t.Errorf("expiry %v, want now+idle", exp)
	}
	e.clock.Advance(idle)
	e.invalid(m, token, "at its absolute expiry = idle")
}

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	token := e.create(e.m, login("acme", "alice"))
	other := e.create(e.m, login("acme", "alice"))
	e.valid(e.m, token)
	if err := e.m.Revoke(e.ctx, token); err != nil {
		t.Fatal(err)
	}
	e.invalid(e.m, token, "after Revoke")
	// Replaying the token after logout, from another instance too.
	e.invalid(e.manager(keyring(t, e.key)), token, "replayed on another instance")
	if err := e.m.Revoke(e.ctx, token); err != nil {
		t.Errorf("second Revoke: %v, want nil", err)
	}
	// The user's other session is untouched.
	e.valid(e.m, other)
}

func TestRevokeUser(t *testing.T) {
	e := newEnv(t)
	var alice []string
	for range 3 {
		alice = append(alice, e.create(e.m, login("acme", "alice")))
	}
	bob := e.create(e.m, login("acme", "bob"))
	aliceElsewhere := e.create(e.m, login("globex", "alice"))
	// No confusion between (tenant "a/b", user "c") and ("a", "b/c").
	e.create(e.m, login("x/y", "z"))
	xyz := e.create(e.m, login("x", "y/z"))

	e.m.Revoke(e.ctx, alice[2])
	n, err := e.m.RevokeUser(e.ctx, "acme", "alice")
	if err != nil || n != 2 {
		t.Fatalf("RevokeUser = %d, %v; want 2 live sessions", n, err)
	}
	for i, tok := range alice {
		e.invalid(e.m, tok, fmt.Sprintf("alice's session %d after RevokeUser", i))
	}
	e.valid(e.m, bob)
	e.valid(e.m, aliceElsewhere)
	if n, _ := e.m.RevokeUser(e.ctx, "x/y", "z"); n != 1 {
		t.Errorf("RevokeUser(x/y, z) = %d, want 1", n)
	}
	e.valid(e.m, xyz)
	if n, err := e.m.RevokeUser(e.ctx, "acme", "alice"); n != 0 || err != nil {
		t.Errorf("second RevokeUser = %d, %v; want 0", n, err)
	}
	_, err = e.m.RevokeUser(e.ctx, "", "alice")
	wantKind(t, "RevokeUser without tenant", err, agentapi.KindInvalid)
}

func TestWrongKey(t *testing.T) {
	e := newEnv(t)
	token := e.create(e.m, login("acme", "alice"))
	e.invalid(e.manager(keyring(t, newKey(t))), token, "under another key")
	// Nor can the other key's instance revoke it by user.
	if n, _ := e.manager(keyring(t, newKey(t))).RevokeUser(e.ctx, "acme", "alice"); n != 0 {
		t.Errorf("RevokeUser under another key removed %d sessions", n)
	}
	e.valid(e.m, token)
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	a, b := e.key, newKey(t)
	onA := e.m
	onBA := e.manager(keyring(t, b, a))
	onB := e.manager(keyring(t, b))

	old := e.create(onA, login("acme", "alice"))
	e.valid(onBA, old) // old sessions survive the rotation
	fresh := e.create(onBA, login("acme", "alice"))
	e.valid(onBA, fresh)
	e.valid(onB, fresh) // sealed and indexed under the new key
	e.invalid(onA, fresh, "new session on an instance without the new key")
	sealed, err := e.mem.Get(e.ctx, keyring(t, b).TokenID(fresh), idle)
	if err != nil || string(sealed[:8]) != keyring(t, b).KeyID() {
		t.Errorf("new session is not stored under b's id and sealed under b's key id: %v", err)
	}
	e.invalid(onB, old, "old session once the old key is dropped")

	// RevokeUser during the rotation finds the sessions of both keys.
	if n, err := onBA.RevokeUser(e.ctx, "acme", "alice"); err != nil || n != 2 {
		t.Errorf("RevokeUser across keys = %d, %v; want 2", n, err)
	}
	e.invalid(onBA, old, "old session after RevokeUser")
	e.invalid(onBA, fresh, "new session after RevokeUser")

	// Revoke of an old-key token works on a rotated instance too.
	old2 := e.create(onA, login("acme", "bob"))
	if err := onBA.Revoke(e.ctx, old2); err != nil {
		t.Fatal(err)
	}
	e.invalid(onA, old2, "old-key session revoked by a rotated instance")
}

// failingStore fails every call as an unreachable Redis would.
type failingStore struct{}

var errDown = agentapi.E("test", agentapi.KindUnavailable, errors.New("redis down"))

func (failingStore) Put(context.Context, string, string, []byte, time.Duration) error { return errDown }
func (failingStore) Get(context.Context, string, time.Duration) ([]byte, error)       { return nil, errDown }
func (failingStore) Delete(context.Context, string) error                             { return errDown }
func (failingStore) DeleteOwner(context.Context, string) (int, error)                 { return 0, errDown }

func TestStoreFailureIsNotALogout(t *testing.T) {
	m := auth.NewSessions(failingStore{}, keyring(t, newKey(t)), idle, absolute, nil)
	ctx := context.Background()
	_, _, err := m.Create(ctx, login("acme", "alice"))
	wantKind(t, "Create", err, agentapi.KindUnavailable)
	_, err = m.Validate(ctx, strings.Repeat("A", 43))
	wantKind(t, "Validate", err, agentapi.KindUnavailable)
	wantKind(t, "Revoke", m.Revoke(ctx, strings.Repeat("A", 43)), agentapi.KindUnavailable)
	_, err = m.RevokeUser(ctx, "acme", "alice")
	wantKind(t, "RevokeUser", err, agentapi.KindUnavailable)
}

func TestConcurrentSessions(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", g%4)
			for range 20 {
				token, _, err := e.m.Create(e.ctx, login("acme", user))
				if err != nil {
					errs <- err
					return
				}
				s, err := e.m.Validate(e.ctx, token)
				if err != nil {
					// RevokeUser of this user may have run in between.
					if agentapi.KindOf(err) != agentapi.KindUnauthenticated {
						errs <- err
						return
					}
					continue
				}
				if s.UserID != user {
					errs <- fmt.Errorf("token of %s validated as %s", user, s.UserID)
					return
				}
				if g%8 == 0 {
					e.m.RevokeUser(e.ctx, "acme", user)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
