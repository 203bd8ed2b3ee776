package usage_test

import (
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
	"github.com/agentapi-mt/agentapi/usage"
)

func TestStoreConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storetest.RunUsageStore(t, func(t *testing.T) usage.Store { return usage.NewMemory(usage.MemoryOptions{}) })
	})
	url := redistest.URL(t)
	base, _ := restserver.StartTest(t, url, restToken)
	t.Run("native", func(t *testing.T) {
		storetest.RunUsageStore(t, func(t *testing.T) usage.Store {
			c := kvtest.Native(t, native.Options{URL: url})
			return usage.NewRedis(c, usage.RedisOptions{Prefix: "uc:" + randomHex(6) + ":"})
		})
	})
	t.Run("rest", func(t *testing.T) {
		storetest.RunUsageStore(t, func(t *testing.T) usage.Store {
			return usage.NewRedis(kvtest.REST(t, base, restToken), usage.RedisOptions{Prefix: "uc:" + randomHex(6) + ":"})
		})
	})
}

// TestCluster runs the store on a three-master Redis Cluster: the suite,
// the scripts' reload after SCRIPT FLUSH (which empties every node), and
// three instances pushing and flushing under load, whose every count must
// reach SQL exactly once. A tenant's keys share its hash tag; the dirty
// index is in a slot of its own, on another node for most tenants.
func TestCluster(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	if c := kvtest.Native(t, native.Options{URL: url}); !c.Cluster() {
		t.Fatal("client of a cluster: Cluster() = false")
	}
	t.Run("Conformance", func(t *testing.T) {
		storetest.RunUsageStore(t, func(t *testing.T) usage.Store {
			c := kvtest.Native(t, native.Options{URL: url})
			return usage.NewRedis(c, usage.RedisOptions{Prefix: "uc:" + randomHex(6) + ":"})
		})
	})
	t.Run("ScriptsReloaded", func(t *testing.T) {
		testScriptsReloaded(t, kvtest.Native(t, native.Options{URL: url}),
			usage.NewRedis(kvtest.Native(t, native.Options{URL: url}), usage.RedisOptions{Prefix: "ur:" + randomHex(6) + ":"}))
	})
	t.Run("ExactUnderLoad", func(t *testing.T) {
		testExactUnderLoad(t, nativeBackend(t, url), openSQLite(t))
	})
	t.Run("ConcurrentFlushers", func(t *testing.T) {
		testConcurrentFlushers(t, nativeBackend(t, url), openSQLite(t))
	})
}

// TestRedisScriptsReloaded: after SCRIPT FLUSH (a Redis restart or
// failover), every operation loads the scripts again, over both
// transports, inside pipelines too.
func TestRedisScriptsReloaded(t *testing.T) {
	url := redistest.Start(t, redistest.Options{}).URL() // private: SCRIPT FLUSH hurts no one
	base, _ := restserver.StartTest(t, url, restToken)
	raw := kvtest.Native(t, native.Options{URL: url})
	for _, tc := range []struct {
		name  string
		store usage.Store
	}{
		{"native", usage.NewRedis(kvtest.Native(t, native.Options{URL: url}), usage.RedisOptions{Prefix: "n:"})},
		{"rest", usage.NewRedis(kvtest.REST(t, base, restToken), usage.RedisOptions{Prefix: "r:"})},
	} {
		t.Run(tc.name, func(t *testing.T) { testScriptsReloaded(t, raw, tc.store) })
	}
}

// testScriptsReloaded runs every operation of store after a SCRIPT FLUSH
// through raw.
func testScriptsReloaded(t *testing.T, raw kv.Client, store usage.Store) {
	ctx := testCtx(t)
	flush := func() {
		t.Helper()
		if _, err := raw.Do(ctx, "SCRIPT", "FLUSH"); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	b := usage.Batch{Instance: "i", Seq: 1, Rows: []usage.Row{row("acme", "u", usage.Requests, 2)}}
	if err := store.Push(ctx, b); err != nil {
		t.Fatalf("Push after SCRIPT FLUSH: %v", err)
	}
	flush()
	p, err := store.Pending(ctx, []string{"acme"})
	if err != nil || len(p["acme"].Rows) != 1 {
		t.Fatalf("Pending after SCRIPT FLUSH = %+v, %v", p, err)
	}
	flush()
	fs, err := store.Claim(ctx, "acme", 0, time.Now())
	if err != nil || len(fs) != 1 {
		t.Fatalf("Claim after SCRIPT FLUSH = %+v, %v", fs, err)
	}
	flush()
	if err := store.Ack(ctx, "acme", fs[0].ID); err != nil {
		t.Fatal(err)
	}
	flush()
	res, err := store.Quota(ctx, usage.QuotaRequest{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 1, Limit: 1, Seed: 0})
	if err != nil || !res.Allowed {
		t.Fatalf("Quota after SCRIPT FLUSH = %+v, %v", res, err)
	}
}
