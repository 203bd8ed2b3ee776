package usage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/sql"
	"github.com/agentapi-mt/agentapi/storetest"
	"github.com/agentapi-mt/agentapi/usage"
)

// TestInstances runs three Recorders -- three instances, each with its own
// Redis client -- on one Redis server and one database, PostgreSQL and
// SQLite.
func TestInstances(t *testing.T) {
	url := redistest.URL(t)
	newPG := postgresURLs(t)
	dbs := []struct {
		name string
		open func(t *testing.T) *sql.DB
	}{
		{"postgres", func(t *testing.T) *sql.DB { return openDB(t, newPG(t), "") }},
		{"sqlite", openSQLite},
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, b backend, db *sql.DB)
	}{
		{"ExactUnderLoad", testExactUnderLoad},
		{"KillDuringLoad", testKillDuringLoad},
		{"ConcurrentFlushers", testConcurrentFlushers},
		{"QuotaExact", testQuotaExact},
		{"QuotaSeedAfterCounterLost", testQuotaSeedAfterLoss},
	}
	for _, d := range dbs {
		t.Run(d.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, nativeBackend(t, url), d.open(t))
				})
			}
			t.Run("ExactUnderLoad/native+rest", func(t *testing.T) {
				t.Parallel()
				testExactUnderLoad(t, mixedBackend(t, url), d.open(t))
			})
		})
	}
}

