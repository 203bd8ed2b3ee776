package ratelimit

import (
	"hash/maphash"
	"sync"
)

// denyShards is the number of independently locked parts of a deny cache.
const denyShards = 32

// evictScan is how many entries a full shard looks at for expired ones
// before it drops an arbitrary entry.
const evictScan = 16

// denyCache remembers, per key, the latest TAT Redis reported for it, while
// that TAT denies requests. See Redis for why serving denials from it is
// exact. TATs are in µs.
type denyCache struct {
	seed   maphash.Seed
	per    int // capacity of each shard
	shards [denyShards]denyShard
}

type denyShard struct {
	mu sync.Mutex
	m  map[string]denyEntry
	_  [48]byte
}

type denyEntry struct {
	tat   int64 // the latest TAT Redis reported
	until int64 // when it stops denying cost 1 under the limit last seen; for eviction
	// wait is non-nil while one request of this instance asks Redis about
	// the key after the entry stopped denying.
	wait *flight
}

// flight is one request asking Redis on behalf of others that wait.
type flight struct {
	done chan struct{} // closed when the answer is in
	err  error         // the leader's error, set before done is closed
}

// until is when a key whose TAT is tat admits a request of cost 1 under p.
func until(tat int64, p params) int64 { return tat + p.interval - p.window() }

func newDenyCache(size int) *denyCache {
	c := &denyCache{seed: maphash.MakeSeed(), per: max(1, (size+denyShards-1)/denyShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]denyEntry)
	}
	return c
}

func (c *denyCache) shard(key string) *denyShard {
	return &c.shards[maphash.String(c.seed, key)%denyShards]
}

// What check tells a request to do.
type cacheVerdict uint8

const (
	askRedis  cacheVerdict = iota // nothing known: ask Redis
	denyLocal                     // the kept TAT denies: decide locally with it
	leadRedis                     // the entry just stopped denying: ask Redis, then call finish
	waitRedis                     // another request is asking Redis: wait for it, then check again
)

// check looks key up at now under p. With denyLocal it returns the kept
// TAT. When the entry no longer denies a request of cost 1, the first
// request to see that is told to lead (ask Redis, then call finish with the
// returned flight), and the others to wait for that flight: a key that many
// requests hammer costs one round trip each time it can admit again, not
// one per request that arrives during the round trip.
func (c *denyCache) check(key string, p params, now int64) (int64, cacheVerdict, *flight) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	switch {
	case !ok:
		return 0, askRedis, nil
	case until(e.tat, p) > now:
		return e.tat, denyLocal, nil
	case e.wait != nil:
		return 0, waitRedis, e.wait
	}
	e.wait = &flight{done: make(chan struct{})}
	s.m[key] = e
	return 0, leadRedis, e.wait
}

// observe records the TAT Redis just reported for key under p. An entry
// that exists is raised to it (TATs only grow, whatever the limit: the
// entry must never fall behind this instance's own admissions); a new
// entry is made only when tat denies a request of cost 1 at now.
func (c *denyCache) observe(key string, tat int64, p params, now int64) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		e.tat = max(e.tat, tat)
		e.until = until(e.tat, p)
		s.m[key] = e
		return
	}
	u := until(tat, p)
	if u <= now {
		return
	}
	if len(s.m) >= c.per {
		s.evict(now)
	}
	s.m[key] = denyEntry{tat: tat, until: u}
}

// finish ends a lead: it wakes the waiters, passing them the leader's
// error, and drops the entry unless what the leader observed (or anything
// since) makes it deny again.
func (c *denyCache) finish(key string, wait *flight, err error, p params, now int64) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	wait.err = err
	close(wait.done)
	e, ok := s.m[key]
	if !ok || e.wait != wait {
		return // evicted meanwhile
	}
	e.wait = nil
	if until(e.tat, p) <= now {
		delete(s.m, key)
		return
	}
	s.m[key] = e
}

// evict makes room for one entry: it drops the expired entries among the
// first evictScan it visits or, when there are none, the first one visited
// (map order is random, so that one is arbitrary).
func (s *denyShard) evict(now int64) {
	var first string
	seen, dropped := 0, false
	for k, e := range s.m {
		if seen == 0 {
			first = k
		}
		if e.until <= now && e.wait == nil {
			delete(s.m, k)
			dropped = true
		}
		if seen++; seen >= evictScan {
			break
		}
	}
	if !dropped && seen > 0 {
		delete(s.m, first)
	}
}

func (c *denyCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
