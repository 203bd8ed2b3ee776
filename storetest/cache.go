package storetest

// The cache.Backend suite.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cache"
)

const (
	// cacheShortTTL is the ttl of entries the suite expects to expire:
	// short, as real-time backends wait it out, but long enough that a
	// starved scheduler does not expire an entry between its Put and the
	// Get right after.
	cacheShortTTL = 1500 * time.Millisecond
	// cacheLongTTL is the ttl of entries that must not expire in a test.
	cacheLongTTL = time.Hour
	// cacheExpiryWithin bounds how long after its ttl an entry may still
	// be served by a real-time backend (Redis expires keys lazily or in a
	// background cycle; the backend also checks the time itself).
	cacheExpiryWithin = 10 * time.Second
	// cachePollEvery is the real-time step of polls.
	cachePollEvery = 5 * time.Millisecond
	// cacheCallTimeout bounds each subtest.
	cacheCallTimeout = 60 * time.Second
)

// CacheSuiteOptions describe the backend under RunCache.
type CacheSuiteOptions struct {
	// Propagation bounds how long a Put, Delete or Bump made through one
	// instance may take to reach the Gets of another instance (for a
	// backend that serves reads from a local copy invalidated by the
	// server). Zero: at once, the next Get on any instance sees it.
	Propagation time.Duration
}

// RunCache runs the cache.Backend conformance suite: every point of the
// interface's contract, on memory, native Redis and REST alike.
//
// newBackend returns a backend and the Advance that moves its time (a
// fake clock's, or RealTimeAdvance), closing what it opens with
// t.Cleanup. Cross-instance cases call it more than once with the same t:
// the backends returned for one t must share their storage (for Redis:
// separate kv clients, each with its own client-side cache, over the
// same server and key prefix; for memory: the same store), as the
// instances of one deployment do. Backends of different t's may share
// storage too: the suite puts a random namespace into every tenant.
// Subtests do not run in parallel.
//
// What is checked, beyond the interface's comments:
//
//   - Any bytes round-trip as a value (empty, invalid UTF-8, NUL, 256 KiB
//     of random bytes) and as content type and ETag; Put keeps its own
//     copy; StoredAt and TTL are set by Put (Expires = StoredAt + TTL).
//   - Generations are 0 until the first Bump, then 1, 2, ...; Get reports
//     the current one on hits and misses.
//   - A Put with a past or a future generation stores nothing, also after
//     the generation reaches that value.
//   - Triples that naive concatenation or escaping would confuse ("a:b" +
//     "c" and "a" + "b:c", braces, percent signs, invalid UTF-8, empty
//     scope and key, case) are distinct entries; Bump and Delete touch
//     exactly their scope or entry.
//   - Entries expire after their ttl; the generation does not.
//   - Across instances (within Propagation): Put, Bump and Delete are seen
//     by the other instance, also after it read the entry twice (so a
//     caching backend holds it locally); a Put with a generation bumped
//     by the other instance stores nothing.
//   - Concurrently: Bumps of one scope from many goroutines return
//     distinct consecutive generations; with writers, readers and bumpers
//     on one scope, every hit is a value put under the generation Get
//     reports, and per-tenant writers only ever read their own values.
func RunCache(t *testing.T, newBackend func(t *testing.T) (cache.Backend, Advance), o CacheSuiteOptions) {
	t.Helper()
	for _, tc := range cacheCases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(newCacheEnv(t, newBackend, o))
		})
	}
}

var cacheCases = []struct {
	name string
	fn   func(e *cacheEnv)
}{
	{"RoundTrip", testCacheRoundTrip},
	{"Overwrite", testCacheOverwrite},
	{"GenerationOnMiss", testCacheGenerationOnMiss},
	{"BumpInvalidates", testCacheBumpInvalidates},
	{"StalePutStoresNothing", testCacheStalePut},
	{"InvalidArguments", testCacheInvalid},
	{"TenantIsolation", testCacheIsolation},
	{"BumpAndDeleteScope", testCacheBumpDeleteScope},
	{"Expiry", testCacheExpiry},
	{"OtherInstance", testCacheOtherInstance},
	{"OtherInstanceStalePut", testCacheOtherStalePut},
	{"ConcurrentBumps", testCacheConcurrentBumps},
	{"ConcurrentGenerations", testCacheConcurrentGenerations},
	{"ConcurrentTenants", testCacheConcurrentTenants},
}

