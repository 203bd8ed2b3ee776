package usage_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
	"github.com/agentapi-mt/agentapi/usage"
)

// TestRecorder runs the Recorder's behaviours on one instance over each
// Store, with SQLite.
func TestRecorder(t *testing.T) {
	url := redistest.URL(t)
	backends := []struct {
		name string
		mk   func(t *testing.T) backend
	}{
		{"memory", func(*testing.T) backend { return memoryBackend() }},
		{"redis", func(t *testing.T) backend { return nativeBackend(t, url) }},
		{"redis-native+rest", func(t *testing.T) backend { return mixedBackend(t, url) }},
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, b backend)
	}{
		{"AddPushFlushReport", testAddPushFlushReport},
		{"PushRetryCountsOnce", testPushRetry},
		{"KillLosesOnlyUnpushed", testKillDeterministic},
		{"CloseLosesNothing", testCloseLosesNothing},
		{"FlushCrashAfterCommit", testFlushCrashAfterCommit},
		{"FlushCrashBeforeCommit", testFlushCrashBeforeCommit},
		{"ReportExactDuringFlushes", testReportDuringFlushes},
		{"QuotaSeededFromUsage", testQuotaSeed},
		{"DaysAndDrops", testDaysAndDrops},
		{"JournalKillLosesNothing", testJournalKillLosesNothing},
		{"JournalInflightCountedOnce", testJournalInflightCountedOnce},
		{"JournalRewriteAndDamage", testJournalRewriteAndDamage},
		{"JournalWriteFailureAndOutage", testJournalWriteFailureAndOutage},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, be.mk(t))
				})
			}
		})
	}
}

func testAddPushFlushReport(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	store := b.instance(t)
	r := newRecorder(t, store, db, usage.Options{})
	r.Add("acme", "u1", usage.Requests, 1)
	r.Add("acme", "u1", usage.Requests, 2)
	r.Add("acme", "u2", usage.UploadBytes, 1000)
	r.Add("globex", "", usage.RateLimited, 1)

	// Report pushes first: exact right away, with nothing flushed.
	got, err := r.Report(ctx, usage.Query{TenantID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "report before any flush", got, []usage.Row{row("acme", "u1", usage.Requests, 3), row("acme", "u2", usage.UploadBytes, 1000)})
	if rows := sqlRows(t, db); len(rows) != 0 {
		t.Fatalf("SQL has rows before a flush: %v", rows)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after a flush", sqlRows(t, db), []usage.Row{
		row("acme", "u1", usage.Requests, 3), row("acme", "u2", usage.UploadBytes, 1000), row("globex", "", usage.RateLimited, 1),
	})
	wantEmptyStore(t, store, "acme", "globex")
	if ds, _ := store.Dirty(ctx); len(ds) != 0 {
		t.Errorf("Dirty after a complete flush = %v", ds)
	}

	// More, half flushed: the report is still exact, for one tenant or all.
	r.Add("acme", "u1", usage.Requests, 10)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Add("acme", "u1", usage.Requests, 100)
	r.Add("globex", "", usage.RateLimited, 5)
	all, err := r.Report(ctx, usage.Query{})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "report of every tenant", all, []usage.Row{
		row("acme", "u1", usage.Requests, 113), row("acme", "u2", usage.UploadBytes, 1000), row("globex", "", usage.RateLimited, 6),
	})
	if got := usage.Totals(all); got[usage.Requests] != 113 || got[usage.UploadBytes] != 1000 {
		t.Errorf("Totals = %v", got)
	}
	// Days outside the range select nothing.
	none, err := r.Report(ctx, usage.Query{From: "2030-01-02"})
	if err != nil || len(none) != 0 {
		t.Errorf("report of later days = %v, %v", none, err)
	}
	if _, err := r.Report(ctx, usage.Query{From: "2030-01-02", To: "2030-01-01"}); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("report with from after to: %v, want KindInvalid", err)
	}
	st := r.Stats()
	if st.PushedUnits != 1119 || st.Unpushed != 0 || st.Dropped != 0 || st.Flushes < 3 {
		t.Errorf("Stats = %+v", st)
	}
}

