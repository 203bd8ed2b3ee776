package redis_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redis"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/storetest"
)

const restToken = "sessions-test-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialNative(t *testing.T, o native.Options) *native.Client { return kvtest.Native(t, o) }

func newREST(t *testing.T, base string) *rest.Client { return kvtest.REST(t, base, restToken) }

func randomPrefix(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return "sesstest:" + hex.EncodeToString(b[:]) + ":"
}

// perTest gives every call of newStore with the same t the same key prefix,
// so that the stores of one subtest share a backend (storetest's rule),
// while each call gets a new kv client from dial: another instance.
func perTest(dial func(t *testing.T, n int) kv.Client, o redis.SessionOptions) func(t *testing.T) (agentapi.SessionStore, storetest.Advance) {
	var (
		mu       sync.Mutex
		prefixes = map[*testing.T]string{}
		calls    = map[*testing.T]int{}
	)
	return func(t *testing.T) (agentapi.SessionStore, storetest.Advance) {
		mu.Lock()
		p, ok := prefixes[t]
		if !ok {
			p = randomPrefix(t)
			prefixes[t] = p
		}
		n := calls[t]
		calls[t]++
		mu.Unlock()
		return redis.NewSessionStoreOptions(dial(t, n), p, o), storetest.RealTimeAdvance
	}
}

func TestSessionStoreNative(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	u := redistest.URL(t)
	newStore := perTest(func(t *testing.T, _ int) kv.Client {
		c := dialNative(t, native.Options{URL: u})
		if !c.Caching() {
			t.Fatal("client-side caching is off on a local redis-server")
		}
		return c
	}, redis.SessionOptions{})
	s, _ := newStore(t)
	if !s.(*redis.SessionStore).Cached() {
		t.Fatal("store over kv/native does not take the cached path")
	}
	storetest.RunSessionStore(t, newStore)
}

// TestSessionStoreNativeScripted: the uncached path (one GET+PEXPIRE
// script per Get) over the native protocol.
func TestSessionStoreNativeScripted(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	u := redistest.URL(t)
	storetest.RunSessionStore(t, perTest(func(t *testing.T, _ int) kv.Client {
		return dialNative(t, native.Options{URL: u})
	}, redis.SessionOptions{LocalTTL: -1}))
}

func TestSessionStoreNativeTLSPassword(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: "s3cret"})
	storetest.RunSessionStore(t, perTest(func(t *testing.T, _ int) kv.Client {
		c := dialNative(t, native.Options{URL: srv.URL(), TLSConfig: srv.TLSConfig()})
		if !c.TLS() {
			t.Fatal("not TLS")
		}
		return c
	}, redis.SessionOptions{}))
}

// TestSessionStoreCluster: the suite against a three-master Redis Cluster,
// where a session and its owner's index are in different slots (and
// mostly on different nodes).
func TestSessionStoreCluster(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	u := redistest.ClusterURL(t)
	newStore := perTest(func(t *testing.T, _ int) kv.Client {
		c := dialNative(t, native.Options{URL: u})
		if !c.Cluster() || !c.Caching() {
			t.Fatalf("client of a cluster: Cluster() = %v, Caching() = %v; want both", c.Cluster(), c.Caching())
		}
		return c
	}, redis.SessionOptions{})
	storetest.RunSessionStore(t, newStore)
}

func TestSessionStoreREST(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	base, _ := restserver.StartTest(t, redistest.URL(t), restToken)
	newStore := perTest(func(t *testing.T, _ int) kv.Client { return newREST(t, base) }, redis.SessionOptions{})
	s, _ := newStore(t)
	if s.(*redis.SessionStore).Cached() {
		t.Fatal("store over REST claims a client-side cache")
	}
	storetest.RunSessionStore(t, newStore)
}

