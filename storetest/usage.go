package storetest

// The usage suites: RunUsageStore for usage.Store (the counts shared by
// instances between pushes and flushes, and quota counters) and
// RunUsageDB for usage.DB (the system of record).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	agentapi "github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/usage"
)

// usageCallTimeout bounds the calls of one usage subtest.
const usageCallTimeout = 30 * time.Second

// RunUsageStore runs the usage.Store conformance suite. newStore returns a
// new, empty store for each subtest, with the default MaxOpenFlushes,
// releasing what it opens with t.Cleanup; stores on one Redis server keep
// apart with a random key prefix.
//
// What is checked, beyond the interface's comments:
//
//   - Pushed counts show up in Pending, summed per tenant, user, day and
//     metric; tenants are listed by Dirty and independent of each other.
//   - A batch is applied once per tenant: a second push of the same Seq
//     by the same instance, or a lower Seq, changes nothing; another
//     instance's batch with the same Seq is applied.
//   - Claim moves all pending counts into one new flush with a Seq above
//     the floor, above every earlier Seq of the tenant and at least the
//     time in µs; without new counts it opens nothing; it returns every
//     open flush ordered by Seq; it opens no more than
//     usage.DefaultMaxOpenFlushes; Ack drops one and tolerates repeats.
//   - FlushState changes with every claim that opens a flush and every
//     Ack that drops one -- also when the open flushes are again what
//     they were, e.g. none -- and with nothing else.
//   - Clean refuses while counts are held or the version moved.
//   - Quota: NeedSeed without a counter and a seed, exact decisions after
//     one, a refusal changes nothing, counters are per tenant, metric and
//     month, and 20 goroutines get exactly the limit.
//   - Concurrent pushes of 20 instances, while another goroutine claims
//     and acknowledges, lose and duplicate nothing.
func RunUsageStore(t *testing.T, newStore func(t *testing.T) usage.Store) {
	t.Helper()
	for _, tc := range usageStoreCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), usageCallTimeout)
			t.Cleanup(cancel)
			tc.fn(&usEnv{t: t, ctx: ctx, s: newStore(t)})
		})
	}
}

var usageStoreCases = []struct {
	name string
	fn   func(e *usEnv)
}{
	{"PushPending", testUsagePushPending},
	{"PushOncePerTenant", testUsagePushOnce},
	{"ClaimAck", testUsageClaimAck},
	{"ClaimSeq", testUsageClaimSeq},
	{"ClaimMaxOpen", testUsageClaimMaxOpen},
	{"FlushState", testUsageFlushState},
	{"Clean", testUsageClean},
	{"TenantsIndependent", testUsageTenants},
	{"Quota", testUsageQuota},
	{"QuotaKeys", testUsageQuotaKeys},
	{"QuotaConcurrentExact", testUsageQuotaConcurrent},
	{"ConcurrentPushClaim", testUsageConcurrent},
	{"Invalid", testUsageInvalid},
}

type usEnv struct {
	t   *testing.T
	ctx context.Context
	s   usage.Store
}

const (
	usDay1 = "2030-01-01"
	usDay2 = "2030-01-02"
)

// usT is a time whose µs is the least Seq a claim gets.
var usT = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func usageRow(tenant, user, day string, m usage.Metric, n int64) usage.Row {
	return usage.Row{TenantID: tenant, UserID: user, Day: day, Metric: m, Count: n}
}

func (e *usEnv) push(instance string, seq int64, rows ...usage.Row) {
	e.t.Helper()
	must(e.t, e.s.Push(e.ctx, usage.Batch{Instance: instance, Seq: seq, Rows: rows}), fmt.Sprintf("Push(%s, %d)", instance, seq))
}

func (e *usEnv) pending(tenants ...string) map[string]usage.Pending {
	e.t.Helper()
	p, err := e.s.Pending(e.ctx, tenants)
	must(e.t, err, "Pending")
	return p
}

// wantPending checks tenant's pending rows (not its flushes).
func (e *usEnv) wantPending(tenant string, want ...usage.Row) {
	e.t.Helper()
	got := e.pending(tenant)[tenant].Rows
	if len(got) == 0 && len(want) == 0 {
		return
	}
	wantEqual(e.t, got, usage.MergeRows(want), "pending rows of "+tenant)
}

func (e *usEnv) claim(tenant string, floor int64) []usage.Flush {
	e.t.Helper()
	fs, err := e.s.Claim(e.ctx, tenant, floor, usT)
	must(e.t, err, "Claim "+tenant)
	return fs
}

