package usage_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/sql"
	"github.com/agentapi-mt/agentapi/storetest"
	"github.com/agentapi-mt/agentapi/usage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

const restToken = "usage-test-token"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// openSQLite opens a fresh SQLite database, closed at cleanup.
func openSQLite(t *testing.T) *sql.DB {
	t.Helper()
	return openDB(t, "", filepath.Join(t.TempDir(), "usage.db"))
}

func openDB(t *testing.T, url, path string) *sql.DB {
	t.Helper()
	d, err := sql.Open(testCtx(t), url, path)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// postgresURLs hands out URLs of fresh databases: on DATABASE_TEST_URL's
// server when set, else on one private server shared by the calls.
func postgresURLs(t *testing.T) func(t *testing.T) string {
	if os.Getenv("DATABASE_TEST_URL") != "" {
		return func(t *testing.T) string { return pgtest.URL(t) }
	}
	srv := pgtest.Start(t)
	return func(t *testing.T) string { return srv.CreateDatabase(t) }
}

// backend makes the Stores of "instances" sharing one state: each call of
// instance is a new process's view, with its own client when over Redis.
type backend struct {
	name     string
	instance func(t *testing.T) usage.Store
	raw      kv.Client // direct access to the keys; nil for memory
	prefix   string
}

func memoryBackend() backend {
	m := usage.NewMemory(usage.MemoryOptions{})
	return backend{name: "memory", instance: func(*testing.T) usage.Store { return m }}
}

// nativeBackend returns a Redis backend under a fresh prefix whose
// instances each dial their own native client.
func nativeBackend(t *testing.T, url string) backend {
	prefix := "ut:" + randomHex(6) + ":"
	return backend{
		name:   "redis",
		prefix: prefix,
		raw:    kvtest.Native(t, native.Options{URL: url}),
		instance: func(t *testing.T) usage.Store {
			return usage.NewRedis(kvtest.Native(t, native.Options{URL: url}), usage.RedisOptions{Prefix: prefix})
		},
	}
}

// mixedBackend is like nativeBackend, but every other instance talks REST.
func mixedBackend(t *testing.T, url string) backend {
	b := nativeBackend(t, url)
	base, _ := restserver.StartTest(t, url, restToken)
	var n atomic.Int32
	native := b.instance
	b.name = "redis-native+rest"
	b.instance = func(t *testing.T) usage.Store {
		if n.Add(1)%2 == 0 {
			return usage.NewRedis(kvtest.REST(t, base, restToken), usage.RedisOptions{Prefix: b.prefix})
		}
		return native(t)
	}
	return b
}

// newRecorder starts a Recorder on store and db with the background loops
// off unless o sets them, closed at cleanup if the test did not.
func newRecorder(t *testing.T, store usage.Store, db usage.DB, o usage.Options) *usage.Recorder {
	t.Helper()
	o.Store, o.DB = store, db
	if o.PushInterval == 0 {
		o.PushInterval = -1
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = -1
	}
	if o.Now == nil {
		o.Now = storetest.NewManualClock(time.Time{}).Now
	}
	r, err := usage.New(o)
	if err != nil {
		t.Fatalf("usage.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Close(ctx)
	})
	return r
}

// day0 is the day of storetest.NewManualClock's default start.
const day0 = "2030-01-01"

func row(tenant, user string, m usage.Metric, n int64) usage.Row {
	return usage.Row{TenantID: tenant, UserID: user, Day: day0, Metric: m, Count: n}
}

// sqlRows returns every row in db.
func sqlRows(t *testing.T, db usage.DB) []usage.Row {
	t.Helper()
	s, err := db.UsageSnapshot(testCtx(t), usage.Query{})
	if err != nil {
		t.Fatalf("UsageSnapshot: %v", err)
	}
	return s.Rows
}

// wantRows compares rows, both merged first.
func wantRows(t *testing.T, what string, got, want []usage.Row) {
	t.Helper()
	g, w := usage.MergeRows(got), usage.MergeRows(want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d rows, want %d\ngot  %v\nwant %v", what, len(g), len(w), g, w)
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: row %d = %+v, want %+v", what, i, g[i], w[i])
		}
	}
}

// wantEmptyStore checks that the Store holds no counts for tenants.
func wantEmptyStore(t *testing.T, s usage.Store, tenants ...string) {
	t.Helper()
	p, err := s.Pending(testCtx(t), tenants)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	for tenant, h := range p {
		if len(h.Rows) > 0 || len(h.Flushes) > 0 {
			t.Errorf("store still holds %+v for %s", h, tenant)
		}
	}
}

// crashDB fails ApplyUsage calls on demand: before the transaction (a
// flusher that died before committing) or after it committed (one that
// died before acknowledging the flush in the Store).
type crashDB struct {
	usage.DB
	mu                        sync.Mutex
	beforeCommit, afterCommit int
}

var errCrash = errors.New("simulated crash")

func (c *crashDB) ApplyUsage(ctx context.Context, f usage.Flush) (bool, error) {
	c.mu.Lock()
	before := c.beforeCommit > 0
	after := !before && c.afterCommit > 0
	if before {
		c.beforeCommit--
	} else if after {
		c.afterCommit--
	}
	c.mu.Unlock()
	if before {
		return false, errCrash
	}
	ok, err := c.DB.ApplyUsage(ctx, f)
	if after && err == nil {
		return false, errCrash
	}
	return ok, err
}

// flakyStore fails pushes on demand: before sending them, or after the
// store applied them (a reply lost on the way back).
type flakyStore struct {
	usage.Store
	failBefore, failAfter atomic.Int32
}

func (f *flakyStore) Push(ctx context.Context, b usage.Batch) error {
	if f.failBefore.Add(-1) >= 0 {
		return kv.Unavailable("flaky", errCrash)
	}
	if err := f.Store.Push(ctx, b); err != nil {
		return err
	}
	if f.failAfter.Add(-1) >= 0 {
		return kv.Unavailable("flaky", errCrash)
	}
	return nil
}

// nopDB is a DB that stores nothing, for benchmarks of Add.
type nopDB struct{}

func (nopDB) ApplyUsage(context.Context, usage.Flush) (bool, error) { return true, nil }
func (nopDB) UsageMarks(context.Context, []string) (map[string]int64, error) {
	return map[string]int64{}, nil
}
func (nopDB) UsageSnapshot(context.Context, usage.Query) (usage.Snapshot, error) {
	return usage.Snapshot{Marks: map[string]int64{}}, nil
}
