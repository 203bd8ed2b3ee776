package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

const (
	// sessShortTTL is the ttl of entries the suite expects to expire. Short,
	// as real-time backends wait it out, but long enough that scheduling
	// noise (a loaded CI machine, -race) does not expire an entry the
	// suite keeps using every sessShortTTL/3.
	sessShortTTL = 1500 * time.Millisecond
	// sessLongTTL is the ttl of entries that must not expire during a test.
	sessLongTTL = time.Hour
	// sessInvalidationWithin bounds how long a change made through one
	// instance may take to reach another's cache.
	sessInvalidationWithin = time.Second
	// sessPollEvery is the real-time step of polls.
	sessPollEvery = 5 * time.Millisecond
	// sessCallTimeout bounds each subtest.
	sessCallTimeout = 30 * time.Second
)

var sessCases = []struct {
	name string
	fn   func(e *sessEnv)
}{
	{"PutGet", testSessionPutGet},
	{"GetMissing", testSessionGetMissing},
	{"Overwrite", testSessionOverwrite},
	{"InvalidArguments", testSessionInvalid},
	{"BinaryPayloads", testSessionBinary},
	{"Expiry", testSessionExpiry},
	{"Sliding", testSessionSliding},
	{"GetExtendsToItsTTL", testSessionGetTTL},
	{"Delete", testSessionDelete},
	{"DeleteOwner", testSessionDeleteOwner},
	{"DeleteOwnerSkipsExpired", testSessionDeleteOwnerExpired},
	{"DeleteOwnerKeepsSlidingSessions", testSessionDeleteOwnerSliding},
	{"OtherInstanceSeesPut", testSessionOtherPut},
	{"OtherInstanceDelete", testSessionOtherDelete},
	{"OtherInstanceDeleteOwner", testSessionOtherDeleteOwner},
	{"OtherInstanceOverwrite", testSessionOtherOverwrite},
	{"OtherInstanceExpiry", testSessionOtherExpiry},
	{"Concurrent", testSessionConcurrent},
	{"ConcurrentGetDelete", testSessionConcurrentGetDelete},
}

type sessEnv struct {
	t        *testing.T
	ctx      context.Context
	newStore func(*testing.T) (agentapi.SessionStore, Advance)
	s        agentapi.SessionStore
	advance  Advance
	ns       string // random namespace for ids and owners
}

func newSessEnv(t *testing.T, newStore func(*testing.T) (agentapi.SessionStore, Advance)) *sessEnv {
	ctx, cancel := context.WithTimeout(context.Background(), sessCallTimeout)
	t.Cleanup(cancel)
	var b [6]byte
	rand.Read(b[:])
	s, adv := newStore(t)
	return &sessEnv{t: t, ctx: ctx, newStore: newStore, s: s, advance: adv, ns: hex.EncodeToString(b[:])}
}

// id and owner namespace names so that runs may share a backend.
func (e *sessEnv) id(name string) string    { return "st-" + e.ns + "-" + name }
func (e *sessEnv) owner(name string) string { return "owner-" + e.ns + "-" + name }

// other is a second instance over the same backend.
func (e *sessEnv) other() agentapi.SessionStore {
	s, _ := e.newStore(e.t)
	return s
}

func (e *sessEnv) put(s agentapi.SessionStore, id, owner string, payload []byte, ttl time.Duration) {
	e.t.Helper()
	if err := s.Put(e.ctx, id, owner, payload, ttl); err != nil {
		e.t.Fatalf("Put(%s): %v", id, err)
	}
}

// mustGet fails unless id holds want.
func (e *sessEnv) mustGet(s agentapi.SessionStore, id string, ttl time.Duration, want []byte) {
	e.t.Helper()
	got, err := s.Get(e.ctx, id, ttl)
	if err != nil {
		e.t.Fatalf("Get(%s): %v, want the payload", id, err)
	}
	if !bytes.Equal(got, want) {
		e.t.Fatalf("Get(%s) = %q, want %q", id, sessTrunc(got), sessTrunc(want))
	}
}

// mustMiss fails unless Get of id is KindNotFound right now.
func (e *sessEnv) mustMiss(s agentapi.SessionStore, id string) {
	e.t.Helper()
	got, err := s.Get(e.ctx, id, sessLongTTL)
	if err == nil {
		e.t.Fatalf("Get(%s) = %q, want an error of kind %v", id, sessTrunc(got), agentapi.KindNotFound)
	}
	if k := agentapi.KindOf(err); k != agentapi.KindNotFound {
		e.t.Fatalf("Get(%s): error %v of kind %v, want %v", id, err, k, agentapi.KindNotFound)
	}
}

