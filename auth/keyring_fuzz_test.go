package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
)

// Fixed keys, so that data sealed once (below) stays valid and can be a
// committed seed the fuzzer mutates.
var (
	fuzzKeyCur  = bytes.Repeat([]byte{1}, 32)
	fuzzKeyPrev = bytes.Repeat([]byte{2}, 32)
	fuzzKeyNew  = bytes.Repeat([]byte{3}, 32)
)

// sealedOnce is data sealed by Seal under the fixed keys (hex): the only
// inputs Open may accept, each with its additional data and plaintext.
var sealedOnce = []struct{ sealed, aad, plain string }{
	{"65343439613732383b44ff588ceac456290d9130eb09365ceea69291c988246ac32b092175e6ee5562a563d86c4827103347", "aad", "fuzz plaintext"},                       // fuzzKeyCur
	{"63333665646565651a64aaeacc9d29091de8bd3e165bdeab46342d09d1ed6419804a9eeb362814c349af5c2f1f8f4f06f5d675dd0b4626767e", "id-2", `{"t":"ten","u":"usr"}`}, // fuzzKeyPrev
	{"65343439613732381351349ec118bb69dab6d706294df6cb83cca4febd8f0b451a848bd1", "", ""},                                                                    // fuzzKeyCur, empty plaintext and aad
}

func mustHex(tb testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustKeyring(tb testing.TB, cur []byte, prev ...[]byte) *auth.Keyring {
	kr, err := auth.NewKeyring(cur, prev...)
	if err != nil {
		tb.Fatal(err)
	}
	return kr
}

// checkRefused checks the one way Open and Validate refuse: kind
// Unauthenticated, nothing returned, a message that says nothing of which
// check failed.
func checkRefused(t *testing.T, what string, out []byte, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted", what)
	}
	if agentapi.KindOf(err) != agentapi.KindUnauthenticated || out != nil {
		t.Fatalf("%s: got %q, %v (kind %v); want nil and an Unauthenticated error", what, out, err, agentapi.KindOf(err))
	}
}

// FuzzKeyringOpen gives Open arbitrary sealed data and additional data.
// It must never panic, and must accept nothing but what Seal produced
// under a key the keyring holds, with the same additional data; any other
// input is refused with an Unauthenticated error. A keyring holding none
// of the sealing keys accepts nothing.
func FuzzKeyringOpen(f *testing.F) {
	kr := mustKeyring(f, fuzzKeyCur, fuzzKeyPrev)
	onlyNew := mustKeyring(f, fuzzKeyNew)
	known := map[string]openedAs{}
	for _, s := range sealedOnce {
		sealed := mustHex(f, s.sealed)
		pt, err := kr.Open(sealed, []byte(s.aad))
		if err != nil || string(pt) != s.plain {
			f.Fatalf("committed sealed data %s no longer opens: %q, %v", s.sealed, pt, err)
		}
		known[string(sealed)] = openedAs{aad: s.aad, plain: s.plain}
		f.Add(sealed, []byte(s.aad))
		f.Add(sealed, []byte(s.aad+"x"))
		f.Add(sealed[:len(sealed)-1], []byte(s.aad))
	}
	f.Add([]byte(kr.KeyID()), []byte(nil))
	f.Add([]byte(kr.KeyID()+"000000000000"), []byte(nil))
	f.Add(make([]byte, 36), []byte("x"))
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		pt, err := kr.Open(sealed, aad)
		if k, ok := known[string(sealed)]; ok && k.aad == string(aad) {
			if err != nil || string(pt) != k.plain {
				t.Fatalf("Open(sealed by Seal) = %q, %v; want %q", pt, err, k.plain)
			}
		} else {
			checkRefused(t, "Open of data Seal did not produce", pt, err)
		}
		pt, err = onlyNew.Open(sealed, aad)
		checkRefused(t, "Open under an unrelated key", pt, err)
	})
}

// openedAs is what sealed data opens with and to.
type openedAs struct{ aad, plain string }

