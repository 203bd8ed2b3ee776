package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// Defaults for RedisOptions.
const (
	DefaultPrefix   = "agentapi:"
	DefaultKeyTTL   = 30 * 24 * time.Hour
	DefaultDedupTTL = 24 * time.Hour
	DefaultQuotaTTL = 40 * 24 * time.Hour
)

// RedisOptions configure a Redis store. The zero value is ready to use.
type RedisOptions struct {
	// Prefix starts every key. Default DefaultPrefix.
	Prefix string
	// KeyTTL is how long counts wait in Redis for a flush: the expiry of
	// pending counts and open flushes, restarted by every push and claim,
	// and of the dirty index. Default DefaultKeyTTL.
	KeyTTL time.Duration
	// DedupTTL is how long Redis remembers the last batch of an instance
	// for a tenant: a batch retried after a failure that left it unknown
	// whether it was applied, and retried more than DedupTTL after its
	// tenant's previous push from the instance, could be counted twice.
	// Default DefaultDedupTTL.
	DedupTTL time.Duration
	// QuotaTTL is the expiry of a quota counter, set when it is created;
	// it must exceed a month. Default DefaultQuotaTTL.
	QuotaTTL time.Duration
	// MaxOpenFlushes: see DefaultMaxOpenFlushes.
	MaxOpenFlushes int
}

