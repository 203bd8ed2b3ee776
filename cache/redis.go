package cache

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// Defaults for RedisOptions.
const (
	DefaultPrefix     = "agentapi:"
	DefaultMaxTracked = 100_000
)

// ownWriteWindow is how long after this instance wrote a scope its Gets of
// that scope skip the client-side cache (see Redis).
const ownWriteWindow = time.Second

// RedisOptions configure a Redis backend. The zero value is ready to use.
type RedisOptions struct {
	// Prefix starts every key. Default DefaultPrefix. Instances that share
	// a cache must use the same prefix.
	Prefix string
	// Now is the clock that stamps entries (Entry.StoredAt) and checks
	// their expiry on read, next to Redis's own expiry. Default time.Now.
	Now func() time.Time
	// GenerationTTL is how long a scope's generation key lives after its
	// last Bump, at least; it also caps the ttl of entries. Default
	// DefaultGenerationTTL.
	GenerationTTL time.Duration
	// LocalTTL, when positive and the client has a client-side cache
	// (kv.DoCached: kv/native against a server with client tracking),
	// makes Get read through that cache, for at most LocalTTL per read.
	// Zero or negative: every Get asks the server. See Redis for what
	// this trades.
	LocalTTL time.Duration
	// MaxTracked bounds the number of scopes whose last write by this
	// instance is remembered on the LocalTTL path. Default
	// DefaultMaxTracked.
	MaxTracked int
	// NearBytes bounds the decoded entries kept in this process to answer
	// hits without carrying their values (see Redis); 0 means
	// DefaultNearBytes, negative turns them off.
	NearBytes int64
}

// Redis is a Backend in Redis, over a kv.Client, shared by every instance
// that uses the same server and prefix. It works over the native protocol
// and over Upstash's REST API alike.
//
// # Keys
//
// For tenant T, scope S and key K:
//
//	<prefix>{t:<T>}:cache:g:<S>       generation: INCR counter (absent = 0)
//	<prefix>{t:<T>}:cache:e:<S>:<K>   entry, PX = its ttl
//
// T, S and K are percent-encoded (every byte outside A-Z a-z 0-9 - _ . / ~
// becomes %XX, ':' too except in K), so keys are ASCII, T cannot end the
// hash tag early, S cannot contain the ':' that ends it, and different
// triples never share a key. The tenant is inside the hash tag, so all of
// a tenant's keys are in one Redis Cluster slot and every script's keys
// with it.
//
// Every key expires. An entry lives its ttl (capped at GenerationTTL). A
// generation key lives GenerationTTL after its last Bump and never less
// than any entry put under it: Put raises its TTL to the entry's. When it
// finally expires, the scope is back at generation 0, which is safe:
// every entry that could match a generation it had before has expired.
//
// An entry is one string: "c1 <gen> <stored µs> <ttl µs> <b64 content
// type> <b64 etag> <b64 value>". Base64 keeps it valid UTF-8, which the
// REST transport needs; a string that does not decode (another version's
// format, or damage) is a miss, and the next Put replaces it.
//
// # Round trips
//
// Get is one script that reads the generation and the entry (one round
// trip); Put is one script that writes the entry only if its generation
// is current; Bump is one script (INCR and the key's TTL); Delete is one
// DEL. The scripts follow the Upstash rules of package redis: every key in
// KEYS, no server clock, no computed key names.
//
// With this default, a Bump, Put or Delete is seen by the next Get on
// every instance: Get always asks the server.
//
// # The client-side cache (LocalTTL)
//
// With LocalTTL set and a caching client, Get reads the generation key
// and the entry key with kv.DoCached (two reads, served from this
// process's memory once read, so a repeated hit costs no round trip; a
// cold one costs two). Redis tracks the keys each client read and tells
// it when they change (RESP3 client tracking); rueidis then drops its
// copies. That message travels on the reading client's connection, at
// about the time the writer gets its answer, so another instance stops
// serving an invalidated entry only once it has arrived and been
// processed: usually well under a millisecond, not at once. Use it where
// that is acceptable. This instance's own writes are exact: for a second
// after this instance writes a scope (Put, Delete, Bump), its Gets of
// that scope ask the server, as rueidis may carry the write and the
// invalidation on different connections. The scopes written are tracked
// up to MaxTracked; past that, all Gets ask the server for a second.
type Redis struct {
	c        kv.Client
	prefix   string
	now      func() time.Time
	genTTL   time.Duration
	localTTL time.Duration // > 0: the cached path, when caching says so
	caching  func() bool   // nil: always

	// near keeps entries this instance read or stored, decoded: a Get of
	// one costs a small script call that returns the generation and the
	// stored entry's header, instead of carrying the whole value. A near
	// copy is served only when Redis still holds that very entry (same
	// generation, stored-at time and TTL), so it is exactly as fresh as a
	// full read. nil when RedisOptions.NearBytes < 0.
	near *near

	wmu        sync.Mutex
	written    map[string]time.Time // scope key -> end of its own-write window
	maxTracked int
	allUntil   time.Time // every Get asks the server until then
}

