// Package memory holds the in-process backends of the feature stores, for
// single-instance deployments (SESSION_STORAGE=memory) and for tests. They
// keep everything in this process's memory: nothing survives a restart and
// nothing is shared with other instances.
package memory

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// DefaultCleanupInterval is the sweep interval used when NewSessionStore
// is given none (SESSION_CLEANUP_INTERVAL's default).
const DefaultCleanupInterval = 5 * time.Minute

// SessionStore is an agentapi.SessionStore in memory.
//
// Expiry is exact: Get checks the clock, so an entry is gone the instant
// its ttl has run out, whether or not the sweeper has visited it yet.
// The sweeper, run every cleanupInterval, only reclaims the memory of
// entries nobody asked for again.
//
// Size: there is no bound on the number of entries other than their ttl.
// Memory in use is what the live sessions need plus, at worst, the ones
// that expired within the last cleanupInterval; a flood of logins is
// limited by whatever limits logins (rate limits), not here.
//
// "Every instance sharing the backend" is this process only: a Delete is
// seen by every later Get on this store at once.
type SessionStore struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*entry
	owners  map[string]map[string]struct{} // owner -> ids

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type entry struct {
	payload []byte
	owner   string
	expires time.Time
}

var _ agentapi.SessionStore = (*SessionStore)(nil)

// NewSessionStore returns an empty store whose expiry follows clock (nil:
// the wall clock) and starts its sweeper, which runs every cleanupInterval
// of real time (DefaultCleanupInterval when not positive). Close stops it.
func NewSessionStore(clock func() time.Time, cleanupInterval time.Duration) *SessionStore {
	if clock == nil {
		clock = time.Now
	}
	if cleanupInterval <= 0 {
		cleanupInterval = DefaultCleanupInterval
	}
	s := &SessionStore{
		now:     clock,
		entries: map[string]*entry{},
		owners:  map[string]map[string]struct{}{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.sweeper(cleanupInterval)
	return s
}

func (s *SessionStore) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Close stops the sweeper and waits for it to return. The store still
// works afterwards (entries then go only when asked for after expiry).
// Close is idempotent.
func (s *SessionStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
	})
	return nil
}

// Sweep removes every expired entry now and returns how many it removed.
// The sweeper calls it; tests may too.
func (s *SessionStore) Sweep() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, e := range s.entries {
		if expired(e, now) {
			s.remove(id, e)
			n++
		}
	}
	return n
}

// Len is the number of entries held, expired ones not yet swept included.
func (s *SessionStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

func expired(e *entry, now time.Time) bool { return !now.Before(e.expires) }

// remove deletes id; s.mu must be held.
func (s *SessionStore) remove(id string, e *entry) {
	delete(s.entries, id)
	if ids := s.owners[e.owner]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(s.owners, e.owner)
		}
	}
}

func check(op, id string, ttl time.Duration) error {
	if id == "" {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("empty session id"))
	}
	if ttl <= 0 {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("session ttl must be positive"))
	}
	return nil
}

// Put implements agentapi.SessionStore. The payload is copied.
func (s *SessionStore) Put(ctx context.Context, id, owner string, payload []byte, ttl time.Duration) error {
	const op = "memory.sessions.put"
	if err := check(op, id, ttl); err != nil {
		return err
	}
	if owner == "" {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("empty session owner"))
	}
	if err := ctx.Err(); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	e := &entry{payload: append([]byte{}, payload...), owner: owner, expires: s.now().Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.entries[id]; old != nil {
		s.remove(id, old)
	}
	s.entries[id] = e
	ids := s.owners[owner]
	if ids == nil {
		ids = map[string]struct{}{}
		s.owners[owner] = ids
	}
	ids[id] = struct{}{}
	return nil
}

// Get implements agentapi.SessionStore. The returned slice is the
// caller's own copy.
func (s *SessionStore) Get(ctx context.Context, id string, ttl time.Duration) ([]byte, error) {
	const op = "memory.sessions.get"
	if err := check(op, id, ttl); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[id]
	if e == nil {
		return nil, agentapi.E(op, agentapi.KindNotFound, errors.New("no such session"))
	}
	if expired(e, now) {
		s.remove(id, e)
		return nil, agentapi.E(op, agentapi.KindNotFound, errors.New("no such session"))
	}
	e.expires = now.Add(ttl)
	return append([]byte{}, e.payload...), nil
}

// Delete implements agentapi.SessionStore.
func (s *SessionStore) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return agentapi.E("memory.sessions.delete", agentapi.KindOther, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[id]; e != nil {
		s.remove(id, e)
	}
	return nil
}

// DeleteOwner implements agentapi.SessionStore. The count is of live
// sessions: expired entries the sweeper has not reached yet are removed
// but not counted, as a backend that expires entries itself would not
// have found them.
func (s *SessionStore) DeleteOwner(ctx context.Context, owner string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, agentapi.E("memory.sessions.deleteowner", agentapi.KindOther, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id := range s.owners[owner] {
		e := s.entries[id]
		if !expired(e, now) {
			n++
		}
		delete(s.entries, id)
	}
	delete(s.owners, owner)
	return n, nil
}
