// Package usage counts what tenants and their users do -- API requests,
// messages sent, agent session seconds, bytes uploaded, rate-limited
// requests -- per UTC day, exactly, across every instance, and keeps the
// counts in the records database (package sql). It also enforces monthly
// quotas on those counts.
//
// # The way of a count
//
// A count travels through three places, and each step is made exactly once
// whatever crashes in between:
//
//  1. Recorder.Add, on the request path, adds to a map in this process: no
//     network round trip, no blocking beyond a short, sharded mutex.
//  2. Every PushInterval (default 1s) the Recorder pushes everything it
//     accumulated to the shared Store (Redis, or memory for a single
//     instance) in one pipelined round trip. A push is a Batch numbered by
//     the instance; the Store applies each batch at most once per tenant, so
//     a push that failed half-way is retried as the very same batch, and
//     new counts wait in the map for the next one. Nothing Add accepted
//     is dropped, except beyond the MaxKeys bound (see Options).
//  3. Every FlushInterval (default 10s) every instance flushes the Store to
//     SQL (DB). For each tenant with counts, the flusher atomically moves
//     the tenant's pending counts into a new open flush with a sequence
//     number (Store.Claim), writes the rows and the sequence number in one
//     SQL transaction (DB.ApplyUsage, which refuses a number not above the
//     tenant's last one), and only then drops the open flush (Store.Ack).
//     A flusher that dies between the commit and the Ack leaves the flush
//     open; the next flusher, on any instance, finds it applied and drops
//     it. Flushers that run at once apply a tenant's open flushes in
//     ascending order and race only on who commits each of them first.
//
// # What a crash loses
//
// Close pushes what is left and flushes, so a graceful stop (SIGTERM)
// loses nothing -- provided the Store is reachable before the shutdown
// deadline. A process killed outright (SIGKILL, OOM, power) loses what it
// had not pushed yet: at most the counts of the last PushInterval (plus, if
// the Store was unreachable, what piled up since it was). Everything pushed
// is safe from then on: flushes are idempotent and any instance completes
// another's. The Store itself must be durable for that (Redis with AOF);
// a Redis that loses its data loses the counts not yet flushed, at most a
// FlushInterval's worth when flushers run. The Memory store (one instance
// without Redis) dies with its process: there a kill loses what was not
// flushed, at most PushInterval + FlushInterval, so single instances
// should flush more often.
//
// # Reports
//
// Recorder.Report pushes this instance's counts first, then merges the SQL
// rows with the counts still held by the Store (pending, or in open
// flushes not yet applied), so a report made right after a request, on the
// instance that served it, includes it. Counts other instances have not
// pushed yet (at most a PushInterval old) are not included. The SQL rows
// and the Store's state are read so that no count is missed or counted
// twice: see Read.
//
// # Quotas
//
// Recorder.ConsumeQuota checks and counts against a monthly (UTC calendar
// month) limit atomically across instances: Store.Quota adds n to the
// tenant's counter for the month unless that would exceed the limit, and
// a refused call consumes nothing. A counter the Store no longer has
// (first use, Redis restarted or evicted the key) is seeded from the usage
// recorded for the month before deciding: see Recorder.ConsumeQuota.
//
// # Failure policy
//
// Store unreachable: Add keeps counting in memory (bounded by MaxKeys) and
// every push retries the same batch until the Store answers; Report and
// ConsumeQuota fail with KindUnavailable (whether a request without a
// quota decision goes through is the caller's policy). SQL unreachable:
// flushes fail and the counts wait in the Store (a tenant keeps at most
// MaxOpenFlushes open flushes; newer counts stay pending) until a later
// flush succeeds; Report fails with KindUnavailable.
package usage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentapi-mt/agentapi"
)

// Metric names a counter. Names are lower-case ASCII letters, digits and
// underscores, 1 to 32 of them.
type Metric string

// The metrics the platform counts.
const (
	Requests       Metric = "requests"        // API requests served
	Messages       Metric = "messages"        // messages sent to agents
	SessionSeconds Metric = "session_seconds" // agent session run time, seconds
	UploadBytes    Metric = "upload_bytes"    // bytes uploaded
	RateLimited    Metric = "rate_limited"    // requests refused by a rate limit
)

// Metrics lists the metrics above, in a stable order.
var Metrics = []Metric{Requests, Messages, SessionSeconds, UploadBytes, RateLimited}