// A push whose reply was lost (the Store applied it) is retried as the
// same batch and counted once; one that never arrived is counted once too.
func testPushRetry(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	store := &flakyStore{Store: b.instance(t)}
	r := newRecorder(t, store, db, usage.Options{})

	r.Add("acme", "u", usage.Messages, 1)
	store.failAfter.Store(1)
	if err := r.Push(ctx); agentapi.KindOf(err) != agentapi.KindUnavailable {
		t.Fatalf("Push with a lost reply: %v, want KindUnavailable", err)
	}
	r.Add("acme", "u", usage.Messages, 10)
	store.failBefore.Store(1)
	if err := r.Push(ctx); err == nil {
		t.Fatal("Push failing before sending: no error")
	}
	if st := r.Stats(); st.Unpushed != 11 || st.PushFailures != 2 {
		t.Fatalf("Stats after two failed pushes = %+v; want 11 unpushed", st)
	}
	r.Add("acme", "u", usage.Messages, 100)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := store.Pending(ctx, []string{"acme"})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "pending after the retries", p["acme"].Rows, []usage.Row{row("acme", "u", usage.Messages, 111)})
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Messages, 111)})
}

// A process killed with SIGKILL loses what it had not pushed, and only
// that: another instance flushes everything it pushed.
func testKillDeterministic(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	killed := newRecorder(t, b.instance(t), db, usage.Options{})
	killed.Add("acme", "u", usage.Requests, 7)
	killed.Add("globex", "v", usage.Messages, 3)
	if err := killed.Push(ctx); err != nil {
		t.Fatal(err)
	}
	killed.Add("acme", "u", usage.Requests, 1000)
	killed.Abandon()
	if st := killed.Stats(); st.PushedUnits != 10 || st.Unpushed != 1000 {
		t.Fatalf("Stats of the killed instance = %+v", st)
	}
	other := newRecorder(t, b.instance(t), db, usage.Options{})
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after the kill", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 7), row("globex", "v", usage.Messages, 3)})
}

// Close (SIGTERM) pushes and flushes everything, with the background
// loops running; Adds after Close are dropped and counted.
func testCloseLosesNothing(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	r := newRecorder(t, b.instance(t), db, usage.Options{PushInterval: time.Millisecond, FlushInterval: 3 * time.Millisecond})
	var want []usage.Row
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var mine []usage.Row
			for range 300 {
				rw := row(fmt.Sprint("t", rng.IntN(3)), fmt.Sprint("u", rng.IntN(4)), usage.Metrics[rng.IntN(len(usage.Metrics))], 1+rng.Int64N(50))
				r.Add(rw.TenantID, rw.UserID, rw.Metric, rw.Count)
				mine = append(mine, rw)
			}
			mu.Lock()
			want = append(want, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	wantRows(t, "SQL after Close", sqlRows(t, db), want)
	r.Add("t0", "u0", usage.Requests, 5)
	if st := r.Stats(); st.Dropped != 5 || st.Unpushed != 0 {
		t.Errorf("Stats after an Add after Close = %+v; want 5 dropped", st)
	}
}

// A flusher that dies after its SQL commit, before the Store's cleanup,
// leaves an open flush: reports do not count it twice meanwhile, and the
// next flush, on any instance, drops it without applying it again.
func testFlushCrashAfterCommit(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	crashing := &crashDB{DB: db, afterCommit: 1}
	a := newRecorder(t, b.instance(t), crashing, usage.Options{})
	a.Add("acme", "u", usage.Messages, 5)
	if err := a.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("Flush: %v, want the simulated crash", err)
	}
	wantRows(t, "SQL after the crash", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Messages, 5)})
	other := b.instance(t)
	if p, _ := other.Pending(ctx, []string{"acme"}); len(p["acme"].Flushes) != 1 {
		t.Fatalf("store after the crash = %+v, want one open flush", p)
	}
	got, err := usage.Read(ctx, other, db, usage.Query{})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "report between commit and cleanup", got, []usage.Row{row("acme", "u", usage.Messages, 5)})

	// More counts arrive, then another instance flushes.
	a.Add("acme", "u", usage.Messages, 1)
	if err := a.Push(ctx); err != nil {
		t.Fatal(err)
	}
	bRec := newRecorder(t, other, db, usage.Options{})
	if err := bRec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after the retry", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Messages, 6)})
	wantEmptyStore(t, other, "acme")
}

