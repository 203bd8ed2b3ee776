// Package bench compares kv/native (our Redis transport, over rueidis) with
// github.com/redis/go-redis/v9 on the same Redis server, and kv/rest's
// Pipeline with single commands over an in-process Upstash REST server.
//
// The harness here is shared by the kvbench command (bench/kvbench), which
// prints markdown tables, and by the Go benchmarks in bench_test.go. See
// README.md for how to run them and for results.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/agentapi-mt/agentapi/kv"
)

const (
	// NumKeys is how many distinct keys each operation cycles through.
	NumKeys = 1024
	// ValueSize is the size in bytes of the values GET reads and SET writes.
	ValueSize = 64
	// ScriptSource is the Lua script the EVALSHA operation runs.
	ScriptSource = "return redis.call('INCR', KEYS[1])"
)

// Op is one benchmarked operation.
type Op string

const (
	OpGet     Op = "GET"
	OpSet     Op = "SET"
	OpEvalSHA Op = "EVALSHA"
)

// Ops lists the operations in table order.
var Ops = []Op{OpGet, OpSet, OpEvalSHA}

// Driver issues single commands through one client library.
type Driver interface {
	Name() string
	Get(ctx context.Context, key string) error
	Set(ctx context.Context, key, value string) error
	EvalSHA(ctx context.Context, key string) error
}

// Keyspace holds the keys and value used by a run, under one prefix so that
// a run against a shared server does not touch anything else.
type Keyspace struct {
	Prefix   string
	GetKeys  []string // preloaded with Value
	SetKeys  []string
	IncrKeys []string // counters for the script
	Value    string
}

// NewKeyspace returns a Keyspace whose keys all start with prefix.
func NewKeyspace(prefix string) *Keyspace {
	ks := &Keyspace{Prefix: prefix, Value: strings.Repeat("v", ValueSize)}
	for i := range NumKeys {
		n := strconv.Itoa(i)
		ks.GetKeys = append(ks.GetKeys, prefix+"get:"+n)
		ks.SetKeys = append(ks.SetKeys, prefix+"set:"+n)
		ks.IncrKeys = append(ks.IncrKeys, prefix+"incr:"+n)
	}
	return ks
}

// UniquePrefix is a key prefix unlikely to collide with another run.
func UniquePrefix() string {
	return fmt.Sprintf("kvbench:%d:%d:", os.Getpid(), time.Now().UnixNano()%1e9)
}

// Prepare stores the GET keys and loads the script, through c.
func (ks *Keyspace) Prepare(ctx context.Context, c kv.Client) error {
	cmds := make([][]string, 0, NumKeys)
	for _, k := range ks.GetKeys {
		cmds = append(cmds, []string{"SET", k, ks.Value})
	}
	rs, err := c.Pipeline(ctx, cmds...)
	if err != nil {
		return fmt.Errorf("preload keys: %w", err)
	}
	for _, r := range rs {
		if r.Err != nil {
			return fmt.Errorf("preload keys: %w", r.Err)
		}
	}
	sha, err := c.Do(ctx, "SCRIPT", "LOAD", ScriptSource)
	if err != nil {
		return fmt.Errorf("SCRIPT LOAD: %w", err)
	}
	if s, _ := sha.Text(); s != kv.NewScript(ScriptSource).SHA1() {
		return fmt.Errorf("SCRIPT LOAD answered %q, want %s", s, kv.NewScript(ScriptSource).SHA1())
	}
	return nil
}

// Cleanup deletes every key of the keyspace.
func (ks *Keyspace) Cleanup(ctx context.Context, c kv.Client) error {
	all := append(append(append([]string{}, ks.GetKeys...), ks.SetKeys...), ks.IncrKeys...)
	for len(all) > 0 {
		n := min(len(all), 512)
		if _, err := c.Do(ctx, append([]string{"DEL"}, all[:n]...)...); err != nil {
			return err
		}
		all = all[n:]
	}
	return nil
}

// Call runs op once on d; i picks the key.
func (ks *Keyspace) Call(ctx context.Context, d Driver, op Op, i int) error {
	i &= NumKeys - 1
	switch op {
	case OpGet:
		return d.Get(ctx, ks.GetKeys[i])
	case OpSet:
		return d.Set(ctx, ks.SetKeys[i], ks.Value)
	case OpEvalSHA:
		return d.EvalSHA(ctx, ks.IncrKeys[i])
	}
	return fmt.Errorf("unknown op %q", op)
}

var errMissing = errors.New("GET: key missing")

// ---- drivers ---------------------------------------------------------------

// Ours drives a kv.Client (normally *native.Client) through the kv.Client
// interface, exactly as the feature stores use it.
type Ours struct {
	Label  string // defaults to "ours"
	C      kv.Client
	script *kv.Script
}