// load adds random counts to r from goroutines until each made n calls
// (or, with n < 0, until stop is closed), and returns what they added.
func load(r *usage.Recorder, goroutines, n int, seed uint64, stop <-chan struct{}) []usage.Row {
	var (
		mu   sync.Mutex
		all  []usage.Row
		wg   sync.WaitGroup
		tens = []string{"acme", "globex", "initech", "umbrella", "hooli"}
	)
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			sums := map[usage.Row]int64{}
			for i := 0; n < 0 || i < n; i++ {
				if n < 0 {
					select {
					case <-stop:
						i = -2 // done
					default:
					}
					if i < 0 {
						break
					}
				}
				k := row(tens[rng.IntN(len(tens))], fmt.Sprint("user-", rng.IntN(4)), usage.Metrics[rng.IntN(len(usage.Metrics))], 0)
				c := 1 + rng.Int64N(1000)
				r.Add(k.TenantID, k.UserID, k.Metric, c)
				sums[k] += c
			}
			mu.Lock()
			for k, c := range sums {
				k.Count = c
				all = append(all, k)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

func total(rows []usage.Row) int64 {
	var n int64
	for _, r := range rows {
		n += r.Count
	}
	return n
}

var allTenants = []string{"acme", "globex", "initech", "umbrella", "hooli"}

// Three instances add concurrently with their push and flush loops
// running; after Close (SIGTERM) on all three, SQL holds exactly the sums.
func testExactUnderLoad(t *testing.T, b backend, db *sql.DB) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	var recs []*usage.Recorder
	for range 3 {
		recs = append(recs, newRecorder(t, b.instance(t), db, usage.Options{
			PushInterval: 2 * time.Millisecond, FlushInterval: 7 * time.Millisecond, Now: clk.Now,
		}))
	}
	var (
		mu   sync.Mutex
		want []usage.Row
		wg   sync.WaitGroup
	)
	for i, r := range recs {
		wg.Go(func() {
			rows := load(r, 6, 800, uint64(i), nil)
			mu.Lock()
			want = append(want, rows...)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, r := range recs {
		wg.Go(func() {
			if err := r.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	wantRows(t, "SQL after Close on every instance", sqlRows(t, db), want)
	var pushed, pushes, flushes int64
	for _, r := range recs {
		st := r.Stats()
		pushed += st.PushedUnits
		pushes += st.Pushes
		flushes += st.Flushes
		if st.Dropped != 0 || st.Unpushed != 0 {
			t.Errorf("Stats = %+v", st)
		}
	}
	if pushed != total(want) {
		t.Errorf("pushed %d units, added %d", pushed, total(want))
	}
	t.Logf("%d units in %d pushes and %d flushes", pushed, pushes, flushes)
	store := b.instance(t)
	wantEmptyStore(t, store, allTenants...)
	if ds, err := store.Dirty(ctx); err != nil || len(ds) != 0 {
		t.Errorf("Dirty after every Close = %v, %v", ds, err)
	}
}

// An instance killed (SIGKILL) under load loses exactly what it had not
// pushed; the others lose nothing.
func testKillDuringLoad(t *testing.T, b backend, db *sql.DB) {
	ctx := testCtx(t)
	clk := storetest.NewManualClock(time.Time{})
	opts := usage.Options{PushInterval: 2 * time.Millisecond, FlushInterval: 5 * time.Millisecond, Now: clk.Now}
	victim := newRecorder(t, b.instance(t), db, opts)
	survivors := []*usage.Recorder{newRecorder(t, b.instance(t), db, opts), newRecorder(t, b.instance(t), db, opts)}

	stop := make(chan struct{})
	var victimRows, survivorRows []usage.Row
	var wg sync.WaitGroup
	wg.Go(func() { victimRows = load(victim, 4, -1, 10, stop) })
	wg.Go(func() {
		for i, r := range survivors {
			survivorRows = append(survivorRows, load(r, 3, 500, uint64(20+i), nil)...)
		}
	})
	// The kill comes while the victim's goroutines are adding, after it
	// pushed a few times (real time: its loop runs on a ticker).
	deadline := time.Now().Add(20 * time.Second)
	for victim.Stats().Pushes < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the victim pushed %d times in 20s", victim.Stats().Pushes)
		}
		time.Sleep(time.Millisecond)
	}
	victim.Abandon()
	close(stop)
	wg.Wait()
	for _, r := range survivors {
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	st := victim.Stats()
	added := total(victimRows)
	t.Logf("victim: added %d, pushed %d, lost unpushed %d, dropped after the kill %d", added, st.PushedUnits, st.Unpushed, st.Dropped)
	if st.PushedUnits+st.Unpushed+st.Dropped != added {
		t.Fatalf("victim: pushed %d + unpushed %d + dropped %d != added %d", st.PushedUnits, st.Unpushed, st.Dropped, added)
	}
	got := sqlRows(t, db)
	if want := total(survivorRows) + st.PushedUnits; total(got) != want {
		t.Errorf("SQL total %d, want the survivors' %d + the victim's pushed %d = %d", total(got), total(survivorRows), st.PushedUnits, want)
	}
	// Per counter: at least what the survivors added, at most everything.
	lo, hi := map[usage.Row]int64{}, map[usage.Row]int64{}
	for _, r := range survivorRows {
		k := r
		k.Count = 0
		lo[k] += r.Count
		hi[k] += r.Count
	}
	for _, r := range victimRows {
		k := r
		k.Count = 0
		hi[k] += r.Count
	}
	for _, r := range got {
		k := r
		k.Count = 0
		if r.Count < lo[k] || r.Count > hi[k] {
			t.Errorf("%+v: count %d outside [%d, %d]", k, r.Count, lo[k], hi[k])
		}
	}
}

// Three instances flush at once, over and over, while counts are pushed.
func testConcurrentFlushers(t *testing.T, b backend, db *sql.DB) {
	ctx := testCtx(t)
	var recs []*usage.Recorder
	for range 3 {
		recs = append(recs, newRecorder(t, b.instance(t), db, usage.Options{}))
	}
	var (
		pushing  atomic.Int32
		wg       sync.WaitGroup
		mu       sync.Mutex
		want     []usage.Row
		failures atomic.Int32
	)
	pushing.Store(3)
	for i, r := range recs {
		wg.Go(func() { // pusher
			defer pushing.Add(-1)
			for round := range 15 {
				rows := load(r, 2, 20, uint64(100*i+round), nil)
				if err := r.Push(ctx); err != nil {
					t.Errorf("Push: %v", err)
					return
				}
				mu.Lock()
				want = append(want, rows...)
				mu.Unlock()
			}
		})
		wg.Go(func() { // flusher
			for pushing.Load() > 0 {
				if err := r.Flush(ctx); err != nil {
					failures.Add(1)
					t.Errorf("Flush: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := recs[0].Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after concurrent flushes", sqlRows(t, db), want)
	wantEmptyStore(t, b.instance(t), allTenants...)
	var flushes int64
	for _, r := range recs {
		flushes += r.Stats().Flushes
	}
	t.Logf("%d flushes applied", flushes)
}

// Goroutines on three instances consume a quota: exactly the limit is
// admitted, and recorded as usage.
func testQuotaExact(t *testing.T, b backend, db *sql.DB) {
	ctx := testCtx(t)
	const limit = 100
	var recs []*usage.Recorder
	for range 3 {
		recs = append(recs, newRecorder(t, b.instance(t), db, usage.Options{PushInterval: 3 * time.Millisecond}))
	}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for _, r := range recs {
		for g := range 8 {
			wg.Go(func() {
				for range 10 {
					d, err := r.Consume(ctx, "acme", fmt.Sprint("u", g), usage.Messages, 1, limit)
					if err != nil {
						t.Errorf("Consume: %v", err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					} else {
						refused.Add(1)
						if d.Used != limit {
							t.Errorf("refusal with Used %d, want %d", d.Used, limit)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	if admitted.Load() != limit || refused.Load() != 240-limit {
		t.Errorf("24 goroutines × 10 calls, limit %d: %d admitted, %d refused", limit, admitted.Load(), refused.Load())
	}
	for _, r := range recs {
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := usage.Totals(sqlRows(t, db))[usage.Messages]; got != limit {
		t.Errorf("messages recorded %d, want %d", got, limit)
	}
}

// A quota counter lost in Redis (restart, eviction) is seeded again from
// the usage recorded for the month: SQL plus what Redis still holds.
func testQuotaSeedAfterLoss(t *testing.T, b backend, db *sql.DB) {
	ctx := testCtx(t)
	a := newRecorder(t, b.instance(t), db, usage.Options{})
	c := newRecorder(t, b.instance(t), db, usage.Options{})
	consume := func(r *usage.Recorder, n int, limit int64) (allowed int) {
		t.Helper()
		for range n {
			d, err := r.Consume(ctx, "acme", "u", usage.Messages, 1, limit)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				allowed++
			}
		}
		return allowed
	}
	if got := consume(a, 40, 1000); got != 40 {
		t.Fatalf("allowed %d of 40", got)
	}
	if err := a.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil { // 40 in SQL
		t.Fatal(err)
	}
	if got := consume(a, 10, 1000); got != 10 {
		t.Fatalf("allowed %d of 10", got)
	}
	if err := a.Push(ctx); err != nil { // 10 pending in Redis
		t.Fatal(err)
	}
	month := usage.Month(storetest.NewManualClock(time.Time{}).Now())
	key := usage.NewRedis(b.raw, usage.RedisOptions{Prefix: b.prefix}).QuotaKey("acme", usage.Messages, month)
	if v, err := b.raw.Do(ctx, "GET", key); err != nil || !v.Equal(kv.StringValue("50")) {
		t.Fatalf("quota counter %s = %v, %v; want 50", key, v, err)
	}
	if _, err := b.raw.Do(ctx, "DEL", key); err != nil {
		t.Fatal(err)
	}
	// Another instance seeds 50 and admits exactly 30 more under 80.
	if got := consume(c, 45, 80); got != 30 {
		t.Errorf("after the counter was lost: %d allowed under a limit of 80 with 50 used, want 30", got)
	}
	if v, err := b.raw.Do(ctx, "GET", key); err != nil || !v.Equal(kv.StringValue("80")) {
		t.Errorf("quota counter = %v, %v; want 80", v, err)
	}
	if v, err := b.raw.Do(ctx, "PTTL", key); err != nil {
		t.Fatal(err)
	} else if ms, _ := v.Int(); ms < int64(39*24*time.Hour/time.Millisecond) {
		t.Errorf("quota counter PTTL %d ms, want about 40 days", ms)
	}
}

// TestRedisOutage: while Redis is down, Add keeps counting, pushes fail
// and are retried, reports and quota checks fail as unavailable; after a
// restart that lost Redis's data, the counts kept locally arrive in SQL
// and flushes continue above the marks already in SQL.
func TestRedisOutage(t *testing.T) {
	ctx := testCtx(t)
	srv := redistest.Start(t, redistest.Options{})
	c := kvtest.Native(t, native.Options{URL: srv.URL()})
	store := usage.NewRedis(c, usage.RedisOptions{})
	db := openSQLite(t)
	r := newRecorder(t, store, db, usage.Options{})
	r.Add("acme", "u", usage.Requests, 5)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	srv.Stop(t)
	r.Add("acme", "u", usage.Requests, 7)
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Push(short); agentapi.KindOf(err) != agentapi.KindUnavailable {
		t.Errorf("Push with Redis down: %v, want KindUnavailable", err)
	}
	r.Add("acme", "u", usage.Requests, 11) // waits behind the failed batch
	if _, err := r.Report(short, usage.Query{}); err == nil {
		t.Error("Report with Redis down: no error")
	}
	if _, err := r.ConsumeQuota(short, "acme", usage.Messages, 1, 10); agentapi.KindOf(err) != agentapi.KindUnavailable {
		t.Errorf("ConsumeQuota with Redis down: %v, want KindUnavailable", err)
	}
	if st := r.Stats(); st.Unpushed != 18 {
		t.Errorf("Stats with Redis down = %+v, want 18 unpushed", st)
	}

	srv.Restart(t) // empty: it persists nothing
	// The client meets its dead connections one call at a time: retry, as
	// the background loops do.
	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{{"Push", r.Push}, {"Flush", r.Flush}} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := step.fn(ctx)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after the restart: %v", step.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wantRows(t, "SQL after the outage", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 23)})

	// Redis forgot every script and flush Seq: a flush still applies.
	if _, err := c.Do(ctx, "SCRIPT", "FLUSH"); err != nil {
		t.Fatal(err)
	}
	r.Add("acme", "u", usage.Requests, 100)
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after Close", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 123)})
}

// TestMemoryRestart: a single instance without Redis flushes at Close, and
// after a restart its quota counter is seeded from SQL.
func TestMemoryRestart(t *testing.T) {
	ctx := testCtx(t)
	path := t.TempDir() + "/records.db"
	db := openDB(t, "", path)
	first := newRecorder(t, usage.NewMemory(usage.MemoryOptions{}), db, usage.Options{})
	for range 30 {
		if d, err := first.Consume(ctx, "acme", "u", usage.Messages, 1, 50); err != nil || !d.Allowed {
			t.Fatalf("Consume = %+v, %v", d, err)
		}
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	second := newRecorder(t, usage.NewMemory(usage.MemoryOptions{}), db, usage.Options{})
	allowed := 0
	for range 40 {
		d, err := second.Consume(ctx, "acme", "u", usage.Messages, 1, 50)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 20 {
		t.Errorf("after a restart: %d allowed, want 20 (50 - 30 used)", allowed)
	}
}