// eventuallyMiss polls Get of id on s until it is KindNotFound, for up to
// within of real time. Each Get that still finds id restarts its ttl, so
// this must only be used where id should already be gone, or is going as
// a message crosses the network.
func (e *sessEnv) eventuallyMiss(s agentapi.SessionStore, id string, within time.Duration, why string) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := s.Get(e.ctx, id, sessShortTTL)
		if err != nil {
			if k := agentapi.KindOf(err); k != agentapi.KindNotFound {
				e.t.Fatalf("Get(%s) %s: error %v of kind %v, want %v", id, why, err, k, agentapi.KindNotFound)
			}
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Get(%s) %s: still %q after %v, want KindNotFound", id, why, sessTrunc(got), within)
		}
		time.Sleep(sessPollEvery)
	}
}

// eventuallyGet polls Get of id until it returns want.
func (e *sessEnv) eventuallyGet(s agentapi.SessionStore, id string, want []byte, within time.Duration, why string) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := s.Get(e.ctx, id, sessLongTTL)
		if err == nil && bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Get(%s) %s: %q, %v after %v; want %q", id, why, sessTrunc(got), err, within, sessTrunc(want))
		}
		time.Sleep(sessPollEvery)
	}
}

func (e *sessEnv) deleteOwner(s agentapi.SessionStore, owner string, want int) {
	e.t.Helper()
	n, err := s.DeleteOwner(e.ctx, owner)
	if err != nil {
		e.t.Fatalf("DeleteOwner(%s): %v", owner, err)
	}
	if n != want {
		e.t.Fatalf("DeleteOwner(%s) = %d, want %d", owner, n, want)
	}
}

func sessTrunc(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:40:40], "..."...)
	}
	return b
}

func sessPayload(name string) []byte { return []byte("sealed-" + name) }

// ---------------------------------------------------------------- cases

func testSessionPutGet(e *sessEnv) {
	id, owner := e.id("a"), e.owner("u")
	in := sessPayload("a")
	e.put(e.s, id, owner, in, sessLongTTL)
	in[0] = 'X' // the store must have kept its own copy
	e.mustGet(e.s, id, sessLongTTL, sessPayload("a"))

	got, _ := e.s.Get(e.ctx, id, sessLongTTL)
	if len(got) > 0 {
		got[0] = 'Y' // nor hand out its own
	}
	e.mustGet(e.s, id, sessLongTTL, sessPayload("a"))
}

func testSessionGetMissing(e *sessEnv) {
	e.mustMiss(e.s, e.id("never"))
	e.put(e.s, e.id("a"), e.owner("u"), sessPayload("a"), sessLongTTL)
	e.mustMiss(e.s, e.id("b"))
}

func testSessionOverwrite(e *sessEnv) {
	id, owner := e.id("a"), e.owner("u")
	e.put(e.s, id, owner, sessPayload("first"), sessLongTTL)
	e.mustGet(e.s, id, sessLongTTL, sessPayload("first"))
	e.put(e.s, id, owner, sessPayload("second"), sessLongTTL)
	e.mustGet(e.s, id, sessLongTTL, sessPayload("second"))
	e.deleteOwner(e.s, owner, 1)
}

func testSessionInvalid(e *sessEnv) {
	invalid := func(what string, err error) {
		e.t.Helper()
		if k := agentapi.KindOf(err); k != agentapi.KindInvalid {
			e.t.Errorf("%s: error %v of kind %v, want %v", what, err, k, agentapi.KindInvalid)
		}
	}
	id, owner := e.id("a"), e.owner("u")
	invalid("Put with ttl 0", e.s.Put(e.ctx, id, owner, sessPayload("a"), 0))
	invalid("Put with a negative ttl", e.s.Put(e.ctx, id, owner, sessPayload("a"), -time.Second))
	invalid("Put with an empty id", e.s.Put(e.ctx, "", owner, sessPayload("a"), sessLongTTL))
	invalid("Put with an empty owner", e.s.Put(e.ctx, id, "", sessPayload("a"), sessLongTTL))
	// A refused Put changes nothing.
	e.mustMiss(e.s, id)
	e.deleteOwner(e.s, owner, 0)

	e.put(e.s, id, owner, sessPayload("a"), sessLongTTL)
	_, err := e.s.Get(e.ctx, id, 0)
	invalid("Get with ttl 0", err)
	_, err = e.s.Get(e.ctx, "", sessLongTTL)
	invalid("Get with an empty id", err)
	e.mustGet(e.s, id, sessLongTTL, sessPayload("a"))
}

