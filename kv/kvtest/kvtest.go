// Package kvtest is the conformance suite for kv.Client transports.
//
// Every transport runs the same Run suite so that feature stores can rely on
// the contract written in package kv's doc comments and not on whichever
// transport happens to carry their commands: identical reply shapes,
// identical server error text, nil for missing keys, KindInvalid for
// arguments a transport cannot carry, context cancellation reported as such.
//
// The suite namespaces every key it touches with a random prefix and deletes
// them when a subtest ends, so it may run against a shared Redis server. It
// does run SCRIPT FLUSH once (to exercise the EVALSHA to EVAL fallback),
// which drops other users' cached scripts; their next EVALSHA reloads them.
//
// The prefix is a hash tag, {<random>}, so that all the keys of one subtest
// share a Redis Cluster slot and every case runs unchanged on a cluster,
// where commands, transactions and scripts over several keys need them in
// one slot (see kv.Client); subtests still land on different nodes. Run
// with the Cluster option adds the cases of those cluster rules.
package kvtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// callTimeout bounds each subtest's calls, so that a hanging transport fails
// the test instead of the whole binary.
const callTimeout = 20 * time.Second

// Run runs the conformance suite. newClient must return a new, working
// client for each call (failing t itself when it cannot); the suite closes
// every client it gets when the subtest that asked for it ends.
func Run(t *testing.T, newClient func(t *testing.T) kv.Client, opts ...Option) {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	all := cases
	if o.cluster {
		all = append(append([]testCase(nil), cases...), clusterCases...)
	}
	for _, tc := range all {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, newClient)
			e.cluster = o.cluster
			tc.fn(e)
		})
	}
}

// Option changes what Run expects of the transport.
type Option func(*options)

type options struct {
	cluster bool
}

// Cluster says that the clients talk to a Redis Cluster: Run adds cases
// for kv.Client's cluster rules (routing by slot, pipelines across
// slots, ErrCrossSlot, SCRIPT on every node), and the one check that
// differs on a cluster (SCRIPT EXISTS of a script that EVAL loaded on one
// node only) is left out.
func Cluster() Option { return func(o *options) { o.cluster = true } }

type testCase struct {
	name string
	fn   func(e *env)
}

var cases = []testCase{
	{"Ping", testPing},
	{"SetGet", testSetGet},
	{"GetMissing", testGetMissing},
	{"Incr", testIncr},
	{"DelCount", testDelCount},
	{"ExpireTTL", testExpireTTL},
	{"MGetWithMissing", testMGet},
	{"Hash", testHash},
	{"List", testList},
	{"Set", testSet},
	{"SortedSetScores", testSortedSet},
	{"Info", testInfo},
	{"TextValues", testTextValues},
	{"BinaryValue", testBinaryValue},
	{"ServerErrors", testServerErrors},
	{"Pipeline", testPipeline},
	{"PipelineLong", testPipelineLong},
	{"PipelineEmpty", testPipelineEmpty},
	{"MultiExec", testMultiExec},
	{"MultiExecRuntimeError", testMultiExecRuntimeError},
	{"MultiExecQueueError", testMultiExecQueueError},
	{"MultiExecAtomic", testMultiExecAtomic},
	{"MultiExecEmpty", testMultiExecEmpty},
	{"EvalMixedTypes", testEvalMixed},
	{"EvalNil", testEvalNil},
	{"EvalErrors", testEvalErrors},
	{"EvalNestedError", testEvalNestedError},
	{"EvalKeysArgs", testEvalKeysArgs},
	{"EvalNoScriptFallback", testEvalNoScript},
	{"DoCached", testDoCached},
	{"ConcurrentIncr", testConcurrentIncr},
	{"CancelledContext", testCancelledContext},
	{"EmptyCommand", testEmptyCommand},
	{"CallsAfterClose", testCallsAfterClose},
}

// env is one subtest's client, context and key namespace.
type env struct {
	t         *testing.T
	ctx       context.Context
	c         kv.Client
	prefix    string // "kvtest:{<ns>}:"
	ns        string // random, unique to the subtest
	newClient func(t *testing.T) kv.Client
	cluster   bool // the transport is a cluster: see Cluster

	mu   sync.Mutex
	keys []string
}

func newEnv(t *testing.T, newClient func(t *testing.T) kv.Client) *env {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	ns := randomHex(8)
	e := &env{t: t, ctx: ctx, prefix: "kvtest:{" + ns + "}:", ns: ns, newClient: newClient}
	e.c = e.open()
	t.Cleanup(e.deleteKeys) // runs before the client's Close (cleanups are LIFO)
	return e
}

