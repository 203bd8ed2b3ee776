package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// TokenBytes is how many random bytes a session token carries.
const TokenBytes = 32

// tokenLen is the length of a token: base64url without padding of
// TokenBytes bytes.
var tokenLen = base64.RawURLEncoding.EncodedLen(TokenBytes)

// Sessions issues, checks and revokes login sessions kept in an
// agentapi.SessionStore. It is safe for concurrent use.
//
// What the store holds, per session: under the id TokenID(token), the
// LoginSession as JSON sealed by the Keyring with the id as additional data
// (a sealed session copied to another id does not open), recorded under an
// owner that is an HMAC of tenant and user (not the ids in the clear).
//
// Lifetimes: a session ends at the first of
//   - its absolute expiry, CreatedAt + absolute, however active it is
//     (LoginSession.ExpiresAt, checked by Validate from the sealed payload,
//     so no store can extend it);
//   - idleTTL without a successful Validate: the store's ttl, restarted by
//     every Get (sliding). Stores may refresh lazily; see their docs (the
//     Redis store refreshes at most every RefreshEvery, so its idle timeout
//     lies between idleTTL-RefreshEvery and idleTTL);
//   - Revoke or RevokeUser, on every instance sharing the store.
//
// The store's ttl is min(idleTTL, time left to the absolute expiry) when a
// session is created. A Get restarts it at idleTTL: the store cannot know
// the absolute expiry, which is sealed. An entry may therefore stay in the
// store for up to idleTTL after its absolute expiry, sealed and useless:
// Validate rejects it and deletes it when it meets one.
//
// Revocation takes effect on the instance that revokes when Revoke
// returns, and on the other instances when the store says so: at once for
// stores without a cache, within the delivery time of an invalidation for
// the Redis store's client-side cache (milliseconds; see package redis).
//
// Cost: Validate computes one HMAC per key in the keyring and reads the
// store; when the store returns the same sealed bytes as the last time
// this id was validated, the opened session is reused instead of
// decrypting and decoding again (see openedCache). With the Redis store's
// cache that makes a validation a local operation of a few microseconds
// of CPU.
//
// Every failure caused by the token (malformed, unknown, expired, revoked,
// sealed under a key no longer held, altered in the store) is the same
// error: kind KindUnauthenticated, one generic message. Failures of the
// store itself keep their kind (e.g. KindUnavailable when Redis is down),
// so that an outage is not reported to users as a logout.
type Sessions struct {
	store    agentapi.SessionStore
	kr       *Keyring
	idleTTL  time.Duration
	absolute time.Duration
	now      func() time.Time
	opened   *openedCache
}

// NewSessions returns a session manager over store. idleTTL is the sliding
// inactivity timeout (SESSION_TTL), absolute the longest a session may live
// (at least idleTTL; a smaller value is raised to it). clock may be nil for
// the wall clock.
func NewSessions(store agentapi.SessionStore, kr *Keyring, idleTTL, absolute time.Duration, clock func() time.Time) *Sessions {
	if idleTTL <= 0 {
		panic("auth.NewSessions: idleTTL must be positive")
	}
	if absolute < idleTTL {
		absolute = idleTTL
	}
	if clock == nil {
		clock = time.Now
	}
	return &Sessions{store: store, kr: kr, idleTTL: idleTTL, absolute: absolute, now: clock, opened: newOpenedCache(openedCacheSize)}
}

func unauthenticated(op string) error {
	return agentapi.E(op, agentapi.KindUnauthenticated, errUnauthenticated)
}

// Create starts a session for s.TenantID's user s.UserID and returns its
// token, to be given to the client and nowhere else, and its absolute
// expiry. CreatedAt and ExpiresAt of s are set here; the other fields are
// kept as given. An empty tenant or user id is KindInvalid.
func (m *Sessions) Create(ctx context.Context, s agentapi.LoginSession) (string, time.Time, error) {
	const op = "auth.sessions.create"
	if s.TenantID == "" || s.UserID == "" {
		return "", time.Time{}, agentapi.E(op, agentapi.KindInvalid, errors.New("login session needs a tenant and a user"))
	}
	var raw [TokenBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, agentapi.E(op, agentapi.KindInternal, err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])

	now := m.now().UTC()
	s.CreatedAt = now
	s.ExpiresAt = now.Add(m.absolute)
	plain, err := json.Marshal(s)
	if err != nil {
		return "", time.Time{}, agentapi.E(op, agentapi.KindInternal, err)
	}
	id := m.kr.TokenID(token)
	sealed, err := m.kr.Seal(plain, []byte(id))
	if err != nil {
		return "", time.Time{}, agentapi.E(op, agentapi.KindInternal, err)
	}
	owner := m.kr.ownerIDs(s.TenantID, s.UserID)[0]
	if err := m.store.Put(ctx, id, owner, sealed, min(m.idleTTL, m.absolute)); err != nil {
		return "", time.Time{}, agentapi.E(op, agentapi.KindOther, err)
	}
	return token, s.ExpiresAt, nil
}

// wellFormed reports whether token could have come from Create. Checking
// it first spares the store lookups for garbage.
func wellFormed(token string) bool {
	if len(token) != tokenLen {
		return false
	}
	var raw [TokenBytes]byte
	n, err := base64.RawURLEncoding.Strict().Decode(raw[:], []byte(token))
	return err == nil && n == TokenBytes
}