type cacheEnv struct {
	t          *testing.T
	ctx        context.Context
	newBackend func(*testing.T) (cache.Backend, Advance)
	b          cache.Backend
	advance    Advance
	ns         string
	prop       time.Duration
}

func newCacheEnv(t *testing.T, newBackend func(*testing.T) (cache.Backend, Advance), o CacheSuiteOptions) *cacheEnv {
	ctx, cancel := context.WithTimeout(context.Background(), cacheCallTimeout)
	t.Cleanup(cancel)
	var r [6]byte
	rand.Read(r[:])
	b, adv := newBackend(t)
	return &cacheEnv{t: t, ctx: ctx, newBackend: newBackend, b: b, advance: adv, ns: hex.EncodeToString(r[:]), prop: o.Propagation}
}

// tenant namespaces a tenant name, keeping its structure.
func (e *cacheEnv) tenant(name string) string { return "ct" + e.ns + "-" + name }

// other is a second instance over the same storage.
func (e *cacheEnv) other() cache.Backend {
	b, _ := e.newBackend(e.t)
	return b
}

func (e *cacheEnv) gen(b cache.Backend, tenant, scope string) uint64 {
	e.t.Helper()
	_, g, _, err := b.Get(e.ctx, tenant, scope, "gen-probe")
	if err != nil {
		e.t.Fatalf("Get(%q, %q): %v", tenant, scope, err)
	}
	return g
}

func (e *cacheEnv) put(b cache.Backend, tenant, scope, key string, gen uint64, value string, ttl time.Duration) {
	e.t.Helper()
	err := b.Put(e.ctx, tenant, scope, key, gen, cache.Entry{Value: []byte(value), ContentType: "text/plain"}, ttl)
	if err != nil {
		e.t.Fatalf("Put(%q, %q, %q, gen %d): %v", tenant, scope, key, gen, err)
	}
}

func (e *cacheEnv) bump(b cache.Backend, tenant, scope string) uint64 {
	e.t.Helper()
	g, err := b.Bump(e.ctx, tenant, scope)
	if err != nil {
		e.t.Fatalf("Bump(%q, %q): %v", tenant, scope, err)
	}
	return g
}

// lookup is one Get's answer.
type cacheLookup struct {
	e   cache.Entry
	gen uint64
	ok  bool
}

func (l cacheLookup) String() string {
	if !l.ok {
		return fmt.Sprintf("miss at gen %d", l.gen)
	}
	return fmt.Sprintf("hit %q at gen %d", cacheTrunc(l.e.Value), l.gen)
}

func (e *cacheEnv) get(b cache.Backend, tenant, scope, key string) cacheLookup {
	e.t.Helper()
	v, g, ok, err := b.Get(e.ctx, tenant, scope, key)
	if err != nil {
		e.t.Fatalf("Get(%q, %q, %q): %v", tenant, scope, key, err)
	}
	if !ok && (v.Value != nil || v.ETag != "" || !v.StoredAt.IsZero()) {
		e.t.Fatalf("Get(%q, %q, %q): miss with a non-zero entry %+v", tenant, scope, key, v)
	}
	return cacheLookup{v, g, ok}
}

// mustHit fails unless Get answers value under gen.
func (e *cacheEnv) mustHit(b cache.Backend, tenant, scope, key string, gen uint64, value string) cache.Entry {
	e.t.Helper()
	l := e.get(b, tenant, scope, key)
	if !l.ok || string(l.e.Value) != value || l.gen != gen {
		e.t.Fatalf("Get(%q, %q, %q) = %v, want hit %q at gen %d", tenant, scope, key, l, cacheTrunc([]byte(value)), gen)
	}
	return l.e
}

