package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// memShards is the number of independently locked parts of a Memory.
const memShards = 64

// minSweep is the size below which a Memory shard never sweeps.
const minSweep = 64

// MemoryOptions configure a Memory limiter. The zero value is ready to use.
type MemoryOptions struct {
	// Now is the clock. Default time.Now. Tests pass a fake one.
	Now func() time.Time
}

// Memory is a GCRA rate limiter that keeps its state in this process. It is
// exact for the callers of this one Memory and safe for concurrent use.
// Times are in nanoseconds.
//
// Memory bound: a key takes one map entry (its name and 8 bytes of TAT)
// while its TAT is in the future, i.e. while it is not back to a full
// burst; after that it is forgotten, which loses nothing (a key without
// state is a key with a full burst). Expired entries are dropped lazily: a
// key found expired is deleted when read, and each of the 64 shards sweeps
// out every expired entry when it has grown to twice its size after its
// previous sweep (and to at least 64 entries). So a shard never holds more
// than max(64, 2 × the live keys it had at its last sweep) entries, and the
// whole limiter at most about twice its peak number of live keys plus
// 4096. There is no background goroutine and nothing to close.
type Memory struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [memShards]memShard
}

type memShard struct {
	mu      sync.Mutex
	tats    map[string]int64 // key → TAT, Unix ns
	sweepAt int              // sweep when len(tats) reaches this
	_       [40]byte         // keep shards on separate cache lines
}

var _ agentapi.RateLimiter = (*Memory)(nil)

// NewMemory returns an empty Memory limiter.
func NewMemory(o MemoryOptions) *Memory {
	m := &Memory{now: o.Now, seed: maphash.MakeSeed()}
	if m.now == nil {
		m.now = time.Now
	}
	for i := range m.shards {
		m.shards[i].tats = make(map[string]int64)
		m.shards[i].sweepAt = minSweep
	}
	return m
}

// Allow decides one request of the given cost for key against limit and,
// when it is allowed, consumes it. It fails only for invalid arguments
// (KindInvalid); ctx is not used.
func (m *Memory) Allow(_ context.Context, key string, limit agentapi.RateLimit, cost int) (agentapi.RateDecision, error) {
	p, err := compile("ratelimit.memory", limit, cost, time.Nanosecond)
	if err != nil {
		return agentapi.RateDecision{}, err
	}
	s := &m.shards[maphash.String(m.seed, key)%memShards]
	s.mu.Lock()
	now := m.now().UnixNano() // read under the lock: decisions on a key see non-decreasing times
	tat, ok := s.tats[key]
	o := decide(tat, now, p, int64(cost))
	switch {
	case o.allowed && cost > 0:
		s.tats[key] = o.tat
		if !ok && len(s.tats) >= s.sweepAt {
			s.sweep(now)
		}
	case ok && tat <= now:
		delete(s.tats, key)
	}
	s.mu.Unlock()
	return o.decision(limit, time.Nanosecond), nil
}

// sweep drops every entry whose TAT is not after now.
func (s *memShard) sweep(now int64) {
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
		}
	}
	s.sweepAt = max(2*len(s.tats), minSweep)
}

// Len is the number of keys the limiter holds state for, expired ones not
// yet dropped included.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}
