// Package native is the kv transport that speaks Redis's own protocol, over
// github.com/redis/rueidis: auto-pipelining for throughput under concurrency
// and RESP3 client-side caching for hot reads.
//
// It accepts redis:// and rediss:// (TLS) URLs with an optional user,
// password and database number. Client-side caching needs CLIENT TRACKING;
// it is switched off for servers known not to have it (Upstash) and for any
// server that refuses it when the connection is set up.
//
// Redis Cluster: Dial asks the server (INFO cluster) whether it is a
// cluster node and, when it is, connects to the whole cluster, which it
// discovers from that node. A URL naming more nodes with addr=host:port
// query parameters (redis://10.0.0.1:6379?addr=10.0.0.2:6379) is taken for
// the seeds of a cluster at once, any of which may be down. Each command is
// then sent to the node serving its keys, and the one-slot rules of
// kv.Client apply: calls that break them fail with kv.ErrCrossSlot before
// anything is sent. Hosts known not to be clusters (Upstash) are not
// asked.
package native

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentapi-mt/agentapi/kv"
)

// Options configure a Client.
type Options struct {
	// URL is redis://[user:password@]host:port[/db] or rediss://... for TLS.
	URL string
	// Password is used when URL carries none (REDIS_PASSWORD).
	Password string
	// PoolSize bounds the connections used for blocking commands and
	// dedicated (MULTI/EXEC) work. Ordinary commands are pipelined over a
	// small fixed set of shared connections and do not take from this pool.
	PoolSize int
	// ConnectTimeout bounds dialing and each command's write to the socket.
	ConnectTimeout time.Duration
	// TLSConfig overrides the TLS settings for rediss:// (e.g. a private CA).
	TLSConfig *tls.Config
	// DisableCache turns client-side caching off even where the server has it.
	DisableCache bool
}

// Client is a kv.Client over rueidis.
type Client struct {
	rc      rueidis.Client
	closed  atomic.Bool // a cluster client's Close closes its connections in the background
	caching bool
	cluster bool
	addr    string
	tls     bool
	stats   *kv.TransportCounters
}

var _ kv.Client = (*Client)(nil)
var _ kv.CachingClient = (*Client)(nil)
var _ kv.StatsReporter = (*Client)(nil)

// Dial connects to the server in o.URL and checks it answers. It fails with
// an error matching kv.ErrUnavailable when the server cannot be reached and
// kv.ErrUnauthorized when it rejects the credentials.
func Dial(ctx context.Context, o Options) (*Client, error) {
	opt, err := clientOption(o)
	if err != nil {
		return nil, err
	}
	caching := !opt.DisableCache
	stats := new(kv.TransportCounters)
	stats.TrackConns()
	opt.DialCtxFn = countingDial(stats)
	// Several addresses (addr= in the URL) are seeds of a cluster, any of
	// which may be down: go straight to a cluster client.
	seeds := len(opt.InitAddress) > 1
	if seeds {
		opt.ForceSingleClient = false
	}
	rc, err := newClient(ctx, opt)
	if err != nil && caching && refusedTracking(err) {
		// The server speaks RESP but not client tracking (Upstash, some
		// proxies): go on without the local cache.
		opt.DisableCache, caching = true, false
		rc, err = newClient(ctx, opt)
	}
	if err != nil {
		return nil, classify("kv.native.dial", ctx, err)
	}
	cluster := seeds
	if !seeds && clusterLikely(opt.InitAddress) {
		if cluster, err = clusterEnabled(ctx, rc); err != nil {
			rc.Close()
			return nil, err
		}
	}
	if cluster && !seeds {
		// Start again as a cluster client: it reads the slot map from
		// the server and keeps a connection to every node.
		rc.Close()
		opt.ForceSingleClient = false
		if rc, err = newClient(ctx, opt); err != nil {
			return nil, classify("kv.native.dial", ctx, err)
		}
	}
	if cluster && rc.Mode() != rueidis.ClientModeCluster {
		rc.Close()
		return nil, kv.Unavailable("kv.native.dial", errors.New("the server reports cluster_enabled:1 but serves no cluster slot map"))
	}
	return &Client{rc: rc, caching: caching, cluster: cluster, addr: opt.InitAddress[0], tls: opt.TLSConfig != nil, stats: stats}, nil
}

