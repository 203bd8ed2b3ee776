// Package redis holds the Redis backends of the feature stores, written
// against kv.Client so that they run over the native protocol (with
// client-side caching) and over Upstash's REST API alike.
//
// Scripts follow the rules that keep them portable to Upstash: every key a
// script touches is passed in KEYS, nothing depends on the server's clock,
// and no script reads a key whose name it computed.
package redis

import (
	"context"
	"encoding/base64"
	"errors"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// Defaults for SessionOptions.
const (
	DefaultLocalTTL     = 30 * time.Second
	DefaultRefreshEvery = time.Minute
	DefaultMaxTracked   = 100_000
)

// writeWindow is how long after this instance wrote a session its Gets of
// that session bypass the client-side cache.
const writeWindow = time.Second

// SessionOptions tune a SessionStore. Zero values mean the defaults.
type SessionOptions struct {
	// LocalTTL bounds how long a session read may be served from the
	// client-side cache (kv.DoCached). The cache also never outlives the
	// key's own TTL on the server. Negative: no cached path, every Get runs
	// the GET+PEXPIRE script. Default DefaultLocalTTL.
	LocalTTL time.Duration
	// RefreshEvery is the least a refresh must extend a session's expiry
	// by: one instance restarts the TTL of a session it serves at most
	// once per RefreshEvery (when the ttl given to Get stays the same);
	// see SessionStore. It is capped at a quarter of the ttl given to Get.
	// Default DefaultRefreshEvery.
	RefreshEvery time.Duration
	// MaxTracked bounds the number of session ids whose last refresh time
	// is remembered. Forgetting one only makes its next refresh come
	// earlier. Default DefaultMaxTracked.
	MaxTracked int
}

// SessionStore is an agentapi.SessionStore in Redis.
//
// Keys, under the prefix given to NewSessionStore:
//
//	<prefix>session:<id>       string: base64(payload) "|" owner, PX = ttl
//	<prefix>owner:{<owner>}    set of ids, PX >= the TTL of every member
//
// The payload is base64 so that it crosses the REST transport, which
// carries UTF-8 only. The owner is kept in the value so that a refresh of
// the session can keep the owner index alive as long as the session: an
// index that expired before a session it lists would let that session
// escape DeleteOwner. Stale ids in an index (sessions deleted or expired
// one by one) are harmless: DeleteOwner counts only the keys DEL removed,
// and the index expires by itself.
//
// Get has two paths.
//
// Cached (the default when the client has a client-side cache, i.e.
// kv/native, or a kv.Switch over it): the value is read with kv.DoCached,
// so a session validated recently is answered from this process's memory,
// without a round trip. Coherence comes from the server: with RESP3 client
// tracking, Redis notifies every client that read a key when the key is
// written, deleted or its TTL changed, and rueidis drops the cached copy.
// A Delete or DeleteOwner on any instance therefore ends the session on
// every instance as soon as the invalidation reaches it: the time for one
// message to cross the network and be processed (the conformance suite
// allows 1s; over loopback on a loaded 2-vCPU VM the worst of 200 trials
// was about 20ms). A cached copy also never outlives LocalTTL nor the key's
// TTL, and rueidis empties the cache when its connection drops, so a cut
// connection cannot leave a revoked session valid. Sliding: a Get restarts
// the session's TTL (after extending the owner index when needed, with a
// small script), but at most once per RefreshEvery (capped at ttl/4) per
// session per instance; in between the session is served without touching
// Redis. The idle timeout a user sees is thus between ttl-RefreshEvery and
// ttl. The refresh changes the key's TTL, which invalidates the cached
// copy on every instance: each session costs each instance that serves it
// about three round trips per RefreshEvery. The refresh also re-checks that
// the session exists: if it is gone, Get fails even if the read came from
// a cache that had not yet heard of the deletion.
//
// Own writes: Redis sends the invalidation of a key to the connection
// that read it at about the time it answers the write, possibly on another
// connection, so this process may answer a Get from its cache before it
// has processed the invalidation of its own Put or Delete. So that an
// instance always reads its own writes (a logout is refused at once by
// the instance that performed it), a Get of a session this instance wrote
// (Put, Delete, DeleteOwner) within the last second takes the scripted
// path, which asks the server. The window is tracked for up to
// MaxTracked ids; beyond that rate of writes per second the oldest are
// forgotten early.
//
// Scripted (REST, or LocalTTL < 0): one round trip, a script doing GET and
// PEXPIRE, so sliding is exact. The owner index is extended (and the
// session's TTL restarted after it) by two more calls at most once per
// RefreshEvery per session per instance. There is no
// cache and revocation is visible to the next Get.
//
// DeleteOwner reads the index (SMEMBERS), DELs every listed session and
// only then removes exactly those ids from the index, so a login racing
// with it stays indexed. Nothing here uses KEYS or SCAN.
//
// Redis Cluster: a session's key and its owner's index are in different
// slots (a session is looked up by id alone, so its key cannot carry its
// owner's hash tag), so no script or transaction touches both; every call
// here names one key, or (DeleteOwner's DELs) is a pipeline of one-key
// commands. The order of the calls keeps the invariant that matters, a
// live session is listed in an index that lives at least as long: Put
// writes the session and then indexes it (if it fails in between, the
// session is not indexed, but the caller never got its token, so nobody
// can use it); a refresh extends the index before the session (if the
// session then turns out to be gone, an index living a little longer is
// harmless); DeleteOwner deletes the sessions before it removes their ids
// (if it fails in between, the ids of deleted sessions stay listed, which
// is harmless, and a retry deletes whatever is still listed). The same
// code runs on one server, on Upstash and on a cluster.
type SessionStore struct {
	c            kv.Client
	prefix       string
	cached       bool
	localTTL     time.Duration
	refreshEvery time.Duration
	touched      *stamps // expiry last set per id, for the refresh
	written      *stamps // end of the write window per id
	// lastWrite is when this instance last wrote any session (monotonic,
	// since monoBase): with no write in the last writeWindow, Get need
	// not look at written.
	lastWrite atomic.Int64
}

// monoBase anchors monotonic times stored as integers.
var monoBase = time.Now()

var _ agentapi.SessionStore = (*SessionStore)(nil)

// NewSessionStore returns a store over c whose keys start with prefix
// (e.g. "agentapi:"), with default options.
func NewSessionStore(c kv.Client, prefix string) *SessionStore {
	return NewSessionStoreOptions(c, prefix, SessionOptions{})
}

// NewSessionStoreOptions is NewSessionStore with options.
func NewSessionStoreOptions(c kv.Client, prefix string, o SessionOptions) *SessionStore {
	if o.LocalTTL == 0 {
		o.LocalTTL = DefaultLocalTTL
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = DefaultRefreshEvery
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	_, caching := c.(kv.CachingClient)
	return &SessionStore{
		c:            c,
		prefix:       prefix,
		cached:       caching && o.LocalTTL > 0,
		localTTL:     o.LocalTTL,
		refreshEvery: o.RefreshEvery,
		touched:      newStamps(o.MaxTracked),
		written:      newStamps(o.MaxTracked),
	}
}

// Cached reports whether Get takes the cached path.
func (s *SessionStore) Cached() bool { return s.cached }

func (s *SessionStore) sessionKey(id string) string { return s.prefix + "session:" + id }
func (s *SessionStore) ownerKey(owner string) string {
	return s.prefix + "owner:{" + owner + "}"
}

// indexScript lists a session in its owner's index, raising the index's
// TTL to at least ARGV[2] ms (never lowering it: other sessions in the
// index may live longer). KEYS[1]: the index. ARGV[1]: the session id.
var indexScript = kv.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local want = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1`)

// getScript is the scripted Get: read and restart the TTL in one trip.
var getScript = kv.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return v`)

// extendScript makes an owner index that exists (with a TTL) live at least
// ARGV[1] ms; it never creates one. KEYS[1]: the index.
var extendScript = kv.NewScript(`
local want = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1`)

func ms(d time.Duration) string {
	n := d.Milliseconds()
	if n < 1 {
		n = 1
	}
	return strconv.FormatInt(n, 10)
}

// every is the refresh interval for a session with the given ttl.
func (s *SessionStore) every(ttl time.Duration) time.Duration {
	return max(min(s.refreshEvery, ttl/4), time.Millisecond)
}

func invalid(op, msg string) error {
	return agentapi.E(op, agentapi.KindInvalid, errors.New(msg))
}

func notFound(op string) error {
	return agentapi.E(op, agentapi.KindNotFound, errors.New("no such session"))
}

func checkID(op, id string) error {
	if id == "" {
		return invalid(op, "empty session id")
	}
	if !utf8.ValidString(id) {
		return invalid(op, "session id is not UTF-8")
	}
	return nil
}

// Put implements agentapi.SessionStore. Replacing an id under a different
// owner leaves it listed under the old owner too; ids are HMACs of random
// tokens, so this does not arise.
func (s *SessionStore) Put(ctx context.Context, id, owner string, payload []byte, ttl time.Duration) error {
	const op = "redis.sessions.put"
	if err := checkID(op, id); err != nil {
		return err
	}
	if owner == "" || !utf8.ValidString(owner) {
		return invalid(op, "session owner must be non-empty UTF-8")
	}
	if ttl <= 0 {
		return invalid(op, "session ttl must be positive")
	}
	value := base64.StdEncoding.EncodeToString(payload) + "|" + owner
	every := s.every(ttl)
	start := time.Now()
	// The session first, then the index: see SessionStore.
	key := s.sessionKey(id)
	if _, err := s.c.Do(ctx, "SET", key, value, "PX", ms(ttl)); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	if _, err := s.c.Eval(ctx, indexScript, []string{s.ownerKey(owner)}, id, ms(ttl+every)); err != nil {
		// Unindexed, the session must not be used: the caller gets an
		// error, not its token. Remove it if Redis lets us.
		_, _ = s.c.Do(ctx, "DEL", key)
		return agentapi.E(op, agentapi.KindOther, err)
	}
	// The TTL was just set: no refresh is due for a while.
	s.touched.record(id, start.Add(ttl))
	s.wrote(id)
	return nil
}

// wrote opens the write window of id: see SessionStore.
func (s *SessionStore) wrote(id string) {
	if s.cached {
		now := time.Now()
		s.written.record(id, now.Add(writeWindow))
		s.lastWrite.Store(int64(now.Sub(monoBase)))
	}
}

// inWriteWindow reports whether this instance wrote id within the last
// writeWindow.
func (s *SessionStore) inWriteWindow(id string, now time.Time) bool {
	if now.Sub(monoBase)-time.Duration(s.lastWrite.Load()) > writeWindow {
		return false
	}
	return s.written.before(id, now)
}

// decode splits a stored value into payload and owner.
func decode(op string, v kv.Value) ([]byte, string, error) {
	text, err := v.Text()
	if err != nil {
		return nil, "", agentapi.E(op, agentapi.KindInternal, err)
	}
	enc, owner, ok := strings.Cut(text, "|")
	if !ok {
		return nil, "", agentapi.E(op, agentapi.KindInternal, errors.New("corrupt session entry"))
	}
	payload, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, "", agentapi.E(op, agentapi.KindInternal, errors.New("corrupt session entry"))
	}
	return payload, owner, nil
}

