package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/agentapi-mt/agentapi"
)

// Defaults for Options.
const (
	// DefaultPushInterval is the documented loss window: a process killed
	// without Close loses at most the counts of its last PushInterval.
	DefaultPushInterval  = time.Second
	DefaultFlushInterval = 10 * time.Second
	DefaultPushTimeout   = 5 * time.Second
	DefaultFlushTimeout  = time.Minute
	// DefaultMaxKeys bounds the counters waiting in a process: about
	// 30 MB. See Options.MaxKeys.
	DefaultMaxKeys      = 250_000
	DefaultFlushWorkers = 4
)

// Options configure a Recorder. Store and DB are required.
type Options struct {
	Store Store
	DB    DB
	// PushInterval is how often the counts of this process are pushed to
	// the Store, and so what a process killed without Close can lose.
	// Default DefaultPushInterval; negative: never in the background
	// (call Push).
	PushInterval time.Duration
	// FlushInterval is how often this instance flushes the Store to SQL.
	// Default DefaultFlushInterval; negative: never in the background
	// (call Flush).
	FlushInterval time.Duration
	// PushTimeout and FlushTimeout bound one background push or flush.
	PushTimeout, FlushTimeout time.Duration
	// MaxKeys bounds the counters (tenant, user, day, metric; a busy one
	// may take one per shard) waiting in this process for a push. Add
	// drops counts that would need a new counter beyond it, and counts
	// them in Stats.Dropped: that happens only when the Store has been
	// unreachable for a while. A failed batch waiting to be retried holds
	// at most as many again. Default DefaultMaxKeys.
	MaxKeys int
	// FlushWorkers is how many tenants one flush works on at once.
	// Default DefaultFlushWorkers.
	FlushWorkers int
	// Now is the clock that dates counts (UTC days) and quotas (UTC
	// months). Default time.Now.
	Now func() time.Time
	// Logger reports failing and recovering background pushes and
	// flushes. Default slog.Default().
	Logger *slog.Logger
	// Instance names this process in the batches it pushes. Default: a
	// random id, which is what every process must have -- two live
	// Recorders with the same Instance would drop each other's batches.
	// A Recorder that takes over a journal uses the journal's instance.
	Instance string
	// Journal, when set, is the path of a file that keeps the counts not
	// pushed yet through a crash of the process: Add appends each count
	// to it (one write(2), no fsync: the kernel keeps it when the process
	// dies; a crash of the machine loses what it had not written out).
	// The next Recorder started on the same path -- the same instance
	// restarted -- pushes them. It costs Add a system call under one
	// lock. The file is locked: New fails when another live process
	// holds it. Default: none, and a killed process loses the counts of
	// its last PushInterval.
	Journal string
}

// numShards is the number of maps Add spreads its counts over. Add picks
// one at random, so that concurrent calls for the same counter do not
// queue on one lock; Push sums them.
const numShards = 64

type shard struct {
	mu sync.Mutex
	m  map[key]int64
	_  [48]byte // a cache line per shard
}

type dayCache struct {
	day        string
	start, end int64 // Unix ns: [start, end) is that UTC day
}

// Recorder counts usage: see the package documentation. It is safe for
// concurrent use; call Close once the server stopped serving.
type Recorder struct {
	store    Store
	db       DB
	o        Options
	now      func() time.Time
	log      *slog.Logger
	instance string

	shards [numShards]shard
	keys   atomic.Int64  // entries in shards
	js     *journalState // nil without Options.Journal
	day    atomic.Pointer[dayCache]
	closed atomic.Bool

	pushMu        sync.Mutex
	seq           int64        // the last batch Seq used
	inflight      *Batch       // a batch whose push failed, to retry as it is
	inflightUnits atomic.Int64 // the sum of its counts

	flushMu sync.Mutex
	seeds   singleflight.Group

	loopCtx   context.Context // cancelled when the loops stop
	cancel    context.CancelFunc
	loops     sync.WaitGroup
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error

	pushes, pushFailures, pushedUnits atomic.Int64
	dropped, flushes, flushFailures   atomic.Int64
	lastFlush                         atomic.Int64 // unix nanos of the last complete flush pass
}