// Redis is a Store in Redis, shared by every instance using the same
// server, over any kv.Client (native or Upstash REST).
//
// # Keys
//
// A tenant's keys carry the tenant id in a hash tag, so that in a Redis
// Cluster they share one slot and every script touches keys of one slot
// only. With the default prefix, for tenant T:
//
//	agentapi:{t:T}:usage:pending            hash "<day>|<metric>|<user>" -> count:
//	                                        counts pushed, not yet claimed (PX KeyTTL)
//	agentapi:{t:T}:usage:flush:<id>         hash, same fields: an open flush, the
//	                                        pending hash renamed by a claim (PX KeyTTL)
//	agentapi:{t:T}:usage:flushes            hash "<id>" -> Seq of each open flush, and
//	                                        "#seq" -> the last Seq given (PX KeyTTL)
//	agentapi:{t:T}:usage:pushed:<instance>  the last batch (Seq<<16 + chunk) of an
//	                                        instance applied to T (PX DedupTTL)
//	agentapi:{t:T}:usage:quota:<yyyymm>:<metric>
//	                                        a quota counter (PX QuotaTTL, from creation)
//
// and one key across tenants, in a slot of its own and only ever written
// by single-key commands:
//
//	agentapi:usage:dirty                    hash "<tenant>" -> version (PX KeyTTL)
//
// # Scripts
//
// Every read-modify-write runs as a Lua script whose keys are all in KEYS
// and in one tenant's slot; none reads the server's clock (Claim sends the
// time) or calls redis.replicate_commands, so they run on Upstash as they
// do on Redis. Numbers stay below 2^53, where Lua's doubles are exact.
//
// # The dirty index
//
// A push runs each tenant's script and then HINCRBY on the tenant's entry
// in the dirty index: the bumps are sent once the scripts have answered, in
// a second pipeline, because the index is in a slot of its own and on a
// Redis Cluster a pipeline's commands for different slots run on different
// nodes in no defined order (on one server, or Upstash, one pipeline would
// keep the order; two cost one more round trip per push). A flusher reads
// the index, flushes, checks that the tenant holds nothing and only then
// removes the entry, and only if its version is the one it read. So a
// tenant with counts is never missing from the index: counts pushed before
// the check are seen by it, and a push after the check bumps the version
// after the check. A push that fails between its two pipelines leaves
// counts that are not indexed; its retry (the same batch, which the
// scripts apply once) sends the bumps, and so does any later push for the
// tenant.
//
// # FlushState
//
// A tenant's FlushState is the flushes hash: the last Seq given, which
// every claim raises, and the ids of the open flushes, which every Ack
// shrinks; ids are random and never reused.
type Redis struct {
	c                       kv.Client
	prefix                  string
	ttl, dedupTTL, quotaTTL string // milliseconds, as script arguments
	maxOpen                 string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store keeping its state in c, which it does not
// close.
func NewRedis(c kv.Client, o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.KeyTTL <= 0 {
		o.KeyTTL = DefaultKeyTTL
	}
	if o.DedupTTL <= 0 {
		o.DedupTTL = DefaultDedupTTL
	}
	if o.QuotaTTL <= 0 {
		o.QuotaTTL = DefaultQuotaTTL
	}
	if o.MaxOpenFlushes <= 0 {
		o.MaxOpenFlushes = DefaultMaxOpenFlushes
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(max(d.Milliseconds(), 1), 10) }
	return &Redis{
		c:        c,
		prefix:   o.Prefix,
		ttl:      ms(o.KeyTTL),
		dedupTTL: ms(o.DedupTTL),
		quotaTTL: ms(o.QuotaTTL),
		maxOpen:  strconv.Itoa(o.MaxOpenFlushes),
	}
}

func (s *Redis) base(tenant string) string  { return s.prefix + "{t:" + tenant + "}:usage:" }
func (s *Redis) pendingKey(t string) string { return s.base(t) + "pending" }
func (s *Redis) flushesKey(t string) string { return s.base(t) + "flushes" }
func (s *Redis) flushKey(t, id string) string {
	return s.base(t) + "flush:" + id
}
func (s *Redis) pushedKey(t, instance string) string { return s.base(t) + "pushed:" + instance }
func (s *Redis) quotaKey(t, month string, m Metric) string {
	return s.base(t) + "quota:" + month + ":" + string(m)
}
func (s *Redis) dirtyKey() string { return s.prefix + "usage:dirty" }

// seqField is the field of the flushes hash holding the last Seq given;
// flush ids are hex, so it cannot clash with one.
const seqField = "#seq"

// pushScript applies one chunk of a batch to a tenant, once.
// KEYS: pending, pushed:<instance>. ARGV: chunk number (Seq<<16 + chunk),
// KeyTTL ms, DedupTTL ms, then field, count pairs.
var pushScript = kv.NewScript(`local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if last >= tonumber(ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 1
`)

// claimScript moves the pending hash into a new open flush, unless it is
// missing or the tenant has too many open flushes, and returns the
// flushes hash. KEYS: pending, flushes, flush:<id>. ARGV: id, floor, now
// µs, KeyTTL ms, max open flushes.
var claimScript = kv.NewScript(`local open = redis.call('HLEN', KEYS[2]) - redis.call('HEXISTS', KEYS[2], '#seq')
if open < tonumber(ARGV[5]) and redis.call('EXISTS', KEYS[1]) == 1 then
  local seq = (tonumber(redis.call('HGET', KEYS[2], '#seq') or '0') or 0) + 1
  local floor = tonumber(ARGV[2]) + 1
  if floor > seq then seq = floor end
  local now = tonumber(ARGV[3])
  if now > seq then seq = now end
  local s = string.format('%.0f', seq)
  redis.call('RENAME', KEYS[1], KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[2], '#seq', s, ARGV[1], s)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return redis.call('HGETALL', KEYS[2])
`)

// ackScript drops an open flush. KEYS: flush:<id>, flushes. ARGV: id.
var ackScript = kv.NewScript(`redis.call('DEL', KEYS[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
`)

// readScript reads a tenant's pending and flushes hashes at one instant.
// KEYS: pending, flushes.
var readScript = kv.NewScript(`return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
`)

// cleanScript removes a tenant from the dirty index if its version is
// unchanged. KEYS: dirty. ARGV: tenant, version.
var cleanScript = kv.NewScript(`if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`)

// quotaScript checks and counts against a quota. KEYS: quota counter.
// ARGV: n, limit, seed (negative: unknown), QuotaTTL ms. Reply {allowed
// (-1: need a seed), used}.
var quotaScript = kv.NewScript(`local used = tonumber(redis.call('GET', KEYS[1]) or '')
if not used then
  if tonumber(ARGV[3]) < 0 then return {-1, 0} end
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  used = tonumber(ARGV[3])
end
local n = tonumber(ARGV[1])
if used + n > tonumber(ARGV[2]) then return {0, used} end
if n > 0 then used = redis.call('INCRBY', KEYS[1], ARGV[1]) end
return {1, used}
`)

var allScripts = []*kv.Script{pushScript, claimScript, ackScript, readScript, cleanScript, quotaScript}

func evalsha(s *kv.Script, keys []string, args ...string) []string {
	cmd := make([]string, 0, 3+len(keys)+len(args))
	cmd = append(cmd, "EVALSHA", s.SHA1(), strconv.Itoa(len(keys)))
	cmd = append(cmd, keys...)
	return append(cmd, args...)
}

// pipeline runs cmds in one round trip and returns their replies. When
// Redis does not know a script yet (NOSCRIPT), it loads the scripts and
// runs cmds once more: every pipeline of this store may run twice.
func (s *Redis) pipeline(ctx context.Context, op string, cmds [][]string) ([]kv.Value, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	for attempt := 0; ; attempt++ {
		rs, err := s.c.Pipeline(ctx, cmds...)
		if err != nil {
			return nil, agentapi.E(op, agentapi.KindOther, err)
		}
		var noScript bool
		var cmdErr error
		for _, r := range rs {
			switch {
			case r.Err == nil:
			case kv.IsNoScript(r.Err):
				noScript = true
			case cmdErr == nil:
				cmdErr = r.Err
			}
		}
		if noScript && attempt == 0 {
			for _, sc := range allScripts {
				if _, err := s.c.Do(ctx, "SCRIPT", "LOAD", sc.Source()); err != nil {
					return nil, agentapi.E(op, agentapi.KindOther, err)
				}
			}
			continue
		}
		if cmdErr == nil && noScript {
			cmdErr = errors.New("scripts unknown to Redis after SCRIPT LOAD")
		}
		if cmdErr != nil {
			return nil, agentapi.E(op, agentapi.KindOther, cmdErr)
		}
		out := make([]kv.Value, len(rs))
		for i, r := range rs {
			out[i] = r.Value
		}
		return out, nil
	}
}

// pushChunk is how many counters one script call of a push carries.
const pushChunk = 512

// Push implements Store: for each tenant of b, in one pipeline, its
// chunks of counters (each a script applying it once); then, in a second
// one, the bumps of the dirty index.
func (s *Redis) Push(ctx context.Context, b Batch) error {
	const op = "usage.redis.Push"
	if err := checkBatch(op, b); err != nil {
		return err
	}
	rows := append([]Row(nil), b.Rows...)
	SortRows(rows) // a retried batch must chunk the same way
	var cmds, dirty [][]string
	for i := 0; i < len(rows); {
		t := rows[i].TenantID
		j := i
		for j < len(rows) && rows[j].TenantID == t {
			j++
		}
		keys := []string{s.pendingKey(t), s.pushedKey(t, b.Instance)}
		for chunk, k := 0, i; k < j; chunk, k = chunk+1, k+pushChunk {
			if chunk >= 1<<16 {
				return agentapi.E(op, agentapi.KindInvalid, fmt.Errorf("batch has more than %d counters for one tenant", pushChunk<<16))
			}
			end := min(k+pushChunk, j)
			args := make([]string, 0, 3+2*(end-k))
			args = append(args, strconv.FormatInt(b.Seq<<16+int64(chunk), 10), s.ttl, s.dedupTTL)
			for _, r := range rows[k:end] {
				args = append(args, field(r), strconv.FormatInt(r.Count, 10))
			}
			cmds = append(cmds, evalsha(pushScript, keys, args...))
		}
		dirty = append(dirty, []string{"HINCRBY", s.dirtyKey(), t, "1"})
		i = j
	}
	if len(cmds) == 0 {
		return nil
	}
	if _, err := s.pipeline(ctx, op, cmds); err != nil {
		return err
	}
	dirty = append(dirty, []string{"PEXPIRE", s.dirtyKey(), s.ttl})
	_, err := s.pipeline(ctx, op, dirty)
	return err
}

// field is a row's field in a pending or flush hash. The user id comes
// last: day and metric contain no "|", the user id may.
func field(r Row) string { return r.Day + "|" + string(r.Metric) + "|" + r.UserID }

// parseRows reads a pending or flush hash (flat field, value pairs),
// skipping fields it cannot parse.
func parseRows(tenant string, v kv.Value) ([]Row, error) {
	pairs, err := v.Strings()
	if err != nil {
		if v.IsNil() {
			return nil, nil
		}
		return nil, err
	}
	rows := make([]Row, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		day, rest, ok1 := strings.Cut(pairs[i], "|")
		metric, user, ok2 := strings.Cut(rest, "|")
		n, err := strconv.ParseInt(pairs[i+1], 10, 64)
		if !ok1 || !ok2 || err != nil || n == 0 {
			continue
		}
		rows = append(rows, Row{TenantID: tenant, UserID: user, Day: day, Metric: Metric(metric), Count: n})
	}
	SortRows(rows)
	return rows, nil
}

// Dirty implements Store.
func (s *Redis) Dirty(ctx context.Context) ([]Dirty, error) {
	const op = "usage.redis.Dirty"
	v, err := s.c.Do(ctx, "HGETALL", s.dirtyKey())
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	pairs, err := v.Strings()
	if err != nil && !v.IsNil() {
		return nil, agentapi.E(op, agentapi.KindInternal, err)
	}
	out := make([]Dirty, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, Dirty{TenantID: pairs[i], Version: pairs[i+1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TenantID < out[j].TenantID })
	return out, nil
}

// newID returns a fresh flush id.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// openFlushes parses a flushes hash into id -> Seq.
func openFlushes(v kv.Value) (map[string]int64, error) {
	pairs, err := v.Strings()
	if err != nil {
		if v.IsNil() {
			return nil, nil
		}
		return nil, err
	}
	out := map[string]int64{}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == seqField {
			continue
		}
		seq, err := strconv.ParseInt(pairs[i+1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("flush %s: bad Seq %q", pairs[i], pairs[i+1])
		}
		out[pairs[i]] = seq
	}
	return out, nil
}

// Claim implements Store: one script claims and returns the open flushes'
// ids, one pipeline reads their counts.
func (s *Redis) Claim(ctx context.Context, tenant string, floor int64, now time.Time) ([]Flush, error) {
	const op = "usage.redis.Claim"
	if tenant == "" || !validText(tenant) {
		return nil, agentapi.E(op, agentapi.KindInvalid, errors.New("a valid tenant id is required"))
	}
	id := newID()
	v, err := s.c.Eval(ctx, claimScript,
		[]string{s.pendingKey(tenant), s.flushesKey(tenant), s.flushKey(tenant, id)},
		id, strconv.FormatInt(max(floor, 0), 10), strconv.FormatInt(now.UnixMicro(), 10), s.ttl, s.maxOpen)
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindOther, err)
	}
	open, err := openFlushes(v)
	if err != nil {
		return nil, agentapi.E(op, agentapi.KindInternal, err)
	}
	got, err := s.readFlushes(ctx, op, map[string]map[string]int64{tenant: open})
	if err != nil {
		return nil, err
	}
	return got[tenant], nil
}