// Get implements agentapi.SessionStore; see SessionStore for the two
// paths and what "restarts its ttl" means on each.
func (s *SessionStore) Get(ctx context.Context, id string, ttl time.Duration) ([]byte, error) {
	const op = "redis.sessions.get"
	if err := checkID(op, id); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, invalid(op, "session ttl must be positive")
	}
	key := s.sessionKey(id)
	now := time.Now()
	var (
		v   kv.Value
		err error
	)
	if s.cached && !s.inWriteWindow(id, now) {
		v, err = kv.DoCached(ctx, s.c, s.localTTL, "GET", key)
	} else {
		v, err = s.c.Eval(ctx, getScript, []string{key}, ms(ttl))
	}
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	if v.IsNil() {
		return nil, notFound(op)
	}
	payload, owner, err := decode(op, v)
	if err != nil {
		return nil, err
	}
	every := s.every(ttl)
	if s.touched.claim(id, now, ttl, every) {
		alive, err := s.refresh(ctx, key, owner, ttl, every)
		if err != nil {
			// The read succeeded; the refresh is retried on the next Get.
			s.touched.forget(id)
		} else if !alive {
			// Deleted since the (cached) read.
			s.touched.forget(id)
			return nil, notFound(op)
		}
	}
	return payload, nil
}

