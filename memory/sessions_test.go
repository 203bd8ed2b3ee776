package memory_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/memory"
	"github.com/agentapi-mt/agentapi/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestSessionStoreConformance(t *testing.T) {
	type inst struct {
		s   *memory.SessionStore
		clk *fakeClock
	}
	var (
		mu     sync.Mutex
		byTest = map[*testing.T]inst{}
	)
	storetest.RunSessionStore(t, func(t *testing.T) (agentapi.SessionStore, storetest.Advance) {
		mu.Lock()
		defer mu.Unlock()
		// One process, one memory: every "instance" of a test is the
		// same store.
		if in, ok := byTest[t]; ok {
			return in.s, in.clk.Advance
		}
		clk := newFakeClock()
		s := memory.NewSessionStore(clk.Now, time.Minute)
		t.Cleanup(func() { s.Close() })
		byTest[t] = inst{s, clk}
		return s, clk.Advance
	})
}

func TestSessionStoreSweeper(t *testing.T) {
	clk := newFakeClock()
	s := memory.NewSessionStore(clk.Now, 5*time.Millisecond)
	defer s.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := s.Put(ctx, id, "o", []byte(id), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "long", "o", []byte("long"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 4 {
		t.Fatalf("Len = %d, want 4", n)
	}
	clk.Advance(2 * time.Minute)
	// Nobody reads the expired entries: the sweeper must reclaim them.
	deadline := time.Now().Add(5 * time.Second)
	for s.Len() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Len = %d after the sweeper had time to run, want 1", s.Len())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Get(ctx, "long", time.Hour); err != nil {
		t.Fatalf("Get(long): %v", err)
	}
	// The owner index forgot the swept ids too.
	if n, err := s.DeleteOwner(ctx, "o"); err != nil || n != 1 {
		t.Fatalf("DeleteOwner = %d, %v; want 1", n, err)
	}
}

func TestSessionStoreSweepAndClose(t *testing.T) {
	clk := newFakeClock()
	s := memory.NewSessionStore(clk.Now, time.Hour)
	ctx := context.Background()
	s.Put(ctx, "a", "o", []byte("a"), time.Second)
	s.Put(ctx, "b", "o", []byte("b"), time.Minute)
	if n := s.Sweep(); n != 0 {
		t.Errorf("Sweep before expiry removed %d", n)
	}
	clk.Advance(time.Second) // exactly the ttl: expired
	if n := s.Sweep(); n != 1 {
		t.Errorf("Sweep removed %d, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Still usable after Close; expiry still exact.
	if _, err := s.Get(ctx, "b", time.Minute); err != nil {
		t.Fatalf("Get after Close: %v", err)
	}
	clk.Advance(time.Minute)
	if _, err := s.Get(ctx, "b", time.Minute); agentapi.KindOf(err) != agentapi.KindNotFound {
		t.Fatalf("Get after expiry = %v, want KindNotFound", err)
	}
}

func TestSessionStoreCancelledContext(t *testing.T) {
	s := memory.NewSessionStore(nil, 0)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, "a", "o", nil, time.Minute); err == nil {
		t.Error("Put with a cancelled context succeeded")
	}
	if _, err := s.Get(ctx, "a", time.Minute); err == nil {
		t.Error("Get with a cancelled context succeeded")
	}
}