func (e *usEnv) ack(tenant, id string) {
	e.t.Helper()
	must(e.t, e.s.Ack(e.ctx, tenant, id), "Ack")
}

func (e *usEnv) dirty(tenant string) (usage.Dirty, bool) {
	e.t.Helper()
	ds, err := e.s.Dirty(e.ctx)
	must(e.t, err, "Dirty")
	for _, d := range ds {
		if d.TenantID == tenant {
			return d, true
		}
	}
	return usage.Dirty{}, false
}

// openIDs returns the ids of tenant's open flushes, sorted.
func (e *usEnv) openIDs(tenant string) []string {
	e.t.Helper()
	var ids []string
	for _, f := range e.pending(tenant)[tenant].Flushes {
		ids = append(ids, f.ID)
	}
	sort.Strings(ids)
	return ids
}

func (e *usEnv) state(tenant string) string {
	e.t.Helper()
	m, err := e.s.FlushState(e.ctx, []string{tenant})
	must(e.t, err, "FlushState")
	if p := e.pending(tenant)[tenant]; p.State != m[tenant] {
		e.t.Fatalf("Pending's State %q differs from FlushState %q with nothing going on", p.State, m[tenant])
	}
	return m[tenant]
}

func testUsagePushPending(e *usEnv) {
	if _, ok := e.dirty("acme"); ok {
		e.t.Fatal("a new store lists acme as dirty")
	}
	e.push("i1", 1,
		usageRow("acme", "u1", usDay1, usage.Requests, 3),
		usageRow("acme", "u2", usDay1, usage.Messages, 2),
		usageRow("acme", "u1", usDay1, usage.Requests, 4), // the same counter twice
		usageRow("acme", "u|with|bars ✓", usDay2, usage.UploadBytes, 1<<40),
		usageRow("globex", "", usDay1, usage.Requests, 1),
	)
	e.push("i1", 2, usageRow("acme", "u1", usDay1, usage.Requests, 10), usageRow("acme", "u1", usDay2, usage.Requests, 1))
	e.wantPending("acme",
		usageRow("acme", "u1", usDay1, usage.Requests, 17),
		usageRow("acme", "u1", usDay2, usage.Requests, 1),
		usageRow("acme", "u2", usDay1, usage.Messages, 2),
		usageRow("acme", "u|with|bars ✓", usDay2, usage.UploadBytes, 1<<40),
	)
	e.wantPending("globex", usageRow("globex", "", usDay1, usage.Requests, 1))
	p := e.pending("acme", "globex", "nobody")
	if len(p["nobody"].Rows) != 0 || len(p["nobody"].Flushes) != 0 || len(p["acme"].Flushes) != 0 {
		e.t.Errorf("Pending = %+v; want no flushes and nothing for nobody", p)
	}
	for _, tenant := range []string{"acme", "globex"} {
		if _, ok := e.dirty(tenant); !ok {
			e.t.Errorf("Dirty does not list %s after a push", tenant)
		}
	}
	if ids := e.openIDs("acme"); len(ids) != 0 {
		e.t.Errorf("OpenFlushes before any claim = %v", ids)
	}
}

func testUsagePushOnce(e *usEnv) {
	r := usageRow("acme", "u", usDay1, usage.Requests, 1)
	e.push("i1", 5, r)
	e.push("i1", 5, r) // a retry
	e.wantPending("acme", usageRow("acme", "u", usDay1, usage.Requests, 1))
	e.push("i1", 4, r) // an older batch
	e.wantPending("acme", usageRow("acme", "u", usDay1, usage.Requests, 1))
	e.push("i2", 5, r) // another instance
	e.push("i1", 6, r)
	e.wantPending("acme", usageRow("acme", "u", usDay1, usage.Requests, 3))

	// Per tenant: a batch of Seq 7 seen by acme only is still applied to
	// globex.
	e.push("i1", 7, r)
	e.push("i1", 7, r, usageRow("globex", "u", usDay1, usage.Requests, 5))
	e.wantPending("acme", usageRow("acme", "u", usDay1, usage.Requests, 4))
	e.wantPending("globex", usageRow("globex", "u", usDay1, usage.Requests, 5))

	// Claimed counts are not pushed again by a retry either.
	fs := e.claim("acme", 0)
	e.push("i1", 7, r)
	e.wantPending("acme")
	if len(fs) != 1 || len(fs[0].Rows) != 1 || fs[0].Rows[0].Count != 4 {
		e.t.Errorf("Claim = %+v, want one flush of 4", fs)
	}
}