// NewOurs wraps c.
func NewOurs(c kv.Client) *Ours { return &Ours{C: c, script: kv.NewScript(ScriptSource)} }

func (o *Ours) Name() string {
	if o.Label != "" {
		return o.Label
	}
	return "ours"
}

func (o *Ours) Get(ctx context.Context, key string) error {
	v, err := o.C.Do(ctx, "GET", key)
	if err == nil && v.IsNil() {
		return errMissing
	}
	return err
}

func (o *Ours) Set(ctx context.Context, key, value string) error {
	_, err := o.C.Do(ctx, "SET", key, value)
	return err
}

func (o *Ours) EvalSHA(ctx context.Context, key string) error {
	_, err := o.C.Eval(ctx, o.script, []string{key})
	return err
}

// goRedisCmds is the part of go-redis's command surface the driver uses;
// both *redis.Client and *redis.AutoPipeliner have it.
type goRedisCmds interface {
	Get(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value interface{}, expiration time.Duration) *redis.StatusCmd
	redis.Scripter
}

// GoRedis drives go-redis v9 through its typed API. EVALSHA uses
// redis.Script.Run, which like kv.Client.Eval sends EVALSHA and falls back
// to EVAL on NOSCRIPT.
type GoRedis struct {
	Label  string // defaults to "go-redis"
	C      goRedisCmds
	script *redis.Script
}

// NewGoRedis wraps c (a *redis.Client or an autopipeliner).
func NewGoRedis(c goRedisCmds) *GoRedis {
	return &GoRedis{C: c, script: redis.NewScript(ScriptSource)}
}

func (g *GoRedis) Name() string {
	if g.Label != "" {
		return g.Label
	}
	return "go-redis"
}

func (g *GoRedis) Get(ctx context.Context, key string) error {
	return g.C.Get(ctx, key).Err()
}

func (g *GoRedis) Set(ctx context.Context, key, value string) error {
	return g.C.Set(ctx, key, value, 0).Err()
}

func (g *GoRedis) EvalSHA(ctx context.Context, key string) error {
	return g.script.Run(ctx, g.C, []string{key}).Err()
}

// NewGoRedisClient returns a go-redis client for url with PoolSize
// connections, so that every goroutine of a run can hold one.
func NewGoRedisClient(url string, poolSize int) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.PoolSize = poolSize
	return redis.NewClient(opt), nil
}

// Rueidis drives a raw rueidis.Client the way kv/native's Do and Eval do
// (Arbitrary command, ToMessage, string/int conversion). It lets the
// benchmark try rueidis options that kv/native.Options does not expose,
// without touching kv/native.
type Rueidis struct {
	Label string
	C     rueidis.Client
	sha   string
}

// NewRueidis wraps c.
func NewRueidis(label string, c rueidis.Client) *Rueidis {
	return &Rueidis{Label: label, C: c, sha: kv.NewScript(ScriptSource).SHA1()}
}

func (r *Rueidis) Name() string { return r.Label }

func (r *Rueidis) Get(ctx context.Context, key string) error {
	msg, err := r.C.Do(ctx, r.C.B().Arbitrary("GET", key).Build()).ToMessage()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			return errMissing
		}
		return err
	}
	_, err = msg.ToString()
	return err
}

func (r *Rueidis) Set(ctx context.Context, key, value string) error {
	msg, err := r.C.Do(ctx, r.C.B().Arbitrary("SET", key, value).Build()).ToMessage()
	if err != nil {
		return err
	}
	_, err = msg.ToString()
	return err
}

func (r *Rueidis) EvalSHA(ctx context.Context, key string) error {
	msg, err := r.C.Do(ctx, r.C.B().Arbitrary("EVALSHA", r.sha, "1").Keys(key).Build()).ToMessage()
	if err != nil {
		return err
	}
	_, err = msg.AsInt64()
	return err
}

// NativeLikeOption returns the rueidis options kv/native builds for url
// (see clientOption in kv/native/native.go): a single-node client named
// "agentapi", client-side caching on unless the host is Upstash, every
// other option at rueidis's default.
func NativeLikeOption(url string) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return opt, err
	}
	opt.ForceSingleClient = true
	opt.ClientName = "agentapi"
	host, _, err := net.SplitHostPort(opt.InitAddress[0])
	if err != nil {
		host = opt.InitAddress[0]
	}
	opt.DisableCache = strings.HasSuffix(strings.ToLower(host), ".upstash.io")
	return opt, nil
}

// Variant is a change to kv/native's rueidis options, tried in the benchmark.
type Variant struct {
	Name string
	// Mod changes opt; g is the goroutine count of the cell.
	Mod func(opt *rueidis.ClientOption, g int)
}