// Valid reports whether m is a well-formed metric name.
func (m Metric) Valid() bool {
	if len(m) == 0 || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// DayLayout is the format of a Day: the UTC date.
const DayLayout = "2006-01-02"

// Day returns the UTC date of t as a Day string, "YYYY-MM-DD".
func Day(t time.Time) string { return t.UTC().Format(DayLayout) }

// ParseDay checks that s is a date "YYYY-MM-DD" and returns it. Errors are
// of kind KindInvalid.
func ParseDay(s string) (string, error) {
	t, err := time.Parse(DayLayout, s)
	if err != nil || t.Format(DayLayout) != s {
		return "", agentapi.E("usage.ParseDay", agentapi.KindInvalid, fmt.Errorf("day %q: want a date YYYY-MM-DD", s))
	}
	return s, nil
}

// Month returns the UTC calendar month of t as "YYYYMM", the period of a
// quota.
func Month(t time.Time) string { return t.UTC().Format("200601") }

// Row is one counter: the count of metric for a user of a tenant on a day.
// UserID may be empty for counts that belong to no user.
type Row struct {
	TenantID string
	UserID   string
	Day      string // "YYYY-MM-DD", UTC
	Metric   Metric
	Count    int64
}

// key is a Row without its count.
type key struct {
	tenant, user, day string
	metric            Metric
}

func (r Row) key() key { return key{r.TenantID, r.UserID, r.Day, r.Metric} }

// Check reports what is wrong with r as a stored row (KindInvalid), or
// nil: a tenant, a valid day and metric, a count above zero, and ids that
// are valid UTF-8.
func (r Row) Check() error {
	switch {
	case r.TenantID == "":
		return errors.New("usage row without a tenant id")
	case !validText(r.TenantID) || !validText(r.UserID):
		return errors.New("usage row: tenant and user ids must be valid UTF-8")
	case !r.Metric.Valid():
		return fmt.Errorf("usage row: bad metric name %q", r.Metric)
	case r.Count <= 0:
		return fmt.Errorf("usage row: count %d, want > 0", r.Count)
	}
	if _, err := ParseDay(r.Day); err != nil {
		return fmt.Errorf("usage row: bad day %q", r.Day)
	}
	return nil
}

// SortRows orders rows by tenant, day, user and metric, the order of
// every list this package returns.
func SortRows(rows []Row) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.TenantID != b.TenantID {
			return a.TenantID < b.TenantID
		}
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.UserID != b.UserID {
			return a.UserID < b.UserID
		}
		return a.Metric < b.Metric
	})
}

// MergeRows sums rows with the same tenant, user, day and metric and
// returns them sorted (SortRows), without rows whose sum is zero.
func MergeRows(rows ...[]Row) []Row {
	sums := map[key]int64{}
	for _, rs := range rows {
		for _, r := range rs {
			sums[r.key()] += r.Count
		}
	}
	return rowsOf(sums)
}

func rowsOf(sums map[key]int64) []Row {
	out := make([]Row, 0, len(sums))
	for k, n := range sums {
		if n != 0 {
			out = append(out, Row{TenantID: k.tenant, UserID: k.user, Day: k.day, Metric: k.metric, Count: n})
		}
	}
	SortRows(out)
	return out
}

// Totals sums rows per metric.
func Totals(rows []Row) map[Metric]int64 {
	out := map[Metric]int64{}
	for _, r := range rows {
		out[r.Metric] += r.Count
	}
	return out
}

// Query selects rows for a report: one tenant's, or every tenant's when
// TenantID is empty, from day From to day To, both included. An empty
// From or To leaves that end open.
type Query struct {
	TenantID string
	From, To string
}

// Check validates the days of q (KindInvalid).
func (q Query) Check() error {
	for _, d := range []string{q.From, q.To} {
		if d == "" {
			continue
		}
		if _, err := ParseDay(d); err != nil {
			return err
		}
	}
	if q.From != "" && q.To != "" && q.From > q.To {
		return agentapi.E("usage.Query", agentapi.KindInvalid, fmt.Errorf("from %s is after to %s", q.From, q.To))
	}
	return nil
}

// match reports whether r falls inside q.
func (q Query) match(r Row) bool {
	return (q.TenantID == "" || r.TenantID == q.TenantID) &&
		(q.From == "" || r.Day >= q.From) &&
		(q.To == "" || r.Day <= q.To)
}

// Batch is one push of an instance's counts to a Store.
type Batch struct {
	// Instance identifies the pushing process; every Recorder picks a
	// random one.
	Instance string
	// Seq numbers the instance's batches, from 1 up. A batch that failed
	// is retried with the same Seq and the same Rows.
	Seq  int64
	Rows []Row
}

// Flush is a set of a tenant's counts on their way to SQL: an open flush
// in a Store, or the argument of DB.ApplyUsage.
type Flush struct {
	TenantID string
	// ID names the open flush in its Store; Ack takes it.
	ID string
	// Seq orders the tenant's flushes: every flush gets a number above
	// every earlier one of the tenant, and DB.ApplyUsage applies a flush
	// only if its Seq is above the last one applied for the tenant.
	Seq  int64
	Rows []Row
}

// Dirty is a tenant that may have counts in a Store, with the version of
// that record: the Store changes the version whenever it receives counts
// for the tenant.
type Dirty struct {
	TenantID string
	Version  string
}

// Pending is what a Store holds for one tenant: counts not yet claimed,
// and open flushes, ordered by Seq.
type Pending struct {
	Rows    []Row
	Flushes []Flush
	// State is the tenant's FlushState, read at the same instant.
	State string
}