func testUsageClaimAck(e *usEnv) {
	if fs := e.claim("acme", 0); len(fs) != 0 {
		e.t.Fatalf("Claim of a tenant without counts = %+v", fs)
	}
	first := []usage.Row{usageRow("acme", "u1", usDay1, usage.Requests, 3), usageRow("acme", "u2", usDay2, usage.SessionSeconds, 60)}
	e.push("i1", 1, first...)
	fs := e.claim("acme", 0)
	if len(fs) != 1 {
		e.t.Fatalf("Claim = %d flushes, want 1", len(fs))
	}
	f1 := fs[0]
	if f1.TenantID != "acme" || f1.ID == "" || f1.Seq < usT.UnixMicro() {
		e.t.Errorf("flush %+v: want tenant acme, an id and a Seq >= %d", f1, usT.UnixMicro())
	}
	wantEqual(e.t, f1.Rows, usage.MergeRows(first), "claimed rows")
	e.wantPending("acme")
	p := e.pending("acme")["acme"]
	if len(p.Flushes) != 1 || p.Flushes[0].ID != f1.ID || p.Flushes[0].Seq != f1.Seq {
		e.t.Fatalf("Pending flushes = %+v, want the claimed one", p.Flushes)
	}
	wantEqual(e.t, p.Flushes[0].Rows, f1.Rows, "Pending flush rows")
	if ids := e.openIDs("acme"); len(ids) != 1 || ids[0] != f1.ID {
		e.t.Errorf("OpenFlushes = %v, want [%s]", ids, f1.ID)
	}

	// Nothing new: the same open flush, no second one.
	fs = e.claim("acme", 0)
	if len(fs) != 1 || fs[0].ID != f1.ID || fs[0].Seq != f1.Seq {
		e.t.Fatalf("second Claim = %+v, want only %s", fs, f1.ID)
	}

	e.push("i1", 2, usageRow("acme", "u1", usDay1, usage.Requests, 1))
	fs = e.claim("acme", 0)
	if len(fs) != 2 || fs[0].ID != f1.ID || fs[1].Seq <= f1.Seq {
		e.t.Fatalf("Claim after a push = %+v; want %s then a flush with a higher Seq", fs, f1.ID)
	}
	f2 := fs[1]
	wantEqual(e.t, f2.Rows, []usage.Row{usageRow("acme", "u1", usDay1, usage.Requests, 1)}, "second flush rows")
	wantIDs := []string{f1.ID, f2.ID}
	if wantIDs[0] > wantIDs[1] {
		wantIDs[0], wantIDs[1] = wantIDs[1], wantIDs[0]
	}
	wantEqual(e.t, e.openIDs("acme"), wantIDs, "OpenFlushes (sorted)")

	e.ack("acme", f1.ID)
	e.ack("acme", f1.ID) // again: fine
	e.ack("acme", "no-such-flush")
	fs = e.claim("acme", 0)
	if len(fs) != 1 || fs[0].ID != f2.ID {
		e.t.Fatalf("Claim after Ack = %+v, want only %s", fs, f2.ID)
	}
	e.ack("acme", f2.ID)
	if fs := e.claim("acme", 0); len(fs) != 0 {
		e.t.Errorf("Claim after every Ack = %+v", fs)
	}
	if p := e.pending("acme")["acme"]; len(p.Rows) != 0 || len(p.Flushes) != 0 {
		e.t.Errorf("Pending after every Ack = %+v", p)
	}
}

func testUsageClaimSeq(e *usEnv) {
	r := usageRow("acme", "u", usDay1, usage.Requests, 1)
	floor := usT.UnixMicro() + 1_000_000_000
	e.push("i1", 1, r)
	fs := e.claim("acme", floor)
	if len(fs) != 1 || fs[0].Seq <= floor {
		e.t.Fatalf("Claim with floor %d = %+v, want a Seq above it", floor, fs)
	}
	last := fs[0].Seq
	for i := range 3 {
		e.push("i1", int64(2+i), r)
		fs = e.claim("acme", 0) // a lower floor, and the same time
		if len(fs) != 2+i || fs[len(fs)-1].Seq <= last {
			e.t.Fatalf("claim %d = %+v, want %d flushes, the last above %d", i, fs, 2+i, last)
		}
		for j := 1; j < len(fs); j++ {
			if fs[j].Seq <= fs[j-1].Seq {
				e.t.Fatalf("flushes not ordered by Seq: %+v", fs)
			}
		}
		last = fs[len(fs)-1].Seq
	}
	// After every flush is acknowledged the next Seq is still higher.
	for _, f := range fs {
		e.ack("acme", f.ID)
	}
	e.push("i1", 9, r)
	fs = e.claim("acme", 0)
	if len(fs) != 1 || fs[0].Seq <= last {
		e.t.Fatalf("claim after the acks = %+v, want a Seq above %d", fs, last)
	}
}