// open returns a new client that is closed when the subtest ends.
func (e *env) open() kv.Client {
	e.t.Helper()
	c := e.newClient(e.t)
	if c == nil {
		e.t.Fatal("kvtest: newClient returned nil")
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// key returns a namespaced key and remembers it for deletion.
func (e *env) key(name string) string {
	k := e.prefix + name
	e.remember(k)
	return k
}

// remember notes a key for deletion when the subtest ends.
func (e *env) remember(k string) {
	e.mu.Lock()
	e.keys = append(e.keys, k)
	e.mu.Unlock()
}

func (e *env) deleteKeys() {
	e.mu.Lock()
	keys := e.keys
	e.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One DEL per key: on a cluster the keys of the cluster cases are in
	// different slots. Best effort: the client may be closed already
	// (CallsAfterClose).
	cmds := make([][]string, len(keys))
	for i, k := range keys {
		cmds[i] = []string{"DEL", k}
	}
	if _, err := e.c.Pipeline(ctx, cmds...); err != nil {
		// A key the transport refuses (BinaryValue over REST) fails the
		// whole pipeline: delete the others one by one.
		for _, cmd := range cmds {
			_, _ = e.c.Do(ctx, cmd...)
		}
	}
}

// do runs a command that must succeed.
func (e *env) do(args ...string) kv.Value {
	e.t.Helper()
	v, err := e.c.Do(e.ctx, args...)
	if err != nil {
		e.t.Fatalf("%s: unexpected error: %v", strings.Join(args, " "), err)
	}
	return v
}

// want checks that v equals w.
func (e *env) want(what string, v, w kv.Value) {
	e.t.Helper()
	if !v.Equal(w) {
		e.t.Errorf("%s = %v (%s), want %v (%s)", what, v, v.Type(), w, w.Type())
	}
}

func (e *env) wantText(what string, v kv.Value, want string) {
	e.t.Helper()
	e.want(what, v, kv.StringValue(want))
}

func (e *env) wantInt(what string, v kv.Value, want int64) {
	e.t.Helper()
	e.want(what, v, kv.IntValue(want))
}

// serverError checks that err is a *kv.ServerError with the given code and
// returns it. A ServerError must not look like an outage: the Switch would
// otherwise fail over on a refused command.
func (e *env) serverError(what string, err error, code string) *kv.ServerError {
	e.t.Helper()
	if err == nil {
		e.t.Fatalf("%s: no error, want a *kv.ServerError with code %s", what, code)
	}
	var se *kv.ServerError
	if !errors.As(err, &se) {
		e.t.Fatalf("%s: error %v (%T) is not a *kv.ServerError", what, err, err)
	}
	if !kv.IsServerError(err) {
		e.t.Errorf("%s: kv.IsServerError(%v) = false", what, err)
	}
	if got := se.Prefix(); got != code {
		e.t.Errorf("%s: Prefix() = %q, want %q (message %q)", what, got, code, se.Msg)
	}
	if !strings.HasPrefix(se.Msg, code+" ") && se.Msg != code {
		e.t.Errorf("%s: message %q does not start with the code word %q", what, se.Msg, code)
	}
	if errors.Is(err, kv.ErrUnavailable) || errors.Is(err, kv.ErrUnauthorized) {
		e.t.Errorf("%s: server error %v matches ErrUnavailable/ErrUnauthorized", what, err)
	}
	return se
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------- basics

func testPing(e *env) {
	e.wantText("PING", e.do("PING"), "PONG")
	e.wantText("PING msg", e.do("PING", "hello"), "hello")
}

func testSetGet(e *env) {
	k := e.key("k")
	v := e.do("SET", k, "value-1")
	e.wantText("SET reply", v, "OK")
	if s, err := v.Text(); err != nil || s != "OK" {
		e.t.Errorf("SET reply Text() = %q, %v", s, err)
	}
	e.wantText("GET", e.do("GET", k), "value-1")
	e.wantText("SET overwrite", e.do("SET", k, "value-2"), "OK")
	e.wantText("GET after overwrite", e.do("GET", k), "value-2")
	// SET NX on an existing key answers nil, not an error.
	if v := e.do("SET", k, "x", "NX"); !v.IsNil() {
		e.t.Errorf("SET NX on existing key = %v, want nil", v)
	}
	e.wantText("SET ... GET returns the old value", e.do("SET", k, "value-3", "GET"), "value-2")
	e.wantInt("EXISTS", e.do("EXISTS", k), 1)
	e.wantText("TYPE", e.do("TYPE", k), "string")
}

func testGetMissing(e *env) {
	v := e.do("GET", e.key("missing"))
	if !v.IsNil() || v.Type() != kv.Nil {
		e.t.Fatalf("GET missing = %v (%s), want nil", v, v.Type())
	}
	if _, err := v.Text(); !errors.Is(err, kv.ErrNil) {
		e.t.Errorf("nil Text() error = %v, want ErrNil", err)
	}
	if _, err := v.Int(); !errors.Is(err, kv.ErrNil) {
		e.t.Errorf("nil Int() error = %v, want ErrNil", err)
	}
	if _, err := v.Text(); agentapi.KindOf(err) != agentapi.KindNotFound {
		e.t.Errorf("KindOf(nil Text() error) = %v, want %v", agentapi.KindOf(err), agentapi.KindNotFound)
	}
	if v := e.do("HGET", e.key("missing-hash"), "f"); !v.IsNil() {
		e.t.Errorf("HGET missing = %v, want nil", v)
	}
}

func testIncr(e *env) {
	k := e.key("counter")
	e.wantInt("INCR new key", e.do("INCR", k), 1)
	e.wantInt("INCR", e.do("INCR", k), 2)
	e.wantInt("INCRBY", e.do("INCRBY", k, "40"), 42)
	e.wantInt("INCRBY negative", e.do("INCRBY", k, "-50"), -8)
	e.wantInt("DECR", e.do("DECR", k), -9)
	v := e.do("GET", k)
	e.wantText("GET counter", v, "-9")
	if n, err := v.Int(); err != nil || n != -9 {
		e.t.Errorf("GET counter Int() = %d, %v; want -9", n, err)
	}
	big := e.key("big")
	e.do("SET", big, "9223372036854775806")
	e.wantInt("INCR near max int64", e.do("INCR", big), 9223372036854775807)
}

func testDelCount(e *env) {
	a, b, missing := e.key("a"), e.key("b"), e.key("missing")
	e.do("SET", a, "1")
	e.do("SET", b, "2")
	e.wantInt("DEL a b missing", e.do("DEL", a, b, missing), 2)
	e.wantInt("EXISTS a b", e.do("EXISTS", a, b), 0)
	e.wantInt("DEL again", e.do("DEL", a), 0)
}

func testExpireTTL(e *env) {
	k := e.key("ttl")
	e.do("SET", k, "v")
	e.wantInt("PTTL without expiry", e.do("PTTL", k), -1)
	e.wantInt("PTTL missing", e.do("PTTL", e.key("missing")), -2)
	e.wantInt("EXPIRE", e.do("EXPIRE", k, "100"), 1)
	e.wantInt("EXPIRE missing", e.do("EXPIRE", e.key("missing2"), "100"), 0)
	pttlBetween(e, k, 1, 100_000)

	px := e.key("px")
	e.wantText("SET PX", e.do("SET", px, "v", "PX", "5000"), "OK")
	pttlBetween(e, px, 1, 5000)
	e.wantText("GET keyed with PX", e.do("GET", px), "v")

	e.wantInt("PERSIST", e.do("PERSIST", px), 1)
	e.wantInt("PTTL after PERSIST", e.do("PTTL", px), -1)

	// An expiry in the past deletes the key at once: no waiting needed.
	e.wantInt("PEXPIRE 0", e.do("PEXPIRE", k, "0"), 1)
	if v := e.do("GET", k); !v.IsNil() {
		e.t.Errorf("GET after PEXPIRE 0 = %v, want nil", v)
	}
}

func pttlBetween(e *env, k string, lo, hi int64) {
	e.t.Helper()
	n, err := e.do("PTTL", k).Int()
	if err != nil || n < lo || n > hi {
		e.t.Errorf("PTTL %s = %d, %v; want in [%d, %d]", k, n, err, lo, hi)
	}
}

func testMGet(e *env) {
	a, missing, b := e.key("a"), e.key("missing"), e.key("b")
	e.do("SET", a, "va")
	e.do("SET", b, "vb")
	v := e.do("MGET", a, missing, b)
	e.want("MGET", v, kv.ArrayValue(kv.StringValue("va"), kv.NilValue(), kv.StringValue("vb")))
	ss, err := v.Strings()
	if err != nil || len(ss) != 3 || ss[0] != "va" || ss[1] != "" || ss[2] != "vb" {
		e.t.Errorf("MGET Strings() = %q, %v", ss, err)
	}
}

func testHash(e *env) {
	h := e.key("hash")
	e.wantInt("HSET", e.do("HSET", h, "f1", "v1", "f2", "v2", "empty", "", "ünï", "✓"), 4)
	e.wantText("HGET", e.do("HGET", h, "f2"), "v2")
	if v := e.do("HGET", h, "nope"); !v.IsNil() {
		e.t.Errorf("HGET missing field = %v, want nil", v)
	}
	e.wantInt("HINCRBY", e.do("HINCRBY", h, "n", "5"), 5)

	got := e.do("HGETALL", h)
	m := pairs(e, "HGETALL", got)
	want := map[string]string{"f1": "v1", "f2": "v2", "empty": "", "ünï": "✓", "n": "5"}
	if len(m) != len(want) {
		e.t.Errorf("HGETALL = %v, want %v", got, want)
	}
	for k, v := range want {
		if m[k] != v {
			e.t.Errorf("HGETALL[%q] = %q, want %q (reply %v)", k, m[k], v, got)
		}
	}

	empty := e.do("HGETALL", e.key("missing"))
	if arr, err := empty.Array(); err != nil || len(arr) != 0 {
		e.t.Errorf("HGETALL missing = %v (%s), want an empty array", empty, empty.Type())
	}
}

// pairs reads a flat key/value array into a map; order is not significant.
func pairs(e *env, what string, v kv.Value) map[string]string {
	e.t.Helper()
	arr, err := v.Array()
	if err != nil {
		e.t.Fatalf("%s = %v: %v", what, v, err)
	}
	if len(arr)%2 != 0 {
		e.t.Fatalf("%s = %v: odd number of elements", what, v)
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		k, err1 := arr[i].Text()
		val, err2 := arr[i+1].Text()
		if err1 != nil || err2 != nil {
			e.t.Fatalf("%s = %v: element %d is not text", what, v, i)
		}
		if _, dup := m[k]; dup {
			e.t.Errorf("%s = %v: key %q twice", what, v, k)
		}
		m[k] = val
	}
	return m
}

func testList(e *env) {
	l := e.key("list")
	e.wantInt("LPUSH", e.do("LPUSH", l, "a", "b", "c"), 3)
	e.wantInt("RPUSH", e.do("RPUSH", l, "z"), 4)
	e.want("LRANGE", e.do("LRANGE", l, "0", "-1"), kv.ArrayValue(
		kv.StringValue("c"), kv.StringValue("b"), kv.StringValue("a"), kv.StringValue("z")))
	e.wantInt("LLEN", e.do("LLEN", l), 4)
	e.wantText("LPOP", e.do("LPOP", l), "c")
	e.want("LRANGE missing", e.do("LRANGE", e.key("missing"), "0", "-1"), kv.ArrayValue())
	if v := e.do("LPOP", e.key("missing")); !v.IsNil() {
		e.t.Errorf("LPOP missing = %v, want nil", v)
	}
}

func testSet(e *env) {
	k := e.key("set")
	e.wantInt("SADD", e.do("SADD", k, "a", "b", "c", "a"), 3)
	e.wantInt("SISMEMBER", e.do("SISMEMBER", k, "b"), 1)
	e.wantInt("SISMEMBER missing", e.do("SISMEMBER", k, "z"), 0)
	ss, err := e.do("SMEMBERS", k).Strings()
	got := map[string]bool{}
	for _, s := range ss {
		got[s] = true
	}
	if err != nil || len(ss) != 3 || !got["a"] || !got["b"] || !got["c"] {
		e.t.Errorf("SMEMBERS = %q, %v", ss, err)
	}
	e.want("SMISMEMBER", e.do("SMISMEMBER", k, "a", "z"), kv.ArrayValue(kv.IntValue(1), kv.IntValue(0)))
	e.want("SMEMBERS missing", e.do("SMEMBERS", e.key("missing")), kv.ArrayValue())
}

// Scores are text, and score lists are flat member, score, ... arrays on
// every transport (RESP3 would nest them in pairs).
func testSortedSet(e *env) {
	z := e.key("zset")
	str := kv.StringValue
	e.wantInt("ZADD", e.do("ZADD", z, "1", "a", "2.5", "b", "10", "c"), 3)
	e.wantText("ZSCORE", e.do("ZSCORE", z, "b"), "2.5")
	e.wantText("ZINCRBY", e.do("ZINCRBY", z, "1", "a"), "2")
	e.want("ZMSCORE", e.do("ZMSCORE", z, "b", "nope"), kv.ArrayValue(str("2.5"), kv.NilValue()))
	e.want("ZRANGE", e.do("ZRANGE", z, "0", "-1"), kv.ArrayValue(str("a"), str("b"), str("c")))
	e.want("ZRANGE WITHSCORES", e.do("ZRANGE", z, "0", "-1", "WITHSCORES"),
		kv.ArrayValue(str("a"), str("2"), str("b"), str("2.5"), str("c"), str("10")))
	e.want("ZREVRANGE WITHSCORES", e.do("ZREVRANGE", z, "0", "0", "withscores"), kv.ArrayValue(str("c"), str("10")))
	e.want("ZRANGEBYSCORE WITHSCORES", e.do("ZRANGEBYSCORE", z, "2", "3", "WITHSCORES"),
		kv.ArrayValue(str("a"), str("2"), str("b"), str("2.5")))
	e.want("ZRANGE missing WITHSCORES", e.do("ZRANGE", e.key("missing"), "0", "-1", "WITHSCORES"), kv.ArrayValue())
	e.want("ZPOPMIN count", e.do("ZPOPMIN", z, "1"), kv.ArrayValue(str("a"), str("2")))
	e.want("ZPOPMAX", e.do("ZPOPMAX", z), kv.ArrayValue(str("c"), str("10")))
	e.want("ZRANDMEMBER WITHSCORES", e.do("ZRANDMEMBER", z, "1", "WITHSCORES"), kv.ArrayValue(str("b"), str("2.5")))

	h := e.key("hash")
	e.do("HSET", h, "f", "v")
	e.want("HRANDFIELD WITHVALUES", e.do("HRANDFIELD", h, "1", "WITHVALUES"), kv.ArrayValue(str("f"), str("v")))

	rs, err := e.c.Pipeline(e.ctx, []string{"ZRANGE", z, "0", "-1", "WITHSCORES"})
	if err != nil || len(rs) != 1 {
		e.t.Fatalf("Pipeline: %v, %v", rs, err)
	}
	e.want("pipelined ZRANGE WITHSCORES", rs[0].Value, kv.ArrayValue(str("b"), str("2.5")))
	rs, err = e.c.MultiExec(e.ctx, []string{"ZRANGE", z, "0", "-1", "WITHSCORES"})
	if err != nil || len(rs) != 1 {
		e.t.Fatalf("MultiExec: %v, %v", rs, err)
	}
	e.want("ZRANGE WITHSCORES in MULTI", rs[0].Value, kv.ArrayValue(str("b"), str("2.5")))
}

// Text replies carry no protocol decoration (RESP3 sends INFO as a
// verbatim string with a "txt:" format prefix).
func testInfo(e *env) {
	s, err := e.do("INFO", "server").Text()
	if err != nil || !strings.HasPrefix(s, "# Server") || !strings.Contains(s, "redis_version:") {
		e.t.Errorf("INFO server = %s, %v; want text starting with \"# Server\"", short(s), err)
	}
}

// textValues are stored and read back unchanged. Several of them look like
// something a transport could be tempted to decode or special-case.
var textValues = []struct{ name, v string }{
	{"utf8", "héllo ✓"},
	{"emoji", "🚀 ünïcödé 日本語"},
	{"OK", "OK"},
	{"okLower", "ok"},
	{"PONG", "PONG"},
	{"base64OK", "T0s="},
	{"base64hi", "aGk="},
	{"base64NoPad", "aGk"},
	{"empty", ""},
	{"digits", "12345"},
	{"negativeDigits", "-7"},
	{"float", "3.25"},
	{"null", "null"},
	{"json", `{"result":"T0s=","error":null}`},
	{"crlf", "line1\r\nline2\n"},
	{"resp", "+OK\r\n"},
	{"spaces", "  padded  "},
	{"nul", "a\x00b"},
	{"large", strings.Repeat("0123456789abcdef", 16<<10)}, // 256 KiB
}

func testTextValues(e *env) {
	for _, tv := range textValues {
		k := e.key("text:" + tv.name)
		e.wantText("SET "+tv.name, e.do("SET", k, tv.v), "OK")
		got := e.do("GET", k)
		if got.Type() != kv.String {
			e.t.Errorf("GET %s: type %s, want string", tv.name, got.Type())
			continue
		}
		if s, _ := got.Text(); s != tv.v {
			e.t.Errorf("GET %s = %s, want %q", tv.name, short(s), short(tv.v))
		}
		e.wantInt("STRLEN "+tv.name, e.do("STRLEN", k), int64(len(tv.v)))
	}
	// The same values as hash fields, list elements and script results.
	h, l := e.key("text-hash"), e.key("text-list")
	for _, tv := range textValues {
		e.do("HSET", h, tv.name, tv.v)
		e.do("RPUSH", l, tv.v)
	}
	m := pairs(e, "HGETALL", e.do("HGETALL", h))
	arr, err := e.do("LRANGE", l, "0", "-1").Strings()
	if err != nil || len(arr) != len(textValues) {
		e.t.Fatalf("LRANGE = %d elements, %v", len(arr), err)
	}
	echo := kv.NewScript("return ARGV[1]")
	for i, tv := range textValues {
		if m[tv.name] != tv.v {
			e.t.Errorf("HGETALL[%s] = %s, want %q", tv.name, short(m[tv.name]), short(tv.v))
		}
		if arr[i] != tv.v {
			e.t.Errorf("LRANGE[%d] (%s) = %s, want %q", i, tv.name, short(arr[i]), short(tv.v))
		}
		v, err := e.c.Eval(e.ctx, echo, nil, tv.v)
		if err != nil {
			e.t.Errorf("Eval echo %s: %v", tv.name, err)
		} else if s, _ := v.Text(); s != tv.v || v.Type() != kv.String {
			e.t.Errorf("Eval echo %s = %s (%s), want %q", tv.name, short(s), v.Type(), short(tv.v))
		}
	}
}

func short(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q...(%d bytes)", s[:64], len(s))
	}
	return strconv.Quote(s)
}

func testBinaryValue(e *env) {
	bin := "\xff\xfe\x00\x01bin\x80\xc3\x28"
	k := e.key("binary")
	v, err := e.c.Do(e.ctx, "SET", k, bin)
	if err != nil {
		// The transport cannot carry it: it must say so as KindInvalid and
		// must not have written anything.
		if kind := agentapi.KindOf(err); kind != agentapi.KindInvalid {
			e.t.Fatalf("SET binary: error %v has kind %v, want %v (or success)", err, kind, agentapi.KindInvalid)
		}
		if errors.Is(err, kv.ErrUnavailable) || kv.IsServerError(err) {
			e.t.Errorf("SET binary: rejection %v must not look like an outage or a server error", err)
		}
		e.wantInt("EXISTS after refused binary SET", e.do("EXISTS", k), 0)
		// A binary key is refused the same way.
		if _, err := e.c.Do(e.ctx, "SET", e.key(bin), "v"); agentapi.KindOf(err) != agentapi.KindInvalid {
			e.t.Errorf("SET with a binary key: error %v, want KindInvalid", err)
		}
		// ... also inside a pipeline, where nothing of it may run.
		ok := e.key("pipeline-ok")
		_, err = e.c.Pipeline(e.ctx, []string{"SET", ok, "1"}, []string{"SET", k, bin})
		if agentapi.KindOf(err) != agentapi.KindInvalid {
			e.t.Errorf("Pipeline with a binary value: error %v, want KindInvalid", err)
		}
		e.wantInt("EXISTS after refused pipeline", e.do("EXISTS", ok, k), 0)
		return
	}
	e.wantText("SET binary", v, "OK")
	got := e.do("GET", k)
	if s, _ := got.Text(); s != bin {
		e.t.Errorf("GET binary = %q, want %q", s, bin)
	}
	e.wantInt("STRLEN binary", e.do("STRLEN", k), int64(len(bin)))
}

// ------------------------------------------------------------- errors

func testServerErrors(e *env) {
	s := e.key("str")
	e.do("SET", s, "not a number")

	_, err := e.c.Do(e.ctx, "INCR", s)
	se := e.serverError("INCR on a string", err, "ERR")
	if se.Msg != "ERR value is not an integer or out of range" {
		e.t.Errorf("INCR on a string: message %q", se.Msg)
	}
	if err.Error() != "redis: "+se.Msg {
		e.t.Errorf("Error() = %q", err.Error())
	}

	_, err = e.c.Do(e.ctx, "LPUSH", s, "x")
	se = e.serverError("LPUSH on a string", err, "WRONGTYPE")
	if se.Msg != "WRONGTYPE Operation against a key holding the wrong kind of value" {
		e.t.Errorf("LPUSH on a string: message %q", se.Msg)
	}

	_, err = e.c.Do(e.ctx, "NOSUCHCOMMAND", "a")
	se = e.serverError("unknown command", err, "ERR")
	if !strings.HasPrefix(se.Msg, "ERR unknown command") {
		e.t.Errorf("unknown command: message %q", se.Msg)
	}

	_, err = e.c.Do(e.ctx, "GET")
	se = e.serverError("GET without key", err, "ERR")
	if se.Msg != "ERR wrong number of arguments for 'get' command" {
		e.t.Errorf("GET without key: message %q", se.Msg)
	}

	// Messages whose first word after ERR is in capitals keep their code.
	_, err = e.c.Do(e.ctx, "ZADD", e.key("z"), "NX", "XX", "1", "m")
	se = e.serverError("ZADD NX XX", err, "ERR")
	if se.Msg != "ERR XX and NX options at the same time are not compatible" {
		e.t.Errorf("ZADD NX XX: message %q", se.Msg)
	}

	// The client is still usable after refusals.
	e.wantText("GET after errors", e.do("GET", s), "not a number")
}

// ----------------------------------------------------------- pipelines

func testPipeline(e *env) {
	a, s := e.key("a"), e.key("s")
	rs, err := e.c.Pipeline(e.ctx,
		[]string{"SET", a, "1"},
		[]string{"INCR", a},
		[]string{"SET", s, "str"},
		[]string{"INCR", s}, // refused
		[]string{"GET", a},
		[]string{"GET", e.key("missing")},
		[]string{"INCRBY", a, "10"},
		[]string{"LPUSH", s, "x"}, // refused
		[]string{"MGET", a, s},
	)
	if err != nil {
		e.t.Fatalf("Pipeline: %v", err)
	}
	want := []kv.Value{
		kv.StringValue("OK"),
		kv.IntValue(2),
		kv.StringValue("OK"),
		{},
		kv.StringValue("2"),
		kv.NilValue(),
		kv.IntValue(12),
		{},
		kv.ArrayValue(kv.StringValue("12"), kv.StringValue("str")),
	}
	if len(rs) != len(want) {
		e.t.Fatalf("Pipeline returned %d results, want %d", len(rs), len(want))
	}
	for i, r := range rs {
		switch i {
		case 3:
			e.serverError("pipeline INCR on a string", r.Err, "ERR")
			continue
		case 7:
			e.serverError("pipeline LPUSH on a string", r.Err, "WRONGTYPE")
			continue
		}
		if r.Err != nil {
			e.t.Errorf("result %d: error %v", i, r.Err)
			continue
		}
		e.want(fmt.Sprintf("result %d", i), r.Value, want[i])
	}
}

func testPipelineLong(e *env) {
	k := e.key("n")
	cmds := make([][]string, 100)
	for i := range cmds {
		cmds[i] = []string{"INCR", k}
	}
	rs, err := e.c.Pipeline(e.ctx, cmds...)
	if err != nil {
		e.t.Fatalf("Pipeline: %v", err)
	}
	if len(rs) != len(cmds) {
		e.t.Fatalf("Pipeline returned %d results, want %d", len(rs), len(cmds))
	}
	for i, r := range rs {
		if r.Err != nil || !r.Value.Equal(kv.IntValue(int64(i+1))) {
			e.t.Fatalf("result %d = %v, %v; want %d (order must be kept)", i, r.Value, r.Err, i+1)
		}
	}
}

func testPipelineEmpty(e *env) {
	rs, err := e.c.Pipeline(e.ctx)
	if err != nil || len(rs) != 0 {
		e.t.Errorf("empty Pipeline = %v, %v; want no results and no error", rs, err)
	}
}

// ------------------------------------------------------------ MULTI/EXEC

func testMultiExec(e *env) {
	a, l := e.key("a"), e.key("l")
	rs, err := e.c.MultiExec(e.ctx,
		[]string{"SET", a, "1"},
		[]string{"INCR", a},
		[]string{"GET", a},
		[]string{"GET", e.key("missing")},
		[]string{"RPUSH", l, "x", "y"},
		[]string{"LRANGE", l, "0", "-1"},
	)
	if err != nil {
		e.t.Fatalf("MultiExec: %v", err)
	}
	want := []kv.Value{
		kv.StringValue("OK"),
		kv.IntValue(2),
		kv.StringValue("2"),
		kv.NilValue(),
		kv.IntValue(2),
		kv.ArrayValue(kv.StringValue("x"), kv.StringValue("y")),
	}
	if len(rs) != len(want) {
		e.t.Fatalf("MultiExec returned %d results, want %d", len(rs), len(want))
	}
	for i, r := range rs {
		if r.Err != nil {
			e.t.Errorf("result %d: error %v", i, r.Err)
			continue
		}
		e.want(fmt.Sprintf("result %d", i), r.Value, want[i])
	}
	e.wantText("GET after MultiExec", e.do("GET", a), "2")
}

// A command that fails when it runs (not when queued) does not abort the
// transaction: Redis has no rollback, the others run.
func testMultiExecRuntimeError(e *env) {
	s, t2 := e.key("s"), e.key("t")
	rs, err := e.c.MultiExec(e.ctx,
		[]string{"SET", s, "str"},
		[]string{"INCR", s},
		[]string{"SET", t2, "after"},
	)
	if err != nil {
		e.t.Fatalf("MultiExec: %v", err)
	}
	if len(rs) != 3 {
		e.t.Fatalf("MultiExec returned %d results, want 3", len(rs))
	}
	if rs[0].Err != nil || rs[2].Err != nil {
		e.t.Errorf("results 0 and 2: errors %v, %v", rs[0].Err, rs[2].Err)
	}
	se := e.serverError("INCR on a string inside MULTI", rs[1].Err, "ERR")
	if se.Msg != "ERR value is not an integer or out of range" {
		e.t.Errorf("INCR inside MULTI: message %q", se.Msg)
	}
	e.wantText("GET t", e.do("GET", t2), "after")
}

func testMultiExecQueueError(e *env) {
	a, b := e.key("a"), e.key("b")
	rs, err := e.c.MultiExec(e.ctx,
		[]string{"SET", a, "written?"},
		[]string{"SET", b}, // wrong arity: refused while queueing
		[]string{"INCR", a},
	)
	if err == nil {
		e.t.Fatalf("MultiExec with a queue-time error: no error, results %v", rs)
	}
	se := e.serverError("MultiExec queue error", err, prefixOf(err))
	if se.Prefix() != "ERR" && se.Prefix() != "EXECABORT" {
		e.t.Errorf("MultiExec queue error: code %q, want ERR or EXECABORT", se.Prefix())
	}
	e.wantInt("EXISTS after aborted MultiExec", e.do("EXISTS", a, b), 0)

	// Unknown commands are refused at queue time too.
	_, err = e.c.MultiExec(e.ctx, []string{"SET", a, "x"}, []string{"NOSUCHCOMMAND"})
	e.serverError("MultiExec unknown command", err, prefixOf(err))
	e.wantInt("EXISTS after second aborted MultiExec", e.do("EXISTS", a), 0)

	// The client (and its connection pool) still works afterwards.
	rs, err = e.c.MultiExec(e.ctx, []string{"SET", a, "1"}, []string{"GET", a})
	if err != nil || len(rs) != 2 || !rs[1].Value.Equal(kv.StringValue("1")) {
		e.t.Errorf("MultiExec after an aborted one = %v, %v", rs, err)
	}
}

func prefixOf(err error) string {
	var se *kv.ServerError
	if errors.As(err, &se) {
		return se.Prefix()
	}
	return "?"
}

// Another client reading concurrently never sees one key of a transaction
// written and the other not.
func testMultiExecAtomic(e *env) {
	a, b := e.key("a"), e.key("b")
	e.do("MSET", a, "0", b, "b-0")
	reader := e.open()

	const rounds = 100
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for reads := 0; ; reads++ {
			select {
			case <-stop:
				if reads == 0 {
					errs <- errors.New("reader did not run")
				}
				return
			default:
			}
			v, err := reader.Do(e.ctx, "MGET", a, b)
			if err != nil {
				errs <- fmt.Errorf("MGET: %w", err)
				return
			}
			ss, err := v.Strings()
			if err != nil || len(ss) != 2 || "b-"+ss[0] != ss[1] {
				errs <- fmt.Errorf("reader saw a partial transaction: %v", v)
				return
			}
		}
	}()
	for i := 1; i <= rounds; i++ {
		n := strconv.Itoa(i)
		rs, err := e.c.MultiExec(e.ctx, []string{"SET", a, n}, []string{"SET", b, "b-" + n})
		if err != nil || len(rs) != 2 || rs[0].Err != nil || rs[1].Err != nil {
			close(stop)
			wg.Wait()
			e.t.Fatalf("MultiExec round %d: %v, %v", i, rs, err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		e.t.Fatal(err)
	default:
	}
	e.want("final state", e.do("MGET", a, b), kv.ArrayValue(kv.StringValue("100"), kv.StringValue("b-100")))
}

func testMultiExecEmpty(e *env) {
	rs, err := e.c.MultiExec(e.ctx)
	if err != nil || len(rs) != 0 {
		e.t.Errorf("empty MultiExec = %v, %v; want no results and no error", rs, err)
	}
}

// ----------------------------------------------------------------- Eval

func testEvalMixed(e *env) {
	s := kv.NewScript(`return {1, "two", {3, "four", {}}, KEYS[1], ARGV[1], -5, "", false, "end"}`)
	k := e.key("k")
	v, err := e.c.Eval(e.ctx, s, []string{k}, "arg-1")
	if err != nil {
		e.t.Fatalf("Eval: %v", err)
	}
	// A Lua false inside a table is a nil element; unlike a Lua nil it
	// does not end the array.
	e.want("Eval mixed", v, kv.ArrayValue(
		kv.IntValue(1),
		kv.StringValue("two"),
		kv.ArrayValue(kv.IntValue(3), kv.StringValue("four"), kv.ArrayValue()),
		kv.StringValue(k),
		kv.StringValue("arg-1"),
		kv.IntValue(-5),
		kv.StringValue(""),
		kv.NilValue(),
		kv.StringValue("end"),
	))
}

func testEvalNil(e *env) {
	for _, src := range []string{"return false", "return nil", "return redis.call('GET', KEYS[1])"} {
		v, err := e.c.Eval(e.ctx, kv.NewScript(src), []string{e.key("missing")})
		if err != nil {
			e.t.Errorf("Eval %q: %v", src, err)
			continue
		}
		if !v.IsNil() {
			e.t.Errorf("Eval %q = %v, want nil", src, v)
		}
	}
	v, err := e.c.Eval(e.ctx, kv.NewScript("return true"), nil)
	if err != nil || !v.Equal(kv.IntValue(1)) {
		e.t.Errorf("Eval return true = %v, %v; want integer 1", v, err)
	}
	v, err = e.c.Eval(e.ctx, kv.NewScript("return {ok='fine'}"), nil)
	if err != nil || !v.Equal(kv.StringValue("fine")) {
		e.t.Errorf("Eval status reply = %v, %v; want \"fine\"", v, err)
	}
	v, err = e.c.Eval(e.ctx, kv.NewScript("return redis.status_reply('OK')"), nil)
	if err != nil || !v.Equal(kv.StringValue("OK")) {
		e.t.Errorf("Eval status OK = %v, %v; want \"OK\"", v, err)
	}
}

func testEvalErrors(e *env) {
	_, err := e.c.Eval(e.ctx, kv.NewScript(`return redis.error_reply("MYCODE custom failure")`), nil)
	se := e.serverError("error_reply", err, "MYCODE")
	if se.Msg != "MYCODE custom failure" {
		e.t.Errorf("error_reply message %q", se.Msg)
	}

	// Without a code word Redis sends the text as it is; so must we.
	_, err = e.c.Eval(e.ctx, kv.NewScript(`return redis.error_reply("lower case failure")`), nil)
	if !kv.IsServerError(err) {
		e.t.Errorf("error_reply without a code: error %v, want a *kv.ServerError", err)
	} else if se := new(kv.ServerError); errors.As(err, &se) && se.Msg != "lower case failure" {
		e.t.Errorf("error_reply without a code: message %q, want %q", se.Msg, "lower case failure")
	}

	s := e.key("s")
	e.do("SET", s, "str")
	_, err = e.c.Eval(e.ctx, kv.NewScript(`return redis.call("INCR", KEYS[1])`), []string{s})
	se = e.serverError("INCR on a string in a script", err, "ERR")
	if !strings.HasPrefix(se.Msg, "ERR value is not an integer or out of range") {
		e.t.Errorf("script INCR error message %q", se.Msg)
	}

	_, err = e.c.Eval(e.ctx, kv.NewScript(`error("boom")`), nil)
	se = e.serverError("Lua error()", err, "ERR")
	if !strings.Contains(se.Msg, "boom") {
		e.t.Errorf("Lua error message %q does not mention boom", se.Msg)
	}

	_, err = e.c.Eval(e.ctx, kv.NewScript(`this is not lua`), nil)
	e.serverError("Lua syntax error", err, "ERR")
}

func testEvalKeysArgs(e *env) {
	k1, k2 := e.key("k1"), e.key("k2")
	s := kv.NewScript(`
redis.call("SET", KEYS[1], ARGV[1])
redis.call("SET", KEYS[2], ARGV[2])
return {#KEYS, #ARGV, ARGV[3]}`)
	v, err := e.c.Eval(e.ctx, s, []string{k1, k2}, "v1", "v2 ✓", "")
	if err != nil {
		e.t.Fatalf("Eval: %v", err)
	}
	e.want("Eval #KEYS #ARGV", v, kv.ArrayValue(kv.IntValue(2), kv.IntValue(3), kv.StringValue("")))
	e.want("MGET", e.do("MGET", k1, k2), kv.ArrayValue(kv.StringValue("v1"), kv.StringValue("v2 ✓")))

	// No keys, no args.
	v, err = e.c.Eval(e.ctx, kv.NewScript(`return {#KEYS, #ARGV}`), nil)
	if err != nil {
		e.t.Fatalf("Eval without keys: %v", err)
	}
	e.want("Eval no keys", v, kv.ArrayValue(kv.IntValue(0), kv.IntValue(0)))
}

func testEvalNoScript(e *env) {
	k := e.key("counter")
	// The source is unique to this run, so the server cannot know it yet.
	s := kv.NewScript("-- " + e.prefix + "\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
	e.wantText("SCRIPT FLUSH", e.do("SCRIPT", "FLUSH"), "OK")
	e.want("SCRIPT EXISTS before", e.do("SCRIPT", "EXISTS", s.SHA1()), kv.ArrayValue(kv.IntValue(0)))

	v, err := e.c.Eval(e.ctx, s, []string{k}, "5")
	if err != nil {
		e.t.Fatalf("first Eval (NOSCRIPT, then EVAL): %v", err)
	}
	e.wantInt("first Eval", v, 5)
	if !e.cluster {
		// On a cluster EVAL loaded it on the node of k only, and SCRIPT
		// EXISTS asks every node.
		e.want("SCRIPT EXISTS after EVAL", e.do("SCRIPT", "EXISTS", s.SHA1()), kv.ArrayValue(kv.IntValue(1)))
	}
	// EVAL loaded it where its key is: EVALSHA with that key works.
	e.wantInt("EVALSHA after EVAL", e.do("EVALSHA", s.SHA1(), "1", k, "0"), 5)

	v, err = e.c.Eval(e.ctx, s, []string{k}, "7")
	if err != nil {
		e.t.Fatalf("second Eval (EVALSHA): %v", err)
	}
	e.wantInt("second Eval", v, 12)

	// Flushing again between calls is survived too.
	e.do("SCRIPT", "FLUSH")
	v, err = e.c.Eval(e.ctx, s, []string{k}, "1")
	if err != nil {
		e.t.Fatalf("Eval after a second flush: %v", err)
	}
	e.wantInt("Eval after a second flush", v, 13)

	// EVALSHA of an unknown script through Do is a NOSCRIPT server error.
	_, err = e.c.Do(e.ctx, "EVALSHA", strings.Repeat("0", 40), "0")
	e.serverError("EVALSHA unknown", err, "NOSCRIPT")
	if !kv.IsNoScript(err) {
		e.t.Errorf("IsNoScript(%v) = false", err)
	}
}

// --------------------------------------------------------------- misc

func testDoCached(e *env) {
	k := e.key("cached")
	e.do("SET", k, "v1")
	v, err := kv.DoCached(e.ctx, e.c, time.Minute, "GET", k)
	if err != nil || !v.Equal(kv.StringValue("v1")) {
		e.t.Fatalf("DoCached GET = %v, %v; want \"v1\"", v, err)
	}
	v, err = kv.DoCached(e.ctx, e.c, time.Minute, "GET", e.key("missing"))
	if err != nil || !v.IsNil() {
		e.t.Errorf("DoCached GET missing = %v, %v; want nil", v, err)
	}
	h := e.key("h")
	e.do("HSET", h, "f", "x")
	v, err = kv.DoCached(e.ctx, e.c, time.Minute, "HGET", h, "f")
	if err != nil || !v.Equal(kv.StringValue("x")) {
		e.t.Errorf("DoCached HGET = %v, %v; want \"x\"", v, err)
	}
	_, err = kv.DoCached(e.ctx, e.c, time.Minute, "GET")
	if err == nil {
		e.t.Errorf("DoCached GET without key: no error")
	}
}

func testConcurrentIncr(e *env) {
	k := e.key("counter")
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := e.c.Do(e.ctx, "INCR", k); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Errorf("INCR: %v", err)
	}
	e.wantText("counter", e.do("GET", k), strconv.Itoa(workers*each))
}

func testCancelledContext(e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := e.key("k")
	check := func(what string, err error) {
		e.t.Helper()
		if !errors.Is(err, context.Canceled) {
			e.t.Errorf("%s with a cancelled context: error %v, want one matching context.Canceled", what, err)
		}
		if errors.Is(err, kv.ErrUnavailable) || errors.Is(err, kv.ErrUnauthorized) {
			e.t.Errorf("%s with a cancelled context: error %v matches ErrUnavailable/ErrUnauthorized", what, err)
		}
	}
	_, err := e.c.Do(ctx, "SET", k, "v")
	check("Do", err)
	_, err = e.c.Pipeline(ctx, []string{"SET", k, "v"}, []string{"GET", k})
	check("Pipeline", err)
	_, err = e.c.MultiExec(ctx, []string{"SET", k, "v"}, []string{"GET", k})
	check("MultiExec", err)
	_, err = e.c.Eval(ctx, kv.NewScript("return 1"), nil)
	check("Eval", err)
	_, err = kv.DoCached(ctx, e.c, time.Minute, "GET", k)
	check("DoCached", err)

	// An expired deadline is reported as such.
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	_, err = e.c.Do(dctx, "GET", k)
	if !errors.Is(err, context.DeadlineExceeded) {
		e.t.Errorf("Do with an expired deadline: error %v, want DeadlineExceeded", err)
	}

	// The client is unharmed.
	e.wantText("SET after cancellations", e.do("SET", k, "fine"), "OK")
	e.wantText("GET after cancellations", e.do("GET", k), "fine")
}

func testEmptyCommand(e *env) {
	invalid := func(what string, err error) {
		e.t.Helper()
		if kind := agentapi.KindOf(err); kind != agentapi.KindInvalid {
			e.t.Errorf("%s: error %v has kind %v, want %v", what, err, kind, agentapi.KindInvalid)
		}
	}
	_, err := e.c.Do(e.ctx)
	invalid("Do()", err)
	_, err = e.c.Do(e.ctx, "")
	invalid(`Do("")`, err)
	_, err = e.c.Pipeline(e.ctx, []string{"PING"}, []string{})
	invalid("Pipeline with an empty command", err)
	_, err = e.c.MultiExec(e.ctx, []string{"PING"}, nil)
	invalid("MultiExec with an empty command", err)
	e.wantText("PING afterwards", e.do("PING"), "PONG")
}

func testCallsAfterClose(e *env) {
	c := e.newClient(e.t)
	k := e.key("k")
	if _, err := c.Do(e.ctx, "SET", k, "v"); err != nil {
		e.t.Fatalf("SET: %v", err)
	}
	if err := c.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	if _, err := c.Do(e.ctx, "GET", k); err == nil {
		e.t.Errorf("Do after Close: no error")
	}
	if _, err := c.Pipeline(e.ctx, []string{"GET", k}); err == nil {
		e.t.Errorf("Pipeline after Close: no error")
	}
	// Other clients are unaffected.
	e.wantText("GET on another client", e.do("GET", k), "v")
}

// testEvalNestedError: an error inside a script's returned table is a String
// holding the error text on every transport, not a failed call.
func testEvalNestedError(e *env) {
	s := kv.NewScript(`return {1, redis.pcall('INCR', KEYS[1])}`)
	k := e.key("nested")
	e.do("SET", k, "not-a-number")
	v, err := e.c.Eval(e.ctx, s, []string{k})
	if err != nil {
		e.t.Fatalf("Eval with a nested error: %v", err)
	}
	arr, err := v.Array()
	if err != nil || len(arr) != 2 {
		e.t.Fatalf("reply %v: want a 2-element array", v)
	}
	e.wantInt("first element", arr[0], 1)
	text, err := arr[1].Text()
	if err != nil || !strings.HasPrefix(text, "ERR value is not an integer") {
		e.t.Fatalf("nested error element = %v (%v), want the error text", arr[1], err)
	}
}
