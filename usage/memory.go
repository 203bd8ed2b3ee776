package usage

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// DefaultMaxOpenFlushes is how many open flushes a tenant may have before
// Claim stops opening new ones (they pile up only while SQL is down).
const DefaultMaxOpenFlushes = 8

// MemoryOptions configure a Memory store. The zero value is ready to use.
type MemoryOptions struct {
	// MaxOpenFlushes: see DefaultMaxOpenFlushes.
	MaxOpenFlushes int
}

// Memory is a Store in this process, for a single instance without Redis.
// Its state dies with the process: a Recorder's Close flushes it to SQL,
// and quota counters are seeded again from SQL after a restart.
type Memory struct {
	maxOpen int

	mu      sync.Mutex
	tenants map[string]*memTenant
	quotas  map[quotaKey]int64
	month   string // the latest month a quota was asked for
	nextID  int64
}

type memTenant struct {
	pending map[key]int64
	flushes map[string]Flush // open, by id
	seq     int64            // the last Seq given to a flush
	pushed  map[string]int64 // instance -> last batch Seq applied
	version int64
	dirty   bool
}

type quotaKey struct {
	tenant string
	metric Metric
	month  string
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxOpenFlushes <= 0 {
		o.MaxOpenFlushes = DefaultMaxOpenFlushes
	}
	return &Memory{maxOpen: o.MaxOpenFlushes, tenants: map[string]*memTenant{}, quotas: map[quotaKey]int64{}}
}

func (m *Memory) tenant(id string) *memTenant {
	t := m.tenants[id]
	if t == nil {
		t = &memTenant{pending: map[key]int64{}, flushes: map[string]Flush{}, pushed: map[string]int64{}}
		m.tenants[id] = t
	}
	return t
}

// Push implements Store.
func (m *Memory) Push(ctx context.Context, b Batch) error {
	const op = "usage.memory.Push"
	if err := checkBatch(op, b); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	apply := map[string]bool{} // tenant -> b not applied to it yet
	for _, r := range b.Rows {
		if _, ok := apply[r.TenantID]; !ok {
			apply[r.TenantID] = m.tenant(r.TenantID).pushed[b.Instance] < b.Seq
		}
	}
	for _, r := range b.Rows {
		if apply[r.TenantID] {
			m.tenants[r.TenantID].pending[r.key()] += r.Count
		}
	}
	for id, ok := range apply {
		if ok {
			t := m.tenants[id]
			t.pushed[b.Instance] = b.Seq
			t.version++
			t.dirty = true
		}
	}
	return nil
}

