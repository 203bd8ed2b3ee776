package tenantcfg

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/sql"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...) }

// countingStore counts the database reads of tenant configurations.
type countingStore struct {
	*sql.DB
	reads atomic.Int64
}

func (c *countingStore) TenantConfig(ctx context.Context, id string) (agentapi.TenantConfig, error) {
	c.reads.Add(1)
	return c.DB.TenantConfig(ctx, id)
}

func openDB(t *testing.T) *countingStore {
	t.Helper()
	db, err := sql.Open(t.Context(), "", filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now()
	for _, id := range []string{"t1", "t2"} {
		if err := db.CreateTenant(t.Context(), agentapi.Tenant{ID: id, Name: id, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	return &countingStore{DB: db}
}

func newService(t *testing.T, o Options) *Service {
	t.Helper()
	if o.Prefix == "" {
		o.Prefix = "agentapi:"
	}
	s := New(o)
	t.Cleanup(s.Close)
	return s
}

func TestWithoutRedisAChangeIsSeenAtOnce(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	s := newService(t, Options{Store: db})
	if c, err := s.Config(ctx, "t1"); err != nil || c.Version != 0 {
		t.Fatalf("fresh: %+v %v", c, err)
	}
	if _, err := s.Config(ctx, "nope"); agentapi.KindOf(err) != agentapi.KindNotFound {
		t.Fatalf("missing tenant: %v", err)
	}
	if _, err := s.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 4}, nil); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Config(ctx, "t1"); c.MaxSessions != 4 || c.Version != 1 {
		t.Fatalf("after put: %+v", c)
	}
	reads := db.reads.Load()
	for range 100 {
		s.Config(ctx, "t1")
	}
	if got := db.reads.Load(); got != reads {
		t.Fatalf("cached lookups read the database %d times", got-reads)
	}
}

func TestPutRejectsBadConfigAndChangesNothing(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	s := newService(t, Options{Store: db})
	known := func(a string) bool { return a == "demo" }
	for _, bad := range []agentapi.TenantConfig{
		{MaxSessions: -1},
		{RateLimitBurst: 5},
		{AllowedAgents: []string{"demo", "nope"}},
		{Flags: map[string]agentapi.Flag{"Bad Name": {}}},
	} {
		if _, err := s.Put(ctx, "t1", bad, known); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("%+v: %v, want KindInvalid", bad, err)
		}
	}
	if c, _ := s.Config(ctx, "t1"); c.Version != 0 {
		t.Fatalf("a refused configuration was stored: %+v", c)
	}
}

func TestEffectiveFlags(t *testing.T) {
	ctx := t.Context()
	db := openDB(t)
	s := newService(t, Options{Store: db})
	if !s.FlagOn(ctx, "t1", "u1", agentapi.FlagRawInput) {
		t.Fatal("raw_input is on by default")
	}
	if s.FlagOn(ctx, "t1", "u1", "unknown") {
		t.Fatal("an unknown flag is on")
	}
	// Global override, then a tenant override on top.
	if err := s.PutGlobalFlag(ctx, agentapi.FlagRawInput, agentapi.Flag{Enabled: false}); err != nil {
		t.Fatal(err)
	}
	if s.FlagOn(ctx, "t1", "u1", agentapi.FlagRawInput) || s.FlagOn(ctx, "t2", "u1", agentapi.FlagRawInput) {
		t.Fatal("global off is not honoured")
	}
	if _, err := s.Put(ctx, "t2", agentapi.TenantConfig{Flags: map[string]agentapi.Flag{agentapi.FlagRawInput: {Enabled: true}}}, nil); err != nil {
		t.Fatal(err)
	}
	if s.FlagOn(ctx, "t1", "u1", agentapi.FlagRawInput) || !s.FlagOn(ctx, "t2", "u1", agentapi.FlagRawInput) {
		t.Fatal("tenant override is not honoured (or leaks to another tenant)")
	}
	if err := s.DeleteGlobalFlag(ctx, agentapi.FlagRawInput); err != nil {
		t.Fatal(err)
	}
	if !s.FlagOn(ctx, "t1", "u1", agentapi.FlagRawInput) {
		t.Fatal("deleting the global flag does not restore the built-in default")
	}
}

// twoInstances returns two Services sharing one database and one Redis,
// each with its own connections (two server instances).
func twoInstances(t *testing.T, o Options) (a, b *Service, db *countingStore, srv *redistest.Server) {
	t.Helper()
	srv = redistest.Start(t, redistest.Options{})
	a, b, db = instancesOn(t, o, srv.URL())
	return a, b, db, srv
}

// instancesOn is twoInstances on the Redis (server or cluster) at url.
func instancesOn(t *testing.T, o Options, url string) (a, b *Service, db *countingStore) {
	t.Helper()
	db = openDB(t)
	mk := func() *Service {
		o := o
		o.Store = db
		o.KV = kvtest.Native(t, native.Options{URL: url})
		return newService(t, o)
	}
	return mk(), mk(), db
}

// instances makes the two instances of a test; see twoInstances.
type instances func(t *testing.T, o Options) (a, b *Service, db *countingStore)

func onServer(t *testing.T, o Options) (a, b *Service, db *countingStore) {
	a, b, db, _ = twoInstances(t, o)
	return a, b, db
}

// TestCluster: the tests that need no outage, with both instances on a
// three-master Redis Cluster (the epoch and each tenant's entry are in
// slots of their own; every call names one key).
func TestCluster(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	if !kvtest.Native(t, native.Options{URL: url}).Cluster() {
		t.Fatal("client of a cluster: Cluster() = false")
	}
	var n atomic.Int64
	on := func(t *testing.T, o Options) (a, b *Service, db *countingStore) {
		o.Prefix = fmt.Sprintf("tc%d-%d:", time.Now().UnixNano(), n.Add(1)) // the subtests share the cluster
		return instancesOn(t, o, url)
	}
	t.Run("ChangeReachesAnother", func(t *testing.T) { testChangeReachesAnother(t, on) })
	t.Run("SecondInstanceReadsLevelTwo", func(t *testing.T) { testSecondReadsLevelTwo(t, on) })
	t.Run("OldVersionNeverReplacesNewer", func(t *testing.T) { testOldVersionNeverWins(t, on) })
}

func TestChangeOnOneInstanceReachesAnotherWithinASecond(t *testing.T) {
	testChangeReachesAnother(t, onServer)
}

func testChangeReachesAnother(t *testing.T, two instances) {
	ctx := t.Context()
	a, b, _ := two(t, Options{}) // the default poll interval
	for _, s := range []*Service{a, b} {
		if c, err := s.Config(ctx, "t1"); err != nil || c.MaxSessions != 0 {
			t.Fatalf("before: %+v %v", c, err)
		}
		if !s.FlagOn(ctx, "t1", "u1", agentapi.FlagFileUpload) {
			t.Fatal("file_upload is on by default")
		}
	}
	start := time.Now()
	if _, err := a.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 9}, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.PutGlobalFlag(ctx, agentapi.FlagFileUpload, agentapi.Flag{Enabled: false}); err != nil {
		t.Fatal(err)
	}
	if c, _ := a.Config(ctx, "t1"); c.MaxSessions != 9 {
		t.Fatalf("the writing instance does not see its own change: %+v", c)
	}
	for {
		c, err := b.Config(ctx, "t1")
		if err == nil && c.MaxSessions == 9 && !b.FlagOn(ctx, "t1", "u1", agentapi.FlagFileUpload) {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("instance B still serves the old configuration %v after the change: %+v %v", time.Since(start), c, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("instance B honoured the change after %v", time.Since(start))
}

func TestSecondInstanceReadsLevelTwoNotTheDatabase(t *testing.T) {
	testSecondReadsLevelTwo(t, onServer)
}

func testSecondReadsLevelTwo(t *testing.T, two instances) {
	ctx := t.Context()
	a, b, db := two(t, Options{PollInterval: time.Hour})
	if _, err := a.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 3}, nil); err != nil {
		t.Fatal(err)
	}
	b.poll(ctx) // as the poller would
	before := db.reads.Load()
	if c, err := b.Config(ctx, "t1"); err != nil || c.MaxSessions != 3 {
		t.Fatalf("B: %+v %v", c, err)
	}
	if got := db.reads.Load() - before; got != 0 {
		t.Fatalf("B read the database %d times; level two holds the configuration", got)
	}
}

func TestAnOldVersionNeverReplacesANewerOneInLevelTwo(t *testing.T) {
	testOldVersionNeverWins(t, onServer)
}

func testOldVersionNeverWins(t *testing.T, two instances) {
	ctx := t.Context()
	a, b, _ := two(t, Options{PollInterval: time.Hour})
	v1, err := a.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 2}, nil); err != nil {
		t.Fatal(err)
	}
	// A slow reader that loaded version 1 before the change fills late.
	if err := b.fill(ctx, "t1", v1); err != nil {
		t.Fatal(err)
	}
	b.poll(ctx)
	if c, _ := b.Config(ctx, "t1"); c.MaxSessions != 2 || c.Version != 2 {
		t.Fatalf("level two went back to an old version: %+v", c)
	}
}

