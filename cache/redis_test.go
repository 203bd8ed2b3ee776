package cache_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
)

func do(t *testing.T, c kv.Client, args ...string) kv.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

func pttl(t *testing.T, c kv.Client, key string) time.Duration {
	t.Helper()
	n, err := do(t, c, "PTTL", key).Int()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(n) * time.Millisecond
}

func TestRedisKeys(t *testing.T) {
	r := cache.NewRedis(nil, cache.RedisOptions{})
	for _, c := range []struct{ got, want string }{
		{r.GenKey("acme", "http/pages"), "agentapi:{t:acme}:cache:g:http/pages"},
		{r.EntryKey("acme", "http/pages", "/v1/x?a=b:c"), "agentapi:{t:acme}:cache:e:http/pages:/v1/x%3Fa%3Db:c"},
		{r.EntryKey("a}:b", "s:t", "k"), "agentapi:{t:a%7D%3Ab}:cache:e:s%3At:k"},
		{r.EntryKey("ä%", "", ""), "agentapi:{t:%C3%A4%25}:cache:e::"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, want %q", c.got, c.want)
		}
	}
	p := cache.NewRedis(nil, cache.RedisOptions{Prefix: "x:"})
	if k := p.GenKey("t", "s"); k != "x:{t:t}:cache:g:s" {
		t.Errorf("with prefix x: %q", k)
	}
}

// TestRedisKeysExpire: every key the backend writes has a TTL, and a
// generation key lives at least as long as the entries put under it.
func TestRedisKeysExpire(t *testing.T) {
	url := redistest.URL(t)
	raw := dialNative(t, url)
	ctx := testCtx(t)
	r := cache.NewRedis(dialNative(t, url), cache.RedisOptions{Prefix: randomPrefix(), GenerationTTL: time.Hour})
	g, err := r.Bump(ctx, "t", "s")
	if err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, raw, r.GenKey("t", "s")); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("generation key PTTL %v after Bump, want about 1h", d)
	}
	do(t, raw, "PEXPIRE", r.GenKey("t", "s"), "5000") // as if 59m55s had passed
	if err := r.Put(ctx, "t", "s", "k", g, cache.Entry{Value: []byte("v")}, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, raw, r.EntryKey("t", "s", "k")); d <= 29*time.Minute || d > 30*time.Minute {
		t.Fatalf("entry PTTL %v, want about 30m", d)
	}
	if d := pttl(t, raw, r.GenKey("t", "s")); d <= 29*time.Minute {
		t.Fatalf("generation key PTTL %v after a Put of 30m, want at least as long", d)
	}
	// A later Bump never shortens it.
	do(t, raw, "PEXPIRE", r.GenKey("t", "s"), strconv.Itoa(int((2 * time.Hour).Milliseconds())))
	if _, err := r.Bump(ctx, "t", "s"); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, raw, r.GenKey("t", "s")); d <= time.Hour {
		t.Fatalf("generation key PTTL %v after a Bump, want the 2h it had", d)
	}
	// ttl is capped at GenerationTTL.
	if err := r.Put(ctx, "t", "s2", "k", 0, cache.Entry{}, 5*time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, raw, r.EntryKey("t", "s2", "k")); d > time.Hour {
		t.Fatalf("entry PTTL %v, want capped at 1h", d)
	}
}