var _ Backend = (*Redis)(nil)

// NewRedis returns a Backend over c. c is not closed by the backend.
func NewRedis(c kv.Client, o RedisOptions) *Redis {
	r := &Redis{c: c, prefix: o.Prefix, now: o.Now, genTTL: o.GenerationTTL, maxTracked: o.MaxTracked}
	switch {
	case o.NearBytes == 0:
		r.near = newNear(DefaultNearBytes)
	case o.NearBytes > 0:
		r.near = newNear(o.NearBytes)
	}
	if r.prefix == "" {
		r.prefix = DefaultPrefix
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.genTTL <= 0 {
		r.genTTL = DefaultGenerationTTL
	}
	if r.maxTracked <= 0 {
		r.maxTracked = DefaultMaxTracked
	}
	if _, ok := c.(kv.CachingClient); ok && o.LocalTTL > 0 {
		r.localTTL = o.LocalTTL
		r.written = make(map[string]time.Time)
		// A client that can lose its cache (kv.Switch falling back to
		// REST, kv/native against Upstash) says so; without one, Get
		// takes the one-round-trip script.
		if cc, ok := c.(interface{ Caching() bool }); ok {
			r.caching = cc.Caching
		}
	}
	return r
}

// Cached reports whether Get reads through the client-side cache now.
func (r *Redis) Cached() bool {
	return r.localTTL > 0 && (r.caching == nil || r.caching())
}

// GenKey and EntryKey are the Redis keys of a scope's generation and of an
// entry (see Redis), for operators and tests.
func (r *Redis) GenKey(tenant, scope string) string {
	return r.prefix + "{t:" + escape(tenant, false) + "}:cache:g:" + escape(scope, false)
}

// EntryKey: see GenKey.
func (r *Redis) EntryKey(tenant, scope, key string) string {
	return r.prefix + "{t:" + escape(tenant, false) + "}:cache:e:" + escape(scope, false) + ":" + escape(key, true)
}

// getScript reads a scope's generation (KEYS[1]) and an entry (KEYS[2]).
// It returns {gen, entry}, with entry "" when it is missing or was put
// under another generation (so that a stale value does not cross the
// network).
// headScript returns the generation at KEYS[1] and the first ARGV[1] bytes
// of the entry at KEYS[2] (” when there is none): enough to tell whether a
// near copy is still the stored entry.
var headScript = kv.NewScript(`local g = redis.call('GET', KEYS[1]) or '0'
return {g, redis.call('GETRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)}
`)

var getScript = kv.NewScript(`local g = redis.call('GET', KEYS[1]) or '0'
local e = redis.call('GET', KEYS[2])
if not e then return {g, ''} end
local p = 'c1 ' .. g .. ' '
if string.sub(e, 1, #p) ~= p then return {g, ''} end
return {g, e}
`)

// putScript stores entry ARGV[2] at KEYS[2] for ARGV[3] ms if the
// generation at KEYS[1] is still ARGV[1], and then makes sure the
// generation key, if there is one, lives at least as long. It returns 1
// when it stored, 0 when the generation has moved on.
var putScript = kv.NewScript(`local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
if g ~= '0' then
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return 1
`)

// bumpScript increments the generation at KEYS[1] and makes it live at
// least ARGV[1] ms (never shortening it: entries may need it longer).
var bumpScript = kv.NewScript(`local g = redis.call('INCR', KEYS[1])
local want = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < want then redis.call('PEXPIRE', KEYS[1], want) end
return g
`)

// Get implements Backend.
func (r *Redis) Get(ctx context.Context, tenant, scope, key string) (Entry, uint64, bool, error) {
	const op = "cache.redis.get"
	if err := checkTenant(op, tenant); err != nil {
		return Entry{}, 0, false, err
	}
	gk, ek := r.GenKey(tenant, scope), r.EntryKey(tenant, scope, key)
	var gs, es string
	if r.Cached() && !r.ownWrite(gk) {
		g, err := kv.DoCached(ctx, r.c, r.localTTL, "GET", gk)
		if err != nil {
			return Entry{}, 0, false, agentapi.E(op, agentapi.KindOther, err)
		}
		e, err := kv.DoCached(ctx, r.c, r.localTTL, "GET", ek)
		if err != nil {
			return Entry{}, 0, false, agentapi.E(op, agentapi.KindOther, err)
		}
		gs, es = "0", ""
		if !g.IsNil() {
			gs, err = g.Text()
		}
		if err == nil && !e.IsNil() {
			es, err = e.Text()
		}
		if err != nil {
			return Entry{}, 0, false, agentapi.E(op, agentapi.KindInternal, err)
		}
	} else {
		if n, ok := r.near.get(ek); ok {
			v, err := r.c.Eval(ctx, headScript, []string{gk, ek}, strconv.Itoa(len(n.header)))
			if err != nil {
				return Entry{}, 0, false, agentapi.E(op, agentapi.KindOther, err)
			}
			ss, err := v.Strings()
			if err == nil && len(ss) == 2 && ss[0] == strconv.FormatUint(n.gen, 10) && ss[1] == n.header && r.now().Before(n.e.Expires()) {
				return n.e, n.gen, true, nil
			}
			r.near.remove(ek)
		}
		v, err := r.c.Eval(ctx, getScript, []string{gk, ek})
		if err != nil {
			return Entry{}, 0, false, agentapi.E(op, agentapi.KindOther, err)
		}
		ss, err := v.Strings()
		if err != nil || len(ss) != 2 {
			return Entry{}, 0, false, agentapi.E(op, agentapi.KindInternal, errors.New("cache: unexpected reply "+v.String()))
		}
		gs, es = ss[0], ss[1]
	}
	gen, err := strconv.ParseUint(gs, 10, 64)
	if err != nil {
		return Entry{}, 0, false, agentapi.E(op, agentapi.KindInternal, errors.New("cache: generation "+strconv.Quote(gs)+" is not a number"))
	}
	if es == "" {
		return Entry{}, gen, false, nil
	}
	e, egen, ok := decodeEntry(es)
	if !ok || egen != gen || !r.now().Before(e.Expires()) {
		return Entry{}, gen, false, nil
	}
	r.near.put(ek, gen, e, entryHeader(es))
	return e, gen, true, nil
}

// Put implements Backend.
func (r *Redis) Put(ctx context.Context, tenant, scope, key string, gen uint64, e Entry, ttl time.Duration) error {
	const op = "cache.redis.put"
	if err := checkPut(op, tenant, ttl); err != nil {
		return err
	}
	ttl = min(ttl, r.genTTL)
	e.StoredAt, e.TTL = stamp(r.now()), ttl
	gk := r.GenKey(tenant, scope)
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	r.noteWrite(gk)
	ek, enc := r.EntryKey(tenant, scope, key), encodeEntry(gen, e)
	v, err := r.c.Eval(ctx, putScript, []string{gk, ek},
		strconv.FormatUint(gen, 10), enc, strconv.FormatInt(int64(ms), 10))
	if err != nil {
		r.near.remove(ek)
		return agentapi.E(op, agentapi.KindOther, err)
	}
	if stored, _ := v.Int(); stored == 1 && r.near != nil {
		e.Value = append([]byte(nil), e.Value...)
		r.near.put(ek, gen, e, entryHeader(enc))
	}
	return nil
}

// Delete implements Backend.
func (r *Redis) Delete(ctx context.Context, tenant, scope, key string) error {
	const op = "cache.redis.delete"
	if err := checkTenant(op, tenant); err != nil {
		return err
	}
	r.noteWrite(r.GenKey(tenant, scope))
	ek := r.EntryKey(tenant, scope, key)
	r.near.remove(ek)
	if _, err := r.c.Do(ctx, "DEL", ek); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	return nil
}

// Bump implements Backend.
func (r *Redis) Bump(ctx context.Context, tenant, scope string) (uint64, error) {
	const op = "cache.redis.bump"
	if err := checkTenant(op, tenant); err != nil {
		return 0, err
	}
	gk := r.GenKey(tenant, scope)
	r.noteWrite(gk)
	v, err := r.c.Eval(ctx, bumpScript, []string{gk}, strconv.FormatInt(r.genTTL.Milliseconds(), 10))
	if err != nil {
		return 0, agentapi.E(op, agentapi.KindOther, err)
	}
	n, err := v.Int()
	if err != nil || n < 1 {
		return 0, agentapi.E(op, agentapi.KindInternal, errors.New("cache: unexpected reply "+v.String()))
	}
	return uint64(n), nil
}

// noteWrite opens the own-write window of the scope whose generation key
// is gk, before the write is sent (a Get racing with the write then asks
// the server too).
func (r *Redis) noteWrite(gk string) {
	if r.localTTL <= 0 {
		return
	}
	now := time.Now()
	end := now.Add(ownWriteWindow)
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if _, ok := r.written[gk]; !ok && len(r.written) >= r.maxTracked {
		for k, until := range r.written {
			if !now.Before(until) {
				delete(r.written, k)
			}
		}
		if len(r.written) >= r.maxTracked {
			// Too many scopes written within a second to track: ask the
			// server for every scope until the newest window closes.
			clear(r.written)
			r.allUntil = end
			return
		}
	}
	r.written[gk] = end
}

// ownWrite reports whether this instance wrote the scope of gk within
// the own-write window.
func (r *Redis) ownWrite(gk string) bool {
	now := time.Now()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if now.Before(r.allUntil) {
		return true
	}
	until, ok := r.written[gk]
	if ok && !now.Before(until) {
		delete(r.written, gk)
		return false
	}
	return ok
}

var b64 = base64.StdEncoding

// encodeEntry is the stored form of e under gen (see Redis).
func encodeEntry(gen uint64, e Entry) string {
	var b strings.Builder
	b.Grow(64 + b64.EncodedLen(len(e.Value)) + 2*(len(e.ContentType)+len(e.ETag)))
	b.WriteString("c1 ")
	b.WriteString(strconv.FormatUint(gen, 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(e.StoredAt.UnixMicro(), 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(e.TTL.Microseconds(), 10))
	for _, s := range []string{e.ContentType, e.ETag} {
		b.WriteByte(' ')
		b.WriteString(b64.EncodeToString([]byte(s)))
	}
	b.WriteByte(' ')
	b.WriteString(b64.EncodeToString(e.Value))
	return b.String()
}

// decodeEntry parses encodeEntry's output; ok is false for anything else.
func decodeEntry(s string) (e Entry, gen uint64, ok bool) {
	f := strings.Split(s, " ")
	if len(f) != 7 || f[0] != "c1" {
		return Entry{}, 0, false
	}
	gen, err1 := strconv.ParseUint(f[1], 10, 64)
	at, err2 := strconv.ParseInt(f[2], 10, 64)
	ttl, err3 := strconv.ParseInt(f[3], 10, 64)
	ct, err4 := b64.DecodeString(f[4])
	etag, err5 := b64.DecodeString(f[5])
	val, err6 := b64.DecodeString(f[6])
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return Entry{}, 0, false
	}
	return Entry{
		Value:       val,
		ContentType: string(ct),
		ETag:        string(etag),
		StoredAt:    time.UnixMicro(at),
		TTL:         time.Duration(ttl) * time.Microsecond,
	}, gen, true
}