// FuzzKeyringTamper seals a fuzzed plaintext with fuzzed additional data
// and checks Seal's contract: it opens to the same plaintext (also after a
// rotation that keeps the key), and changing any one byte, cutting or
// extending the data, or changing the additional data makes Open fail.
func FuzzKeyringTamper(f *testing.F) {
	f.Add([]byte("a login session"), []byte("its id"), uint32(0), byte(1), uint8(0))
	f.Add([]byte{}, []byte{}, uint32(8), byte(0x80), uint8(1))
	f.Add([]byte(`{"t":"ten","u":"usr"}`), []byte("id"), uint32(20), byte(0xff), uint8(200))
	f.Add(bytes.Repeat([]byte{0}, 100), []byte(nil), uint32(1000), byte(0), uint8(16))
	kr := mustKeyring(f, fuzzKeyCur, fuzzKeyPrev)
	rotated := mustKeyring(f, fuzzKeyNew, fuzzKeyCur)
	dropped := mustKeyring(f, fuzzKeyNew, fuzzKeyPrev)
	f.Fuzz(func(t *testing.T, plain, aad []byte, pos uint32, mask byte, cut uint8) {
		sealed, err := kr.Seal(plain, aad)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(sealed), 8+12+len(plain)+16; got != want {
			t.Fatalf("sealed %d bytes into %d, want %d", len(plain), got, want)
		}
		if string(sealed[:8]) != kr.KeyID() {
			t.Fatalf("sealed data starts %q, want the key id %q", sealed[:8], kr.KeyID())
		}
		for _, k := range []*auth.Keyring{kr, rotated} {
			if pt, err := k.Open(sealed, aad); err != nil || !bytes.Equal(pt, plain) {
				t.Fatalf("Open(Seal(%q)) = %q, %v", plain, pt, err)
			}
		}
		pt, err := dropped.Open(sealed, aad)
		checkRefused(t, "Open after the sealing key was dropped", pt, err)

		if mask == 0 {
			mask = 1
		}
		tampered := bytes.Clone(sealed)
		tampered[int(pos)%len(tampered)] ^= mask
		pt, err = kr.Open(tampered, aad)
		checkRefused(t, "Open with byte "+strconv.Itoa(int(pos)%len(sealed))+" changed", pt, err)

		short := sealed[:int(cut)%len(sealed)]
		pt, err = kr.Open(short, aad)
		checkRefused(t, "Open of data cut to "+strconv.Itoa(len(short))+" bytes", pt, err)

		pt, err = kr.Open(append(bytes.Clone(sealed), mask), aad)
		checkRefused(t, "Open of extended data", pt, err)

		pt, err = kr.Open(sealed, append(bytes.Clone(aad), mask))
		checkRefused(t, "Open with other additional data", pt, err)
	})
}

// stubStore is a SessionStore holding one map; override, when it has an
// entry for an id, replaces what Get returns (a store whose data was
// altered).
type stubStore struct {
	mu       sync.Mutex
	data     map[string][]byte
	override map[string][]byte
}

func (s *stubStore) Put(_ context.Context, id, _ string, p []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[id] = bytes.Clone(p)
	return nil
}

func (s *stubStore) Get(_ context.Context, id string, _ time.Duration) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.override[id]; ok {
		return bytes.Clone(p), nil
	}
	if p, ok := s.data[id]; ok {
		return bytes.Clone(p), nil
	}
	return nil, agentapi.E("stub.get", agentapi.KindNotFound, errors.New("no such session"))
}

func (s *stubStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data, id)
	return nil
}

func (s *stubStore) DeleteOwner(context.Context, string) (int, error) { return 0, nil }

// FuzzSessionValidate checks login-session tokens. One real session is
// created; Validate must accept exactly its token, and refuse every other
// string with an Unauthenticated error without panicking. With altered
// bytes in the store under the real token's id (the fuzzer's), Validate
// accepts only the bytes Create stored.
func FuzzSessionValidate(f *testing.F) {
	store := &stubStore{data: map[string][]byte{}, override: map[string][]byte{}}
	kr := mustKeyring(f, fuzzKeyCur, fuzzKeyPrev)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := auth.NewSessions(store, kr, time.Hour, 24*time.Hour, func() time.Time { return now })
	want := agentapi.LoginSession{TenantID: "ten_fuzz", UserID: "usr_fuzz", Role: agentapi.RoleMember, KeyID: "key_fuzz"}
	token, _, err := m.Create(context.Background(), want)
	if err != nil {
		f.Fatal(err)
	}
	id := kr.TokenID(token)
	genuine := bytes.Clone(store.data[id])
	if genuine == nil {
		f.Fatal("Create stored nothing under TokenID(token)")
	}
	f.Add(token, false, []byte(nil))
	f.Add(token[:len(token)-1], false, []byte(nil))
	f.Add(token+"A", false, []byte(nil))
	f.Add(token+"=", false, []byte(nil))
	f.Add(" "+token, false, []byte(nil))
	f.Add(base64.RawURLEncoding.EncodeToString(make([]byte, 32)), false, []byte(nil))
	f.Add(base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), false, []byte(nil))
	f.Add("agk_"+token, false, []byte(nil))
	f.Add("", false, []byte(nil))
	f.Add(token, true, genuine)
	f.Add(token, true, []byte("garbage"))
	for _, i := range []int{0, 8, 20, len(genuine) - 1} {
		alt := bytes.Clone(genuine)
		alt[i] ^= 1
		f.Add(token, true, alt)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, tok string, alter bool, stored []byte) {
		store.mu.Lock()
		if alter {
			store.override[id] = stored
		} else {
			delete(store.override, id)
		}
		store.mu.Unlock()
		s, err := m.Validate(ctx, tok)
		valid := tok == token && (!alter || bytes.Equal(stored, genuine))
		if !valid {
			if err == nil || agentapi.KindOf(err) != agentapi.KindUnauthenticated || s != (agentapi.LoginSession{}) {
				t.Fatalf("Validate(%q) with stored %q = %+v, %v; want an Unauthenticated error", tok, stored, s, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Validate(the real token) = %v", err)
		}
		if s.TenantID != want.TenantID || s.UserID != want.UserID || s.Role != want.Role || s.KeyID != want.KeyID || !s.ExpiresAt.Equal(now.Add(24*time.Hour)) {
			t.Fatalf("Validate(the real token) = %+v, want %+v", s, want)
		}
	})
}