// TestSessionStoreMixed: one instance speaks REST, the other the native
// protocol with its cache, over one Redis. A logout through REST must
// reach the native instance's cache.
func TestSessionStoreMixed(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	u := redistest.URL(t)
	base, _ := restserver.StartTest(t, u, restToken)
	storetest.RunSessionStore(t, perTest(func(t *testing.T, n int) kv.Client {
		if n%2 == 0 {
			return newREST(t, base)
		}
		return dialNative(t, native.Options{URL: u})
	}, redis.SessionOptions{}))
}

// TestSessionStoreSwitch: through a kv.Switch preferring native, as
// cmd/agentapi wires it.
func TestSessionStoreSwitch(t *testing.T) {
	t.Parallel() // mostly waiting for TTLs: overlap the transports
	u := redistest.URL(t)
	base, _ := restserver.StartTest(t, u, restToken)
	storetest.RunSessionStore(t, perTest(func(t *testing.T, _ int) kv.Client {
		sw := kv.NewSwitch(testCtx(t), []kv.Endpoint{
			{Name: "native", Addr: u, Dial: func(ctx context.Context) (kv.Client, error) {
				return native.Dial(ctx, native.Options{URL: u, ConnectTimeout: 5 * time.Second})
			}},
			{Name: "rest", Addr: base, Dial: func(context.Context) (kv.Client, error) {
				return rest.New(rest.Options{URL: base, Token: restToken, Backoff: time.Millisecond})
			}},
		}, kv.SwitchOptions{})
		t.Cleanup(func() { sw.Close() })
		if st := sw.Status(); st.Protocol != "native" {
			t.Fatalf("switch uses %q, want native", st.Protocol)
		}
		return sw
	}, redis.SessionOptions{}))
}

// ---------------------------------------------------------------- layout

func do(t *testing.T, c kv.Client, args ...string) kv.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
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

func TestSessionKeyLayout(t *testing.T) {
	u := redistest.URL(t)
	raw := dialNative(t, native.Options{URL: u, DisableCache: true})
	p := randomPrefix(t)
	s := redis.NewSessionStore(dialNative(t, native.Options{URL: u}), p)
	ctx := testCtx(t)
	payload := []byte{0, 1, 2, 0xff, 'x'}
	if err := s.Put(ctx, "id1", "owner1", payload, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "id2", "owner1", payload, time.Minute); err != nil {
		t.Fatal(err)
	}

	v, err := do(t, raw, "GET", p+"session:id1").Text()
	if err != nil {
		t.Fatalf("GET %ssession:id1: %v", p, err)
	}
	if want := base64.StdEncoding.EncodeToString(payload) + "|owner1"; v != want {
		t.Errorf("session value %q, want %q", v, want)
	}
	if d := pttl(t, raw, p+"session:id1"); d <= 59*time.Minute || d > time.Hour {
		t.Errorf("session PTTL %v, want about 1h", d)
	}
	members, err := do(t, raw, "SMEMBERS", p+"owner:{owner1}").Strings()
	if err != nil || len(members) != 2 {
		t.Fatalf("owner index members %v, %v; want id1 and id2", members, err)
	}
	// The shorter second login did not shorten the index below the first.
	if d := pttl(t, raw, p+"owner:{owner1}"); d < pttl(t, raw, p+"session:id1") {
		t.Errorf("owner index PTTL %v is shorter than its session's", d)
	}
	// Everything the store wrote is under the prefix.
	keys, err := do(t, raw, "KEYS", p+"*").Strings()
	if err != nil || len(keys) != 3 {
		t.Errorf("keys under the prefix: %v, %v; want 2 sessions and 1 index", keys, err)
	}
	// DeleteOwner leaves nothing behind.
	if n, err := s.DeleteOwner(ctx, "owner1"); n != 2 || err != nil {
		t.Fatalf("DeleteOwner = %d, %v", n, err)
	}
	if keys, _ := do(t, raw, "KEYS", p+"*").Strings(); len(keys) != 0 {
		t.Errorf("keys left after DeleteOwner: %v", keys)
	}
}