// readFlushes reads the counts of open flushes (tenant -> id -> Seq) in
// one pipeline and returns each tenant's flushes ordered by Seq. A flush
// whose hash expired has no rows.
func (s *Redis) readFlushes(ctx context.Context, op string, open map[string]map[string]int64) (map[string][]Flush, error) {
	var cmds [][]string
	var fs []Flush
	for t, ids := range open {
		for id, seq := range ids {
			cmds = append(cmds, []string{"HGETALL", s.flushKey(t, id)})
			fs = append(fs, Flush{TenantID: t, ID: id, Seq: seq})
		}
	}
	vs, err := s.pipeline(ctx, op, cmds)
	if err != nil {
		return nil, err
	}
	out := map[string][]Flush{}
	for i, f := range fs {
		if f.Rows, err = parseRows(f.TenantID, vs[i]); err != nil {
			return nil, agentapi.E(op, agentapi.KindInternal, err)
		}
		out[f.TenantID] = append(out[f.TenantID], f)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Seq < l[j].Seq })
	}
	return out, nil
}

// Ack implements Store.
func (s *Redis) Ack(ctx context.Context, tenant, id string) error {
	const op = "usage.redis.Ack"
	if tenant == "" || id == "" {
		return agentapi.E(op, agentapi.KindInvalid, errors.New("tenant and flush id are required"))
	}
	if _, err := s.c.Eval(ctx, ackScript, []string{s.flushKey(tenant, id), s.flushesKey(tenant)}, id); err != nil {
		return agentapi.E(op, agentapi.KindOther, err)
	}
	return nil
}