// Variants are the rueidis option changes kvbench -variants tries. The
// first reproduces kv/native's options exactly, as a control for the
// adapter. Multiplex -1 means one connection; rueidis's default for a
// single node is log2(GOMAXPROCS) capped at 2, i.e. 2 connections on
// 2 cores and 4 from 4 cores up.
var Variants = []Variant{
	{"rueidis (kv/native opts)", func(*rueidis.ClientOption, int) {}},
	{"DisableCache", func(o *rueidis.ClientOption, _ int) { o.DisableCache = true }},
	{"PipelineMultiplex=-1 (1 conn)", func(o *rueidis.ClientOption, _ int) { o.PipelineMultiplex = -1 }},
	{"PipelineMultiplex=2 (4 conns)", func(o *rueidis.ClientOption, _ int) { o.PipelineMultiplex = 2 }},
	{"PipelineMultiplex=3 (8 conns)", func(o *rueidis.ClientOption, _ int) { o.PipelineMultiplex = 3 }},
	{"MaxFlushDelay=20us", func(o *rueidis.ClientOption, _ int) { o.MaxFlushDelay = 20 * time.Microsecond }},
	{"MaxFlushDelay=100us", func(o *rueidis.ClientOption, _ int) { o.MaxFlushDelay = 100 * time.Microsecond }},
	{"DisableCache+1 conn+MaxFlushDelay=20us", func(o *rueidis.ClientOption, _ int) {
		o.DisableCache = true
		o.PipelineMultiplex = -1
		o.MaxFlushDelay = 20 * time.Microsecond
	}},
	{"1 conn+MaxFlushDelay=20us", func(o *rueidis.ClientOption, _ int) {
		o.PipelineMultiplex = -1
		o.MaxFlushDelay = 20 * time.Microsecond
	}},
	{"DisableAutoPipelining (pool=g)", func(o *rueidis.ClientOption, g int) {
		o.DisableAutoPipelining = true
		o.BlockingPoolSize = g
	}},
}

// SelectVariants returns the variants selected by patterns, a
// comma-separated list of case-insensitive names: a pattern equal to a
// variant's name selects that variant only, any other pattern every variant
// whose name contains it. "all" selects every variant.
func SelectVariants(patterns string) []Variant {
	if strings.TrimSpace(patterns) == "" {
		return nil
	}
	if strings.EqualFold(strings.TrimSpace(patterns), "all") {
		return Variants
	}
	chosen := make([]bool, len(Variants))
	for _, p := range strings.Split(patterns, ",") {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		exact := false
		for i, v := range Variants {
			if strings.ToLower(v.Name) == p {
				chosen[i], exact = true, true
			}
		}
		if exact {
			continue
		}
		for i, v := range Variants {
			if strings.Contains(strings.ToLower(v.Name), p) {
				chosen[i] = true
			}
		}
	}
	var out []Variant
	for i, v := range Variants {
		if chosen[i] {
			out = append(out, v)
		}
	}
	return out
}

// ---- runners ---------------------------------------------------------------

// Result is the outcome of one timed run.
type Result struct {
	Ops     int64
	Elapsed time.Duration
	Err     error
}

// PerSec is operations per second.
func (r Result) PerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Add accumulates another run of the same driver.
func (r Result) Add(o Result) Result {
	r.Ops += o.Ops
	r.Elapsed += o.Elapsed
	if r.Err == nil {
		r.Err = o.Err
	}
	return r
}

// keyStride spreads goroutines over the keyspace.
const keyStride = 7919

// RunFor runs op on d from g goroutines until dur has passed and returns
// how many operations completed. Each goroutine runs back-to-back calls
// (closed loop). The first error stops the run and is reported.
func RunFor(ctx context.Context, ks *Keyspace, d Driver, op Op, g int, dur time.Duration) Result {
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
		start   = make(chan struct{})
		counts  = make([]int64, g)
	)
	for gi := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := gi * keyStride
			var n int64
			<-start
			for !stop.Load() {
				if err := ks.Call(ctx, d, op, i); err != nil {
					errOnce.Do(func() { runErr = fmt.Errorf("%s %s: %w", d.Name(), op, err) })
					stop.Store(true)
					break
				}
				i++
				n++
			}
			counts[gi] = n
		}()
	}
	t0 := time.Now()
	close(start)
	timer := time.NewTimer(dur)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	var total int64
	for _, n := range counts {
		total += n
	}
	if runErr == nil {
		runErr = ctx.Err()
	}
	return Result{Ops: total, Elapsed: elapsed, Err: runErr}
}