func testSessionBinary(e *sessEnv) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	random := make([]byte, 4096)
	rand.Read(random)
	cases := map[string][]byte{
		"every byte": all,
		"random 4k":  random,
		"empty":      {},
		"utf8":       []byte("héllo ✓ \x00 \xff\xfe"),
	}
	for name, p := range cases {
		id := e.id("bin-" + name)
		e.put(e.s, id, e.owner("u"), p, sessLongTTL)
		e.mustGet(e.s, id, sessLongTTL, p)
	}
	e.deleteOwner(e.s, e.owner("u"), len(cases))
}

func testSessionExpiry(e *sessEnv) {
	short, long, owner := e.id("short"), e.id("long"), e.owner("u")
	e.put(e.s, short, owner, sessPayload("short"), sessShortTTL)
	e.put(e.s, long, owner, sessPayload("long"), sessLongTTL)
	e.mustGet(e.s, short, sessShortTTL, sessPayload("short"))
	e.advance(sessShortTTL + sessShortTTL/4)
	e.eventuallyMiss(e.s, short, sessInvalidationWithin, "after its ttl")
	e.mustGet(e.s, long, sessLongTTL, sessPayload("long"))
	// Expired means gone: a later Put starts afresh.
	e.put(e.s, short, owner, sessPayload("again"), sessLongTTL)
	e.mustGet(e.s, short, sessLongTTL, sessPayload("again"))
}

func testSessionSliding(e *sessEnv) {
	id := e.id("a")
	e.put(e.s, id, e.owner("u"), sessPayload("a"), sessShortTTL)
	// Used every third of its ttl for twice its ttl: each Get restarts it.
	for range 6 {
		e.advance(sessShortTTL / 3)
		e.mustGet(e.s, id, sessShortTTL, sessPayload("a"))
	}
	// Left alone, it expires.
	e.advance(sessShortTTL + sessShortTTL/4)
	e.eventuallyMiss(e.s, id, sessInvalidationWithin, "left idle after sliding")
}

func testSessionGetTTL(e *sessEnv) {
	// Get restarts the ttl at the value it is given, not the Put's.
	id := e.id("a")
	e.put(e.s, id, e.owner("u"), sessPayload("a"), sessShortTTL)
	e.mustGet(e.s, id, sessLongTTL, sessPayload("a"))
	e.advance(sessShortTTL + sessShortTTL/2)
	e.mustGet(e.s, id, sessLongTTL, sessPayload("a"))
}

func testSessionDelete(e *sessEnv) {
	a, b, owner := e.id("a"), e.id("b"), e.owner("u")
	e.put(e.s, a, owner, sessPayload("a"), sessLongTTL)
	e.put(e.s, b, owner, sessPayload("b"), sessLongTTL)
	e.mustGet(e.s, a, sessLongTTL, sessPayload("a"))
	if err := e.s.Delete(e.ctx, a); err != nil {
		e.t.Fatalf("Delete: %v", err)
	}
	e.mustMiss(e.s, a)
	if err := e.s.Delete(e.ctx, a); err != nil {
		e.t.Fatalf("second Delete: %v, want nil (idempotent)", err)
	}
	if err := e.s.Delete(e.ctx, e.id("never")); err != nil {
		e.t.Fatalf("Delete of a missing id: %v, want nil", err)
	}
	e.mustGet(e.s, b, sessLongTTL, sessPayload("b"))
	// The deleted id no longer counts for its owner.
	e.deleteOwner(e.s, owner, 1)
}

func testSessionDeleteOwner(e *sessEnv) {
	ua, ub := e.owner("a"), e.owner("b")
	for _, n := range []string{"a1", "a2", "a3"} {
		e.put(e.s, e.id(n), ua, sessPayload(n), sessLongTTL)
	}
	e.put(e.s, e.id("b1"), ub, sessPayload("b1"), sessLongTTL)
	if err := e.s.Delete(e.ctx, e.id("a3")); err != nil {
		e.t.Fatal(err)
	}
	e.deleteOwner(e.s, ua, 2)
	e.mustMiss(e.s, e.id("a1"))
	e.mustMiss(e.s, e.id("a2"))
	e.mustGet(e.s, e.id("b1"), sessLongTTL, sessPayload("b1"))
	e.deleteOwner(e.s, ua, 0)
	e.deleteOwner(e.s, e.owner("nobody"), 0)
	// The owner can log in again, and be logged out again.
	e.put(e.s, e.id("a4"), ua, sessPayload("a4"), sessLongTTL)
	e.mustGet(e.s, e.id("a4"), sessLongTTL, sessPayload("a4"))
	e.deleteOwner(e.s, ua, 1)
	e.mustMiss(e.s, e.id("a4"))
	e.deleteOwner(e.s, ub, 1)
}