// refresh makes the owner's index live at least ttl+every and then
// restarts the session's TTL, in that order (see SessionStore). It
// reports false when the session is gone.
func (s *SessionStore) refresh(ctx context.Context, key, owner string, ttl, every time.Duration) (bool, error) {
	if _, err := s.c.Eval(ctx, extendScript, []string{s.ownerKey(owner)}, ms(ttl+every)); err != nil {
		return false, err
	}
	v, err := s.c.Do(ctx, "PEXPIRE", key, ms(ttl))
	if err != nil {
		return false, err
	}
	n, err := v.Int()
	return n == 1, err
}

// Delete implements agentapi.SessionStore.
func (s *SessionStore) Delete(ctx context.Context, id string) error {
	const op = "redis.sessions.delete"
	if err := checkID(op, id); err != nil {
		return err
	}
	if _, err := s.c.Do(ctx, "DEL", s.sessionKey(id)); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	s.touched.forget(id)
	s.wrote(id)
	return nil
}

// DeleteOwner implements agentapi.SessionStore. The count is of the
// sessions that still existed.
func (s *SessionStore) DeleteOwner(ctx context.Context, owner string) (int, error) {
	const op = "redis.sessions.deleteowner"
	if owner == "" || !utf8.ValidString(owner) {
		return 0, invalid(op, "session owner must be non-empty UTF-8")
	}
	okey := s.ownerKey(owner)
	v, err := s.c.Do(ctx, "SMEMBERS", okey)
	if err != nil {
		return 0, agentapi.E(op, agentapi.KindOther, err)
	}
	ids, err := v.Strings()
	if err != nil && !v.IsNil() {
		return 0, agentapi.E(op, agentapi.KindInternal, err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// One DEL per session (their keys are in different slots), then, only
	// once they are all gone, the ids out of the index: see SessionStore.
	dels := make([][]string, len(ids))
	srem := make([]string, 0, len(ids)+2)
	srem = append(srem, "SREM", okey)
	for i, id := range ids {
		dels[i] = []string{"DEL", s.sessionKey(id)}
		srem = append(srem, id)
	}
	rs, err := s.c.Pipeline(ctx, dels...)
	if err != nil {
		return 0, agentapi.E(op, agentapi.KindOther, err)
	}
	n := 0
	for _, r := range rs {
		if r.Err != nil {
			return 0, agentapi.E(op, agentapi.KindOther, r.Err)
		}
		d, err := r.Value.Int()
		if err != nil {
			return 0, agentapi.E(op, agentapi.KindInternal, err)
		}
		n += int(d)
	}
	if _, err := s.c.Do(ctx, srem...); err != nil {
		return 0, agentapi.E(op, agentapi.KindOther, err)
	}
	for _, id := range ids {
		s.touched.forget(id)
		s.wrote(id)
	}
	return n, nil
}

// stamps maps session ids to times. Every Get of every session reads it,
// from many goroutines, so it is split in shards, each with its own lock
// (one shared lock's reader count was a tenth of the CPU of a cached Get
// at 64 goroutines). Each shard keeps two generations so that its size
// stays bounded without per-entry bookkeeping: when the current map is
// full it becomes the old one and the previous old one is dropped.
type stamps struct {
	seed   maphash.Seed
	shards [stampShards]stampShard
}

const stampShards = 32

type stampShard struct {
	mu       sync.RWMutex
	half     int
	cur, old map[string]time.Time
	_        [40]byte // keep shards' locks on separate cache lines
}

func newStamps(limit int) *stamps {
	s := &stamps{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].half = max(limit/(2*stampShards), 1)
		s.shards[i].cur = map[string]time.Time{}
	}
	return s
}

func (s *stamps) shard(id string) *stampShard {
	return &s.shards[maphash.String(s.seed, id)%stampShards]
}

// lookup and set need sh.mu held.
func (sh *stampShard) lookup(id string) (time.Time, bool) {
	if t, ok := sh.cur[id]; ok {
		return t, true
	}
	t, ok := sh.old[id]
	return t, ok
}

func (sh *stampShard) set(id string, at time.Time) {
	if _, ok := sh.cur[id]; !ok && len(sh.cur) >= sh.half {
		sh.old, sh.cur = sh.cur, make(map[string]time.Time, sh.half)
	}
	sh.cur[id] = at
}

func (s *stamps) record(id string, at time.Time) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.set(id, at)
}