func testFlushCrashBeforeCommit(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	crashing := &crashDB{DB: db, beforeCommit: 1}
	a := newRecorder(t, b.instance(t), crashing, usage.Options{})
	a.Add("acme", "u", usage.Messages, 5)
	if err := a.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("Flush: %v, want the simulated crash", err)
	}
	if rows := sqlRows(t, db); len(rows) != 0 {
		t.Fatalf("SQL after a crash before commit: %v", rows)
	}
	got, err := a.Report(ctx, usage.Query{TenantID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "report with the flush open", got, []usage.Row{row("acme", "u", usage.Messages, 5)})
	if err := a.Flush(ctx); err != nil { // the same instance, recovered
		t.Fatal(err)
	}
	wantRows(t, "SQL after the retry", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Messages, 5)})
}

// Reports made while one instance keeps adding, pushing and flushing
// never count anything twice nor miss anything pushed before they began.
func testReportDuringFlushes(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	w := newRecorder(t, b.instance(t), db, usage.Options{})
	reader := b.instance(t)
	var pushed, added atomic.Int64 // units confirmed pushed; units added
	done := make(chan struct{})
	reported := make(chan struct{}, 1) // a report finished
	var werr error
	go func() {
		defer close(done)
		for i := range 30 {
			n := int64(i + 1)
			added.Add(n)
			w.Add("acme", fmt.Sprint("u", i%3), usage.Requests, n)
			if werr = w.Push(ctx); werr != nil {
				return
			}
			pushed.Add(n)
			if werr = w.Flush(ctx); werr != nil {
				return
			}
			select { // let a report overlap the next round
			case <-reported:
			case <-ctx.Done():
				return
			}
		}
	}()
	reports, busy := 0, 0
	for {
		finished := false
		select {
		case <-done:
			finished = true
		default:
		}
		low := pushed.Load()
		rows, err := usage.Read(ctx, reader, db, usage.Query{TenantID: "acme"})
		high := added.Load()
		if agentapi.KindOf(err) == agentapi.KindUnavailable {
			busy++ // flushes kept changing the store: allowed, never wrong
		} else if err != nil {
			t.Fatal(err)
		} else {
			reports++
			if got := usage.Totals(rows)[usage.Requests]; got < low || got > high {
				t.Fatalf("report %d: total %d, want between %d (pushed before) and %d (added by the end)", reports, got, low, high)
			}
		}
		select {
		case reported <- struct{}{}:
		default:
		}
		if finished {
			break
		}
	}
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("%d exact reports, %d gave up on a busy store", reports, busy)
	if total := usage.Totals(sqlRows(t, db))[usage.Requests]; total != 465 {
		t.Errorf("SQL total %d, want 465", total)
	}
}

func testQuotaSeed(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	store := b.instance(t)
	r := newRecorder(t, store, db, usage.Options{})
	// Usage recorded before any quota check: 30 flushed, 20 pushed, 5 not.
	r.Add("acme", "u1", usage.Messages, 30)
	r.Add("acme", "u1", usage.Requests, 1000) // another metric
	r.Add("globex", "u1", usage.Messages, 1000)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Add("acme", "u2", usage.Messages, 20)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	r.Add("acme", "u2", usage.Messages, 5)

	// No quota: allowed without touching the store.
	d, err := r.ConsumeQuota(ctx, "acme", usage.Messages, 1, 0)
	if err != nil || !d.Allowed || d.Limit != 0 {
		t.Fatalf("ConsumeQuota without a limit = %+v, %v", d, err)
	}
	// The first check seeds the month's counter with 55.
	allowed := 0
	for {
		d, err := r.Consume(ctx, "acme", "u3", usage.Messages, 1, 60)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Allowed {
			if d.Used != 60 || d.Limit != 60 || !d.ResetAt.Equal(time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("refusal = %+v", d)
			}
			break
		}
		allowed++
	}
	if allowed != 5 {
		t.Errorf("allowed %d under a limit of 60 after 55 used, want 5", allowed)
	}
	// A refused call counts nothing, in the quota or in usage.
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := usage.Totals(sqlRows(t, db)); got[usage.Messages] != 1060 {
		t.Errorf("messages in SQL = %d, want 1060 (55 + 5 for acme, 1000 for globex)", got[usage.Messages])
	}
}