// Clean implements Store: it checks the tenant's keys (after the caller
// read d), then removes the index entry if its version is still d's.
func (s *Redis) Clean(ctx context.Context, d Dirty) (bool, error) {
	const op = "usage.redis.Clean"
	t := d.TenantID
	vs, err := s.pipeline(ctx, op, [][]string{
		{"EXISTS", s.pendingKey(t)},
		{"HLEN", s.flushesKey(t)},
		{"HEXISTS", s.flushesKey(t), seqField},
	})
	if err != nil {
		return false, err
	}
	var n [3]int64
	for i := range n {
		if n[i], err = vs[i].Int(); err != nil {
			return false, agentapi.E(op, agentapi.KindInternal, err)
		}
	}
	if n[0] != 0 || n[1]-n[2] != 0 {
		return false, nil
	}
	v, err := s.c.Eval(ctx, cleanScript, []string{s.dirtyKey()}, t, d.Version)
	if err != nil {
		return false, agentapi.E(op, agentapi.KindOther, err)
	}
	removed, err := v.Int()
	return removed == 1, err
}

// Pending implements Store: one pipeline of scripts reads each tenant's
// pending and flushes hashes at once, a second one the open flushes.
func (s *Redis) Pending(ctx context.Context, tenants []string) (map[string]Pending, error) {
	const op = "usage.redis.Pending"
	cmds := make([][]string, len(tenants))
	for i, t := range tenants {
		cmds[i] = evalsha(readScript, []string{s.pendingKey(t), s.flushesKey(t)})
	}
	vs, err := s.pipeline(ctx, op, cmds)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Pending, len(tenants))
	open := map[string]map[string]int64{}
	for i, t := range tenants {
		parts, err := vs[i].Array()
		if err != nil || len(parts) != 2 {
			return nil, agentapi.E(op, agentapi.KindInternal, fmt.Errorf("unexpected reply %v", vs[i]))
		}
		var p Pending
		if p.Rows, err = parseRows(t, parts[0]); err != nil {
			return nil, agentapi.E(op, agentapi.KindInternal, err)
		}
		if open[t], err = openFlushes(parts[1]); err != nil {
			return nil, agentapi.E(op, agentapi.KindInternal, err)
		}
		if p.State, err = stateOf(parts[1]); err != nil {
			return nil, agentapi.E(op, agentapi.KindInternal, err)
		}
		out[t] = p
	}
	flushes, err := s.readFlushes(ctx, op, open)
	if err != nil {
		return nil, err
	}
	for t, fs := range flushes {
		p := out[t]
		p.Flushes = fs
		out[t] = p
	}
	return out, nil
}

