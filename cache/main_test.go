package cache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

const restToken = "cache-test-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialNative(t testing.TB, url string) *native.Client {
	return kvtest.Native(t, native.Options{URL: url})
}

// startREST serves the Upstash REST API over the Redis at url for t and
// returns a client for it.
func startREST(t testing.TB, url string) func(t testing.TB) kv.Client {
	t.Helper()
	base, _ := restserver.StartTest(t, url, restToken)
	return func(t testing.TB) kv.Client { return kvtest.REST(t, base, restToken) }
}

// randomPrefix is a key prefix of its own for a test sharing a server.
func randomPrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "ct" + hex.EncodeToString(b[:]) + ":"
}

// perTest gives the same value to every call with one *testing.T: the
// suites ask for a second instance with the same t, which must share the
// first one's storage.
type perTest[V any] struct {
	mu sync.Mutex
	m  map[*testing.T]V
}

func (p *perTest[V]) get(t *testing.T, mk func() V) V {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[*testing.T]V{}
	}
	v, ok := p.m[t]
	if !ok {
		v = mk()
		p.m[t] = v
		t.Cleanup(func() {
			p.mu.Lock()
			delete(p.m, t)
			p.mu.Unlock()
		})
	}
	return v
}

func TestMemoryConformance(t *testing.T) {
	var stores perTest[*cache.Memory]
	var clocks perTest[*storetest.ManualClock]
	storetest.RunCache(t, func(t *testing.T) (cache.Backend, storetest.Advance) {
		clk := clocks.get(t, func() *storetest.ManualClock { return storetest.NewManualClock(time.Time{}) })
		m := stores.get(t, func() *cache.Memory { return cache.NewMemory(cache.MemoryOptions{Now: clk.Now}) })
		return m, clk.Advance
	}, storetest.CacheSuiteOptions{})
}

// TestMemoryConformanceRealTime runs the suite on the wall clock, as the
// server runs it.
func TestMemoryConformanceRealTime(t *testing.T) {
	var stores perTest[*cache.Memory]
	storetest.RunCache(t, func(t *testing.T) (cache.Backend, storetest.Advance) {
		return stores.get(t, func() *cache.Memory { return cache.NewMemory(cache.MemoryOptions{}) }), storetest.RealTimeAdvance
	}, storetest.CacheSuiteOptions{})
}

func TestRedisConformance(t *testing.T) {
	url := redistest.URL(t)
	rest := startREST(t, url)
	var prefixes perTest[string]
	transports := []struct {
		name   string
		client func(t testing.TB) kv.Client
		opts   cache.RedisOptions
		suite  storetest.CacheSuiteOptions
	}{
		// Every instance (each call for one t) dials its own client.
		{"native", func(t testing.TB) kv.Client { return dialNative(t, url) }, cache.RedisOptions{}, storetest.CacheSuiteOptions{}},
		{"rest", rest, cache.RedisOptions{}, storetest.CacheSuiteOptions{}},
		{"native-localcache", func(t testing.TB) kv.Client { return dialNative(t, url) },
			cache.RedisOptions{LocalTTL: time.Minute}, storetest.CacheSuiteOptions{Propagation: time.Second}},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			storetest.RunCache(t, func(t *testing.T) (cache.Backend, storetest.Advance) {
				o := tr.opts
				o.Prefix = prefixes.get(t, randomPrefix)
				r := cache.NewRedis(tr.client(t), o)
				if want := o.LocalTTL > 0; r.Cached() != want {
					t.Fatalf("Cached() = %v, want %v", r.Cached(), want)
				}
				return r, storetest.RealTimeAdvance
			}, tr.suite)
		})
	}
}

// TestRedisClusterConformance: the suite against a three-master Redis
// Cluster, without and with the client-side cache. A tenant's keys share
// its hash tag, so each script runs on the one node serving them.
func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	url := redistest.ClusterURL(t)
	var prefixes perTest[string]
	for _, tr := range []struct {
		name  string
		opts  cache.RedisOptions
		suite storetest.CacheSuiteOptions
	}{
		{"native", cache.RedisOptions{}, storetest.CacheSuiteOptions{}},
		{"native-localcache", cache.RedisOptions{LocalTTL: time.Minute}, storetest.CacheSuiteOptions{Propagation: time.Second}},
	} {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunCache(t, func(t *testing.T) (cache.Backend, storetest.Advance) {
				c := dialNative(t, url)
				if !c.Cluster() {
					t.Fatal("client of a cluster: Cluster() = false")
				}
				o := tr.opts
				o.Prefix = prefixes.get(t, randomPrefix)
				return cache.NewRedis(c, o), storetest.RealTimeAdvance
			}, tr.suite)
		})
	}
}