// Stats are a Recorder's counters since it started.
type Stats struct {
	Pushes        int64 // successful pushes of a batch
	PushFailures  int64
	PushedUnits   int64 // the sum of every count pushed
	Unpushed      int64 // the sum of the counts waiting in this process
	LocalKeys     int64 // counters waiting in this process (see MaxKeys)
	Dropped       int64 // the sum of counts Add refused (MaxKeys, invalid, closed)
	Flushes       int64 // flushes this instance applied to SQL
	FlushFailures int64
}

// New returns a Recorder and starts its background push and flush loops.
func New(o Options) (*Recorder, error) {
	if o.Store == nil || o.DB == nil {
		return nil, agentapi.E("usage.New", agentapi.KindInvalid, errors.New("a Store and a DB are required"))
	}
	if o.PushInterval == 0 {
		o.PushInterval = DefaultPushInterval
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.PushTimeout <= 0 {
		o.PushTimeout = DefaultPushTimeout
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.FlushWorkers <= 0 {
		o.FlushWorkers = DefaultFlushWorkers
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var (
		j  *journal
		rp replayed
	)
	if o.Journal != "" {
		var (
			err, why error
			movedTo  string
		)
		if j, rp, movedTo, why, err = openJournal(o.Journal); err != nil {
			return nil, agentapi.E("usage.New", agentapi.KindUnavailable, fmt.Errorf("usage journal: %w", err))
		}
		if movedTo != "" {
			o.Logger.Error("usage: the journal could not be read; it was moved aside and a new one started (its counts are not pushed)",
				"moved_to", movedTo, "error", why)
		}
		if rp.instance != "" {
			o.Instance = rp.instance
		}
	}
	if o.Instance == "" {
		var b [8]byte
		rand.Read(b[:])
		o.Instance = hex.EncodeToString(b[:])
	}
	r := &Recorder{store: o.Store, db: o.DB, o: o, now: o.Now, log: o.Logger, instance: o.Instance}
	for i := range r.shards {
		r.shards[i].m = map[key]int64{}
	}
	if j != nil {
		// Take over what a crashed predecessor left: its batch in flight
		// goes first, as it was; its other counts wait for the next push.
		r.seq, r.inflight = rp.seq, rp.inflight
		if rp.inflight != nil {
			rp.inflight.Instance = r.instance // a journal always starts with its header; this is belt and braces
			var units int64
			for _, row := range rp.inflight.Rows {
				units += row.Count
			}
			r.inflightUnits.Store(units)
		}
		for _, row := range rp.pending {
			r.addLocal(row.key(), row.Count)
		}
		if err := j.rewrite(r.instance, r.seq, r.inflight, rp.pending); err != nil {
			j.close()
			return nil, agentapi.E("usage.New", agentapi.KindUnavailable, fmt.Errorf("usage journal: %w", err))
		}
		r.js = &journalState{j: j, maxSize: journalMaxSize}
		if rp.inflight != nil || len(rp.pending) > 0 {
			r.log.Info("usage: counts a previous run left in the journal will be pushed", "journal", o.Journal,
				"in_flight", r.inflightUnits.Load(), "pending", len(rp.pending))
		}
	}
	r.loopCtx, r.cancel = context.WithCancel(context.Background())
	if o.PushInterval > 0 {
		r.loops.Add(1)
		// A push in progress when the loops stop completes: cancelling it
		// would leave unknown whether the Store applied it.
		go r.loop("push", o.PushInterval, o.PushTimeout, context.Background(), r.Push)
	}
	if o.FlushInterval > 0 {
		r.loops.Add(1)
		go r.loop("flush", o.FlushInterval, o.FlushTimeout, r.loopCtx, r.Flush)
	}
	return r, nil
}

// Instance returns the id this Recorder pushes its batches under.
func (r *Recorder) Instance() string { return r.instance }

func (r *Recorder) loop(what string, every, timeout time.Duration, base context.Context, fn func(context.Context) error) {
	defer r.loops.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-r.loopCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(base, timeout)
		err := fn(ctx)
		cancel()
		if r.loopCtx.Err() != nil {
			return // stopping: a flush cut short is no failure
		}
		switch {
		case err != nil && !failing:
			failing = true
			r.log.Warn("usage: background "+what+" failing; retrying every interval", "err", err, "interval", every)
		case err == nil && failing:
			failing = false
			r.log.Info("usage: background " + what + " recovered")
		}
	}
}

// stopLoops stops the background loops and waits for them.
func (r *Recorder) stopLoops() {
	r.stopOnce.Do(func() {
		r.cancel()
		r.loops.Wait()
	})
}

// Add counts n of metric for user of tenant today (by the Recorder's
// clock, UTC). It never blocks on the network: the count waits in this
// process until the next push. n <= 0 is ignored. Counts with an empty or
// invalid tenant id, an invalid user id (not UTF-8, or holding NUL), an
// invalid metric name, beyond MaxKeys, or after Close began are dropped
// and counted in Stats.Dropped.
func (r *Recorder) Add(tenant, user string, m Metric, n int64) {
	if n <= 0 {
		return
	}
	if r.closed.Load() || tenant == "" || !m.Valid() || !validText(tenant) || !validText(user) {
		r.dropped.Add(n)
		return
	}
	k := key{tenant: tenant, user: user, day: r.today(), metric: m}
	if r.js == nil {
		r.addLocal(k, n)
		return
	}
	r.js.mu.Lock()
	defer r.js.mu.Unlock()
	if r.addLocal(k, n) {
		r.journalWrite(r.js.j.add(k, n))
	}
}

// addLocal adds n to k in a shard and reports whether it was taken
// (MaxKeys).
func (r *Recorder) addLocal(k key, n int64) bool {
	s := &r.shards[mrand.Uint32()%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[k]; ok {
		s.m[k] = v + n
		return true
	}
	if r.keys.Add(1) > int64(r.o.MaxKeys) {
		r.keys.Add(-1)
		r.dropped.Add(n)
		return false
	}
	s.m[k] = n
	return true
}

// journalWrite notes the outcome of a journal write; caller holds js.mu.
// A failing journal is logged once: counting goes on in memory.
func (r *Recorder) journalWrite(err error) {
	switch {
	case err != nil && !r.js.failed:
		r.js.failed = true
		r.log.Error("usage: writing the journal failed; counts not pushed yet are lost if this process dies", "journal", r.o.Journal, "error", err)
	case err == nil && r.js.failed:
		r.js.failed = false
		r.log.Info("usage: writing the journal works again", "journal", r.o.Journal)
	}
}

// peek sums the counts waiting in the shards, leaving them there.
func (r *Recorder) peek() []Row {
	sums := map[key]int64{}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for k, n := range s.m {
			sums[k] += n
		}
		s.mu.Unlock()
	}
	return rowsOf(sums)
}

// today returns the current UTC day, recomputed only when the clock left
// the cached one.
func (r *Recorder) today() string {
	now := r.now()
	ns := now.UnixNano()
	if c := r.day.Load(); c != nil && ns >= c.start && ns < c.end {
		return c.day
	}
	t := now.UTC()
	start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	c := &dayCache{day: Day(start), start: start.UnixNano(), end: start.AddDate(0, 0, 1).UnixNano()}
	r.day.Store(c)
	return c.day
}

// drain takes every count waiting in the shards.
func (r *Recorder) drain() []Row {
	sums := map[key]int64{}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		m, n := s.m, len(s.m)
		if n > 0 {
			s.m = make(map[key]int64, n)
		}
		s.mu.Unlock()
		if n == 0 {
			continue
		}
		r.keys.Add(-int64(n))
		for k, n := range m {
			sums[k] += n
		}
	}
	return rowsOf(sums)
}

// Push sends the counts waiting in this process to the Store in one
// round trip (two when Redis must first load its scripts), and returns
// when the Store has them. A batch whose push failed is retried first, as
// it was, before the counts added since are pushed as the next batch. It
// is what the background loop runs every PushInterval; tests and Report
// call it directly.
func (r *Recorder) Push(ctx context.Context) error {
	r.pushMu.Lock()
	defer r.pushMu.Unlock()
	for range 2 { // the failed batch, if any, then the fresh counts
		if r.inflight == nil {
			if r.js != nil {
				r.js.mu.Lock()
			}
			rows := r.drain()
			if len(rows) > 0 {
				r.seq++
				if r.js != nil {
					r.journalWrite(r.js.j.batch(r.seq))
				}
			}
			if r.js != nil {
				r.js.mu.Unlock()
			}
			if len(rows) == 0 {
				return nil
			}
			r.inflight = &Batch{Instance: r.instance, Seq: r.seq, Rows: rows}
			var units int64
			for _, row := range rows {
				units += row.Count
			}
			r.inflightUnits.Store(units)
		}
		if err := r.store.Push(ctx, *r.inflight); err != nil {
			r.pushFailures.Add(1)
			if r.js != nil {
				// The Store is away: keep the journal bounded (and whole after
				// a failed write) by rewriting it to the batch in flight and
				// the counts since, summed.
				r.js.mu.Lock()
				if r.js.j.dirty || r.js.j.size > r.js.maxSize {
					r.journalWrite(r.js.j.rewrite(r.instance, r.seq, r.inflight, r.peek()))
				}
				r.js.mu.Unlock()
			}
			return agentapi.E("usage.Push", agentapi.KindOther, err)
		}
		r.pushes.Add(1)
		r.pushedUnits.Add(r.inflightUnits.Swap(0))
		if r.js != nil {
			r.js.mu.Lock()
			r.journalWrite(r.js.j.pushed(r.inflight.Seq))
			if r.js.j.dirty || r.js.j.size > r.js.maxSize {
				r.journalWrite(r.js.j.rewrite(r.instance, r.seq, nil, r.peek()))
			}
			r.js.mu.Unlock()
		}
		r.inflight = nil
	}
	return nil
}

// Flush moves the counts held by the Store, of every tenant and pushed by
// any instance, to SQL; see the package documentation for how it stays
// exact. It does not push this process's counts first (Close does). It is
// what the background loop runs every FlushInterval; concurrent calls on
// one Recorder run one after the other, and flushes of several instances
// may run at once.
func (r *Recorder) Flush(ctx context.Context) error {
	const op = "usage.Flush"
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	err := r.flush(ctx)
	if err != nil {
		r.flushFailures.Add(1)
		return agentapi.E(op, agentapi.KindOther, err)
	}
	r.lastFlush.Store(r.now().UnixNano())
	return nil
}

// LastFlush is when a flush pass of this instance last completed without
// error (having found something to flush or not); zero before the first.
// The time since is how far SQL may lag behind the counts.
func (r *Recorder) LastFlush() time.Time {
	n := r.lastFlush.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (r *Recorder) flush(ctx context.Context) error {
	dirty, err := r.store.Dirty(ctx)
	if err != nil || len(dirty) == 0 {
		return err
	}
	ids := make([]string, len(dirty))
	for i, d := range dirty {
		ids[i] = d.TenantID
	}
	marks, err := r.db.UsageMarks(ctx, ids)
	if err != nil {
		return err
	}
	work := make(chan Dirty)
	var (
		mu     sync.Mutex
		errs   []error
		failed int
		wg     sync.WaitGroup
	)
	for range min(r.o.FlushWorkers, len(dirty)) {
		wg.Go(func() {
			for d := range work {
				if err := r.flushTenant(ctx, d, marks[d.TenantID]); err != nil {
					mu.Lock()
					if failed++; len(errs) < 3 {
						errs = append(errs, fmt.Errorf("tenant %q: %w", d.TenantID, err))
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, d := range dirty {
		work <- d
	}
	close(work)
	wg.Wait()
	if failed > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more tenants", failed-len(errs)))
	}
	return errors.Join(errs...)
}

// flushTenant claims a tenant's pending counts and applies its open
// flushes in Seq order, stopping at the first failure: a flush is never
// applied before an earlier one of its tenant (DB.ApplyUsage would then
// take the earlier one for applied).
func (r *Recorder) flushTenant(ctx context.Context, d Dirty, floor int64) error {
	fs, err := r.store.Claim(ctx, d.TenantID, floor, r.now())
	if err != nil {
		return err
	}
	for _, f := range fs {
		f.Rows = r.validRows(f)
		if len(f.Rows) > 0 {
			applied, err := r.db.ApplyUsage(ctx, f)
			if err != nil {
				return err
			}
			if applied {
				r.flushes.Add(1)
			}
		}
		if err := r.store.Ack(ctx, d.TenantID, f.ID); err != nil {
			return err
		}
	}
	_, err = r.store.Clean(ctx, d)
	return err
}

// validRows drops (and logs) rows the DB would refuse -- which would
// otherwise block the tenant's flushes for good. Add lets none in; they
// can only come from a Store written by something else.
func (r *Recorder) validRows(f Flush) []Row {
	out := f.Rows[:0:0]
	for _, row := range f.Rows {
		if err := row.Check(); err != nil || row.TenantID != f.TenantID {
			r.log.Error("usage: dropping an invalid counter from the store", "tenant", f.TenantID, "flush", f.ID, "err", err)
			continue
		}
		out = append(out, row)
	}
	return out
}

// Close stops the background loops, pushes what is left and flushes the
// Store to SQL, retrying each until ctx ends. When it returns nil, nothing
// this Recorder counted is lost. An error from the push names how much
// was not pushed; an error from the flush alone loses nothing when the
// Store is shared (Redis): the next flush of any instance completes it.
// Counts added after Close began are dropped. Later calls return the
// first call's result.
func (r *Recorder) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.stopLoops()
		r.closed.Store(true)
		err := retry(ctx, r.Push)
		if r.js != nil {
			// The journal keeps what is left: nothing after a complete push
			// (but a count that slipped in), else the batch in flight and
			// the counts after it.
			r.pushMu.Lock()
			r.js.mu.Lock()
			r.journalWrite(r.js.j.rewrite(r.instance, r.seq, r.inflight, r.peek()))
			r.js.j.close()
			r.js.mu.Unlock()
			r.pushMu.Unlock()
		}
		if err != nil {
			what := "are lost"
			if r.js != nil {
				what = "stay in the journal for the next start"
			}
			r.closeErr = agentapi.E("usage.Close", agentapi.KindUnavailable,
				fmt.Errorf("%d counted units could not be pushed and %s: %w", r.Stats().Unpushed, what, err))
			return
		}
		r.closeErr = retry(ctx, r.Flush)
	})
	return r.closeErr
}

// retry calls fn until it succeeds or ctx ends, and returns its last
// error.
func retry(ctx context.Context, fn func(context.Context) error) error {
	backoff := 20 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		wait := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			wait.Stop()
			return err
		case <-wait.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Stats returns the Recorder's counters.
func (r *Recorder) Stats() Stats {
	var unpushed int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, n := range s.m {
			unpushed += n
		}
		s.mu.Unlock()
	}
	unpushed += r.inflightUnits.Load()
	return Stats{
		Pushes:        r.pushes.Load(),
		PushFailures:  r.pushFailures.Load(),
		PushedUnits:   r.pushedUnits.Load(),
		Unpushed:      unpushed,
		LocalKeys:     r.keys.Load(),
		Dropped:       r.dropped.Load(),
		Flushes:       r.flushes.Load(),
		FlushFailures: r.flushFailures.Load(),
	}
}

// Report returns the usage matching q: the rows in SQL merged with the
// counts the Store still holds (see Read), after pushing this process's
// counts, so it includes every count added on this instance before the
// call. Counts other instances have not pushed yet (at most their last
// PushInterval) are not included. Errors: KindInvalid for a bad query;
// KindUnavailable when the Store or the DB cannot be reached.
func (r *Recorder) Report(ctx context.Context, q Query) ([]Row, error) {
	if err := q.Check(); err != nil {
		return nil, err
	}
	if err := r.Push(ctx); err != nil {
		return nil, err
	}
	return Read(ctx, r.store, r.db, q)
}

// readAttempts bounds how often Read starts over when flushes keep
// changing the Store under it.
const readAttempts = 8

// Read returns the usage matching q from SQL and from what store holds,
// each count exactly once, summed per tenant, user, day and metric and
// sorted (SortRows).
//
// It reads the Store's pending counts and open flushes with their
// FlushState (Pending), then one snapshot of SQL (DB.UsageSnapshot: the
// rows and each tenant's last applied flush Seq), then the FlushState
// again. When it is unchanged, no flush was claimed or acknowledged in
// between, so at the moment of the SQL snapshot the
// Store held what Pending returned: the pending counts were not in SQL, an
// open flush was in SQL exactly when its Seq was at or below its tenant's
// last applied one, and everything acknowledged earlier was in SQL. When
// they changed, Read starts over (a few times, then fails with
// KindUnavailable).
func Read(ctx context.Context, store Store, db DB, q Query) ([]Row, error) {
	const op = "usage.Read"
	if err := q.Check(); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		rows, ok, err := readOnce(ctx, store, db, q)
		if err != nil {
			return nil, agentapi.E(op, agentapi.KindOther, err)
		}
		if ok {
			return rows, nil
		}
		if attempt == readAttempts {
			return nil, agentapi.E(op, agentapi.KindUnavailable, errors.New("usage kept changing during the report; try again"))
		}
		wait := time.NewTimer(time.Duration(attempt) * 5 * time.Millisecond)
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil, agentapi.E(op, agentapi.KindOther, ctx.Err())
		case <-wait.C:
		}
	}
}

func readOnce(ctx context.Context, store Store, db DB, q Query) ([]Row, bool, error) {
	var tenants []string
	if q.TenantID != "" {
		tenants = []string{q.TenantID}
	} else {
		dirty, err := store.Dirty(ctx)
		if err != nil {
			return nil, false, err
		}
		for _, d := range dirty {
			tenants = append(tenants, d.TenantID)
		}
	}
	held, err := store.Pending(ctx, tenants)
	if err != nil {
		return nil, false, err
	}
	snap, err := db.UsageSnapshot(ctx, q)
	if err != nil {
		return nil, false, err
	}
	after, err := store.FlushState(ctx, tenants)
	if err != nil {
		return nil, false, err
	}
	for _, t := range tenants {
		if held[t].State != after[t] {
			return nil, false, nil
		}
	}
	parts := [][]Row{snap.Rows}
	for t, p := range held {
		parts = append(parts, filterRows(q, p.Rows))
		for _, f := range p.Flushes {
			if f.Seq > snap.Marks[t] {
				parts = append(parts, filterRows(q, f.Rows))
			}
		}
	}
	return MergeRows(parts...), true, nil
}

func filterRows(q Query, rows []Row) []Row {
	out := rows[:0:0]
	for _, r := range rows {
		if q.match(r) {
			out = append(out, r)
		}
	}
	return out
}

// QuotaDecision is the outcome of ConsumeQuota.
type QuotaDecision struct {
	// Allowed: the units were counted against the quota (or there is no
	// quota). When false nothing was counted: answer 429 quota-exceeded.
	Allowed bool
	// Used is the month's count after the decision; 0 without a quota.
	Used int64
	// Limit is the quota; 0 means none.
	Limit int64
	// ResetAt is when the month, and so the quota, starts over (UTC).
	ResetAt time.Time
}

// ConsumeQuota counts n units of metric against tenant's limit for the
// current UTC month, atomically across every instance sharing the Store:
// it is allowed only if the month's count plus n stays within limit, and a
// refused call counts nothing. limit <= 0 means no quota: allowed, without
// a round trip. It does not record usage: call Add for that (Consume does
// both).
//
// The month's counter is kept by the Store. When the Store does not have
// it (the first check of the month, a Redis restart or eviction, a
// restarted single instance), it is seeded with the month's usage of
// metric (Report: SQL, the Store, and this instance's unpushed counts)
// before deciding; one seed is computed per instance at a time, and the
// first seed stored wins. Usage other instances counted but had not
// pushed yet (at most a PushInterval's worth) is then missing from the
// seed.
//
// Errors: KindInvalid for bad arguments (n < 0); otherwise the Store's or
// the DB's (KindUnavailable when unreachable), with no decision made:
// whether to serve the request is the caller's failure policy.
func (r *Recorder) ConsumeQuota(ctx context.Context, tenant string, m Metric, n, limit int64) (QuotaDecision, error) {
	const op = "usage.ConsumeQuota"
	now := r.now()
	t := now.UTC()
	monthStart := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	d := QuotaDecision{Limit: max(limit, 0), ResetAt: monthStart.AddDate(0, 1, 0)}
	if limit <= 0 {
		if n < 0 {
			return QuotaDecision{}, agentapi.E(op, agentapi.KindInvalid, errors.New("n must be at least 0"))
		}
		d.Allowed = true
		return d, nil
	}
	req := QuotaRequest{TenantID: tenant, Metric: m, Month: Month(now), N: n, Limit: limit, Seed: -1}
	res, err := r.store.Quota(ctx, req)
	if err != nil {
		return QuotaDecision{}, err
	}
	if res.NeedSeed {
		if req.Seed, err = r.seed(ctx, tenant, m, monthStart); err != nil {
			return QuotaDecision{}, err
		}
		if res, err = r.store.Quota(ctx, req); err != nil {
			return QuotaDecision{}, err
		}
		if res.NeedSeed {
			return QuotaDecision{}, agentapi.E(op, agentapi.KindInternal, errors.New("store asked for a seed it was given"))
		}
	}
	d.Allowed, d.Used = res.Allowed, res.Used
	return d, nil
}

// Consume is ConsumeQuota followed, when allowed, by Add(tenant, user, m,
// n): the one call a handler needs to enforce a quota and record the
// usage. On an error nothing is recorded; a caller that serves the
// request anyway should Add itself.
func (r *Recorder) Consume(ctx context.Context, tenant, user string, m Metric, n, limit int64) (QuotaDecision, error) {
	d, err := r.ConsumeQuota(ctx, tenant, m, n, limit)
	if err == nil && d.Allowed {
		r.Add(tenant, user, m, n)
	}
	return d, err
}

// seed computes the month's usage of metric for tenant.
func (r *Recorder) seed(ctx context.Context, tenant string, m Metric, monthStart time.Time) (int64, error) {
	q := Query{TenantID: tenant, From: Day(monthStart), To: Day(monthStart.AddDate(0, 1, -1))}
	v, err, _ := r.seeds.Do(tenant+"\x00"+string(m)+"\x00"+q.From, func() (any, error) {
		rows, err := r.Report(ctx, q)
		if err != nil {
			return int64(0), err
		}
		return Totals(rows)[m], nil
	})
	if err != nil {
		return 0, err
	}
	return v.(int64), nil
}