// Dirty implements Store.
func (m *Memory) Dirty(ctx context.Context) ([]Dirty, error) {
	if err := ctx.Err(); err != nil {
		return nil, agentapi.E("usage.memory.Dirty", agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Dirty
	for id, t := range m.tenants {
		if t.dirty {
			out = append(out, Dirty{TenantID: id, Version: strconv.FormatInt(t.version, 10)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TenantID < out[j].TenantID })
	return out, nil
}

// Claim implements Store.
func (m *Memory) Claim(ctx context.Context, tenant string, floor int64, now time.Time) ([]Flush, error) {
	const op = "usage.memory.Claim"
	if tenant == "" {
		return nil, agentapi.E(op, agentapi.KindInvalid, errors.New("tenant id is required"))
	}
	if err := ctx.Err(); err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tenants[tenant]
	if t == nil {
		return nil, nil
	}
	if len(t.pending) > 0 && len(t.flushes) < m.maxOpen {
		seq := max(t.seq+1, floor+1, now.UnixMicro())
		t.seq = seq
		m.nextID++
		id := "m" + strconv.FormatInt(m.nextID, 10)
		t.flushes[id] = Flush{TenantID: tenant, ID: id, Seq: seq, Rows: rowsOf(t.pending)}
		t.pending = map[key]int64{}
	}
	return t.openFlushes(), nil
}

// openFlushes returns copies of t's open flushes, ordered by Seq.
func (t *memTenant) openFlushes() []Flush {
	out := make([]Flush, 0, len(t.flushes))
	for _, f := range t.flushes {
		f.Rows = append([]Row(nil), f.Rows...)
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// Ack implements Store.
func (m *Memory) Ack(ctx context.Context, tenant, id string) error {
	if err := ctx.Err(); err != nil {
		return agentapi.E("usage.memory.Ack", agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.tenants[tenant]; t != nil {
		delete(t.flushes, id)
	}
	return nil
}

// Clean implements Store.
func (m *Memory) Clean(ctx context.Context, d Dirty) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, agentapi.E("usage.memory.Clean", agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tenants[d.TenantID]
	if t == nil || !t.dirty || strconv.FormatInt(t.version, 10) != d.Version || len(t.pending) > 0 || len(t.flushes) > 0 {
		return false, nil
	}
	t.dirty = false
	return true, nil
}

// Pending implements Store.
func (m *Memory) Pending(ctx context.Context, tenants []string) (map[string]Pending, error) {
	if err := ctx.Err(); err != nil {
		return nil, agentapi.E("usage.memory.Pending", agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Pending, len(tenants))
	for _, id := range tenants {
		var p Pending
		if t := m.tenants[id]; t != nil {
			p = Pending{Rows: rowsOf(t.pending), Flushes: t.openFlushes(), State: t.state()}
		}
		out[id] = p
	}
	return out, nil
}

// state is t's FlushState: the last Seq given and the open flushes' ids.
func (t *memTenant) state() string {
	if t.seq == 0 && len(t.flushes) == 0 {
		return "" // as for a tenant never seen
	}
	ids := make([]string, 0, len(t.flushes))
	for id := range t.flushes {
		ids = append(ids, id)
	}
	return flushState(strconv.FormatInt(t.seq, 10), ids)
}

// flushState builds a FlushState token.
func flushState(lastSeq string, ids []string) string {
	sort.Strings(ids)
	return lastSeq + ":" + strings.Join(ids, ",")
}

// FlushState implements Store.
func (m *Memory) FlushState(ctx context.Context, tenants []string) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, agentapi.E("usage.memory.FlushState", agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(tenants))
	for _, id := range tenants {
		if t := m.tenants[id]; t != nil {
			out[id] = t.state()
		} else {
			out[id] = ""
		}
	}
	return out, nil
}

// Quota implements Store. Counters of months before the previous one are
// dropped.
func (m *Memory) Quota(ctx context.Context, r QuotaRequest) (QuotaResult, error) {
	const op = "usage.memory.Quota"
	if err := checkQuota(op, r); err != nil {
		return QuotaResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return QuotaResult{}, agentapi.E(op, agentapi.KindOther, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Month > m.month {
		m.month = r.Month
		for k := range m.quotas {
			if k.month < r.Month && !adjacentMonths(k.month, r.Month) {
				delete(m.quotas, k)
			}
		}
	}
	k := quotaKey{r.TenantID, r.Metric, r.Month}
	used, ok := m.quotas[k]
	if !ok {
		if r.Seed < 0 {
			return QuotaResult{NeedSeed: true}, nil
		}
		used = r.Seed
		m.quotas[k] = used
	}
	if used+r.N > r.Limit {
		return QuotaResult{Used: used}, nil
	}
	used += r.N
	m.quotas[k] = used
	return QuotaResult{Allowed: true, Used: used}, nil
}

// adjacentMonths reports whether month a ("YYYYMM") is the month before b.
func adjacentMonths(a, b string) bool {
	ta, err1 := time.Parse("200601", a)
	tb, err2 := time.Parse("200601", b)
	return err1 == nil && err2 == nil && ta.AddDate(0, 1, 0).Equal(tb)
}

// checkBatch validates a batch (KindInvalid).
func checkBatch(op string, b Batch) error {
	if b.Instance == "" || !validText(b.Instance) || b.Seq < 1 || b.Seq > maxBatchSeq {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("batch needs an instance id and a Seq from 1 to 2^37"))
	}
	for _, r := range b.Rows {
		if err := r.Check(); err != nil {
			return agentapi.E(op, agentapi.KindInvalid, err)
		}
	}
	return nil
}

// checkQuota validates a quota request (KindInvalid).
func checkQuota(op string, r QuotaRequest) error {
	var err error
	switch {
	case r.TenantID == "" || !validText(r.TenantID):
		err = errors.New("quota: a valid tenant id is required")
	case !r.Metric.Valid():
		err = errors.New("quota: bad metric name")
	case r.N < 0:
		err = errors.New("quota: n must be at least 0")
	case r.Limit < 1:
		err = errors.New("quota: limit must be at least 1")
	case r.Limit > maxCounter || r.N > maxCounter || r.Seed > maxCounter:
		err = errors.New("quota: numbers must stay below 2^50")
	}
	if err == nil {
		if t, perr := time.Parse("200601", r.Month); perr != nil || t.Format("200601") != r.Month {
			err = errors.New("quota: month must be YYYYMM")
		}
	}
	if err != nil {
		return agentapi.E(op, agentapi.KindInvalid, err)
	}
	return nil
}

// maxCounter bounds quota numbers so that Lua's doubles add them exactly.
const maxCounter = 1 << 50

// maxBatchSeq bounds batch numbers: Redis numbers a batch's chunks
// Seq<<16 + chunk and compares them as Lua doubles, exact below 2^53. At
// one push a second it lasts four thousand years.
const maxBatchSeq = 1 << 37