// clusterLikely reports whether the servers may be Redis Cluster nodes
// worth asking: Upstash is not one.
func clusterLikely(addrs []string) bool {
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		if !trackingLikely(host) {
			return false
		}
	}
	return true
}

// clusterEnabled asks a single-node client's server whether it is a Redis
// Cluster node. A server that refuses INFO (an ACL, a proxy) is taken for
// a single server, as before this question was asked.
func clusterEnabled(ctx context.Context, rc rueidis.Client) (bool, error) {
	r := rc.Do(ctx, rc.B().Info().Section("cluster").Build())
	if err := r.NonRedisError(); err != nil {
		return false, classify("kv.native.dial", ctx, err)
	}
	info, err := r.ToString()
	if err != nil {
		return false, nil
	}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "cluster_enabled" {
			return v == "1", nil
		}
	}
	return false, nil
}

// countingDial dials as rueidis does by default (TCP, TLS when cfg is
// set) and counts the connections in st.
func countingDial(st *kv.TransportCounters) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		if cfg != nil {
			return st.Dialed((&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", dst))
		}
		return st.Dialed(d.DialContext(ctx, "tcp", dst))
	}
}

func newClient(ctx context.Context, opt rueidis.ClientOption) (rueidis.Client, error) {
	type result struct {
		rc  rueidis.Client
		err error
	}
	// rueidis dials inside NewClient without a context; honour ctx anyway.
	ch := make(chan result, 1)
	go func() {
		rc, err := rueidis.NewClient(opt)
		ch <- result{rc, err}
	}()
	select {
	case r := <-ch:
		return r.rc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.rc != nil {
				r.rc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func clientOption(o Options) (rueidis.ClientOption, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return rueidis.ClientOption{}, kv.Invalid("kv.native", fmt.Errorf("redis URL: %w", err))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return rueidis.ClientOption{}, kv.Invalid("kv.native", fmt.Errorf("redis URL scheme %q: want redis:// or rediss://", u.Scheme))
	}
	opt, err := rueidis.ParseURL(o.URL)
	if err != nil {
		return rueidis.ClientOption{}, kv.Invalid("kv.native", fmt.Errorf("redis URL: %w", err))
	}
	if opt.Password == "" && o.Password != "" {
		opt.Password = o.Password
	}
	if u.Scheme == "rediss" {
		if o.TLSConfig != nil {
			opt.TLSConfig = o.TLSConfig.Clone()
		}
		if opt.TLSConfig.ServerName == "" {
			opt.TLSConfig.ServerName = u.Hostname()
		}
	}
	if o.ConnectTimeout > 0 {
		opt.Dialer.Timeout = o.ConnectTimeout
		opt.ConnWriteTimeout = o.ConnectTimeout
	}
	if o.PoolSize > 0 {
		opt.BlockingPoolSize = o.PoolSize
	}
	// One server, unless Dial finds a cluster: Dial decides itself, as
	// rueidis's own guess costs a CLUSTER command that Upstash may not
	// answer well.
	opt.ForceSingleClient = true
	// Wait up to 20µs for more commands before flushing the pipeline: under
	// concurrency this batches many callers into one write (bench/: about
	// +40% at 64 goroutines) for at most 20µs more latency per call.
	opt.MaxFlushDelay = 20 * time.Microsecond
	// Report an unreachable server at once, as kv.Client promises and the
	// Switch's breaker relies on. rueidis would otherwise retry cacheable
	// reads (DoCache) until ctx's deadline, or forever without one.
	opt.DisableRetry = true
	opt.DisableCache = o.DisableCache || !trackingLikely(u.Hostname())
	opt.ClientName = "agentapi"
	return opt, nil
}

// trackingLikely reports whether a host is expected to support CLIENT
// TRACKING. Upstash documents that it does not.
func trackingLikely(host string) bool {
	return !strings.HasSuffix(strings.ToLower(host), ".upstash.io")
}

func refusedTracking(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "tracking") || strings.Contains(msg, "unknown command") || strings.Contains(msg, "hello")
}

// Addr is the server address, for status reports.
func (c *Client) Addr() string { return c.addr }

// TLS reports whether the connection is encrypted.
func (c *Client) TLS() bool { return c.tls }

// Caching reports whether client-side caching is on.
func (c *Client) Caching() bool { return c.caching }

// Cluster reports whether the server is a Redis Cluster, whose nodes this
// client all talks to.
func (c *Client) Cluster() bool { return c.cluster }

// TransportStats implements kv.StatsReporter: the connections rueidis has
// open to the server (pipelined and dedicated ones alike), the dials, and
// how DoCached reads were served.
func (c *Client) TransportStats() kv.TransportStats { return c.stats.Snapshot() }

// Do implements kv.Client.
func (c *Client) Do(ctx context.Context, args ...string) (kv.Value, error) {
	if err := c.checkOpen("kv.native.do"); err != nil {
		return kv.Value{}, err
	}
	if c.cluster && everyNode(args) {
		if err := checkArgs(args); err != nil {
			return kv.Value{}, err
		}
		return c.doEveryNode(ctx, args)
	}
	cmd, err := c.build("kv.native.do", args)
	if err != nil {
		return kv.Value{}, err
	}
	v, err := convert("kv.native.do", ctx, c.rc.Do(ctx, cmd))
	return flattenPairs(args, v), err
}

// DoCached implements kv.CachingClient. args[1] must be the command's only
// key (GET, HGET, HGETALL, ...). Without caching it is a plain Do.
func (c *Client) DoCached(ctx context.Context, ttl time.Duration, args ...string) (kv.Value, error) {
	if !c.caching || len(args) < 2 {
		return c.Do(ctx, args...)
	}
	if err := c.checkOpen("kv.native.docached"); err != nil {
		return kv.Value{}, err
	}
	if err := checkArgs(args); err != nil {
		return kv.Value{}, err
	}
	cmd := c.rc.B().Arbitrary(args[0]).Keys(args[1]).Args(args[2:]...).Build()
	r := c.rc.DoCache(ctx, rueidis.Cacheable(cmd), ttl)
	if r.NonRedisError() == nil {
		c.stats.CacheRead(r.IsCacheHit())
	}
	v, err := convert("kv.native.docached", ctx, r)
	return flattenPairs(args, v), err
}

// Pipeline implements kv.Client.
func (c *Client) Pipeline(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	if err := c.checkOpen("kv.native.pipeline"); err != nil {
		return nil, err
	}
	built, err := c.buildAll("kv.native.pipeline", cmds)
	if err != nil || len(built) == 0 {
		return nil, err
	}
	out, err := results("kv.native.pipeline", ctx, c.rc.DoMulti(ctx, built...))
	for i := range out {
		out[i].Value = flattenPairs(cmds[i], out[i].Value)
	}
	return out, err
}

// MultiExec implements kv.Client.
func (c *Client) MultiExec(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	if err := c.checkOpen("kv.native.multiexec"); err != nil {
		return nil, err
	}
	built, err := c.buildAll("kv.native.multiexec", cmds)
	if err != nil || len(built) == 0 {
		return nil, err
	}
	if c.cluster {
		if err := oneSlot("kv.native.multiexec", cmds); err != nil {
			return nil, err
		}
	}
	all := make(rueidis.Commands, 0, len(built)+2)
	all = append(all, c.rc.B().Multi().Build())
	all = append(all, built...)
	all = append(all, c.rc.B().Exec().Build())
	var out []kv.Result
	// A dedicated connection keeps other callers' commands out of the
	// transaction; rueidis would otherwise pipeline them in.
	err = c.rc.Dedicated(func(d rueidis.DedicatedClient) error {
		rs := d.DoMulti(ctx, all...)
		execRes := rs[len(rs)-1]
		for _, r := range rs[:len(rs)-1] {
			if err := r.NonRedisError(); err != nil {
				return classify("kv.native.multiexec", ctx, err)
			}
		}
		if err := execRes.Error(); err != nil {
			// EXECABORT: a command was refused while queueing; report the
			// first refusal, which says why.
			for _, r := range rs[1 : len(rs)-1] {
				if se := replyError(r); se != nil {
					return kv.ReplyError("kv.native.multiexec", se)
				}
			}
			return classify("kv.native.multiexec", ctx, err)
		}
		msg, err := execRes.ToMessage()
		if err != nil {
			return classify("kv.native.multiexec", ctx, err)
		}
		if msg.IsNil() {
			return &kv.ServerError{Msg: "EXECABORT transaction discarded"}
		}
		arr, err := msg.ToArray()
		if err != nil {
			return classify("kv.native.multiexec", ctx, err)
		}
		if len(arr) != len(cmds) {
			return kv.Unavailable("kv.native.multiexec", fmt.Errorf("EXEC answered %d results for %d commands", len(arr), len(cmds)))
		}
		out = make([]kv.Result, len(arr))
		for i := range arr {
			if se := messageError(&arr[i]); se != nil {
				out[i].Err = kv.ReplyError("kv.native.multiexec", se)
				continue
			}
			out[i].Value = flattenPairs(cmds[i], value(&arr[i]))
		}
		return nil
	})
	return out, err
}

// Eval implements kv.Client.
func (c *Client) Eval(ctx context.Context, s *kv.Script, keys []string, args ...string) (kv.Value, error) {
	return kv.EvalWith(ctx, c.evalDo, s, keys, args...)
}

// evalDo runs EVAL/EVALSHA with the keys marked as keys (build), so that
// on a cluster the script runs on the node serving them.
func (c *Client) evalDo(ctx context.Context, cmd ...string) (kv.Value, error) {
	if err := c.checkOpen("kv.native.eval"); err != nil {
		return kv.Value{}, err
	}
	b, err := c.build("kv.native.eval", cmd)
	if err != nil {
		return kv.Value{}, err
	}
	return convert("kv.native.eval", ctx, c.rc.Do(ctx, b))
}

// Close implements kv.Client.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.rc.Close()
	return nil
}