func testSessionDeleteOwnerExpired(e *sessEnv) {
	owner := e.owner("u")
	e.put(e.s, e.id("short"), owner, sessPayload("short"), sessShortTTL)
	e.put(e.s, e.id("long"), owner, sessPayload("long"), sessLongTTL)
	e.advance(sessShortTTL + sessShortTTL/4)
	e.eventuallyMiss(e.s, e.id("short"), sessInvalidationWithin, "after its ttl")
	e.deleteOwner(e.s, owner, 1)
	e.mustMiss(e.s, e.id("long"))
}

// testSessionDeleteOwnerSliding: a session kept alive by Gets well past
// the ttl it was Put with is still found by DeleteOwner (an owner index
// that expired with the first ttl would lose it).
func testSessionDeleteOwnerSliding(e *sessEnv) {
	owner := e.owner("u")
	old, fresh := e.id("old"), e.id("fresh")
	e.put(e.s, old, owner, sessPayload("old"), sessShortTTL)
	for range 6 {
		e.advance(sessShortTTL / 3)
		e.mustGet(e.s, old, sessShortTTL, sessPayload("old"))
	}
	// A later, shorter-lived login must not shorten the index either.
	e.put(e.s, fresh, owner, sessPayload("fresh"), sessShortTTL/2)
	for range 3 {
		e.advance(sessShortTTL / 3)
		e.mustGet(e.s, old, sessShortTTL, sessPayload("old"))
	}
	e.eventuallyMiss(e.s, fresh, sessInvalidationWithin, "after its ttl")
	e.deleteOwner(e.s, owner, 1)
	e.mustMiss(e.s, old)
}

func testSessionOtherPut(e *sessEnv) {
	b := e.other()
	id := e.id("a")
	e.mustMiss(b, id) // b may now cache the absence
	e.put(e.s, id, e.owner("u"), sessPayload("a"), sessLongTTL)
	e.eventuallyGet(b, id, sessPayload("a"), sessInvalidationWithin, "on another instance after Put")
}

// warm makes s read id twice, so that a caching store serves it locally.
func (e *sessEnv) warm(s agentapi.SessionStore, id string, want []byte) {
	e.t.Helper()
	e.mustGet(s, id, sessLongTTL, want)
	e.mustGet(s, id, sessLongTTL, want)
}

func testSessionOtherDelete(e *sessEnv) {
	b := e.other()
	id, keep := e.id("a"), e.id("keep")
	e.put(e.s, id, e.owner("u"), sessPayload("a"), sessLongTTL)
	e.put(e.s, keep, e.owner("u"), sessPayload("keep"), sessLongTTL)
	e.warm(b, id, sessPayload("a"))
	e.warm(b, keep, sessPayload("keep"))
	if err := e.s.Delete(e.ctx, id); err != nil {
		e.t.Fatal(err)
	}
	e.eventuallyMiss(b, id, sessInvalidationWithin, "on another instance after Delete")
	e.mustMiss(e.s, id)
	e.mustGet(b, keep, sessLongTTL, sessPayload("keep"))

	// And the other way round.
	if err := b.Delete(e.ctx, keep); err != nil {
		e.t.Fatal(err)
	}
	e.eventuallyMiss(e.s, keep, sessInvalidationWithin, "on the first instance after Delete on the other")
}