// Validate returns the session token grants and restarts its idle timeout.
// Every token problem is KindUnauthenticated with one generic message; a
// store failure keeps the store's kind.
func (m *Sessions) Validate(ctx context.Context, token string) (agentapi.LoginSession, error) {
	const op = "auth.sessions.validate"
	if !wellFormed(token) {
		return agentapi.LoginSession{}, unauthenticated(op)
	}
	for _, id := range m.kr.TokenIDs(token) {
		sealed, err := m.store.Get(ctx, id, m.idleTTL)
		if agentapi.KindOf(err) == agentapi.KindNotFound {
			continue
		}
		if err != nil {
			return agentapi.LoginSession{}, agentapi.E(op, agentapi.KindOther, err)
		}
		s, ok := m.opened.get(id, sealed)
		if !ok {
			plain, err := m.kr.Open(sealed, []byte(id))
			if err != nil {
				return agentapi.LoginSession{}, unauthenticated(op)
			}
			if err := json.Unmarshal(plain, &s); err != nil || s.TenantID == "" || s.UserID == "" || s.ExpiresAt.IsZero() {
				return agentapi.LoginSession{}, unauthenticated(op)
			}
			m.opened.put(id, sealed, s)
		}
		if !m.now().Before(s.ExpiresAt) {
			// Past its absolute end: gone for good. A failed delete only
			// leaves garbage that expires by itself.
			_ = m.store.Delete(ctx, id)
			m.opened.forget(id)
			return agentapi.LoginSession{}, unauthenticated(op)
		}
		return s, nil
	}
	return agentapi.LoginSession{}, unauthenticated(op)
}

// Revoke ends the session of token (logout) on every instance. Revoking
// a session that does not exist is not an error; a malformed token is
// KindUnauthenticated.
func (m *Sessions) Revoke(ctx context.Context, token string) error {
	const op = "auth.sessions.revoke"
	if !wellFormed(token) {
		return unauthenticated(op)
	}
	for _, id := range m.kr.TokenIDs(token) {
		if err := m.store.Delete(ctx, id); err != nil {
			return agentapi.E(op, agentapi.KindOther, err)
		}
		m.opened.forget(id)
	}
	return nil
}

// RevokeUser ends every session of a tenant's user, on every instance, and
// returns how many were live. Use it when a user is deleted, demoted or
// disabled, or asks to be logged out everywhere.
func (m *Sessions) RevokeUser(ctx context.Context, tenantID, userID string) (int, error) {
	const op = "auth.sessions.revokeuser"
	if tenantID == "" || userID == "" {
		return 0, agentapi.E(op, agentapi.KindInvalid, errors.New("need a tenant and a user"))
	}
	total := 0
	for _, owner := range m.kr.ownerIDs(tenantID, userID) {
		n, err := m.store.DeleteOwner(ctx, owner)
		total += n
		if err != nil {
			return total, agentapi.E(op, agentapi.KindOther, err)
		}
	}
	return total, nil
}

// openedCacheSize bounds the sessions whose opened form Validate keeps.
const openedCacheSize = 1 << 16

// openedCache remembers, per session id, the sealed bytes last opened and
// the session they held, so that validating an unchanged session skips
// AES-GCM and JSON decoding (most of its CPU cost once the read itself is
// served from a client-side cache). A hit needs the stored bytes to equal,
// in full, bytes that were authenticated under the same id: identical key
// id, nonce, ciphertext and tag under the same additional data open to the
// same plaintext, so a hit is exactly as trustworthy as opening again.
// What the cache holds is no more than every Validate returns; expiry and
// revocation are unaffected, since the store is read on every Validate.
//
// It is split in shards with a lock each, as every Validate reads it. The
// size is bounded with two generations per shard: when the current map is
// full, it replaces the old one. A dropped entry costs one more decode.
type openedCache struct {
	seed   maphash.Seed
	shards [openedShards]openedShard
}

const openedShards = 32

type openedShard struct {
	mu       sync.RWMutex
	half     int
	cur, old map[string]openedEntry
	_        [40]byte // keep shards' locks on separate cache lines
}

type openedEntry struct {
	sealed []byte
	s      agentapi.LoginSession
}

func newOpenedCache(limit int) *openedCache {
	c := &openedCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].half = max(limit/(2*openedShards), 1)
		c.shards[i].cur = map[string]openedEntry{}
	}
	return c
}

func (c *openedCache) shard(id string) *openedShard {
	return &c.shards[maphash.String(c.seed, id)%openedShards]
}

func (c *openedCache) get(id string, sealed []byte) (agentapi.LoginSession, bool) {
	sh := c.shard(id)
	sh.mu.RLock()
	e, ok := sh.cur[id]
	if !ok {
		e, ok = sh.old[id]
	}
	sh.mu.RUnlock()
	if !ok || !bytes.Equal(e.sealed, sealed) {
		return agentapi.LoginSession{}, false
	}
	return e.s, true
}

// put keeps sealed, which the caller must not change afterwards.
func (c *openedCache) put(id string, sealed []byte, s agentapi.LoginSession) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.cur[id]; !ok && len(sh.cur) >= sh.half {
		sh.old, sh.cur = sh.cur, make(map[string]openedEntry, sh.half)
	}
	sh.cur[id] = openedEntry{sealed: sealed, s: s}
}

func (c *openedCache) forget(id string) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.cur, id)
	delete(sh.old, id)
}
