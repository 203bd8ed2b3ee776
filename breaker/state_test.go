package breaker

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
)

// TestScriptMatchesLocal runs the same random sequences of ops through
// state.apply and through the Lua script and checks that they agree after
// every step, on the script's reply and on the hash it leaves.
func TestScriptMatchesLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := native.Dial(ctx, native.Options{URL: redistest.URL(t), DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := params{failureThreshold: 3, successThreshold: 2, maxProbes: 2, timeout: 100, keyTTL: 60_000}
	ops := []op{opAcquire, opAcquire, opAcquire, opSuccess, opSuccess, opFailure, opFailure, opRelease, opReset}
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 42))
		key := "scriptmatch:" + strconv.FormatUint(seed, 10) + ":" + strconv.FormatInt(time.Now().UnixNano(), 10)
		var local state
		now := int64(1_900_000_000_000)
		for step := range 300 {
			o := ops[rng.IntN(len(ops))]
			gen := local.Gen
			if rng.IntN(5) == 0 {
				gen-- // an outcome from before the last change
			}
			now += int64(rng.IntN(40))
			wantGranted, _ := local.apply(o, now, gen, p)
			v, err := c.Eval(ctx, script, []string{key}, scriptArgs(o, now, gen, p)...)
			if err != nil {
				t.Fatalf("seed %d step %d: %s: %v", seed, step, o, err)
			}
			got, granted, err := parseScript(v)
			if err != nil {
				t.Fatal(err)
			}
			if got != local || granted != wantGranted {
				t.Fatalf("seed %d step %d %s(now %d, gen %d): script %+v granted %v; Go %+v granted %v",
					seed, step, o, now, gen, got, granted, local, wantGranted)
			}
			h, err := c.Do(ctx, "HGETALL", key)
			if err != nil {
				t.Fatal(err)
			}
			stored, err := parseHash(h)
			if err != nil {
				t.Fatal(err)
			}
			if local.V > 0 && stored != local {
				t.Fatalf("seed %d step %d: stored %+v, want %+v", seed, step, stored, local)
			}
		}
		if ttl, err := c.Do(ctx, "PTTL", key); err != nil {
			t.Fatal(err)
		} else if n, _ := ttl.Int(); local.V > 0 && (n <= 0 || n > p.keyTTL) {
			t.Errorf("PTTL of the key = %d, want in (0, %d]", n, p.keyTTL)
		}
	}
}

func TestParseHash(t *testing.T) {
	s, err := parseHash(kv.NilValue())
	if err != nil || s.State != agentapi.BreakerClosed {
		t.Errorf("missing key: %+v, %v", s, err)
	}
	if _, err := parseHash(kv.ArrayValue(kv.StringValue("state"), kv.StringValue("weird"))); err == nil {
		t.Error("an unknown state parsed")
	}
	if _, err := parseHash(kv.ArrayValue(kv.StringValue("failures"), kv.StringValue("x"))); err == nil {
		t.Error("a non-integer count parsed")
	}
}

func TestCacheDetection(t *testing.T) {
	u := redistest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := native.Dial(ctx, native.Options{URL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := NewRegistry(Settings{}, Options{KV: c}); r.localTTL() != 0 {
		t.Errorf("native with caching: local TTL %v, want 0", r.localTTL())
	}
	nc, err := native.Dial(ctx, native.Options{URL: u, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if r := NewRegistry(Settings{}, Options{KV: nc}); r.localTTL() != DefaultLocalCacheTTL {
		t.Errorf("native without caching: local TTL %v, want %v", r.localTTL(), DefaultLocalCacheTTL)
	}
	sw := kv.NewSwitch(ctx, []kv.Endpoint{{
		Name: "native",
		Dial: func(ctx context.Context) (kv.Client, error) { return native.Dial(ctx, native.Options{URL: u}) },
		Describe: func(c kv.Client) map[string]string {
			return map[string]string{"client_cache": strconv.FormatBool(c.(*native.Client).Caching())}
		},
	}}, kv.SwitchOptions{})
	defer sw.Close()
	if r := NewRegistry(Settings{}, Options{KV: sw}); r.localTTL() != 0 {
		t.Errorf("switch over native with caching: local TTL %v, want 0", r.localTTL())
	}
	if r := NewRegistry(Settings{}, Options{KV: sw, LocalCacheTTL: -1}); r.localTTL() != 0 {
		t.Errorf("LocalCacheTTL -1: local TTL %v, want 0", r.localTTL())
	}
}