// QuotaRequest asks a Store to count N against a quota.
type QuotaRequest struct {
	TenantID string
	Metric   Metric
	Month    string // "YYYYMM", see Month
	N        int64  // at least 0; 0 reads the counter without changing it
	Limit    int64  // at least 1
	// Seed is the counter's value to start from when the Store has no
	// counter for the tenant, metric and month. Negative: the caller does
	// not know it; the Store then decides nothing and sets NeedSeed.
	Seed int64
}

// QuotaResult is a Store's answer to a QuotaRequest.
type QuotaResult struct {
	// NeedSeed: the Store has no counter and the request had no Seed;
	// nothing was decided or changed.
	NeedSeed bool
	// Allowed: the counter plus N did not exceed Limit, and N was added.
	Allowed bool
	// Used is the counter after the decision.
	Used int64
}

// Store holds the counts shared by every instance between their pushes
// and the flushes to SQL, and the quota counters. Implementations (Memory,
// Redis) are safe for concurrent use, and every method is atomic for one
// tenant: whatever the interleaving of calls from any number of instances,
// each count pushed is in exactly one of a tenant's pending counts or open
// flushes until it is acknowledged.
//
// Errors: KindInvalid for bad arguments; otherwise the backend's error
// (matching kv.ErrUnavailable when Redis cannot be reached), after which
// the call may or may not have taken effect -- every method is safe to
// retry with the same arguments.
type Store interface {
	// Push adds the rows of b to their tenants' pending counts and marks
	// the tenants dirty (a new Version). It applies b at most once per
	// tenant: a tenant that already received a batch of b.Instance with a
	// Seq at or above b.Seq ignores it. (Redis forgets an instance's last
	// Seq a day after its last push: DedupTTL.)
	Push(ctx context.Context, b Batch) error

	// Dirty lists every tenant that has pending counts or open flushes,
	// and possibly tenants that have none any more.
	Dirty(ctx context.Context) ([]Dirty, error)

	// Claim moves tenant's pending counts, if it has any and fewer than
	// the Store's maximum of open flushes, into a new open flush whose Seq
	// is above floor, above the tenant's earlier flushes' and at least
	// now's Unix microseconds. It returns every open flush of the tenant,
	// the new one included, ordered by Seq.
	Claim(ctx context.Context, tenant string, floor int64, now time.Time) ([]Flush, error)

	// Ack drops the open flush id of tenant. Dropping one that is not
	// open is not an error.
	Ack(ctx context.Context, tenant, id string) error

	// Clean stops listing d.TenantID as dirty when it has neither pending
	// counts nor open flushes and its version is still d.Version (nothing
	// was pushed since Dirty returned d). It reports whether it did.
	Clean(ctx context.Context, d Dirty) (bool, error)

	// Pending returns what the Store holds for each of tenants, with an
	// entry for each (empty when it holds nothing). A tenant's pending
	// counts, open flushes and State are read at one instant.
	Pending(ctx context.Context, tenants []string) (map[string]Pending, error)

	// FlushState returns a token for each of tenants that changes
	// whenever one of its flushes is claimed or acknowledged, and only
	// then (pushes do not change it): equal tokens read at two times mean
	// that no flush of the tenant was claimed or acknowledged in between.
	FlushState(ctx context.Context, tenants []string) (map[string]string, error)

	// Quota adds r.N to the tenant's counter for r.Metric and r.Month if
	// the result does not exceed r.Limit, atomically: a refused request
	// changes nothing. A counter the Store does not have is started at
	// r.Seed (when r.Seed >= 0) before deciding. Counters live at least
	// until the month is over.
	Quota(ctx context.Context, r QuotaRequest) (QuotaResult, error)
}

// DB is the system of record for usage: package sql implements it.
//
// Errors are *agentapi.Error: KindInvalid for bad arguments, KindUnavailable
// when the database cannot be reached.
type DB interface {
	// ApplyUsage adds f.Rows to the stored counts and records f.Seq as the
	// tenant's last applied flush, in one transaction, if f.Seq is above
	// the tenant's last applied flush; otherwise it changes nothing and
	// returns false. Every row must belong to f.TenantID and pass
	// Row.Check; rows may repeat a key (their counts are summed).
	ApplyUsage(ctx context.Context, f Flush) (applied bool, err error)

	// UsageMarks returns the last applied flush Seq of each of tenants
	// that has one.
	UsageMarks(ctx context.Context, tenants []string) (map[string]int64, error)

	// UsageSnapshot returns, read from one consistent snapshot of the
	// database, the stored rows matching q (sorted, see SortRows) and the
	// last applied flush Seq of every tenant that has one (of q.TenantID
	// only, when set).
	UsageSnapshot(ctx context.Context, q Query) (Snapshot, error)
}

// Snapshot is the answer of DB.UsageSnapshot.
type Snapshot struct {
	Rows  []Row
	Marks map[string]int64
}

// validText reports whether s can travel over every kv transport (valid
// UTF-8, see package kv) and be stored as TEXT (PostgreSQL refuses NUL).
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}