func (s *stamps) forget(id string) {
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	delete(sh.cur, id)
	delete(sh.old, id)
}

// Len is how many ids are held.
func (s *stamps) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.cur) + len(sh.old)
		sh.mu.RUnlock()
	}
	return n
}

// claim treats the stamps as the expiry this instance last gave each
// session (by Put or by a refresh). It reports whether a refresh of id to
// now+ttl is due: whether it would push that expiry by at least every
// (always true for an id not held; forgetting one only brings its refresh
// forward). When due it records the new expiry at once, so that concurrent
// Gets of one session refresh it once.
func (s *stamps) claim(id string, now time.Time, ttl, every time.Duration) bool {
	exp := now.Add(ttl)
	sh := s.shard(id)
	// Mostly not due: decide that under the shared lock.
	sh.mu.RLock()
	last, ok := sh.lookup(id)
	sh.mu.RUnlock()
	if ok && exp.Sub(last) < every {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if last, ok := sh.lookup(id); ok && exp.Sub(last) < every {
		return false // claimed by another Get meanwhile
	}
	sh.set(id, exp)
	return true
}

// before treats the stamps as deadlines and reports whether id has one
// after now.
func (s *stamps) before(id string, now time.Time) bool {
	sh := s.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	t, ok := sh.lookup(id)
	return ok && now.Before(t)
}