// checkOpen fails calls after Close at once. (rueidis's cluster client
// closes its connections in the background, and could still send a call
// made just after Close.)
func (c *Client) checkOpen(op string) error {
	if c.closed.Load() {
		return kv.Unavailable(op, kv.ErrClosed)
	}
	return nil
}

func checkArgs(args []string) error {
	if len(args) == 0 || args[0] == "" {
		return kv.Invalid("kv.native", errors.New("empty command"))
	}
	if strings.HasSuffix(strings.ToUpper(args[0]), "SUBSCRIBE") {
		return kv.Invalid("kv.native", fmt.Errorf("%s is not supported through kv.Client", args[0]))
	}
	return nil
}

// build makes a rueidis command of args. On a cluster the keys are marked
// as keys, which routes the command to their slot's node, after checking
// that they share one slot (rueidis would panic otherwise).
func (c *Client) build(op string, args []string) (rueidis.Completed, error) {
	if err := checkArgs(args); err != nil {
		return rueidis.Completed{}, err
	}
	if !c.cluster {
		return c.rc.B().Arbitrary(args...).Build(), nil
	}
	pos := commandKeys(args)
	for _, i := range pos[min(1, len(pos)):] {
		if kv.Slot(args[i]) != kv.Slot(args[pos[0]]) {
			return rueidis.Completed{}, kv.CrossSlot(op, strings.ToUpper(args[0]), args[pos[0]], args[i])
		}
	}
	b := c.rc.B().Arbitrary(args[0])
	next := 1
	for _, i := range pos {
		b = b.Args(args[next:i]...).Keys(args[i])
		next = i + 1
	}
	return b.Args(args[next:]...).Build(), nil
}