func TestWhileRedisIsDownEntriesAgeOutToTheDatabase(t *testing.T) {
	ctx := t.Context()
	a, b, db, srv := twoInstances(t, Options{PollInterval: time.Hour, StaleAfter: 50 * time.Millisecond})
	if c, _ := b.Config(ctx, "t1"); c.MaxSessions != 0 {
		t.Fatal(c)
	}
	srv.Stop(t)
	b.poll(ctx) // fails: B no longer trusts its entries beyond StaleAfter
	// The change is made in the database (A cannot announce it).
	if _, err := db.PutTenantConfig(ctx, "t1", agentapi.TenantConfig{MaxSessions: 5}, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := b.Config(ctx, "t1")
		if err == nil && c.MaxSessions == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never reloaded from the database: %+v %v", c, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A's own change still reaches A, and A says it could not announce it.
	if _, err := a.Put(ctx, "t1", agentapi.TenantConfig{MaxSessions: 6}, nil); agentapi.KindOf(err) != agentapi.KindUnavailable {
		t.Fatalf("put with Redis down: %v, want KindUnavailable", err)
	}
	if c, _ := a.Config(ctx, "t1"); c.MaxSessions != 6 {
		t.Fatalf("A does not see its own change: %+v", c)
	}
	srv.Restart(t)
	b.poll(ctx)
	if !b.synced.Load() {
		t.Fatal("B did not resume reading the epoch")
	}
}

func BenchmarkConfigHit(b *testing.B) {
	db, err := sql.Open(context.Background(), "", filepath.Join(b.TempDir(), "records.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateTenant(context.Background(), agentapi.Tenant{ID: "t1", Name: "t1"}); err != nil {
		b.Fatal(err)
	}
	s := New(Options{Store: db})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Config(ctx, "t1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Config(ctx, "t1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
