package usage_test

import (
	"testing"
	"time"

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
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			flush := func() {
				t.Helper()
				if _, err := raw.Do(ctx, "SCRIPT", "FLUSH"); err != nil {
					t.Fatal(err)
				}
			}
			flush()
			b := usage.Batch{Instance: "i", Seq: 1, Rows: []usage.Row{row("acme", "u", usage.Requests, 2)}}
			if err := tc.store.Push(ctx, b); err != nil {
				t.Fatalf("Push after SCRIPT FLUSH: %v", err)
			}
			flush()
			p, err := tc.store.Pending(ctx, []string{"acme"})
			if err != nil || len(p["acme"].Rows) != 1 {
				t.Fatalf("Pending after SCRIPT FLUSH = %+v, %v", p, err)
			}
			flush()
			fs, err := tc.store.Claim(ctx, "acme", 0, time.Now())
			if err != nil || len(fs) != 1 {
				t.Fatalf("Claim after SCRIPT FLUSH = %+v, %v", fs, err)
			}
			flush()
			if err := tc.store.Ack(ctx, "acme", fs[0].ID); err != nil {
				t.Fatal(err)
			}
			flush()
			res, err := tc.store.Quota(ctx, usage.QuotaRequest{TenantID: "acme", Metric: usage.Messages, Month: "203001", N: 1, Limit: 1, Seed: 0})
			if err != nil || !res.Allowed {
				t.Fatalf("Quota after SCRIPT FLUSH = %+v, %v", res, err)
			}
		})
	}
}