func (c *Client) buildAll(op string, cmds [][]string) (rueidis.Commands, error) {
	out := make(rueidis.Commands, 0, len(cmds))
	for _, args := range cmds {
		cmd, err := c.build(op, args)
		if err != nil {
			return nil, err
		}
		out = append(out, cmd)
	}
	return out, nil
}

// oneSlot checks that the keys of all of cmds share one slot, as a
// transaction on a cluster needs.
func oneSlot(op string, cmds [][]string) error {
	first := ""
	for _, args := range cmds {
		for _, i := range commandKeys(args) {
			switch {
			case first == "":
				first = args[i]
			case kv.Slot(args[i]) != kv.Slot(first):
				return kv.CrossSlot(op, "MULTI", first, args[i])
			}
		}
	}
	return nil
}

// everyNode reports whether args is a command that a cluster client sends
// to every node: the script cache is per node, and EVALSHA runs wherever
// its keys are.
func everyNode(args []string) bool {
	if len(args) < 2 || !strings.EqualFold(args[0], "SCRIPT") {
		return false
	}
	switch strings.ToUpper(args[1]) {
	case "LOAD", "FLUSH", "EXISTS":
		return true
	}
	return false
}

// doEveryNode runs args on every node of the cluster. The reply is the
// first node's, except for SCRIPT EXISTS, where a script counts as known
// only when every node knows it. The first failure is the error.
func (c *Client) doEveryNode(ctx context.Context, args []string) (kv.Value, error) {
	const op = "kv.native.do"
	nodes := c.rc.Nodes()
	addrs := make([]string, 0, len(nodes))
	for a := range nodes {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	var out kv.Value
	for i, a := range addrs {
		n := nodes[a]
		v, err := convert(op, ctx, n.Do(ctx, n.B().Arbitrary(args...).Build()))
		if err != nil {
			return kv.Value{}, err
		}
		if i == 0 {
			out = v
			continue
		}
		if strings.EqualFold(args[1], "EXISTS") {
			out = andExists(out, v)
		}
	}
	return out, nil
}

// andExists combines two SCRIPT EXISTS replies: 1 where both say 1.
func andExists(a, b kv.Value) kv.Value {
	x, err1 := a.Array()
	y, err2 := b.Array()
	if err1 != nil || err2 != nil || len(x) != len(y) {
		return a
	}
	out := make([]kv.Value, len(x))
	for i := range x {
		p, _ := x[i].Int()
		q, _ := y[i].Int()
		out[i] = kv.IntValue(p & q)
	}
	return kv.ArrayValue(out...)
}

func convert(op string, ctx context.Context, r rueidis.RedisResult) (kv.Value, error) {
	msg, err := r.ToMessage()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			return kv.NilValue(), nil
		}
		if se := replyError(r); se != nil {
			return kv.Value{}, kv.ReplyError(op, se)
		}
		return kv.Value{}, classify(op, ctx, err)
	}
	return value(&msg), nil
}

