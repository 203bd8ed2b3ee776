package cluster

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...) }

// node is one instance for the registry tests: its clock is shared, its
// background loop effectively off (tests call Renew).
type node struct {
	*Registry
	load atomic.Int64
}

func newNode(t *testing.T, url, prefix, id string, clock *storetest.ManualClock, lost *sync.Map) *node {
	t.Helper()
	n := &node{}
	n.Registry = New(t.Context(), Options{
		KV: kvtest.Native(t, native.Options{URL: url}), Prefix: prefix, ID: id, URL: "http://" + id,
		TTL: time.Hour, // the loop renews every 12 minutes: tests renew by hand
		Now: clock.Now, Load: func() int { return int(n.load.Load()) },
		MarkLost: func(ctx context.Context, instance string) (int, error) {
			c, _ := lost.LoadOrStore(instance, new(atomic.Int64))
			c.(*atomic.Int64).Add(1)
			return 1, nil
		},
	})
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func TestRegistryLivePlaceAndDeath(t *testing.T) {
	testLivePlaceAndDeath(t, redistest.Start(t, redistest.Options{}).URL(), "test:")
}

// TestCluster: the registry's tests with their instances on a three-master
// Redis Cluster. Its two keys share the hash tag {cluster}, so that each
// renewal's pipeline goes to one node, in order, as on one server.
func TestCluster(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	if !kvtest.Native(t, native.Options{URL: url}).Cluster() {
		t.Fatal("client of a cluster: Cluster() = false")
	}
	r := &Registry{o: Options{Prefix: "agentapi:"}}
	if kv.Slot(r.setKey()) != kv.Slot(r.infoKey()) {
		t.Fatalf("%s and %s are in different slots", r.setKey(), r.infoKey())
	}
	t.Run("LivePlaceAndDeath", func(t *testing.T) { testLivePlaceAndDeath(t, url, "c1:") })
	t.Run("CloseRemovesTheEntry", func(t *testing.T) { testCloseRemovesTheEntry(t, url, "c2:") })
}

func testLivePlaceAndDeath(t *testing.T, url, prefix string) {
	clock := storetest.NewManualClock(time.Now())
	var lost sync.Map
	a, b, c := newNode(t, url, prefix, "a", clock, &lost), newNode(t, url, prefix, "b", clock, &lost), newNode(t, url, prefix, "c", clock, &lost)
	ctx := t.Context()
	renewAll := func(ns ...*node) {
		for _, n := range ns {
			if err := n.Renew(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	renewAll(a, b, c)
	if got := len(a.Live()); got != 3 {
		t.Fatalf("a sees %d instances", got)
	}
	if in, ok := b.Lookup("c"); !ok || in.URL != "http://c" {
		t.Fatalf("lookup c from b: %+v %v", in, ok)
	}
	// Ties go to the asking instance; otherwise the least loaded.
	if in, _ := b.Place(); in.ID != "b" {
		t.Fatalf("b places on %s with equal loads", in.ID)
	}
	b.load.Store(2)
	c.load.Store(1)
	renewAll(b, c, a)
	if in, _ := b.Place(); in.ID != "a" {
		t.Fatalf("b places on %s; a is idle", in.ID)
	}
	a.Drain(ctx)
	renewAll(b)
	if in, _ := b.Place(); in.ID != "c" {
		t.Fatalf("b places on %s; a drains and c is less loaded than b", in.ID)
	}

	// c stops renewing; after the TTL exactly one survivor marks it lost.
	clock.Advance(30 * time.Minute)
	renewAll(a, b)
	clock.Advance(31 * time.Minute)
	renewAll(a, b, a, b)
	if _, ok := a.Lookup("c"); ok {
		t.Fatal("a still sees c after its TTL")
	}
	n, ok := lost.Load("c")
	if !ok || n.(*atomic.Int64).Load() != 1 {
		t.Fatalf("c's sessions marked lost %v times, want once", n)
	}
	if _, ok := lost.Load("a"); ok {
		t.Fatal("a live instance was marked lost")
	}
}

func TestCloseRemovesTheEntry(t *testing.T) {
	testCloseRemovesTheEntry(t, redistest.Start(t, redistest.Options{}).URL(), "test:")
}

func testCloseRemovesTheEntry(t *testing.T, url, prefix string) {
	clock := storetest.NewManualClock(time.Now())
	var lost sync.Map
	a, b := newNode(t, url, prefix, "a", clock, &lost), newNode(t, url, prefix, "b", clock, &lost)
	b.Close(t.Context())
	if err := a.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Lookup("b"); ok {
		t.Fatal("a closed instance is still live")
	}
	if _, ok := lost.Load("b"); ok {
		t.Fatal("a clean stop was taken for a death")
	}
}

// TestRedisOutageDeclaresNobodyDead: when Redis comes back from an outage
// longer than the TTL, every entry has expired; the first instance to
// renew must give the others a TTL to renew theirs instead of declaring
// them dead. An instance that stays silent after that is dead.
func TestRedisOutageDeclaresNobodyDead(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	clock := storetest.NewManualClock(time.Now())
	var lost sync.Map
	a, b, c := newNode(t, srv.URL(), "test:", "a", clock, &lost), newNode(t, srv.URL(), "test:", "b", clock, &lost), newNode(t, srv.URL(), "test:", "c", clock, &lost)
	ctx := t.Context()
	renew := func(n *node) {
		t.Helper()
		// The client reconnects after a restart: retry until it has.
		deadline := time.Now().Add(10 * time.Second)
		for err := n.Renew(ctx); err != nil; err = n.Renew(ctx) {
			if time.Now().After(deadline) {
				t.Fatalf("%s cannot renew: %v", n.Self(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, n := range []*node{a, b, c} {
		renew(n)
	}
	for range 3 { // past a full TTL of its own for each, renewing in time
		clock.Advance(30 * time.Minute)
		for _, n := range []*node{a, b, c} {
			renew(n)
		}
	}

	srv.Stop(t)
	clock.Advance(2 * time.Hour) // the outage outlasts the TTL
	for _, n := range []*node{a, b, c} {
		if err := n.Renew(ctx); err == nil {
			t.Fatalf("%s renewed with Redis down", n.Self())
		}
	}
	srv.Restart(t)
	renew(a) // a is back first: b's and c's entries have expired
	clock.Advance(10 * time.Minute)
	renew(b)
	renew(c)
	renew(a)
	lost.Range(func(k, v any) bool {
		t.Errorf("%v was marked lost after the outage", k)
		return true
	})
	if got := len(a.Live()); got != 3 {
		t.Fatalf("a sees %d live instances after the others renewed", got)
	}

	// A full TTL later c has not renewed: now it is dead, once.
	clock.Advance(30 * time.Minute)
	renew(b)
	clock.Advance(31 * time.Minute)
	renew(a)
	renew(b)
	n, ok := lost.Load("c")
	if !ok || n.(*atomic.Int64).Load() != 1 {
		t.Fatalf("c, silent for a TTL after the outage, marked lost %v times, want once", n)
	}
	for _, id := range []string{"a", "b"} {
		if _, ok := lost.Load(id); ok {
			t.Errorf("%s was marked lost", id)
		}
	}
}

func TestUnregisteredOwnersSessionsAreLostAfterATTL(t *testing.T) {
	url := redistest.Start(t, redistest.Options{}).URL()
	clock := storetest.NewManualClock(time.Now())
	var marked atomic.Int64
	r := New(t.Context(), Options{
		KV: kvtest.Native(t, native.Options{URL: url}), Prefix: "test:", ID: "a", URL: "http://a", TTL: time.Hour, Now: clock.Now,
		RunningInstances: func(ctx context.Context) ([]string, error) { return []string{"a", "ghost"}, nil },
		MarkLost: func(ctx context.Context, instance string) (int, error) {
			if instance != "ghost" {
				t.Errorf("marked %s lost", instance)
			}
			marked.Add(1)
			return 1, nil
		},
	})
	defer r.Close(context.Background())
	if err := r.Renew(t.Context()); err != nil || marked.Load() != 0 {
		t.Fatalf("marked before a TTL of its own: %d %v", marked.Load(), err)
	}
	clock.Advance(61 * time.Minute)
	if err := r.Renew(t.Context()); err != nil || marked.Load() != 1 {
		t.Fatalf("ghost marked %d times: %v", marked.Load(), err)
	}
}

func TestSignatures(t *testing.T) {
	s := NewSigner(make([]byte, 32))
	now := time.Now()
	req := httptest.NewRequest("POST", "/v1/sessions/ses_1/message?x=1", nil)
	s.Sign(req.Header, "POST", "/v1/sessions/ses_1/message?x=1", []byte(`{"t":"acme","u":"usr_1"}`), now)
	if p, ok := s.Verify(req, now.Add(time.Second)); !ok || string(p) != `{"t":"acme","u":"usr_1"}` {
		t.Fatalf("a good signature: %q %v", p, ok)
	}
	if _, ok := s.Verify(req, now.Add(2*time.Minute)); ok {
		t.Fatal("a stale signature passed")
	}
	if _, ok := NewSigner(bytes.Repeat([]byte{1}, 32)).Verify(req, now); ok {
		t.Fatal("a signature from another key passed")
	}
	tampered := httptest.NewRequest("POST", "/v1/sessions/ses_2/message?x=1", nil)
	tampered.Header = req.Header.Clone()
	if _, ok := s.Verify(tampered, now); ok {
		t.Fatal("a signature passed for another path")
	}
	other := req.Clone(t.Context())
	other.Header.Set(HeaderPrincipal, "eyJ0IjoiZ2xvYmV4IiwidSI6InVzcl8xIn0") // {"t":"globex","u":"usr_1"}
	if _, ok := s.Verify(other, now); ok {
		t.Fatal("a signature passed for another principal")
	}
	method := req.Clone(t.Context())
	method.Method = "DELETE"
	if _, ok := s.Verify(method, now); ok {
		t.Fatal("a signature passed for another method")
	}
	if _, ok := s.Verify(httptest.NewRequest("GET", "/", nil), now); ok {
		t.Fatal("an unsigned request passed")
	}
}

// TestLostRegistryIsAGap: when Redis loses the registry without any
// renewal failing (a restart between renewals, an eviction), the first
// instance to renew finds its own entry gone and does not judge the
// others until they had a TTL to renew.
func TestLostRegistryIsAGap(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clock := storetest.NewManualClock(time.Now())
	var lost sync.Map
	a, b := newNode(t, srv.URL(), "gap:", "a", clock, &lost), newNode(t, srv.URL(), "gap:", "b", clock, &lost)
	ctx := t.Context()
	for range 3 {
		clock.Advance(30 * time.Minute)
		for _, n := range []*node{a, b} {
			if err := n.Renew(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Between two renewals Redis comes back from an old snapshot: the
	// registry holds b with a long-past expiry and not a at all (b, slower
	// to renew, has not yet rewritten its entry).
	raw := kvtest.Native(t, native.Options{URL: srv.URL()})
	if _, err := raw.Do(ctx, "FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	past := strconv.FormatInt(clock.Now().Add(-2*time.Hour).UnixMilli(), 10)
	if _, err := raw.Do(ctx, "ZADD", "gap:{cluster}:instances", past, "b"); err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	lost.Range(func(k, v any) bool {
		t.Errorf("%v marked lost after Redis lost the registry", k)
		return true
	})
}