// stateOf computes the FlushState of a flushes hash: "" when it is
// missing.
func stateOf(v kv.Value) (string, error) {
	pairs, err := v.Strings()
	if err != nil {
		if v.IsNil() {
			return "", nil
		}
		return "", err
	}
	if len(pairs) == 0 {
		return "", nil
	}
	var last string
	var ids []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == seqField {
			last = pairs[i+1]
		} else {
			ids = append(ids, pairs[i])
		}
	}
	return flushState(last, ids), nil
}

// FlushState implements Store: the flushes hash holds both the last Seq
// given and the open flushes.
func (s *Redis) FlushState(ctx context.Context, tenants []string) (map[string]string, error) {
	const op = "usage.redis.FlushState"
	cmds := make([][]string, len(tenants))
	for i, t := range tenants {
		cmds[i] = []string{"HGETALL", s.flushesKey(t)}
	}
	vs, err := s.pipeline(ctx, op, cmds)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(tenants))
	for i, t := range tenants {
		if out[t], err = stateOf(vs[i]); err != nil {
			return nil, agentapi.E(op, agentapi.KindInternal, err)
		}
	}
	return out, nil
}

// Quota implements Store with one script.
func (s *Redis) Quota(ctx context.Context, r QuotaRequest) (QuotaResult, error) {
	const op = "usage.redis.Quota"
	if err := checkQuota(op, r); err != nil {
		return QuotaResult{}, err
	}
	v, err := s.c.Eval(ctx, quotaScript, []string{s.quotaKey(r.TenantID, r.Month, r.Metric)},
		strconv.FormatInt(r.N, 10), strconv.FormatInt(r.Limit, 10), strconv.FormatInt(max(r.Seed, -1), 10), s.quotaTTL)
	if err != nil {
		return QuotaResult{}, agentapi.E(op, agentapi.KindOther, err)
	}
	arr, err := v.Array()
	if err != nil || len(arr) != 2 {
		return QuotaResult{}, agentapi.E(op, agentapi.KindInternal, fmt.Errorf("unexpected reply %v", v))
	}
	verdict, err1 := arr[0].Int()
	used, err2 := arr[1].Int()
	if err1 != nil || err2 != nil {
		return QuotaResult{}, agentapi.E(op, agentapi.KindInternal, fmt.Errorf("unexpected reply %v", v))
	}
	switch verdict {
	case -1:
		return QuotaResult{NeedSeed: true}, nil
	case 1:
		return QuotaResult{Allowed: true, Used: used}, nil
	}
	return QuotaResult{Used: used}, nil
}

// QuotaKey returns the Redis key of a quota counter, for operators (and
// tests) that need to inspect or reset one.
func (s *Redis) QuotaKey(tenant string, m Metric, month string) string {
	return s.quotaKey(tenant, month, m)
}
