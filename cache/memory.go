package cache

import (
	"container/list"
	"context"
	"strconv"
	"sync"
	"time"
)

// Defaults for MemoryOptions.
const (
	DefaultMaxBytes      = 64 << 20
	DefaultGenerationTTL = 30 * 24 * time.Hour
)

// entryOverhead is what Memory counts for an entry beyond its strings: the
// list element, the map slot and the struct, roughly.
const entryOverhead = 160

// MemoryOptions configure a Memory backend. The zero value is ready to use.
type MemoryOptions struct {
	// MaxBytes bounds the entries kept: their values, metadata, keys and
	// a fixed overhead each. Past it, the least recently used entries are
	// dropped. An entry larger than MaxBytes is not stored. Default
	// DefaultMaxBytes.
	MaxBytes int64
	// Now is the clock that stamps and expires entries. Default time.Now.
	Now func() time.Time
	// GenerationTTL is how long a scope's generation is remembered after
	// its last Bump, at least (see Memory). It also caps the ttl of
	// entries. Default DefaultGenerationTTL.
	GenerationTTL time.Duration
}

// Memory is a Backend in this process's memory, for single-instance
// deployments and tests. It needs no goroutine: expiry is checked by the
// clock on every Get, and expired or invalidated entries are dropped when
// they are next looked at or when room is needed.
//
// Size: entries are bounded by MaxBytes (least recently used first out).
// Generations are small records kept per (tenant, scope) that was ever
// bumped; each lives GenerationTTL after its last Bump and at least as
// long as every entry put under it, then it is forgotten and the scope is
// back at generation 0. That is safe because every entry that could match
// a generation it had again has expired by then: entries put after a Bump
// extend the record, and entries put before the first one live at most
// GenerationTTL (Put caps ttl at it). Forgotten records are swept
// whenever the table has doubled since the last sweep, so it holds at
// most about twice the live records.
type Memory struct {
	now      func() time.Time
	maxBytes int64
	genTTL   time.Duration

	mu        sync.Mutex
	bytes     int64
	lru       list.List // of *memEntry; front is the most recently used
	entries   map[string]*list.Element
	gens      map[string]*memGen
	sweepSize int // sweep gens when it grows past this
}

type memEntry struct {
	id      string // entryID
	gen     uint64
	e       Entry
	expires time.Time
	size    int64
}

type memGen struct {
	gen     uint64
	expires time.Time
}

var _ Backend = (*Memory)(nil)

// NewMemory returns an empty Memory backend.
func NewMemory(o MemoryOptions) *Memory {
	m := &Memory{now: o.Now, maxBytes: o.MaxBytes, genTTL: o.GenerationTTL}
	if m.now == nil {
		m.now = time.Now
	}
	if m.maxBytes <= 0 {
		m.maxBytes = DefaultMaxBytes
	}
	if m.genTTL <= 0 {
		m.genTTL = DefaultGenerationTTL
	}
	m.entries = make(map[string]*list.Element)
	m.gens = make(map[string]*memGen)
	m.sweepSize = 1024
	return m
}

// scopeID and entryID length-prefix their parts, so that different
// triples never share an id.
func scopeID(tenant, scope string) string {
	return strconv.Itoa(len(tenant)) + ":" + tenant + strconv.Itoa(len(scope)) + ":" + scope
}

func entryID(sid, key string) string { return sid + key }

// stamp is now to the microsecond, without a monotonic reading, as Redis
// stores it.
func stamp(t time.Time) time.Time { return time.UnixMicro(t.UnixMicro()) }

// Get implements Backend.
func (m *Memory) Get(ctx context.Context, tenant, scope, key string) (Entry, uint64, bool, error) {
	if err := checkTenant("cache.memory.get", tenant); err != nil {
		return Entry{}, 0, false, err
	}
	sid := scopeID(tenant, scope)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	gen := m.genLocked(sid, now)
	el, ok := m.entries[entryID(sid, key)]
	if !ok {
		return Entry{}, gen, false, nil
	}
	me := el.Value.(*memEntry)
	if me.gen != gen || !now.Before(me.expires) {
		// Never served again: generations only grow, and an entry
		// outlives its generation record (see Memory).
		m.removeLocked(el)
		return Entry{}, gen, false, nil
	}
	m.lru.MoveToFront(el)
	return me.e, gen, true, nil
}

// Put implements Backend.
func (m *Memory) Put(ctx context.Context, tenant, scope, key string, gen uint64, e Entry, ttl time.Duration) error {
	if err := checkPut("cache.memory.put", tenant, ttl); err != nil {
		return err
	}
	sid := scopeID(tenant, scope)
	id := entryID(sid, key)
	size := int64(len(e.Value)+len(e.ContentType)+len(e.ETag)+len(id)+len(sid)) + entryOverhead
	if size > m.maxBytes {
		return nil
	}
	ttl = min(ttl, m.genTTL)
	now := m.now()
	e.Value = append(make([]byte, 0, len(e.Value)), e.Value...)
	e.StoredAt, e.TTL = stamp(now), ttl
	me := &memEntry{id: id, gen: gen, e: e, expires: now.Add(ttl), size: size}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.genLocked(sid, now) != gen {
		return nil
	}
	if g := m.gens[sid]; g != nil && g.expires.Before(me.expires) {
		g.expires = me.expires // the record outlives its entries
	}
	if el, ok := m.entries[id]; ok {
		m.removeLocked(el)
	}
	m.entries[id] = m.lru.PushFront(me)
	m.bytes += size
	for m.bytes > m.maxBytes {
		m.removeLocked(m.lru.Back())
	}
	return nil
}

// Delete implements Backend.
func (m *Memory) Delete(ctx context.Context, tenant, scope, key string) error {
	if err := checkTenant("cache.memory.delete", tenant); err != nil {
		return err
	}
	id := entryID(scopeID(tenant, scope), key)
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[id]; ok {
		m.removeLocked(el)
	}
	return nil
}

// Bump implements Backend.
func (m *Memory) Bump(ctx context.Context, tenant, scope string) (uint64, error) {
	if err := checkTenant("cache.memory.bump", tenant); err != nil {
		return 0, err
	}
	sid := scopeID(tenant, scope)
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	gen := m.genLocked(sid, now) + 1
	g := m.gens[sid]
	if g == nil {
		if len(m.gens) >= m.sweepSize {
			m.sweepLocked(now)
		}
		g = &memGen{}
		m.gens[sid] = g
	}
	g.gen = gen
	if exp := now.Add(m.genTTL); g.expires.Before(exp) {
		g.expires = exp
	}
	return gen, nil
}

// genLocked is the current generation of scope sid, forgetting an expired
// record.
func (m *Memory) genLocked(sid string, now time.Time) uint64 {
	g := m.gens[sid]
	if g == nil {
		return 0
	}
	if !now.Before(g.expires) {
		delete(m.gens, sid)
		return 0
	}
	return g.gen
}

// sweepLocked forgets expired generation records and sets the size of the
// next sweep to twice what is left.
func (m *Memory) sweepLocked(now time.Time) {
	for sid, g := range m.gens {
		if !now.Before(g.expires) {
			delete(m.gens, sid)
		}
	}
	m.sweepSize = max(1024, 2*len(m.gens))
}

func (m *Memory) removeLocked(el *list.Element) {
	me := m.lru.Remove(el).(*memEntry)
	delete(m.entries, me.id)
	m.bytes -= me.size
}

// Len reports how many entries are held, expired ones not yet dropped
// included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Bytes reports the size of the entries held, as counted against MaxBytes.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// Generations reports how many generation records are held.
func (m *Memory) Generations() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.gens)
}