// TestRedisUndecodable: an entry in another format is a miss, and the next
// Put replaces it.
func TestRedisUndecodable(t *testing.T) {
	url := redistest.URL(t)
	raw := dialNative(t, url)
	ctx := testCtx(t)
	r := cache.NewRedis(dialNative(t, url), cache.RedisOptions{Prefix: randomPrefix()})
	for _, bad := range []string{"garbage", "c1 0 x y z a b", "c1 0 1 1 !! !! !!", "c2 0 1 1   ", "c1 0 1 1"} {
		do(t, raw, "SET", r.EntryKey("t", "s", "k"), bad)
		if _, g, ok, err := r.Get(ctx, "t", "s", "k"); err != nil || ok || g != 0 {
			t.Fatalf("Get of %q: hit %v gen %d, %v; want a miss at gen 0", bad, ok, g, err)
		}
	}
	if err := r.Put(ctx, "t", "s", "k", 0, cache.Entry{Value: []byte("v")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if e, _, ok, err := r.Get(ctx, "t", "s", "k"); err != nil || !ok || string(e.Value) != "v" {
		t.Fatalf("after Put: %q, %v, %v", e.Value, ok, err)
	}
	s, err := do(t, raw, "GET", r.EntryKey("t", "s", "k")).Text()
	if err != nil {
		t.Fatal(err)
	}
	if _, g, ok := cache.DecodeEntry(s); !ok || g != 0 || !strings.HasPrefix(s, "c1 0 ") {
		t.Fatalf("stored %q", s)
	}
}

// commandCalls reads how many times the server ran cmd (INFO
// commandstats).
func commandCalls(t *testing.T, c kv.Client, cmd string) int {
	t.Helper()
	info, err := do(t, c, "INFO", "commandstats").Text()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+strings.ToLower(cmd)+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

// TestRedisRoundTrips: without LocalTTL a Get is one script call and
// nothing else; with it, repeated hits are served by the client-side
// cache, and a Bump on another instance reaches it.
func TestRedisRoundTrips(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{}) // private: the counts are ours alone
	raw := dialNative(t, srv.URL())
	ctx := testCtx(t)
	p := randomPrefix()
	writer := cache.NewRedis(dialNative(t, srv.URL()), cache.RedisOptions{Prefix: p})
	g, _ := writer.Bump(ctx, "t", "s")
	if err := writer.Put(ctx, "t", "s", "k", g, cache.Entry{Value: []byte("v")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	counted := &countingClient{Client: dialNative(t, srv.URL())}
	strict := cache.NewRedis(counted, cache.RedisOptions{Prefix: p})
	evals := commandCalls(t, raw, "evalsha")
	for range 50 {
		if _, _, ok, err := strict.Get(ctx, "t", "s", "k"); err != nil || !ok {
			t.Fatalf("Get: %v, %v", ok, err)
		}
	}
	if n, e := counted.calls.Load(), counted.evals.Load(); n != 50 || e != 50 {
		t.Fatalf("50 Gets made %d calls (%d Eval), want 50 Evals (one round trip each)", n, e)
	}
	if n := commandCalls(t, raw, "evalsha") - evals; n != 50 {
		t.Fatalf("50 Gets ran EVALSHA %d times, want 50", n)
	}

	// What reaches the server on the cached path.
	served := func() int {
		n := 0
		for _, c := range []string{"evalsha", "eval", "get", "mget", "pttl"} {
			n += commandCalls(t, raw, c)
		}
		return n
	}
	reader := cache.NewRedis(kvNativeCaching(t, srv.URL()), cache.RedisOptions{Prefix: p, LocalTTL: time.Minute})
	if !reader.Cached() {
		t.Fatal("LocalTTL set over a caching client, but Cached() is false")
	}
	for range 2 { // warm the local cache
		if _, _, ok, err := reader.Get(ctx, "t", "s", "k"); err != nil || !ok {
			t.Fatalf("Get: %v, %v", ok, err)
		}
	}
	before := served()
	for range 200 {
		if e, _, ok, err := reader.Get(ctx, "t", "s", "k"); err != nil || !ok || string(e.Value) != "v" {
			t.Fatalf("Get: %q, %v, %v", e.Value, ok, err)
		}
	}
	if n := served() - before; n != 0 {
		t.Fatalf("200 cached Gets ran %d commands on the server, want 0", n)
	}
	g2, err := writer.Bump(ctx, "t", "s")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		_, g, ok, err := reader.Get(ctx, "t", "s", "k")
		if err != nil {
			t.Fatal(err)
		}
		if !ok && g == g2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("1s after a Bump elsewhere the cached reader still answers hit %v at gen %d", ok, g)
		}
		time.Sleep(time.Millisecond)
	}
}

// kvNativeCaching dials a native client with client-side caching on.
func kvNativeCaching(t *testing.T, url string) kv.Client {
	c := dialNative(t, url)
	if !c.Caching() {
		t.Fatal("native client without client-side caching against redis-server")
	}
	return c
}

// TestRedisLocalTTLNeedsCache: LocalTTL over a client without a cache
// (REST, or native with caching off) keeps the one-trip script.
func TestRedisLocalTTLNeedsCache(t *testing.T) {
	url := redistest.URL(t)
	c := kvtest.Native(t, native.Options{URL: url, DisableCache: true})
	if r := cache.NewRedis(c, cache.RedisOptions{LocalTTL: time.Minute}); r.Cached() {
		t.Error("Cached() over a native client with DisableCache")
	}
	rest := startREST(t, url)(t)
	if r := cache.NewRedis(rest, cache.RedisOptions{LocalTTL: time.Minute}); r.Cached() {
		t.Error("Cached() over REST")
	}
}

// countingClient counts the calls a backend makes: each is one round trip.
type countingClient struct {
	kv.Client
	calls, evals atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, args ...string) (kv.Value, error) {
	c.calls.Add(1)
	return c.Client.Do(ctx, args...)
}

func (c *countingClient) Pipeline(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	c.calls.Add(1)
	return c.Client.Pipeline(ctx, cmds...)
}

func (c *countingClient) MultiExec(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	c.calls.Add(1)
	return c.Client.MultiExec(ctx, cmds...)
}

func (c *countingClient) Eval(ctx context.Context, s *kv.Script, keys []string, args ...string) (kv.Value, error) {
	c.calls.Add(1)
	c.evals.Add(1)
	return c.Client.Eval(ctx, s, keys, args...)
}