func testUsageClaimMaxOpen(e *usEnv) {
	n := usage.DefaultMaxOpenFlushes
	for i := 1; i <= n+2; i++ {
		e.push("i1", int64(i), usageRow("acme", "u", usDay1, usage.Requests, int64(i)))
		e.claim("acme", 0)
	}
	fs := e.claim("acme", 0)
	if len(fs) != n {
		e.t.Fatalf("%d claims opened %d flushes, want at most %d", n+2, len(fs), n)
	}
	// The counts beyond stay pending: 9 + 10 with the default of 8.
	var sum int64
	for i := n + 1; i <= n+2; i++ {
		sum += int64(i)
	}
	e.wantPending("acme", usageRow("acme", "u", usDay1, usage.Requests, sum))
	e.ack("acme", fs[0].ID)
	if fs = e.claim("acme", 0); len(fs) != n {
		e.t.Fatalf("after one Ack, Claim = %d flushes, want %d", len(fs), n)
	}
	e.wantPending("acme")
}

func testUsageFlushState(e *usEnv) {
	r := usageRow("acme", "u", usDay1, usage.Requests, 1)
	seen := map[string]bool{}
	step := func(what string, changed bool) {
		e.t.Helper()
		s := e.state("acme")
		if seen[s] == changed {
			e.t.Fatalf("FlushState after %s = %q; want it changed: %v (seen: %v)", what, s, changed, seen)
		}
		seen[s] = true
	}
	step("nothing", true)
	e.push("i1", 1, r)
	step("a push", false)
	fs := e.claim("acme", 0)
	step("a claim", true)
	e.claim("acme", 0)
	step("a claim of nothing", false)
	e.push("i1", 2, r)
	step("another push", false)
	e.ack("acme", fs[0].ID)
	step("an ack", true) // back to no open flush, yet a new state
	fs = e.claim("acme", 0)
	step("a second claim", true)
	e.ack("acme", fs[0].ID)
	step("its ack: no open flush again", true)
	e.ack("acme", fs[0].ID)
	step("a repeated ack", false)
	other, err := e.s.FlushState(e.ctx, []string{"globex"})
	must(e.t, err, "FlushState")
	if _, ok := other["globex"]; !ok {
		e.t.Errorf("FlushState has no entry for a tenant without flushes: %v", other)
	}
}

func testUsageClean(e *usEnv) {
	r := usageRow("acme", "u", usDay1, usage.Requests, 1)
	e.push("i1", 1, r)
	d, ok := e.dirty("acme")
	if !ok {
		e.t.Fatal("acme not dirty after a push")
	}
	clean := func(d usage.Dirty, want bool, what string) {
		e.t.Helper()
		got, err := e.s.Clean(e.ctx, d)
		must(e.t, err, "Clean")
		if got != want {
			e.t.Fatalf("Clean %s = %v, want %v", what, got, want)
		}
		if _, listed := e.dirty(d.TenantID); listed == got {
			e.t.Fatalf("after Clean %s returned %v, Dirty lists the tenant: %v", what, got, listed)
		}
	}
	clean(d, false, "with pending counts")
	fs := e.claim("acme", 0)
	clean(d, false, "with an open flush")
	e.ack("acme", fs[0].ID)
	clean(d, true, "with nothing held")
	if again, err := e.s.Clean(e.ctx, d); err != nil || again {
		e.t.Fatalf("Clean of a tenant no longer listed = %v, %v; want false", again, err)
	}

	// A push after Dirty was read keeps the tenant listed.
	e.push("i1", 2, r)
	d, _ = e.dirty("acme")
	e.push("i1", 3, r)
	for _, f := range e.claim("acme", 0) {
		e.ack("acme", f.ID)
	}
	clean(d, false, "with a version that moved")
	d2, ok := e.dirty("acme")
	if !ok || d2.Version == d.Version {
		e.t.Fatalf("Dirty after another push = %+v, %v; want a new version (old %q)", d2, ok, d.Version)
	}
	clean(d2, true, "with the current version")
}