func TestSessionCorruptEntry(t *testing.T) {
	u := redistest.URL(t)
	raw := dialNative(t, native.Options{URL: u, DisableCache: true})
	p := randomPrefix(t)
	s := redis.NewSessionStore(dialNative(t, native.Options{URL: u}), p)
	for _, v := range []string{"no separator", "!!notbase64|owner"} {
		do(t, raw, "SET", p+"session:bad", v)
		_, err := s.Get(testCtx(t), "bad", time.Minute)
		if k := agentapi.KindOf(err); k != agentapi.KindInternal {
			t.Errorf("Get of %q: error %v of kind %v, want %v", v, err, k, agentapi.KindInternal)
		}
	}
}

// commandCalls reads how many times the server ran cmd (INFO commandstats).
func commandCalls(t *testing.T, c kv.Client, cmd string) int {
	t.Helper()
	info, err := do(t, c, "INFO", "commandstats").Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+strings.ToLower(cmd)+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

// TestSessionGetFromCache: on the cached path, repeated Gets of a session
// do not reach the server, until it is deleted elsewhere.
func TestSessionGetFromCache(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{}) // private: counts are ours alone
	raw := dialNative(t, native.Options{URL: srv.URL(), DisableCache: true})
	p := randomPrefix(t)
	a := redis.NewSessionStore(dialNative(t, native.Options{URL: srv.URL()}), p)
	b := redis.NewSessionStore(dialNative(t, native.Options{URL: srv.URL()}), p)
	ctx := testCtx(t)
	if err := a.Put(ctx, "id", "owner", []byte("payload"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 3 { // first read, refresh (which invalidates), re-read
		if _, err := b.Get(ctx, "id", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	gets, evals := commandCalls(t, raw, "GET"), commandCalls(t, raw, "EVALSHA")+commandCalls(t, raw, "EVAL")
	for range 200 {
		if _, err := b.Get(ctx, "id", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if d := commandCalls(t, raw, "GET") - gets; d > 2 {
		t.Errorf("200 cached Gets sent %d GETs to the server, want at most 2", d)
	}
	if d := commandCalls(t, raw, "EVALSHA") + commandCalls(t, raw, "EVAL") - evals; d != 0 {
		t.Errorf("200 Gets within RefreshEvery ran %d scripts, want 0", d)
	}
	if err := a.Delete(ctx, "id"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		_, err := b.Get(ctx, "id", time.Hour)
		if agentapi.KindOf(err) == agentapi.KindNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get on the caching instance after Delete: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// counting is a kv.Client that counts the calls that reach the server
// (each one a round trip). It hides any client-side cache.
type counting struct {
	kv.Client
	mu    sync.Mutex
	calls int
}

func (c *counting) count() {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
}

func (c *counting) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *counting) Do(ctx context.Context, args ...string) (kv.Value, error) {
	c.count()
	return c.Client.Do(ctx, args...)
}

func (c *counting) Eval(ctx context.Context, s *kv.Script, keys []string, args ...string) (kv.Value, error) {
	c.count()
	return c.Client.Eval(ctx, s, keys, args...)
}

func (c *counting) Pipeline(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	c.count()
	return c.Client.Pipeline(ctx, cmds...)
}

func (c *counting) MultiExec(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	c.count()
	return c.Client.MultiExec(ctx, cmds...)
}

// TestSessionScriptedOneRoundTrip: without a cache, a Get is one call
// (the GET+PEXPIRE script), plus, at most once per RefreshEvery, the
// owner refresh.
func TestSessionScriptedOneRoundTrip(t *testing.T) {
	u := redistest.URL(t)
	base, _ := restserver.StartTest(t, u, restToken)
	c := &counting{Client: newREST(t, base)}
	s := redis.NewSessionStore(c, randomPrefix(t))
	ctx := testCtx(t)
	if err := s.Put(ctx, "id", "owner", []byte("payload"), time.Hour); err != nil {
		t.Fatal(err)
	}
	before := c.n()
	for range 50 {
		if _, err := s.Get(ctx, "id", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if d := c.n() - before; d != 50 {
		t.Errorf("50 Gets over REST made %d calls, want 50", d)
	}
	// A Get that extends the expiry by RefreshEvery or more also refreshes
	// the owner index, and then the session: three calls.
	before = c.n()
	if _, err := s.Get(ctx, "id", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := c.n() - before; d != 3 {
		t.Errorf("a refreshing Get made %d calls, want 3", d)
	}
}

// TestSessionRefreshThrottled: a session read continuously is refreshed
// about once per RefreshEvery, and its TTL keeps sliding.
func TestSessionRefreshThrottled(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	raw := dialNative(t, native.Options{URL: srv.URL(), DisableCache: true})
	p := randomPrefix(t)
	const every = 100 * time.Millisecond
	s := redis.NewSessionStoreOptions(dialNative(t, native.Options{URL: srv.URL()}), p, redis.SessionOptions{RefreshEvery: every})
	// Logged in through another instance: s has no write window open.
	w := redis.NewSessionStore(dialNative(t, native.Options{URL: srv.URL()}), p)
	ctx := testCtx(t)
	if err := w.Put(ctx, "id", "owner", []byte("payload"), time.Hour); err != nil {
		t.Fatal(err)
	}
	before := commandCalls(t, raw, "EVALSHA") + commandCalls(t, raw, "EVAL")
	start := time.Now()
	for time.Since(start) < 5*every {
		if _, err := s.Get(ctx, "id", time.Hour); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	n := commandCalls(t, raw, "EVALSHA") + commandCalls(t, raw, "EVAL") - before
	if max := int(elapsed/every) + 1; n < 3 || n > max {
		t.Errorf("%v of Gets refreshed %d times, want 3..%d (every %v)", elapsed.Round(time.Millisecond), n, max, every)
	}
	if d := pttl(t, raw, p+"session:id"); d < time.Hour-2*every {
		t.Errorf("session PTTL %v after continuous use, want within %v of 1h", d, 2*every)
	}
}

// TestSessionRedisDown: a session cached by an instance is not served once
// Redis is gone: Get fails with KindUnavailable (never KindNotFound, which
// would read as a logout), and works again when Redis is back.
func TestSessionRedisDown(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	p := randomPrefix(t)
	s := redis.NewSessionStore(dialNative(t, native.Options{URL: srv.URL(), ConnectTimeout: time.Second}), p)
	ctx := testCtx(t)
	if err := s.Put(ctx, "id", "owner", []byte("payload"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Get(ctx, "id", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	srv.Stop(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Get(ctx, "id", time.Hour)
		if err != nil {
			if k := agentapi.KindOf(err); k != agentapi.KindUnavailable {
				t.Fatalf("Get with Redis down: error %v of kind %v, want %v", err, k, agentapi.KindUnavailable)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Get still served from the cache 5s after Redis stopped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Redis came back empty (nothing persisted): the session is gone, and
	// the store reports so instead of an outage.
	srv.Restart(t)
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := s.Get(ctx, "id", time.Hour)
		if agentapi.KindOf(err) == agentapi.KindNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after Redis restarted: %v, want KindNotFound", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSessionInvalidUTF8(t *testing.T) {
	s := redis.NewSessionStore(dialNative(t, native.Options{URL: redistest.URL(t)}), randomPrefix(t))
	ctx := testCtx(t)
	if err := s.Put(ctx, "id", "bad\xff", []byte("x"), time.Minute); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("Put with a non-UTF-8 owner: %v, want KindInvalid", err)
	}
	if err := s.Put(ctx, "bad\xff", "o", []byte("x"), time.Minute); agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("Put with a non-UTF-8 id: %v, want KindInvalid", err)
	}
}
