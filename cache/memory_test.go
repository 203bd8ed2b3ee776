package cache_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/storetest"
)

// TestMemoryLRU: the entries held never exceed MaxBytes; the least
// recently used go first.
func TestMemoryLRU(t *testing.T) {
	ctx := testCtx(t)
	const value = 1000
	m := cache.NewMemory(cache.MemoryOptions{MaxBytes: 10 * (value + 300)})
	put := func(k string) {
		t.Helper()
		if err := m.Put(ctx, "t", "s", k, 0, cache.Entry{Value: make([]byte, value)}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	has := func(k string) bool {
		_, _, ok, err := m.Get(ctx, "t", "s", k)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for i := range 10 {
		put(fmt.Sprint("k", i)) // each counts about 1,200 bytes: all fit
	}
	if n := m.Len(); n != 10 {
		t.Fatalf("%d entries held, want all 10", n)
	}
	for i := 10; i < 40; i++ {
		has("k0") // keep it the most recently used
		put(fmt.Sprint("k", i))
		if b := m.Bytes(); b > 10*(value+300) {
			t.Fatalf("%d bytes held, over MaxBytes", b)
		}
	}
	if !has("k0") {
		t.Fatal("k0, used all along, was evicted")
	}
	if has("k1") || has("k10") || !has("k39") {
		t.Fatal("eviction did not follow recency")
	}
	// An entry larger than MaxBytes is not stored and evicts nothing.
	before := m.Len()
	if err := m.Put(ctx, "t", "s", "huge", 0, cache.Entry{Value: make([]byte, 20*value)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if has("huge") || m.Len() != before {
		t.Fatal("an entry over MaxBytes was stored or evicted others")
	}
	// Replacing an entry accounts for its new size only.
	put("k39")
	put("k39")
	if m.Len() != before {
		t.Fatalf("%d entries after overwrites, want %d", m.Len(), before)
	}
}

// TestMemoryGenerations: generation records outlive every entry put under
// them, and the table of records stays bounded.
func TestMemoryGenerations(t *testing.T) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	m := cache.NewMemory(cache.MemoryOptions{Now: clk.Now, GenerationTTL: time.Hour})

	// ttl is capped at GenerationTTL.
	if err := m.Put(ctx, "t", "cap", "k", 0, cache.Entry{}, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	if e, _, _, _ := m.Get(ctx, "t", "cap", "k"); e.TTL != time.Hour {
		t.Fatalf("TTL %v, want capped at 1h", e.TTL)
	}

	g, _ := m.Bump(ctx, "t", "s") // 1, remembered until +1h at least
	clk.Advance(50 * time.Minute)
	if err := m.Put(ctx, "t", "s", "k", g, cache.Entry{Value: []byte("v")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	clk.Advance(15 * time.Minute) // past the Bump's hour, within the entry's
	// Had the record been forgotten, the scope would be back at 0 and a
	// Bump would bring it to 1 again, resurrecting the entry.
	if g2, _ := m.Bump(ctx, "t", "s"); g2 != 2 {
		t.Fatalf("Bump = %d, want 2: the generation was forgotten while an entry needed it", g2)
	}
	if _, _, ok, _ := m.Get(ctx, "t", "s", "k"); ok {
		t.Fatal("entry of an old generation served")
	}

	// Records of scopes bumped long ago are forgotten.
	const live = 5000
	peak := 0
	for round := range 10 {
		for i := range live {
			if _, err := m.Bump(ctx, "t", fmt.Sprintf("r%d-%d", round, i)); err != nil {
				t.Fatal(err)
			}
		}
		peak = max(peak, m.Generations())
		clk.Advance(2 * time.Hour)
	}
	if limit := 2*live + 1024; peak > limit {
		t.Fatalf("%d generation records held with %d live, want at most %d", peak, live, limit)
	}
	// A forgotten scope starts again at 0, safely: its entries are gone.
	if _, g, _, _ := m.Get(ctx, "t", "r0-0", "k"); g != 0 {
		t.Fatalf("generation of a scope forgotten long ago = %d, want 0", g)
	}
}

// TestMemoryBigKeys: keys and values of any size up to MaxBytes
// round-trip.
func TestMemoryBigKeys(t *testing.T) {
	ctx := testCtx(t)
	m := cache.NewMemory(cache.MemoryOptions{})
	big := strings.Repeat("x", 1<<20)
	if err := m.Put(ctx, "t", "s", big, 0, cache.Entry{Value: []byte(big)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if e, _, ok, _ := m.Get(ctx, "t", "s", big); !ok || len(e.Value) != len(big) {
		t.Fatal("a 1 MiB key and value did not round-trip")
	}
}
