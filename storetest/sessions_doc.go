package storetest

// The SessionStore suite. Its cases live in sessions.go.

import (
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Advance makes at least d pass for the stores it was returned with.
//
// Backends differ in where time comes from:
//
//   - A backend that expires entries by a clock it is given (memory) uses a
//     fake clock; its Advance moves the clock and returns at once, and the
//     expiry cases run instantly.
//   - A backend whose TTLs run on a server (Redis) cannot be given a clock;
//     it passes RealTimeAdvance, which sleeps. The suite keeps every such
//     wait short (its expiring entries live 600ms) and, after waiting,
//     polls for the expected state up to a deadline instead of trusting a
//     fixed sleep to have been enough.
type Advance func(d time.Duration)

// RealTimeAdvance is the Advance of a backend whose expiry runs on real
// time: it sleeps for d.
func RealTimeAdvance(d time.Duration) { time.Sleep(d) }

// RunSessionStore runs the agentapi.SessionStore conformance suite: every
// point of the interface's contract, on memory, native Redis and REST
// alike.
//
// newStore returns a store and the Advance that moves its time, and closes
// what it opens with t.Cleanup. Cross-instance properties (a logout on one
// server instance is refused on every other, caches included) need two
// stores over one backend, so the suite may call newStore more than once
// with the same t: the stores returned for one t must share one backend
// (for Redis: separate kv clients, each with its own client-side cache,
// over the same server and key prefix; for memory: the same store) and
// their Advances must move the same time. Stores of different t's may
// share a backend too: the suite puts a random namespace into every id and
// owner it uses. Subtests do not run in parallel, as the real-time ones
// are sensitive to a starved scheduler.
//
// What is checked, beyond the interface's comments:
//
//   - Put and Get copy: changing a slice after Put, or the one Get returned,
//     changes nothing stored. Any bytes round-trip, the empty payload too.
//   - ttl <= 0, an empty id and an empty owner are KindInvalid, and a
//     refused Put stores nothing.
//   - Get restarts the ttl at the value given to Get, not the Put's.
//   - DeleteOwner counts live sessions only (not expired or deleted ones),
//     finds sessions kept alive by Get long past the ttl they were Put with,
//     and leaves other owners alone; an owner can log in again afterwards.
//   - Across instances, within 1s: a Put is seen, an overwrite is seen, and
//     Delete, DeleteOwner and expiry end the session even on an instance
//     that has just read it twice (so a caching backend serves it locally).
//   - Concurrent Put/Get/Delete from two instances, and concurrent readers
//     of one session while it is deleted: every read is the payload or
//     KindNotFound, and KindNotFound for good within 1s of the Delete.
func RunSessionStore(t *testing.T, newStore func(t *testing.T) (agentapi.SessionStore, Advance)) {
	t.Helper()
	for _, tc := range sessCases {
		t.Run(tc.name, func(t *testing.T) {
			// Real-time backends mostly wait for TTLs: overlap the cases
			// (each has its own ids and instances).
			t.Parallel()
			tc.fn(newSessEnv(t, newStore))
		})
	}
}