func testDaysAndDrops(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	clk := storetest.NewManualClock(time.Date(2030, 1, 1, 23, 59, 59, 0, time.UTC))
	r := newRecorder(t, b.instance(t), db, usage.Options{Now: clk.Now, MaxKeys: 4})
	r.Add("acme", "u", usage.SessionSeconds, 10)
	clk.Advance(time.Second)
	r.Add("acme", "u", usage.SessionSeconds, 20)
	r.Add("acme", "u", usage.SessionSeconds, 0)     // ignored
	r.Add("acme", "u", usage.SessionSeconds, -3)    // ignored
	r.Add("", "u", usage.Requests, 1)               // dropped: no tenant
	r.Add("acme", "u", "Not A Metric", 2)           // dropped
	r.Add("acme", "bad\xffutf8", usage.Requests, 4) // dropped
	if st := r.Stats(); st.Dropped != 7 {
		t.Errorf("Dropped = %d, want 7", st.Dropped)
	}
	got, err := r.Report(ctx, usage.Query{})
	if err != nil {
		t.Fatal(err)
	}
	wantRows(t, "two days", got, []usage.Row{
		{TenantID: "acme", UserID: "u", Day: "2030-01-01", Metric: usage.SessionSeconds, Count: 10},
		{TenantID: "acme", UserID: "u", Day: "2030-01-02", Metric: usage.SessionSeconds, Count: 20},
	})
	// MaxKeys: at most 4 counters wait; more new counters are dropped,
	// existing ones keep counting.
	for i := range 64 * 4 {
		r.Add("acme", fmt.Sprint("user-", i%4), usage.Requests, 1)
	}
	r.Add("acme", "one-too-many", usage.Requests, 1000)
	st := r.Stats()
	if st.LocalKeys > 4 || st.Unpushed+st.Dropped != 64*4+1000+7 {
		t.Errorf("Stats with MaxKeys 4 = %+v", st)
	}
	if st.Dropped < 1000+7 {
		t.Errorf("Dropped = %d, want the counter beyond MaxKeys among them", st.Dropped)
	}
}

// TestNew checks the arguments New needs.
func TestNew(t *testing.T) {
	if _, err := usage.New(usage.Options{DB: nopDB{}}); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("New without a Store: %v", err)
	}
	if _, err := usage.New(usage.Options{Store: usage.NewMemory(usage.MemoryOptions{})}); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("New without a DB: %v", err)
	}
	r, err := usage.New(usage.Options{Store: usage.NewMemory(usage.MemoryOptions{}), DB: nopDB{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Instance() == "" {
		t.Error("no instance id")
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"2030-02-30", "2030-1-01", "", "20300101"} {
		if _, err := usage.ParseDay(s); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("ParseDay(%q): %v", s, err)
		}
	}
}

func TestLastFlushMarksCompletedPasses(t *testing.T) {
	ctx := t.Context()
	rec := newRecorder(t, usage.NewMemory(usage.MemoryOptions{}), openSQLite(t), usage.Options{PushInterval: -1, FlushInterval: -1})
	if !rec.LastFlush().IsZero() {
		t.Fatal("LastFlush before any flush")
	}
	if err := rec.Flush(ctx); err != nil { // nothing to flush still counts
		t.Fatal(err)
	}
	first := rec.LastFlush()
	if first.IsZero() {
		t.Fatal("LastFlush is zero after a completed flush")
	}
	rec.Add("t1", "u1", usage.Messages, 2)
	if err := rec.Push(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.LastFlush().Before(first) {
		t.Fatal("LastFlush went back")
	}
}
