package kvtest

import (
	"fmt"
	"strconv"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// clusterCases check kv.Client's Redis Cluster rules; Run adds them with
// the Cluster option.
var clusterCases = []testCase{
	{"ClusterSlot", testClusterSlot},
	{"ClusterRouting", testClusterRouting},
	{"ClusterPipelineAcrossSlots", testClusterPipeline},
	{"ClusterCrossSlotRefused", testClusterCrossSlot},
	{"ClusterScriptEveryNode", testClusterScript},
}

// tagged returns a key of this subtest that is its own hash tag, so that
// it is in a slot of its own rather than the prefix's, and remembers it
// for deletion.
func (e *env) tagged(name string) string {
	k := "{kvtest:" + e.ns + ":" + name + "}"
	e.remember(k)
	return k
}

// spread returns n keys of this subtest, each under a hash tag of its own,
// so that they fall in different slots (and, with n large enough, on every
// node).
func (e *env) spread(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.tagged("spread-" + strconv.Itoa(i))
	}
	return keys
}

// slotted returns two keys of this subtest in different slots.
func (e *env) slotted() (string, string) {
	a := e.tagged("a")
	for i := 0; ; i++ {
		if b := "{kvtest:" + e.ns + ":b-" + strconv.Itoa(i) + "}"; kv.Slot(b) != kv.Slot(a) {
			e.remember(b)
			return a, b
		}
	}
}

// kv.Slot agrees with the server, hash tags included.
func testClusterSlot(e *env) {
	keys := append(e.spread(20), "plain", "{tag}:a", "x{tag}y", "{}:empty-tag", "{a}{b}", "}{x}", "ünïcödé")
	for _, k := range keys {
		v := e.do("CLUSTER", "KEYSLOT", k)
		e.wantInt("CLUSTER KEYSLOT "+k, v, int64(kv.Slot(k)))
	}
	if kv.Slot("{t:acme}:usage:pending") != kv.Slot("{t:acme}:cache:g:x") {
		e.t.Errorf("keys with one hash tag are in different slots")
	}
}

// Commands on keys of many slots reach the right nodes: no MOVED error
// surfaces, and what is written is read back.
func testClusterRouting(e *env) {
	keys := e.spread(64)
	for i, k := range keys {
		e.wantText("SET "+k, e.do("SET", k, strconv.Itoa(i)), "OK")
	}
	for i, k := range keys {
		e.wantText("GET "+k, e.do("GET", k), strconv.Itoa(i))
		e.remember(k + ":h") // k's hash tag
		e.wantInt("HSET", e.do("HSET", k+":h", "f", "v"), 1)
	}
	// Scripts run on the node of their keys, too.
	s := kv.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	for i, k := range keys {
		v, err := e.c.Eval(e.ctx, s, []string{k}, "100")
		if err != nil {
			e.t.Fatalf("Eval on %s: %v", k, err)
		}
		e.wantInt("Eval INCRBY", v, int64(i+100))
	}
}

// A pipeline may span slots: results come back in the order of the
// commands, and the commands of one key run in order.
func testClusterPipeline(e *env) {
	keys := e.spread(24)
	var cmds [][]string
	for round := range 3 {
		for _, k := range keys {
			cmds = append(cmds, []string{"RPUSH", k, strconv.Itoa(round)})
		}
	}
	for _, k := range keys {
		cmds = append(cmds, []string{"LRANGE", k, "0", "-1"})
	}
	rs, err := e.c.Pipeline(e.ctx, cmds...)
	if err != nil {
		e.t.Fatalf("Pipeline across slots: %v", err)
	}
	if len(rs) != len(cmds) {
		e.t.Fatalf("Pipeline returned %d results, want %d", len(rs), len(cmds))
	}
	for i, r := range rs[:3*len(keys)] {
		e.want(fmt.Sprintf("result %d (%v)", i, cmds[i]), r.Value, kv.IntValue(int64(i/len(keys)+1)))
	}
	for i, r := range rs[3*len(keys):] {
		e.want("LRANGE "+keys[i], r.Value, kv.ArrayValue(kv.StringValue("0"), kv.StringValue("1"), kv.StringValue("2")))
	}
}

