// Package cache keeps responses and computed results per tenant, so that
// repeated reads skip the work that produced them, without ever serving an
// entry to another tenant or after it went stale.
//
// It has three layers:
//
//   - Backend stores entries, addressed by (tenant, scope, key), with
//     generation-based invalidation. Memory keeps them in this process
//     (bounded by bytes, LRU); Redis keeps them in Redis over a kv.Client
//     (native protocol or Upstash REST), shared by every instance.
//   - Loader sits in front of a Backend in each process: GetOrLoad returns
//     the cached entry or runs a load function once for all concurrent
//     callers of a key, refreshes entries in the background shortly before
//     they expire, and counts hits, misses and errors (Stats).
//   - Loader.Handler wraps an http.Handler: GET and HEAD responses with
//     status 200 are cached, with a strong ETag and 304 answers.
//
// # Staleness: generations
//
// Each (tenant, scope) has a generation, a counter that starts at 0. An
// entry is stored together with the generation it was computed under and
// is served only while that generation is current. Bump increments the
// generation, which makes every entry of the scope invisible at once, on
// every instance (the counter is in the Backend, not in the process). A
// writer that changes the data a scope's entries were computed from bumps
// the scope after its write.
//
// Get returns the scope's current generation with every answer, a miss
// included, and Put stores an entry only if the generation it is given is
// still current when the Put runs. A caller reads the generation before it
// computes the value and puts it with that generation: if a Bump lands
// while the value is computed (the value may have been computed from data
// older than the bump), the Put stores nothing, instead of storing a stale
// value that the bump was meant to remove. Loader does this for its
// callers.
//
// # Failure policy
//
// The cache is never a reason for a request to fail. When the Backend
// cannot be reached, Loader treats every lookup as a miss, calls the load
// function (still once per key for concurrent callers in this process),
// does not store the result and counts the error in Stats.Errors.
package cache

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// Entry is one cached value and what the HTTP layer needs to serve it.
type Entry struct {
	// Value is the cached bytes; any bytes, empty included. An entry
	// returned by a Backend or a Loader may be shared with other callers:
	// do not modify its Value.
	Value []byte
	// ContentType is the media type to serve Value with ("" when unknown).
	ContentType string
	// ETag is the entity tag of Value, quotes included ("" when unknown).
	ETag string
	// StoredAt is when the entry was stored, by the storing backend's
	// clock, to the microsecond. Put sets it; the value passed in is
	// ignored.
	StoredAt time.Time
	// TTL is how long the entry lives after StoredAt. Put sets it to the
	// ttl it was given.
	TTL time.Duration
}

// Expires is when e stops being served: StoredAt + TTL.
func (e Entry) Expires() time.Time { return e.StoredAt.Add(e.TTL) }

// Backend stores cache entries per tenant. Implementations are safe for
// concurrent use; RunCache in package storetest checks every point below.
//
// Addressing: an entry is identified by (tenant, scope, key), any strings
// (any bytes). Tenant must not be empty; scope and key may be. Two
// different triples never address the same entry, whatever characters they
// contain: tenant "a:b" with key "c" is not tenant "a" with key "b:c".
//
// Generations: every (tenant, scope) has a generation, 0 until the first
// Bump. An entry is served only while the generation it was put with is
// the current one.
//
// Errors: an empty tenant, and a ttl <= 0 for Put, are KindInvalid and
// change nothing. Any other error means the backend could not answer
// (KindUnavailable when it could not be reached); whether a failed Put,
// Delete or Bump took effect is then unknown. A missing, expired or
// invalidated entry is not an error.
type Backend interface {
	// Get returns the entry at (tenant, scope, key) if there is one that
	// was put with the scope's current generation and has not expired
	// (ok true). It always returns the scope's current generation, on a
	// miss too: a caller that computes the value puts it with this gen.
	Get(ctx context.Context, tenant, scope, key string) (e Entry, gen uint64, ok bool, err error)

	// Put stores e at (tenant, scope, key) for ttl, replacing what was
	// there, but only if gen is the scope's current generation when Put
	// runs; otherwise it stores nothing and returns nil (the value was
	// computed under a generation that is gone, or not yet reached). Put
	// keeps its own copy of e.Value and sets e.StoredAt and e.TTL. A
	// backend may decline to store an entry it has no room for, also
	// returning nil: a Put never guarantees a later hit.
	Put(ctx context.Context, tenant, scope, key string, gen uint64, e Entry, ttl time.Duration) error

	// Delete removes the entry at (tenant, scope, key), if any. The
	// scope's generation is unchanged.
	Delete(ctx context.Context, tenant, scope, key string) error

	// Bump makes the scope's generation the next one and returns it. No
	// entry put before the Bump returns is served afterwards (Get on any
	// instance sharing the backend misses), and no Put with an earlier
	// generation stores anything. Other tenants and other scopes are
	// unaffected.
	Bump(ctx context.Context, tenant, scope string) (gen uint64, err error)
}

// errNoTenant is the error of a call without a tenant.
var errNoTenant = errors.New("cache: empty tenant")

// checkTenant validates the tenant argument of every Backend method.
func checkTenant(op, tenant string) error {
	if tenant == "" {
		return agentapi.E(op, agentapi.KindInvalid, errNoTenant)
	}
	return nil
}

// checkPut validates Put's arguments.
func checkPut(op, tenant string, ttl time.Duration) error {
	if err := checkTenant(op, tenant); err != nil {
		return err
	}
	if ttl <= 0 {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("cache: ttl must be positive"))
	}
	return nil
}

// escape percent-encodes every byte of s outside a small safe set, so that
// the result is ASCII (it crosses the REST transport, which wants UTF-8)
// and free of the separators used around it in Redis keys ('{', '}', ':',
// '%' and every other punctuation, space and control byte). It is
// injective: '%' is itself encoded. keepColon leaves ':' as it is, for the
// last segment of a key, after which nothing needs separating.
func escape(s string, keepColon bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !safeByte(s[i], keepColon) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safeByte(c, keepColon) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func safeByte(c byte, keepColon bool) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '-', c == '_', c == '.', c == '/', c == '~':
		return true
	case c == ':':
		return keepColon
	}
	return false
}