// mustMiss fails unless Get misses, reporting gen.
func (e *cacheEnv) mustMiss(b cache.Backend, tenant, scope, key string, gen uint64) {
	e.t.Helper()
	if l := e.get(b, tenant, scope, key); l.ok || l.gen != gen {
		e.t.Fatalf("Get(%q, %q, %q) = %v, want miss at gen %d", tenant, scope, key, l, gen)
	}
}

// eventually polls Get on b until want accepts its answer, for up to
// within of real time (one Get when within is 0).
func (e *cacheEnv) eventually(b cache.Backend, tenant, scope, key string, within time.Duration, what string, want func(cacheLookup) bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		l := e.get(b, tenant, scope, key)
		if want(l) {
			return
		}
		if !time.Now().Before(deadline) {
			e.t.Fatalf("Get(%q, %q, %q) = %v %s, want %s", tenant, scope, key, l, cacheAfter(within), what)
		}
		time.Sleep(cachePollEvery)
	}
}

func cacheAfter(d time.Duration) string {
	if d == 0 {
		return "at once"
	}
	return "still after " + d.String()
}

func cacheTrunc(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func cacheHit(value string, gen uint64) func(cacheLookup) bool {
	return func(l cacheLookup) bool { return l.ok && string(l.e.Value) == value && l.gen == gen }
}

func cacheMiss(gen uint64) func(cacheLookup) bool {
	return func(l cacheLookup) bool { return !l.ok && l.gen == gen }
}

// ---------------------------------------------------------------- cases

func testCacheRoundTrip(e *cacheEnv) {
	tn := e.tenant("a")
	big := make([]byte, 256<<10)
	rand.Read(big)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := []struct {
		name        string
		value       []byte
		ctype, etag string
	}{
		{"text", []byte("hello, world"), "text/plain; charset=utf-8", `"abc"`},
		{"empty", []byte{}, "", ""},
		{"nil", nil, "application/octet-stream", `W/"weak"`},
		{"invalid-utf8", []byte{0xff, 0xfe, 0x00, '\n', ' ', 0xc3}, "x/\xff y", "\"\x00 \xff\""},
		{"all-bytes", all, "application/json", `"` + strings.Repeat("e", 100) + `"`},
		{"spaces", []byte("  a b  "), " ", " "},
		{"big", big, "application/octet-stream", `"big"`},
	}
	for _, c := range cases {
		in := cache.Entry{
			Value: bytes.Clone(c.value), ContentType: c.ctype, ETag: c.etag,
			StoredAt: time.Unix(1, 0), TTL: time.Second, // ignored by Put
		}
		if err := e.b.Put(e.ctx, tn, "s", c.name, 0, in, cacheLongTTL); err != nil {
			e.t.Fatalf("%s: Put: %v", c.name, err)
		}
		if len(in.Value) > 0 {
			in.Value[0] ^= 0xff // the backend must have kept its own copy
		}
		l := e.get(e.b, tn, "s", c.name)
		switch {
		case !l.ok:
			e.t.Fatalf("%s: Get = %v, want a hit", c.name, l)
		case !bytes.Equal(l.e.Value, c.value):
			e.t.Fatalf("%s: Value = %s, want %s", c.name, cacheTrunc(l.e.Value), cacheTrunc(c.value))
		case l.e.ContentType != c.ctype || l.e.ETag != c.etag:
			e.t.Fatalf("%s: ContentType, ETag = %q, %q, want %q, %q", c.name, l.e.ContentType, l.e.ETag, c.ctype, c.etag)
		case l.e.TTL != cacheLongTTL:
			e.t.Fatalf("%s: TTL = %v, want %v (the ttl given to Put)", c.name, l.e.TTL, cacheLongTTL)
		case l.e.StoredAt.Before(time.Unix(2, 0)):
			e.t.Fatalf("%s: StoredAt = %v, want the time of the Put", c.name, l.e.StoredAt)
		case !l.e.Expires().Equal(l.e.StoredAt.Add(cacheLongTTL)):
			e.t.Fatalf("%s: Expires = %v, want StoredAt + TTL", c.name, l.e.Expires())
		}
	}
}

func testCacheOverwrite(e *cacheEnv) {
	tn := e.tenant("a")
	e.put(e.b, tn, "s", "k", 0, "first", cacheLongTTL)
	first := e.mustHit(e.b, tn, "s", "k", 0, "first")
	e.advance(time.Millisecond)
	e.put(e.b, tn, "s", "k", 0, "second", cacheLongTTL)
	second := e.mustHit(e.b, tn, "s", "k", 0, "second")
	if second.StoredAt.Before(first.StoredAt) {
		e.t.Fatalf("StoredAt of the overwrite %v is before the first's %v", second.StoredAt, first.StoredAt)
	}
	if err := e.b.Put(e.ctx, tn, "s", "k", 0, cache.Entry{}, cacheLongTTL); err != nil {
		e.t.Fatal(err)
	}
	e.mustHit(e.b, tn, "s", "k", 0, "")
}

func testCacheGenerationOnMiss(e *cacheEnv) {
	tn := e.tenant("a")
	e.mustMiss(e.b, tn, "s", "k", 0)
	for want := uint64(1); want <= 3; want++ {
		if g := e.bump(e.b, tn, "s"); g != want {
			e.t.Fatalf("Bump #%d = %d, want %d", want, g, want)
		}
		e.mustMiss(e.b, tn, "s", "k", want)
		e.mustMiss(e.b, tn, "s", "other key", want)
	}
	e.put(e.b, tn, "s", "k", 3, "v", cacheLongTTL)
	e.mustHit(e.b, tn, "s", "k", 3, "v")
	e.mustMiss(e.b, tn, "other scope", "k", 0)
}

func testCacheBumpInvalidates(e *cacheEnv) {
	tn := e.tenant("a")
	e.put(e.b, tn, "s", "k1", 0, "v1", cacheLongTTL)
	e.put(e.b, tn, "s", "k2", 0, "v2", cacheLongTTL)
	e.mustHit(e.b, tn, "s", "k1", 0, "v1")
	g := e.bump(e.b, tn, "s")
	e.mustMiss(e.b, tn, "s", "k1", g)
	e.mustMiss(e.b, tn, "s", "k2", g)
	// The old value cannot come back: not by a Put under the old
	// generation...
	e.put(e.b, tn, "s", "k1", 0, "old", cacheLongTTL)
	e.mustMiss(e.b, tn, "s", "k1", g)
	// ...and a Put under the new one replaces it.
	e.put(e.b, tn, "s", "k1", g, "new", cacheLongTTL)
	e.mustHit(e.b, tn, "s", "k1", g, "new")
	e.mustMiss(e.b, tn, "s", "k2", g)
}

func testCacheStalePut(e *cacheEnv) {
	tn := e.tenant("a")
	// A load reads the generation, a write bumps it meanwhile, and the
	// load's Put arrives late: it must store nothing.
	g := e.gen(e.b, tn, "s")
	g2 := e.bump(e.b, tn, "s")
	e.put(e.b, tn, "s", "k", g, "computed before the bump", cacheLongTTL)
	e.mustMiss(e.b, tn, "s", "k", g2)
	// A generation not reached yet stores nothing either, and nothing
	// appears when the scope gets there.
	e.put(e.b, tn, "s", "k", g2+1, "from the future", cacheLongTTL)
	e.mustMiss(e.b, tn, "s", "k", g2)
	g3 := e.bump(e.b, tn, "s")
	if g3 != g2+1 {
		e.t.Fatalf("Bump = %d, want %d", g3, g2+1)
	}
	e.mustMiss(e.b, tn, "s", "k", g3)
}

func testCacheInvalid(e *cacheEnv) {
	tn := e.tenant("a")
	want := func(err error, what string) {
		e.t.Helper()
		if k := agentapi.KindOf(err); k != agentapi.KindInvalid {
			e.t.Fatalf("%s: error %v of kind %v, want %v", what, err, k, agentapi.KindInvalid)
		}
	}
	_, _, _, err := e.b.Get(e.ctx, "", "s", "k")
	want(err, "Get with an empty tenant")
	want(e.b.Put(e.ctx, "", "s", "k", 0, cache.Entry{Value: []byte("v")}, cacheLongTTL), "Put with an empty tenant")
	want(e.b.Delete(e.ctx, "", "s", "k"), "Delete with an empty tenant")
	_, err = e.b.Bump(e.ctx, "", "s")
	want(err, "Bump with an empty tenant")
	for _, ttl := range []time.Duration{0, -time.Second} {
		want(e.b.Put(e.ctx, tn, "s", "k", 0, cache.Entry{Value: []byte("v")}, ttl), fmt.Sprintf("Put with ttl %v", ttl))
	}
	e.mustMiss(e.b, tn, "s", "k", 0)
}

// cacheTriples are (tenant, scope, key) triples that a careless key
// scheme would confuse with one another.
var cacheTriples = [][3]string{
	{"a:b", "s", "c"},
	{"a", "b:s", "c"},
	{"a", "s", "b:c"},
	{"a", "s:b", "c"},
	{"a", "s", "c"},
	{"A", "s", "c"},
	{"a}", "s", "c"},
	{"a", "}s", "c"},
	{"a}:cache:e:s", "x", "c"},
	{"a{t:b}", "s", "c"},
	{"a%3Ab", "s", "c"},
	{"a%253Ab", "s", "c"},
	{"a", "s%3Ac", ""},
	{"a", "s", ":c"},
	{"a", "", "s:c"},
	{"a", "", ""},
	{"a", "s", ""},
	{"1:a", "1:s", "c"},
	{"1", "a1:s", "c"},
	{"ä", "s", "c"},
	{"\xff\xfe", "\x00", "\n"},
	{"a b", "s c", "k e y"},
	{"a/b", "s", "c"},
	{"a", "b/s", "c"},
}

func testCacheIsolation(e *cacheEnv) {
	seen := map[[3]string]bool{}
	for _, tr := range cacheTriples {
		if seen[tr] {
			e.t.Fatalf("suite bug: triple %q listed twice", tr)
		}
		seen[tr] = true
	}
	val := func(i int) string { return fmt.Sprintf("value of triple %d %q", i, cacheTriples[i]) }
	for i, tr := range cacheTriples {
		e.put(e.b, e.tenant(tr[0]), tr[1], tr[2], 0, val(i), cacheLongTTL)
	}
	for i, tr := range cacheTriples {
		e.mustHit(e.b, e.tenant(tr[0]), tr[1], tr[2], 0, val(i))
	}
	// A Bump touches exactly its (tenant, scope); a Delete exactly its
	// triple.
	bumped := cacheTriples[0]
	g := e.bump(e.b, e.tenant(bumped[0]), bumped[1])
	deleted := cacheTriples[4]
	if err := e.b.Delete(e.ctx, e.tenant(deleted[0]), deleted[1], deleted[2]); err != nil {
		e.t.Fatal(err)
	}
	for i, tr := range cacheTriples {
		switch {
		case tr[0] == bumped[0] && tr[1] == bumped[1]:
			e.mustMiss(e.b, e.tenant(tr[0]), tr[1], tr[2], g)
		case tr == deleted:
			e.mustMiss(e.b, e.tenant(tr[0]), tr[1], tr[2], 0)
		default:
			e.mustHit(e.b, e.tenant(tr[0]), tr[1], tr[2], 0, val(i))
		}
	}
}

func testCacheBumpDeleteScope(e *cacheEnv) {
	a, b := e.tenant("a"), e.tenant("b")
	for _, tn := range []string{a, b} {
		for _, s := range []string{"s1", "s2"} {
			e.put(e.b, tn, s, "k", 0, tn+s, cacheLongTTL)
			e.put(e.b, tn, s, "k2", 0, tn+s+"2", cacheLongTTL)
		}
	}
	g := e.bump(e.b, a, "s1")
	e.mustMiss(e.b, a, "s1", "k", g)
	e.mustMiss(e.b, a, "s1", "k2", g)
	e.mustHit(e.b, a, "s2", "k", 0, a+"s2")
	e.mustHit(e.b, b, "s1", "k", 0, b+"s1")
	e.mustHit(e.b, b, "s2", "k", 0, b+"s2")

	if err := e.b.Delete(e.ctx, b, "s2", "k"); err != nil {
		e.t.Fatal(err)
	}
	e.mustMiss(e.b, b, "s2", "k", 0)
	e.mustHit(e.b, b, "s2", "k2", 0, b+"s22")
	e.mustHit(e.b, b, "s1", "k", 0, b+"s1")
	e.mustHit(e.b, a, "s2", "k", 0, a+"s2")
	// Deleting what is not there is fine; the generation is untouched.
	if err := e.b.Delete(e.ctx, b, "s2", "k"); err != nil {
		e.t.Fatalf("Delete of a missing entry: %v", err)
	}
	if err := e.b.Delete(e.ctx, a, "s1", "k"); err != nil {
		e.t.Fatal(err)
	}
	e.mustMiss(e.b, a, "s1", "k", g)
}

func testCacheExpiry(e *cacheEnv) {
	tn := e.tenant("a")
	g := e.bump(e.b, tn, "s")
	e.put(e.b, tn, "s", "long", g, "stays", cacheLongTTL)
	e.put(e.b, tn, "s", "short", g, "goes", cacheShortTTL)
	short := e.mustHit(e.b, tn, "s", "short", g, "goes")
	if short.TTL != cacheShortTTL {
		e.t.Fatalf("TTL = %v, want %v", short.TTL, cacheShortTTL)
	}
	e.advance(cacheShortTTL)
	e.eventually(e.b, tn, "s", "short", cacheExpiryWithin, fmt.Sprintf("a miss at gen %d after its ttl", g), cacheMiss(g))
	e.mustHit(e.b, tn, "s", "long", g, "stays")
	// An expired key can be stored again.
	e.put(e.b, tn, "s", "short", g, "again", cacheLongTTL)
	e.mustHit(e.b, tn, "s", "short", g, "again")
}

func testCacheOtherInstance(e *cacheEnv) {
	b1, b2 := e.b, e.other()
	tn := e.tenant("a")
	e.put(b1, tn, "s", "k", 0, "v1", cacheLongTTL)
	e.eventually(b2, tn, "s", "k", e.prop, `hit "v1" at gen 0 (put by the other instance)`, cacheHit("v1", 0))
	e.mustHit(b2, tn, "s", "k", 0, "v1") // read twice: a local copy, if any, is warm

	// The staleness proof: a Bump on one instance is seen by the other.
	g := e.bump(b1, tn, "s")
	e.eventually(b2, tn, "s", "k", e.prop, fmt.Sprintf("miss at gen %d (bumped by the other instance)", g), cacheMiss(g))

	e.put(b2, tn, "s", "k", g, "v2", cacheLongTTL)
	e.eventually(b1, tn, "s", "k", e.prop, `hit "v2" (put by the other instance)`, cacheHit("v2", g))
	e.mustHit(b1, tn, "s", "k", g, "v2")
	e.put(b2, tn, "s", "k", g, "v3", cacheLongTTL)
	e.eventually(b1, tn, "s", "k", e.prop, `hit "v3" (overwritten by the other instance)`, cacheHit("v3", g))
	e.mustHit(b1, tn, "s", "k", g, "v3")

	if err := b2.Delete(e.ctx, tn, "s", "k"); err != nil {
		e.t.Fatal(err)
	}
	e.eventually(b1, tn, "s", "k", e.prop, "miss (deleted by the other instance)", cacheMiss(g))
}

func testCacheOtherStalePut(e *cacheEnv) {
	b1, b2 := e.b, e.other()
	tn := e.tenant("a")
	g := e.gen(b2, tn, "s") // b2 starts a load
	g2 := e.bump(b1, tn, "s")
	e.put(b2, tn, "s", "k", g, "stale", cacheLongTTL) // and stores it late
	e.mustMiss(b2, tn, "s", "k", g2)
	e.eventually(b1, tn, "s", "k", e.prop, fmt.Sprintf("miss at gen %d", g2), cacheMiss(g2))
}

func testCacheConcurrentBumps(e *cacheEnv) {
	tn := e.tenant("a")
	b2 := e.other()
	const workers, each = 8, 25
	var (
		mu   sync.Mutex
		gens = map[uint64]bool{}
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		b := e.b
		if w%2 == 1 {
			b = b2
		}
		wg.Go(func() {
			for range each {
				g, err := b.Bump(e.ctx, tn, "s")
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				dup := gens[g]
				gens[g] = true
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("generation %d returned twice", g)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	for g := uint64(1); g <= workers*each; g++ {
		if !gens[g] {
			e.t.Fatalf("generation %d never returned; got %d distinct", g, len(gens))
		}
	}
	e.eventually(e.b, tn, "s", "k", e.prop, fmt.Sprintf("miss at gen %d", workers*each), cacheMiss(workers*each))
}

// testCacheConcurrentGenerations runs writers (read the generation, put a
// value naming it), readers and a bumper on one scope: a hit must always
// carry the generation Get reports.
func testCacheConcurrentGenerations(e *cacheEnv) {
	tn := e.tenant("a")
	insts := []cache.Backend{e.b, e.other()}
	var (
		wg   sync.WaitGroup
		errs = make(chan error, 16)
		stop = make(chan struct{})
	)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for i, b := range insts {
		wg.Go(func() { // writer
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				_, g, _, err := b.Get(e.ctx, tn, "s", "k")
				if err == nil {
					err = b.Put(e.ctx, tn, "s", "k", g, cache.Entry{Value: fmt.Appendf(nil, "gen=%d by=%d n=%d", g, i, n)}, cacheLongTTL)
				}
				if err != nil {
					fail(err)
					return
				}
			}
		})
		wg.Go(func() { // reader
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, g, ok, err := b.Get(e.ctx, tn, "s", "k")
				if err != nil {
					fail(err)
					return
				}
				if ok && !strings.HasPrefix(string(v.Value), fmt.Sprintf("gen=%d ", g)) {
					fail(fmt.Errorf("Get = %q at generation %d: a value put under another generation", v.Value, g))
					return
				}
			}
		})
	}
	for range 30 {
		if _, err := insts[0].Bump(e.ctx, tn, "s"); err != nil {
			e.t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let writers and readers interleave
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

func testCacheConcurrentTenants(e *cacheEnv) {
	const workers, rounds = 8, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		tn := e.tenant(fmt.Sprintf("w%d", w))
		wg.Go(func() {
			for n := range rounds {
				// Every tenant uses the same scope and keys.
				_, g, _, err := e.b.Get(e.ctx, tn, "shared", "k")
				if err == nil {
					err = e.b.Put(e.ctx, tn, "shared", "k", g, cache.Entry{Value: []byte(fmt.Sprintf("%s/%d", tn, n))}, cacheLongTTL)
				}
				if err != nil {
					errs <- err
					return
				}
				v, g2, ok, err := e.b.Get(e.ctx, tn, "shared", "k")
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%s/%d", tn, n); !ok || string(v.Value) != want || g2 != g {
					errs <- fmt.Errorf("tenant %s round %d: Get = %q, %v at gen %d, want %q at gen %d", tn, n, v.Value, ok, g2, want, g)
					return
				}
				if n%10 == 9 {
					if _, err := e.b.Bump(e.ctx, tn, "shared"); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}