// Multi-key calls over several slots are refused as KindInvalid and
// change nothing.
func testClusterCrossSlot(e *env) {
	a, b := e.slotted()
	refused := func(what string, err error) {
		e.t.Helper()
		if !kv.IsCrossSlot(err) {
			e.t.Errorf("%s over two slots: error %v, want one matching kv.IsCrossSlot", what, err)
		}
		if kind := agentapi.KindOf(err); kind != agentapi.KindInvalid {
			e.t.Errorf("%s over two slots: error %v has kind %v, want %v", what, err, kind, agentapi.KindInvalid)
		}
		if kv.IsServerError(err) || kv.IsNoScript(err) {
			e.t.Errorf("%s over two slots: error %v looks like a server reply", what, err)
		}
	}
	nothing := func(what string) {
		e.t.Helper()
		e.wantInt("EXISTS "+a+" after "+what, e.do("EXISTS", a), 0)
		e.wantInt("EXISTS "+b+" after "+what, e.do("EXISTS", b), 0)
	}

	_, err := e.c.Do(e.ctx, "MSET", a, "1", b, "2")
	refused("Do MSET", err)
	nothing("MSET")
	_, err = e.c.Do(e.ctx, "DEL", a, b)
	refused("Do DEL", err)

	_, err = e.c.MultiExec(e.ctx, []string{"SET", a, "1"}, []string{"SET", b, "2"})
	refused("MultiExec", err)
	nothing("MultiExec")

	s := kv.NewScript(`redis.call('SET', KEYS[1], '1') redis.call('SET', KEYS[2], '2') return 1`)
	_, err = e.c.Eval(e.ctx, s, []string{a, b})
	refused("Eval", err)
	nothing("Eval")

	// One bad command fails the whole pipeline before anything is sent.
	_, err = e.c.Pipeline(e.ctx, []string{"SET", a, "1"}, []string{"MGET", a, b})
	refused("Pipeline", err)
	nothing("Pipeline")

	// The same calls within one slot work.
	c := a + ":same-slot" // a's hash tag
	e.remember(c)
	e.wantText("MSET one slot", e.do("MSET", a, "1", c, "2"), "OK")
	rs, err := e.c.MultiExec(e.ctx, []string{"INCR", a}, []string{"INCR", c})
	if err != nil || len(rs) != 2 || !rs[1].Value.Equal(kv.IntValue(3)) {
		e.t.Errorf("MultiExec in one slot = %v, %v", rs, err)
	}
}

// SCRIPT LOAD reaches every node, so EVALSHA works on keys of any slot
// without a NOSCRIPT fallback; SCRIPT FLUSH empties every node.
func testClusterScript(e *env) {
	s := kv.NewScript("-- " + e.ns + " every node\nreturn redis.call('INCR', KEYS[1])")
	e.wantText("SCRIPT LOAD", e.do("SCRIPT", "LOAD", s.Source()), s.SHA1())
	e.want("SCRIPT EXISTS after LOAD", e.do("SCRIPT", "EXISTS", s.SHA1(), "0000000000000000000000000000000000000000"),
		kv.ArrayValue(kv.IntValue(1), kv.IntValue(0)))
	for _, k := range e.spread(24) {
		e.wantInt("EVALSHA on "+k, e.do("EVALSHA", s.SHA1(), "1", k), 1)
	}
	e.wantText("SCRIPT FLUSH", e.do("SCRIPT", "FLUSH"), "OK")
	e.want("SCRIPT EXISTS after FLUSH", e.do("SCRIPT", "EXISTS", s.SHA1()), kv.ArrayValue(kv.IntValue(0)))
	for _, k := range e.spread(8) {
		_, err := e.c.Do(e.ctx, "EVALSHA", s.SHA1(), "1", k)
		e.serverError("EVALSHA after SCRIPT FLUSH", err, "NOSCRIPT")
	}
}