func testUsageTenants(e *usEnv) {
	e.push("i1", 1, usageRow("acme", "u", usDay1, usage.Requests, 1), usageRow("globex", "u", usDay1, usage.Requests, 2))
	fs := e.claim("acme", 0)
	e.wantPending("globex", usageRow("globex", "u", usDay1, usage.Requests, 2))
	e.ack("globex", fs[0].ID) // the wrong tenant: nothing happens
	if got := e.claim("acme", 0); len(got) != 1 || got[0].ID != fs[0].ID {
		e.t.Fatalf("acme's flush after an Ack through globex = %+v", got)
	}
	if ids := e.openIDs("globex"); len(ids) != 0 {
		e.t.Errorf("globex has open flushes %v", ids)
	}
	g := e.claim("globex", 0)
	if len(g) != 1 || len(g[0].Rows) != 1 || g[0].Rows[0].TenantID != "globex" {
		e.t.Errorf("globex's claim = %+v", g)
	}
}

func (e *usEnv) quota(r usage.QuotaRequest) usage.QuotaResult {
	e.t.Helper()
	res, err := e.s.Quota(e.ctx, r)
	must(e.t, err, fmt.Sprintf("Quota(%+v)", r))
	return res
}

func (e *usEnv) wantQuota(r usage.QuotaRequest, want usage.QuotaResult) {
	e.t.Helper()
	if got := e.quota(r); got != want {
		e.t.Fatalf("Quota(N %d, Limit %d, Seed %d) = %+v, want %+v", r.N, r.Limit, r.Seed, got, want)
	}
}

func testUsageQuota(e *usEnv) {
	q := usage.QuotaRequest{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 1, Limit: 5, Seed: -1}
	e.wantQuota(q, usage.QuotaResult{NeedSeed: true})
	e.wantQuota(q, usage.QuotaResult{NeedSeed: true}) // asking changed nothing
	q.Seed = 3
	e.wantQuota(q, usage.QuotaResult{Allowed: true, Used: 4})
	q.Seed = 0 // ignored now that the counter exists
	q.N = 2
	e.wantQuota(q, usage.QuotaResult{Used: 4}) // 6 > 5: refused, nothing counted
	q.N = 1
	e.wantQuota(q, usage.QuotaResult{Allowed: true, Used: 5})
	e.wantQuota(q, usage.QuotaResult{Used: 5})
	q.N = 0
	e.wantQuota(q, usage.QuotaResult{Allowed: true, Used: 5}) // a peek
	q.Seed = -1
	q.Limit = 8 // a raised limit applies at once
	q.N = 3
	e.wantQuota(q, usage.QuotaResult{Allowed: true, Used: 8})
	q.N = 100
	e.wantQuota(q, usage.QuotaResult{Used: 8})

	// A seed above the limit: everything refused.
	s := usage.QuotaRequest{TenantID: "acme", Metric: usage.Requests, Month: "203001", N: 1, Limit: 5, Seed: 9}
	e.wantQuota(s, usage.QuotaResult{Used: 9})
	s.N = 0
	e.wantQuota(s, usage.QuotaResult{Used: 9})
}

func testUsageQuotaKeys(e *usEnv) {
	base := usage.QuotaRequest{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 2, Limit: 10, Seed: 0}
	e.wantQuota(base, usage.QuotaResult{Allowed: true, Used: 2})
	for _, r := range []usage.QuotaRequest{
		{TenantID: "globex", Metric: usage.Messages, Month: "203001"},
		{TenantID: "acme", Metric: usage.Requests, Month: "203001"},
		{TenantID: "acme", Metric: usage.Messages, Month: "203002"},
		{TenantID: "acme", Metric: usage.Messages, Month: "202912"},
	} {
		r.N, r.Limit, r.Seed = 1, 10, -1
		e.wantQuota(r, usage.QuotaResult{NeedSeed: true})
		r.Seed = 0
		e.wantQuota(r, usage.QuotaResult{Allowed: true, Used: 1})
	}
	base.N = 0
	e.wantQuota(base, usage.QuotaResult{Allowed: true, Used: 2})
}