func results(op string, ctx context.Context, rs []rueidis.RedisResult) ([]kv.Result, error) {
	out := make([]kv.Result, len(rs))
	for i, r := range rs {
		if err := r.NonRedisError(); err != nil {
			return nil, classify(op, ctx, err)
		}
		out[i].Value, out[i].Err = convert(op, ctx, r)
	}
	return out, nil
}

// value converts a reply, normalising RESP3 types as kv.Value documents.
func value(m *rueidis.RedisMessage) kv.Value {
	switch {
	case m.IsNil():
		return kv.NilValue()
	case m.IsInt64():
		n, _ := m.AsInt64()
		return kv.IntValue(n)
	case m.IsBool():
		if b, _ := m.AsBool(); b {
			return kv.IntValue(1)
		}
		return kv.IntValue(0)
	case m.IsMap():
		// RESP3 map: flatten to key, value, ... with keys sorted, since
		// rueidis hands maps over as Go maps. Order in a map reply carries
		// no meaning in Redis.
		mp, err := m.ToMap()
		if err != nil {
			return kv.StringValue(m.String())
		}
		keys := make([]string, 0, len(mp))
		for k := range mp {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		vs := make([]kv.Value, 0, 2*len(keys))
		for _, k := range keys {
			e := mp[k]
			vs = append(vs, kv.StringValue(k), value(&e))
		}
		return kv.ArrayValue(vs...)
	case m.IsArray():
		arr, _ := m.ToArray()
		vs := make([]kv.Value, len(arr))
		for i := range arr {
			vs[i] = value(&arr[i])
		}
		return kv.ArrayValue(vs...)
	}
	if se := messageError(m); se != nil {
		// An error nested in an array (a script's pcall result).
		return kv.StringValue(se.Msg)
	}
	s, err := m.ToString()
	if err == nil && !m.IsString() && len(s) >= 4 && s[3] == ':' {
		// A RESP3 verbatim string (INFO, CLIENT INFO...) starts with its
		// format, "txt:"; RESP2 and the REST API send the text alone.
		// (Doubles and big numbers, the other non-string scalars left
		// here, never have a ':'.)
		return kv.StringValue(s[4:])
	}
	if err != nil {
		// doubles, big numbers, verbatim strings: their text form
		if f, ferr := m.ToFloat64(); ferr == nil {
			return kv.StringValue(strconv.FormatFloat(f, 'f', -1, 64))
		}
		return kv.StringValue(m.String())
	}
	return kv.StringValue(s)
}

// flattenPairs undoes a RESP3 reply shape that RESP2, and so the REST
// transport, does not have: sorted-set and hash commands asked for
// WITHSCORES or WITHVALUES, and ZPOPMIN/ZPOPMAX with a count, answer a list
// of [member, score] pairs instead of one flat member, score, ... array.
func flattenPairs(args []string, v kv.Value) kv.Value {
	if v.Type() != kv.Array || !pairsReply(args) {
		return v
	}
	arr, _ := v.Array()
	flat := make([]kv.Value, 0, 2*len(arr))
	for _, e := range arr {
		p, err := e.Array()
		if err != nil || len(p) != 2 {
			return v // already flat (ZPOPMIN without a count)
		}
		flat = append(flat, p...)
	}
	return kv.ArrayValue(flat...)
}

func pairsReply(args []string) bool {
	if len(args) < 3 {
		return false
	}
	switch strings.ToUpper(args[0]) {
	case "ZPOPMIN", "ZPOPMAX":
		return true
	case "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE",
		"ZUNION", "ZINTER", "ZDIFF", "ZRANDMEMBER", "HRANDFIELD":
		for _, a := range args[2:] {
			if strings.EqualFold(a, "WITHSCORES") || strings.EqualFold(a, "WITHVALUES") {
				return true
			}
		}
	}
	return false
}

// replyError returns r's error reply as a *kv.ServerError with the reply's
// text exactly as Redis sent it, or nil when r is not an error reply.
func replyError(r rueidis.RedisResult) *kv.ServerError {
	if r.NonRedisError() != nil {
		return nil
	}
	msg, _ := r.ToMessage()
	return messageError(&msg)
}

// messageError is replyError for one message. rueidis's error values drop
// a leading "ERR ", which cannot be put back reliably ("ERR XX and NX
// options..." would read as code XX); the message itself keeps the full
// text, so both transports report identical text.
func messageError(m *rueidis.RedisMessage) *kv.ServerError {
	if err := m.Error(); err == nil || m.IsNil() {
		return nil
	}
	s, _ := m.ToString() // for an error reply: its full text
	return &kv.ServerError{Msg: s}
}

// serverError turns a rueidis reply error into a *kv.ServerError, putting
// back the "ERR " code that rueidis strips. It returns nil for errors that
// are not Redis replies. Prefer replyError where the reply is at hand: it
// keeps the text exact.
func serverError(err error) *kv.ServerError {
	re, ok := rueidis.IsRedisErr(err)
	if !ok || re.IsNil() {
		return nil
	}
	msg := re.Error()
	if code, _, _ := strings.Cut(msg, " "); !isCode(code) {
		msg = "ERR " + msg
	}
	return &kv.ServerError{Msg: msg}
}

func isCode(w string) bool {
	if w == "" {
		return false
	}
	for _, r := range w {
		if (r < 'A' || r > 'Z') && r != '_' {
			return false
		}
	}
	return true
}

// classify maps a transport-level error to the kv error kinds.
func classify(op string, ctx context.Context, err error) error {
	if se := serverError(err); se != nil {
		if p := se.Prefix(); p == "NOAUTH" || p == "WRONGPASS" {
			return kv.Unauthorized(op, se)
		}
		return kv.ReplyError(op, se)
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%s: %w", op, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, rueidis.ErrClosing) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
		return kv.Unavailable(op, err)
	}
	if strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "NOAUTH") {
		return kv.Unauthorized(op, err)
	}
	// EOF, reset, TLS handshake failures and anything else below the reply
	// level all mean the server cannot be used right now.
	return kv.Unavailable(op, err)
}
