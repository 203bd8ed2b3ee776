// Package auth turns credentials into identities: login-session tokens
// (Sessions), the keys that protect them at rest (Keyring), and API key
// secrets (NewAPIKey).
//
// A session token is 32 random bytes handed to the client and never stored.
// The store sees only an HMAC of it (the session id) and the session itself
// sealed with AES-256-GCM, so a dump of the store (Redis, memory) yields
// neither a usable token nor who the sessions belong to. The master key
// (TOKEN_ENCRYPTION_KEY) is never used directly: every purpose gets its own
// subkey derived with HMAC-SHA256, and sealed data carries the id of the key
// that sealed it, so keys can be rotated without logging everyone out.
package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/agentapi-mt/agentapi"
)

// KeySize is the size of a master key: AES-256.
const KeySize = 32

const (
	keyIDLen = 8  // hex characters of the key id at the start of sealed data
	nonceLen = 12 // GCM standard nonce
)

// Labels of the derived subkeys. Changing one invalidates every session
// sealed or indexed with it.
const (
	labelKeyID   = "agentapi key id"
	labelSeal    = "agentapi seal v1"
	labelTokenID = "agentapi token-id v1"
	labelOwner   = "agentapi session-owner v1"
)

// errUnauthenticated is the one message every sealing or token failure
// shows: which check failed is not the caller's business.
var errUnauthenticated = errors.New("invalid or expired credentials")

// Keyring holds the current master key, which seals and indexes everything
// new, and the previous ones, which are still accepted when opening and
// looking up. It is immutable and safe for concurrent use.
//
// Rotation: start every instance with NewKeyring(new, old); sessions made
// before keep working until they expire, new ones are sealed under the new
// key. Once the old sessions are gone (after the absolute session
// lifetime), drop the old key.
type Keyring struct {
	keys []*masterKey // keys[0] is current
}

type masterKey struct {
	id      string // 8 hex characters
	aead    cipher.AEAD
	tokenID []byte // HMAC key for session ids
	owner   []byte // HMAC key for owner (tenant/user) ids
	// macs holds keyed HMAC states for tokenID: every request computes a
	// session id, and keying an HMAC costs as much as using it.
	macs sync.Pool
}

// sessionID is the hex HMAC of token under k's token-id subkey.
func (k *masterKey) sessionID(token string) string {
	h, _ := k.macs.Get().(hash.Hash)
	if h == nil {
		h = hmac.New(sha256.New, k.tokenID)
	} else {
		h.Reset()
	}
	var buf [sha256.Size]byte
	h.Write([]byte(token))
	sum := h.Sum(buf[:0])
	k.macs.Put(h)
	return hex.EncodeToString(sum)
}

// NewKeyring builds a Keyring from the current key and any previous keys,
// newest first. Every key must be exactly KeySize bytes and distinct.
// Errors are of kind KindInvalid.
func NewKeyring(current []byte, previous ...[]byte) (*Keyring, error) {
	kr := &Keyring{}
	seen := map[string]bool{}
	for i, raw := range append([][]byte{current}, previous...) {
		if len(raw) != KeySize {
			return nil, agentapi.E("auth.keyring", agentapi.KindInvalid,
				fmt.Errorf("key %d is %d bytes, want %d", i, len(raw), KeySize))
		}
		k, err := newMasterKey(raw)
		if err != nil {
			return nil, agentapi.E("auth.keyring", agentapi.KindInvalid, err)
		}
		if seen[k.id] {
			// The same key twice, or (with odds of 2^-32 per pair) two keys
			// whose ids collide: either way Open could not tell them apart.
			return nil, agentapi.E("auth.keyring", agentapi.KindInvalid,
				fmt.Errorf("key %d has the same key id %s as an earlier key", i, k.id))
		}
		seen[k.id] = true
		kr.keys = append(kr.keys, k)
	}
	return kr, nil
}

func newMasterKey(raw []byte) (*masterKey, error) {
	idMAC := derive(raw, labelKeyID)
	idSum := sha256.Sum256(idMAC)
	block, err := aes.NewCipher(derive(raw, labelSeal))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &masterKey{
		id:      hex.EncodeToString(idSum[:4]),
		aead:    aead,
		tokenID: derive(raw, labelTokenID),
		owner:   derive(raw, labelOwner),
	}, nil
}

// derive is HMAC-SHA256(key, label): a 32-byte subkey for one purpose.
func derive(key []byte, label string) []byte {
	return mac(key, label)
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// KeyID is the id of the current key, as it appears at the start of sealed
// data. It identifies the key without revealing it; safe to log.
func (kr *Keyring) KeyID() string { return kr.keys[0].id }

// KeyIDs are the ids of every key, current first.
func (kr *Keyring) KeyIDs() []string {
	out := make([]string, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = k.id
	}
	return out
}

// Seal encrypts and authenticates plaintext under the current key. aad is
// authenticated but not stored: Open must be given the same aad. The result
// is keyID (8 ASCII bytes) || nonce (12 bytes) || ciphertext and tag.
func (kr *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	k := kr.keys[0]
	out := make([]byte, keyIDLen+nonceLen, keyIDLen+nonceLen+len(plaintext)+k.aead.Overhead())
	copy(out, k.id)
	if _, err := rand.Read(out[keyIDLen:]); err != nil {
		return nil, agentapi.E("auth.seal", agentapi.KindInternal, err)
	}
	return k.aead.Seal(out, out[keyIDLen:keyIDLen+nonceLen], plaintext, aad), nil
}

// Open reverses Seal, with the key named in sealed if the keyring has it.
// Unknown key ids, truncated or altered data and a different aad all fail
// alike, with an error of kind KindUnauthenticated.
func (kr *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < keyIDLen+nonceLen {
		return nil, agentapi.E("auth.open", agentapi.KindUnauthenticated, errUnauthenticated)
	}
	k := kr.byID(string(sealed[:keyIDLen]))
	if k == nil || len(sealed) < keyIDLen+nonceLen+k.aead.Overhead() {
		return nil, agentapi.E("auth.open", agentapi.KindUnauthenticated, errUnauthenticated)
	}
	nonce := sealed[keyIDLen : keyIDLen+nonceLen]
	pt, err := k.aead.Open(nil, nonce, sealed[keyIDLen+nonceLen:], aad)
	if err != nil {
		return nil, agentapi.E("auth.open", agentapi.KindUnauthenticated, errUnauthenticated)
	}
	return pt, nil
}

func (kr *Keyring) byID(id string) *masterKey {
	for _, k := range kr.keys {
		if k.id == id {
			return k
		}
	}
	return nil
}

// TokenID is the id a session token is stored under: hex HMAC-SHA256 of
// the token under the current key's token-id subkey. Without the key it
// cannot be turned back into a token, nor a guessed token checked.
func (kr *Keyring) TokenID(token string) string {
	return kr.keys[0].sessionID(token)
}

// TokenIDs is TokenID under every key, current first: a session created
// before a rotation is stored under its old id.
func (kr *Keyring) TokenIDs(token string) []string {
	out := make([]string, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = k.sessionID(token)
	}
	return out
}

// ownerIDs is the opaque owner key of a tenant's user under every key,
// current first. The store indexes sessions by it so that one user's
// sessions can be revoked together, without the store learning who they
// belong to. The ids are length-prefixed so that no two (tenant, user)
// pairs share one.
func (kr *Keyring) ownerIDs(tenantID, userID string) []string {
	msg := fmt.Sprintf("%d:%s/%s", len(tenantID), tenantID, userID)
	out := make([]string, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = hex.EncodeToString(mac(k.owner, msg))
	}
	return out
}