func testUsageQuotaConcurrent(e *usEnv) {
	const limit = 37
	q := usage.QuotaRequest{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 1, Limit: limit, Seed: 0}
	var (
		mu    sync.Mutex
		used  = map[int64]int{}
		wg    sync.WaitGroup
		errs  = make(chan error, Goroutines)
		allow int
	)
	for range Goroutines {
		wg.Go(func() {
			for range 5 {
				res, err := e.s.Quota(e.ctx, q)
				if err != nil {
					errs <- err
					return
				}
				if res.Allowed {
					mu.Lock()
					allow++
					used[res.Used]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatalf("Quota: %v", err)
	}
	if allow != limit {
		e.t.Errorf("%d goroutines × 5 calls against a limit of %d: %d allowed", Goroutines, limit, allow)
	}
	for i := int64(1); i <= limit; i++ {
		if used[i] != 1 {
			e.t.Errorf("Used %d reported %d times, want once", i, used[i])
		}
	}
}

func testUsageConcurrent(e *usEnv) {
	const batches = 15
	users := []string{"u1", "u2", "u3"}
	want := map[string]int64{}
	var wmu sync.Mutex
	var claimed []usage.Row
	var wg sync.WaitGroup
	errs := make(chan error, Goroutines+1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a flusher: claims and acknowledges while pushes go on
		defer close(done)
		for {
			fs, err := e.s.Claim(e.ctx, "acme", 0, usT)
			if err != nil {
				errs <- err
				return
			}
			for _, f := range fs {
				if err := e.s.Ack(e.ctx, "acme", f.ID); err != nil {
					errs <- err
					return
				}
				claimed = append(claimed, f.Rows...)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	for g := range Goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			instance := fmt.Sprintf("inst-%d", g)
			for seq := int64(1); seq <= batches; seq++ {
				var rows []usage.Row
				local := map[string]int64{}
				for range 1 + rng.IntN(3) {
					u := users[rng.IntN(len(users))]
					n := 1 + rng.Int64N(1000)
					rows = append(rows, usageRow("acme", u, usDay1, usage.Requests, n))
					local[u] += n
				}
				b := usage.Batch{Instance: instance, Seq: seq, Rows: rows}
				if err := e.s.Push(e.ctx, b); err != nil {
					errs <- err
					return
				}
				if rng.IntN(3) == 0 { // a retry, as after an unknown outcome
					if err := e.s.Push(e.ctx, b); err != nil {
						errs <- err
						return
					}
				}
				wmu.Lock()
				for u, n := range local {
					want[u] += n
				}
				wmu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-done
	close(errs)
	for err := range errs {
		e.t.Fatalf("concurrent push/claim: %v", err)
	}
	p := e.pending("acme")["acme"]
	all := append(append([]usage.Row(nil), claimed...), p.Rows...)
	for _, f := range p.Flushes {
		all = append(all, f.Rows...)
	}
	got := map[string]int64{}
	for _, r := range all {
		got[r.UserID] += r.Count
	}
	wantEqual(e.t, got, want, "claimed + pending counts per user")
}

func testUsageInvalid(e *usEnv) {
	good := usageRow("acme", "u", usDay1, usage.Requests, 1)
	for _, b := range []usage.Batch{
		{Instance: "", Seq: 1, Rows: []usage.Row{good}},
		{Instance: "i", Seq: 0, Rows: []usage.Row{good}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{usageRow("", "u", usDay1, usage.Requests, 1)}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", "2030-1-1", usage.Requests, 1)}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", usDay1, "Bad Metric", 1)}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", usDay1, usage.Requests, 0)}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{usageRow("acme", "u\xff", usDay1, usage.Requests, 1)}},
		{Instance: "i", Seq: 1, Rows: []usage.Row{good, usageRow("acme", "u", usDay1, usage.Requests, -1)}},
	} {
		wantKind(e.t, e.s.Push(e.ctx, b), agentapi.KindInvalid, fmt.Sprintf("Push(%+v)", b))
	}
	e.wantPending("acme")
	_, err := e.s.Claim(e.ctx, "", 0, usT)
	wantKind(e.t, err, agentapi.KindInvalid, "Claim without a tenant")
	for _, q := range []usage.QuotaRequest{
		{TenantID: "", Metric: usage.Messages, Month: "203001", N: 1, Limit: 1},
		{TenantID: "acme", Metric: "", Month: "203001", N: 1, Limit: 1},
		{TenantID: "acme", Metric: usage.Messages, Month: "2030-01", N: 1, Limit: 1},
		{TenantID: "acme", Metric: usage.Messages, Month: "203013", N: 1, Limit: 1},
		{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: -1, Limit: 1},
		{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 1, Limit: 0},
	} {
		_, err := e.s.Quota(e.ctx, q)
		wantKind(e.t, err, agentapi.KindInvalid, fmt.Sprintf("Quota(%+v)", q))
	}
}

// RunUsageDB runs the usage.DB conformance suite. newDB returns a new,
// empty database for each subtest, released with t.Cleanup.
//
// What is checked, beyond the interface's comments: a flush is applied
// once, rows add up per key across flushes and within one; ten goroutines
// applying one flush apply it once; a snapshot filters by tenant and
// inclusive days and reports marks; bad input is KindInvalid and changes
// nothing; user ids may be empty or hold any text.
func RunUsageDB(t *testing.T, newDB func(t *testing.T) usage.DB) {
	t.Helper()
	for _, tc := range usageDBCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), usageCallTimeout)
			t.Cleanup(cancel)
			tc.fn(&udEnv{t: t, ctx: ctx, db: newDB(t)})
		})
	}
}

var usageDBCases = []struct {
	name string
	fn   func(e *udEnv)
}{
	{"ApplyOnce", testUsageApplyOnce},
	{"SnapshotFilters", testUsageSnapshot},
	{"ManyRows", testUsageManyRows},
	{"ConcurrentSameFlush", testUsageConcurrentApply},
	{"Invalid", testUsageDBInvalid},
}

type udEnv struct {
	t   *testing.T
	ctx context.Context
	db  usage.DB
}

func (e *udEnv) apply(f usage.Flush, want bool) {
	e.t.Helper()
	got, err := e.db.ApplyUsage(e.ctx, f)
	must(e.t, err, fmt.Sprintf("ApplyUsage(%s, %d)", f.TenantID, f.Seq))
	if got != want {
		e.t.Fatalf("ApplyUsage(%s, Seq %d) = %v, want %v", f.TenantID, f.Seq, got, want)
	}
}

func (e *udEnv) snapshot(q usage.Query) usage.Snapshot {
	e.t.Helper()
	s, err := e.db.UsageSnapshot(e.ctx, q)
	must(e.t, err, fmt.Sprintf("UsageSnapshot(%+v)", q))
	return s
}

func testUsageApplyOnce(e *udEnv) {
	f := usage.Flush{TenantID: "acme", ID: "x", Seq: 10, Rows: []usage.Row{
		usageRow("acme", "u1", usDay1, usage.Requests, 3),
		usageRow("acme", "u1", usDay1, usage.Requests, 4), // summed
		usageRow("acme", "", usDay1, usage.RateLimited, 1),
	}}
	e.apply(f, true)
	e.apply(f, false) // a retry
	e.apply(usage.Flush{TenantID: "acme", Seq: 9, Rows: f.Rows}, false)
	e.apply(usage.Flush{TenantID: "acme", Seq: 11, Rows: []usage.Row{usageRow("acme", "u1", usDay1, usage.Requests, 5)}}, true)
	e.apply(usage.Flush{TenantID: "globex", Seq: 1, Rows: []usage.Row{usageRow("globex", "u1", usDay1, usage.Requests, 2)}}, true)
	s := e.snapshot(usage.Query{})
	wantEqual(e.t, s.Rows, []usage.Row{
		usageRow("acme", "", usDay1, usage.RateLimited, 1),
		usageRow("acme", "u1", usDay1, usage.Requests, 12),
		usageRow("globex", "u1", usDay1, usage.Requests, 2),
	}, "rows")
	wantEqual(e.t, s.Marks, map[string]int64{"acme": 11, "globex": 1}, "marks")
	marks, err := e.db.UsageMarks(e.ctx, []string{"acme", "globex", "nobody"})
	must(e.t, err, "UsageMarks")
	wantEqual(e.t, marks, map[string]int64{"acme": 11, "globex": 1}, "UsageMarks")
	// A flush without rows still only moves the mark forward.
	e.apply(usage.Flush{TenantID: "acme", Seq: 12}, true)
	e.apply(usage.Flush{TenantID: "acme", Seq: 12}, false)
}

func testUsageSnapshot(e *udEnv) {
	days := []string{"2030-01-30", "2030-01-31", "2030-02-01", "2030-02-02"}
	for i, tenant := range []string{"acme", "globex"} {
		var rows []usage.Row
		for j, d := range days {
			rows = append(rows, usageRow(tenant, "ü-"+tenant, d, usage.Messages, int64(10*i+j+1)))
		}
		e.apply(usage.Flush{TenantID: tenant, Seq: int64(100 + i), Rows: rows}, true)
	}
	s := e.snapshot(usage.Query{TenantID: "acme", From: "2030-01-31", To: "2030-02-01"})
	wantEqual(e.t, s.Rows, []usage.Row{
		usageRow("acme", "ü-acme", "2030-01-31", usage.Messages, 2),
		usageRow("acme", "ü-acme", "2030-02-01", usage.Messages, 3),
	}, "acme, two days")
	wantEqual(e.t, s.Marks, map[string]int64{"acme": 100}, "acme's marks")
	s = e.snapshot(usage.Query{From: "2030-02-02"})
	wantEqual(e.t, s.Rows, []usage.Row{
		usageRow("acme", "ü-acme", "2030-02-02", usage.Messages, 4),
		usageRow("globex", "ü-globex", "2030-02-02", usage.Messages, 14),
	}, "every tenant, from a day on")
	wantEqual(e.t, s.Marks, map[string]int64{"acme": 100, "globex": 101}, "every mark")
	s = e.snapshot(usage.Query{TenantID: "globex", To: "2030-01-30"})
	wantEqual(e.t, s.Rows, []usage.Row{usageRow("globex", "ü-globex", "2030-01-30", usage.Messages, 11)}, "globex, up to a day")
	s = e.snapshot(usage.Query{TenantID: "nobody"})
	if len(s.Rows) != 0 || len(s.Marks) != 0 {
		e.t.Errorf("snapshot of an unknown tenant = %+v", s)
	}
}

func testUsageManyRows(e *udEnv) {
	var rows []usage.Row
	var want int64
	for i := range 450 {
		n := int64(i + 1)
		rows = append(rows, usageRow("acme", fmt.Sprintf("user-%03d", i), usDay1, usage.UploadBytes, n))
		want += n
	}
	e.apply(usage.Flush{TenantID: "acme", Seq: 1, Rows: rows}, true)
	e.apply(usage.Flush{TenantID: "acme", Seq: 2, Rows: rows}, true)
	s := e.snapshot(usage.Query{TenantID: "acme"})
	if len(s.Rows) != 450 || usage.Totals(s.Rows)[usage.UploadBytes] != 2*want {
		e.t.Errorf("450 rows applied twice: got %d rows, total %d; want 450, %d", len(s.Rows), usage.Totals(s.Rows)[usage.UploadBytes], 2*want)
	}
}

func testUsageConcurrentApply(e *udEnv) {
	f := usage.Flush{TenantID: "acme", Seq: 5, Rows: []usage.Row{usageRow("acme", "u", usDay1, usage.Messages, 7)}}
	const n = 10
	var wg sync.WaitGroup
	results := make(chan bool, n)
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			ok, err := e.db.ApplyUsage(e.ctx, f)
			if err != nil {
				errs <- err
				return
			}
			results <- ok
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		e.t.Fatalf("ApplyUsage: %v", err)
	}
	applied := 0
	for ok := range results {
		if ok {
			applied++
		}
	}
	if applied != 1 {
		e.t.Errorf("%d concurrent ApplyUsage of one flush: %d applied, want 1", n, applied)
	}
	wantEqual(e.t, e.snapshot(usage.Query{}).Rows, f.Rows, "rows")
}

func testUsageDBInvalid(e *udEnv) {
	good := usageRow("acme", "u", usDay1, usage.Requests, 1)
	for _, f := range []usage.Flush{
		{TenantID: "", Seq: 1, Rows: []usage.Row{good}},
		{TenantID: "acme", Seq: 0, Rows: []usage.Row{good}},
		{TenantID: "acme", Seq: 1, Rows: []usage.Row{good, usageRow("globex", "u", usDay1, usage.Requests, 1)}},
		{TenantID: "acme", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", "30-01-01", usage.Requests, 1)}},
		{TenantID: "acme", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", usDay1, usage.Requests, 0)}},
		{TenantID: "acme", Seq: 1, Rows: []usage.Row{usageRow("acme", "u", usDay1, "x|y", 1)}},
		{TenantID: "acme", Seq: 1, Rows: []usage.Row{usageRow("acme", "nul\x00", usDay1, usage.Requests, 1)}},
	} {
		_, err := e.db.ApplyUsage(e.ctx, f)
		wantKind(e.t, err, agentapi.KindInvalid, fmt.Sprintf("ApplyUsage(%+v)", f))
	}
	for _, q := range []usage.Query{
		{From: "2030-02-01", To: "2030-01-01"},
		{From: "yesterday"},
		{To: "2030-02-30"},
	} {
		_, err := e.db.UsageSnapshot(e.ctx, q)
		wantKind(e.t, err, agentapi.KindInvalid, fmt.Sprintf("UsageSnapshot(%+v)", q))
	}
	s := e.snapshot(usage.Query{})
	if len(s.Rows) != 0 || len(s.Marks) != 0 {
		e.t.Errorf("invalid calls changed the database: %+v", s)
	}
	// A valid flush afterwards is the first one of the tenant.
	e.apply(usage.Flush{TenantID: "acme", Seq: 1, Rows: []usage.Row{good}}, true)
}