// RunN runs op on d n times in total, split evenly over g goroutines, as
// testing.B wants. It returns the first error.
func RunN(ctx context.Context, ks *Keyspace, d Driver, op Op, g, n int) error {
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	for gi := range g {
		share := n / g
		if gi < n%g {
			share++
		}
		if share == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := gi * keyStride
			for range share {
				if err := ks.Call(ctx, d, op, i); err != nil {
					errOnce.Do(func() { runErr = fmt.Errorf("%s %s: %w", d.Name(), op, err) })
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	return runErr
}

// Compare measures every driver on one cell (op, g) for dur each. The time
// is cut into 2*rounds slices; slices alternate the order of the drivers
// (A B, B A, A B, ...), so that neither warm-up nor drift of the machine
// favours one. Each driver first runs unmeasured for warm (connections
// dialled, pools filled, background goroutines started).
func Compare(ctx context.Context, ks *Keyspace, drivers []Driver, op Op, g int, dur, warm time.Duration, rounds int) []Result {
	return Interleave(len(drivers), dur, warm, rounds, func(i int, d time.Duration) Result {
		return RunFor(ctx, ks, drivers[i], op, g, d)
	})
}

// Interleave measures n drivers side by side: a warm-up run of each, then
// 2*rounds slices of dur/(2*rounds) alternating their order (a, b, b, a,
// ...), so neither benefits from going first; run(i, d) measures driver i
// for d. A driver that fails is not run again.
func Interleave(n int, dur, warm time.Duration, rounds int, run func(i int, d time.Duration) Result) []Result {
	rounds = max(rounds, 1)
	out := make([]Result, n)
	if warm > 0 {
		for i := range n {
			if r := run(i, warm); r.Err != nil {
				out[i].Err = r.Err
			}
		}
	}
	slice := dur / time.Duration(2*rounds)
	for pass := range 2 * rounds {
		for k := range n {
			i := k
			if pass%2 == 1 {
				i = n - 1 - k
			}
			if out[i].Err != nil {
				continue
			}
			out[i] = out[i].Add(run(i, slice))
		}
	}
	return out
}

// ---- REST ------------------------------------------------------------------

// RESTBatch is n SET commands on distinct keys of ks.
func RESTBatch(ks *Keyspace, n int) [][]string {
	cmds := make([][]string, n)
	for i := range cmds {
		cmds[i] = []string{"SET", ks.Prefix + "rest:" + strconv.Itoa(i), ks.Value}
	}
	return cmds
}

// PipelineBatch sends cmds as one kv.Client.Pipeline.
func PipelineBatch(ctx context.Context, c kv.Client, cmds [][]string) error {
	rs, err := c.Pipeline(ctx, cmds...)
	if err != nil {
		return err
	}
	if len(rs) != len(cmds) {
		return fmt.Errorf("pipeline: %d results for %d commands", len(rs), len(cmds))
	}
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// SingleBatch sends cmds one Do at a time.
func SingleBatch(ctx context.Context, c kv.Client, cmds [][]string) error {
	for _, cmd := range cmds {
		if _, err := c.Do(ctx, cmd...); err != nil {
			return err
		}
	}
	return nil
}

// BatchFunc runs one batch.
type BatchFunc func(ctx context.Context, c kv.Client, cmds [][]string) error

// TimeBatches runs f back to back from one goroutine for dur and returns the
// number of batches (as Ops) and the time taken.
func TimeBatches(ctx context.Context, c kv.Client, cmds [][]string, f BatchFunc, dur time.Duration) Result {
	t0 := time.Now()
	var n int64
	for time.Since(t0) < dur {
		if err := f(ctx, c, cmds); err != nil {
			return Result{Ops: n, Elapsed: time.Since(t0), Err: err}
		}
		n++
	}
	return Result{Ops: n, Elapsed: time.Since(t0)}
}

// ---- formatting --------------------------------------------------------------

// Ratio is a/b, NaN when b is zero.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// FormatRate formats ops/s with thousands separators.
func FormatRate(v float64) string {
	n := int64(math.Round(v))
	s := strconv.FormatInt(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	pre := len(s) % 3
	if pre > 0 {
		b.WriteString(s[:pre])
	}
	for i := pre; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// ParseInts parses "1,16,64".
func ParseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad count %q", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no counts")
	}
	return out, nil
}

// RedisVersion asks the server for its version.
func RedisVersion(ctx context.Context, c kv.Client) string {
	v, err := c.Do(ctx, "INFO", "server")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	s, _ := v.Text()
	for line := range strings.SplitSeq(s, "\n") {
		if after, ok := strings.CutPrefix(line, "redis_version:"); ok {
			return strings.TrimSpace(after)
		}
	}
	return "unknown"
}
