package auth_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, auth.KeySize)
	rand.Read(k)
	return k
}

func keyring(t testing.TB, current []byte, previous ...[]byte) *auth.Keyring {
	t.Helper()
	kr, err := auth.NewKeyring(current, previous...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return kr
}

func wantKind(t *testing.T, what string, err error, want agentapi.Kind) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want %v", what, want)
		return
	}
	if k := agentapi.KindOf(err); k != want {
		t.Errorf("%s: error %v of kind %v, want %v", what, err, k, want)
	}
}

func TestNewKeyringValidates(t *testing.T) {
	a := newKey(t)
	for name, keys := range map[string][][]byte{
		"nil":             {nil},
		"short":           {a[:31]},
		"long":            {append(append([]byte{}, a...), 0)},
		"short previous":  {a, make([]byte, 16)},
		"same key twice":  {a, a},
		"same as current": {a, newKey(t), a},
	} {
		_, err := auth.NewKeyring(keys[0], keys[1:]...)
		wantKind(t, name, err, agentapi.KindInvalid)
	}
}

func TestKeyID(t *testing.T) {
	k := newKey(t)
	h := hmac.New(sha256.New, k)
	h.Write([]byte("agentapi key id"))
	sum := sha256.Sum256(h.Sum(nil))
	want := hex.EncodeToString(sum[:4])
	kr := keyring(t, k)
	if kr.KeyID() != want || len(want) != 8 {
		t.Errorf("KeyID = %q, want %q", kr.KeyID(), want)
	}
	b := newKey(t)
	kr2 := keyring(t, b, k)
	if ids := kr2.KeyIDs(); len(ids) != 2 || ids[0] != keyring(t, b).KeyID() || ids[1] != want {
		t.Errorf("KeyIDs = %v, want [id(b) %s]", ids, want)
	}
}

func TestSealOpen(t *testing.T) {
	kr := keyring(t, newKey(t))
	aad := []byte("session-id")
	for _, pt := range [][]byte{nil, {}, []byte("hello"), bytes.Repeat([]byte{0xff, 0}, 5000)} {
		sealed, err := kr.Seal(pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		if string(sealed[:8]) != kr.KeyID() {
			t.Errorf("sealed data starts with %q, want the key id %q", sealed[:8], kr.KeyID())
		}
		if len(sealed) != 8+12+len(pt)+16 {
			t.Errorf("sealed length %d for %d bytes of plaintext, want id+nonce+ct+tag = %d", len(sealed), len(pt), 8+12+len(pt)+16)
		}
		got, err := kr.Open(sealed, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("Open = %q, %v; want %q", got, err, pt)
		}
	}
	a, _ := kr.Seal([]byte("same"), aad)
	b, _ := kr.Seal([]byte("same"), aad)
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are equal: nonce reused")
	}
}

func TestOpenRejects(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	aad := []byte("id-1")
	sealed, err := kr.Seal([]byte("the session"), aad)
	if err != nil {
		t.Fatal(err)
	}
	open := func(what string, kr *auth.Keyring, b, aad []byte) {
		t.Helper()
		_, err := kr.Open(b, aad)
		wantKind(t, what, err, agentapi.KindUnauthenticated)
	}
	// Every single byte matters: key id, nonce, ciphertext, tag.
	for i := range sealed {
		b := append([]byte{}, sealed...)
		b[i] ^= 0x01
		open("flipped byte "+string(rune('0'+i%10)), kr, b, aad)
	}
	open("other aad", kr, sealed, []byte("id-2"))
	open("no aad", kr, sealed, nil)
	open("truncated", kr, sealed[:len(sealed)-1], aad)
	open("id only", kr, sealed[:8], aad)
	open("empty", kr, nil, aad)
	open("another key", keyring(t, newKey(t)), sealed, aad)
	// The previous key opens it; a keyring without it does not.
	if _, err := keyring(t, newKey(t), k).Open(sealed, aad); err != nil {
		t.Errorf("Open with the sealing key as previous: %v", err)
	}
}

func TestTokenID(t *testing.T) {
	a, b := newKey(t), newKey(t)
	kra, krb, krba := keyring(t, a), keyring(t, b), keyring(t, b, a)
	const token = "some-token"
	id := kra.TokenID(token)
	if len(id) != 64 || id != kra.TokenID(token) {
		t.Errorf("TokenID = %q: want 64 hex characters, the same every time", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		t.Errorf("TokenID is not hex: %v", err)
	}
	if kra.TokenID("other-token") == id || krb.TokenID(token) == id {
		t.Error("TokenID does not depend on both token and key")
	}
	// Not the master key used directly: a subkey.
	h := hmac.New(sha256.New, a)
	h.Write([]byte(token))
	if hex.EncodeToString(h.Sum(nil)) == id {
		t.Error("TokenID is an HMAC under the master key itself, not a derived subkey")
	}
	ids := krba.TokenIDs(token)
	if len(ids) != 2 || ids[0] != krb.TokenID(token) || ids[1] != id {
		t.Errorf("TokenIDs = %v, want [under b, under a]", ids)
	}
	if krba.TokenID(token) != ids[0] {
		t.Error("TokenID is not under the current key")
	}
}