func testSessionOtherDeleteOwner(e *sessEnv) {
	b := e.other()
	owner, other := e.owner("u"), e.owner("v")
	ids := []string{e.id("a1"), e.id("a2")}
	for _, id := range ids {
		e.put(e.s, id, owner, sessPayload(id), sessLongTTL)
		e.warm(b, id, sessPayload(id))
	}
	e.put(b, e.id("b1"), owner, sessPayload("b1"), sessLongTTL) // indexed through the other instance
	e.put(e.s, e.id("v1"), other, sessPayload("v1"), sessLongTTL)
	e.warm(e.s, e.id("b1"), sessPayload("b1"))
	e.warm(b, e.id("v1"), sessPayload("v1"))

	e.deleteOwner(e.s, owner, 3)
	for _, id := range append(ids, e.id("b1")) {
		e.eventuallyMiss(b, id, sessInvalidationWithin, "on another instance after DeleteOwner")
		e.mustMiss(e.s, id)
	}
	e.mustGet(b, e.id("v1"), sessLongTTL, sessPayload("v1"))
	e.deleteOwner(b, owner, 0)
	e.deleteOwner(b, other, 1)
	e.eventuallyMiss(e.s, e.id("v1"), sessInvalidationWithin, "after DeleteOwner on the other instance")
}

func testSessionOtherOverwrite(e *sessEnv) {
	b := e.other()
	id := e.id("a")
	e.put(e.s, id, e.owner("u"), sessPayload("v1"), sessLongTTL)
	e.warm(b, id, sessPayload("v1"))
	e.put(e.s, id, e.owner("u"), sessPayload("v2"), sessLongTTL)
	e.eventuallyGet(b, id, sessPayload("v2"), sessInvalidationWithin, "on another instance after an overwrite")
}

func testSessionOtherExpiry(e *sessEnv) {
	b := e.other()
	id := e.id("a")
	e.put(e.s, id, e.owner("u"), sessPayload("a"), sessShortTTL)
	e.mustGet(b, id, sessShortTTL, sessPayload("a"))
	e.mustGet(b, id, sessShortTTL, sessPayload("a"))
	// Nobody uses it now: a cached copy must not outlive the entry.
	e.advance(sessShortTTL + sessShortTTL/4)
	e.eventuallyMiss(b, id, sessInvalidationWithin, "on a caching instance after its ttl")
	e.mustMiss(e.s, id)
}

func testSessionConcurrent(e *sessEnv) {
	const workers, each = 8, 25
	b := e.other()
	owner := e.owner("shared")
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := e.s
			if w%2 == 1 {
				s = b
			}
			for i := range each {
				id := e.id(fmt.Sprintf("w%d-%d", w, i))
				p := sessPayload(id)
				if err := s.Put(e.ctx, id, owner, p, sessLongTTL); err != nil {
					errs <- fmt.Errorf("Put(%s): %w", id, err)
					return
				}
				got, err := s.Get(e.ctx, id, sessLongTTL)
				if err != nil || !bytes.Equal(got, p) {
					errs <- fmt.Errorf("Get(%s) = %q, %v; want %q", id, got, err, p)
					return
				}
				if i%5 == 0 {
					if err := s.Delete(e.ctx, id); err != nil {
						errs <- fmt.Errorf("Delete(%s): %w", id, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Error(err)
	}
	if e.t.Failed() {
		return
	}
	e.deleteOwner(e.s, owner, workers*(each-each/5))
	for w := range workers {
		for i := range each {
			e.mustMiss(e.s, e.id(fmt.Sprintf("w%d-%d", w, i)))
		}
	}
}

// testSessionConcurrentGetDelete: many readers of one session on two
// instances while it is deleted; every read returns the payload or
// KindNotFound, and once Delete has returned, reads end in KindNotFound.
func testSessionConcurrentGetDelete(e *sessEnv) {
	b := e.other()
	id := e.id("hot")
	p := sessPayload("hot")
	e.put(e.s, id, e.owner("u"), p, sessLongTTL)
	var (
		wg      sync.WaitGroup
		deleted = make(chan struct{})
		errs    = make(chan error, 16)
	)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := e.s
			if g%2 == 1 {
				s = b
			}
			var goneSince time.Time
			for {
				got, err := s.Get(e.ctx, id, sessLongTTL)
				switch {
				case err == nil && !bytes.Equal(got, p):
					errs <- fmt.Errorf("Get = %q, want %q", got, p)
					return
				case err != nil && agentapi.KindOf(err) != agentapi.KindNotFound:
					errs <- fmt.Errorf("Get: %w", err)
					return
				}
				select {
				case <-deleted:
					if err != nil {
						return
					}
					if goneSince.IsZero() {
						goneSince = time.Now()
					} else if time.Since(goneSince) > sessInvalidationWithin {
						errs <- fmt.Errorf("Get still finds the session %v after Delete", sessInvalidationWithin)
						return
					}
				default:
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the readers warm up their caches
	if err := e.s.Delete(e.ctx, id); err != nil {
		e.t.Fatal(err)
	}
	close(deleted)
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Error(err)
	}
}
