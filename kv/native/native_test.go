package native_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, kvtest.IgnoreClusterClient()...)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects with o and closes the client when t ends.
func dial(t *testing.T, o native.Options) *native.Client { return kvtest.Native(t, o) }

func do(t *testing.T, c kv.Client, args ...string) kv.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return v
}

func TestConformance(t *testing.T) {
	u := redistest.URL(t)
	kvtest.Run(t, func(t *testing.T) kv.Client {
		return dial(t, native.Options{URL: u})
	})
}

func TestConformanceTLSPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: "s3cret"})
	if !strings.HasPrefix(srv.URL(), "rediss://") || !strings.Contains(srv.URL(), "s3cret") {
		t.Fatalf("unexpected TLS server URL %q", srv.URL())
	}
	c := dial(t, native.Options{URL: srv.URL(), TLSConfig: srv.TLSConfig()})
	if !c.TLS() {
		t.Errorf("TLS() = false on a rediss:// connection")
	}
	kvtest.Run(t, func(t *testing.T) kv.Client {
		return dial(t, native.Options{URL: srv.URL(), TLSConfig: srv.TLSConfig()})
	})
}

// withoutPassword strips the user info from a redis URL.
func withoutPassword(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = nil
	return u.String()
}

func withPassword(t *testing.T, raw, password string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("", password)
	return u.String()
}

func TestPasswordFromOptions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: "s3cret"})
	plain := withoutPassword(t, srv.URL())

	// REDIS_PASSWORD style: the URL has none, Options.Password is used.
	c := dial(t, native.Options{URL: plain, Password: "s3cret", TLSConfig: srv.TLSConfig()})
	if v := do(t, c, "PING"); !v.Equal(kv.StringValue("PONG")) {
		t.Errorf("PING = %v", v)
	}

	// A password in the URL wins over Options.Password.
	c = dial(t, native.Options{URL: srv.URL(), Password: "not-this-one", TLSConfig: srv.TLSConfig()})
	do(t, c, "PING")
}

func TestWrongPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret"})
	cases := map[string]native.Options{
		"wrong password in URL":     {URL: withPassword(t, srv.URL(), "wrong")},
		"wrong password in Options": {URL: withoutPassword(t, srv.URL()), Password: "wrong"},
		"no password":               {URL: withoutPassword(t, srv.URL())},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			o.ConnectTimeout = 5 * time.Second
			c, err := native.Dial(testCtx(t), o)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded with bad credentials")
			}
			if !errors.Is(err, kv.ErrUnauthorized) {
				t.Errorf("Dial error %v does not match ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), "wrong") && !strings.Contains(o.URL, "wrong") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestDatabaseFromURL(t *testing.T) {
	u := redistest.Start(t, redistest.Options{}).URL()
	c3 := dial(t, native.Options{URL: u + "/3"})
	do(t, c3, "SET", "dbtest", "in-3")

	other3 := dial(t, native.Options{URL: u + "/3"})
	if v := do(t, other3, "GET", "dbtest"); !v.Equal(kv.StringValue("in-3")) {
		t.Errorf("GET on db 3 from a second client = %v, want \"in-3\"", v)
	}
	db0 := dial(t, native.Options{URL: u})
	if v := do(t, db0, "GET", "dbtest"); !v.IsNil() {
		t.Errorf("GET on db 0 = %v, want nil (the key belongs to db 3)", v)
	}
	// MULTI/EXEC runs on a dedicated connection: it must use db 3 too.
	if _, err := c3.MultiExec(testCtx(t), []string{"SET", "dbtest-tx", "x"}); err != nil {
		t.Fatal(err)
	}
	if v := do(t, other3, "EXISTS", "dbtest-tx"); !v.Equal(kv.IntValue(1)) {
		t.Errorf("key written by MultiExec is not in db 3")
	}
	if v := do(t, db0, "DBSIZE"); !v.Equal(kv.IntValue(0)) {
		t.Errorf("DBSIZE of db 0 = %v, want 0", v)
	}
}

func TestInvalidURL(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:6379", "://nope", "127.0.0.1:6379"} {
		_, err := native.Dial(testCtx(t), native.Options{URL: u})
		if agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("Dial(%q): error %v, want KindInvalid", u, err)
		}
	}
}

// closedPort returns a local address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestDialClosedPort(t *testing.T) {
	const timeout = 2 * time.Second
	start := time.Now()
	c, err := native.Dial(context.Background(), native.Options{URL: "redis://" + closedPort(t), ConnectTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("Dial error %v does not match ErrUnavailable", err)
	}
	if elapsed > timeout {
		t.Errorf("Dial took %v, longer than ConnectTimeout %v", elapsed, timeout)
	}
}

// A server that accepts connections but never answers must not hang Dial
// beyond the connect timeout.
func TestDialSilentServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})

	const timeout = 500 * time.Millisecond
	start := time.Now()
	c, err := native.Dial(context.Background(), native.Options{URL: "redis://" + l.Addr().String(), ConnectTimeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		c.Close()
		t.Fatal("Dial to a silent server succeeded")
	}
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("Dial error %v does not match ErrUnavailable", err)
	}
	// Caching is retried without tracking on some errors, so allow two
	// handshakes plus slack.
	if elapsed > 3*timeout {
		t.Errorf("Dial took %v with ConnectTimeout %v", elapsed, timeout)
	}
}

// Dial honours its context even though rueidis dials without one.
func TestDialContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := native.Dial(ctx, native.Options{URL: "redis://" + closedPort(t)})
	if err == nil {
		c.Close()
		t.Fatal("Dial with a cancelled context succeeded")
	}
}

// getCalls reads how many GET commands the server has run.
func getCalls(t *testing.T, c kv.Client) int {
	t.Helper()
	s, err := do(t, c, "INFO", "commandstats").Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

func TestClientSideCaching(t *testing.T) {
	u := redistest.Start(t, redistest.Options{}).URL()
	c := dial(t, native.Options{URL: u})
	if !c.Caching() {
		t.Fatal("Caching() = false against Redis 7")
	}
	writer := dial(t, native.Options{URL: u, DisableCache: true})
	if writer.Caching() {
		t.Error("Caching() = true with DisableCache")
	}
	ctx := testCtx(t)
	do(t, writer, "SET", "hot", "v1")

	v, err := c.DoCached(ctx, time.Minute, "GET", "hot")
	if err != nil || !v.Equal(kv.StringValue("v1")) {
		t.Fatalf("DoCached = %v, %v; want \"v1\"", v, err)
	}
	// The second read is served locally: the server runs no GET for it.
	before := getCalls(t, writer)
	for range 5 {
		v, err = c.DoCached(ctx, time.Minute, "GET", "hot")
		if err != nil || !v.Equal(kv.StringValue("v1")) {
			t.Fatalf("DoCached (cached) = %v, %v", v, err)
		}
	}
	if after := getCalls(t, writer); after != before {
		t.Errorf("server ran %d GETs for cached reads, want 0", after-before)
	}

	// Another client's write invalidates the entry; the invalidation is a
	// push message, so poll for it with a deadline.
	do(t, writer, "SET", "hot", "v2")
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err = c.DoCached(ctx, time.Minute, "GET", "hot")
		if err != nil {
			t.Fatal(err)
		}
		if v.Equal(kv.StringValue("v2")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DoCached still returns %v 5s after another client's SET", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A deleted key reads as nil through the cache too.
	do(t, writer, "DEL", "hot")
	deadline = time.Now().Add(5 * time.Second)
	for {
		v, err = kv.DoCached(ctx, c, time.Minute, "GET", "hot")
		if err != nil {
			t.Fatal(err)
		}
		if v.IsNil() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DoCached still returns %v after DEL", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStopRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := dial(t, native.Options{URL: srv.URL(), ConnectTimeout: 2 * time.Second})
	do(t, c, "SET", "k", "v")
	if v, err := c.DoCached(testCtx(t), time.Minute, "GET", "k"); err != nil || !v.Equal(kv.StringValue("v")) {
		t.Fatalf("DoCached = %v, %v", v, err)
	}

	srv.Stop(t)
	// No deadline: the calls must fail by themselves, not by timing out.
	ctx := context.Background()
	calls := map[string]func() error{
		"Do": func() error { _, err := c.Do(ctx, "GET", "k"); return err },
		"DoCached": func() error {
			_, err := c.DoCached(ctx, time.Minute, "GET", "other")
			return err
		},
		"Pipeline":  func() error { _, err := c.Pipeline(ctx, []string{"GET", "k"}); return err },
		"MultiExec": func() error { _, err := c.MultiExec(ctx, []string{"GET", "k"}); return err },
		"Eval": func() error {
			_, err := c.Eval(ctx, kv.NewScript("return 1"), nil)
			return err
		},
	}
	for name, call := range calls {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- call() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s with the server stopped still blocks after 5s", name)
		}
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Errorf("%s with the server stopped: error %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with the server stopped took %v", name, d)
		}
	}

	srv.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Do(ctx, "PING")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Do still fails 10s after Restart: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The restarted server kept nothing; the local cache must not serve
	// what the old connection had cached.
	if v, err := c.DoCached(ctx, time.Minute, "GET", "k"); err != nil || !v.IsNil() {
		t.Errorf("DoCached after restart = %v, %v; want nil (stale cache?)", v, err)
	}
	for {
		_, err := c.Do(ctx, "SET", "k", "again")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Do still fails 10s after Restart: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := do(t, c, "GET", "k"); !v.Equal(kv.StringValue("again")) {
		t.Errorf("GET after restart = %v", v)
	}
	if rs, err := c.MultiExec(ctx, []string{"INCR", "n"}); err != nil || !rs[0].Value.Equal(kv.IntValue(1)) {
		t.Errorf("MultiExec after restart = %v, %v", rs, err)
	}
}

// TestConformanceCluster: the suite, with its cluster cases, against a
// three-master Redis Cluster. The client finds the other nodes from the one
// in the URL, and sends every command straight to the node of its keys:
// no node answers MOVED during the whole suite.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	u, addrs := os.Getenv("REDIS_TEST_CLUSTER_URL"), []string(nil)
	if u == "" {
		cl := redistest.StartCluster(t, redistest.ClusterOptions{})
		u, addrs = cl.URL(), cl.Addrs()
	}
	if c := dial(t, native.Options{URL: u}); !c.Cluster() || !c.Caching() {
		t.Fatalf("client of a cluster: Cluster() = %v, Caching() = %v; want both", c.Cluster(), c.Caching())
	}
	before := movedReplies(t, addrs)
	kvtest.Run(t, func(t *testing.T) kv.Client {
		return dial(t, native.Options{URL: u})
	}, kvtest.Cluster())
	if n := movedReplies(t, addrs) - before; n != 0 {
		t.Errorf("the nodes answered MOVED %d times: commands went to the wrong node", n)
	}
	if addrs != nil {
		t.Run("Seeds", func(t *testing.T) { testClusterSeeds(t, addrs) })
	}
}

// testClusterSeeds: with more seed nodes in addr= parameters, the client
// starts while the URL's own host is down.
func testClusterSeeds(t *testing.T, addrs []string) {
	u := "redis://" + closedPort(t) + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	c := dial(t, native.Options{URL: u})
	if !c.Cluster() {
		t.Fatal("Cluster() = false")
	}
	for i := range 30 {
		k := "seed-" + strconv.Itoa(i)
		do(t, c, "SET", k, "v")
		if v := do(t, c, "GET", k); !v.Equal(kv.StringValue("v")) {
			t.Fatalf("GET %s = %v", k, v)
		}
		do(t, c, "DEL", k)
	}
}

// movedReplies sums the MOVED errors the nodes at addrs have answered
// (INFO errorstats), over connections of its own.
func movedReplies(t *testing.T, addrs []string) int {
	t.Helper()
	total := 0
	for _, a := range addrs {
		info, err := rawInfo(a, "errorstats")
		if err != nil {
			t.Fatalf("INFO errorstats on %s: %v", a, err)
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "errorstat_MOVED:count="); ok {
				n, _ := strconv.Atoi(rest)
				total += n
			}
		}
	}
	return total
}

// rawInfo runs INFO section on the server at addr over a plain RESP
// connection.
func rawInfo(addr, section string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if err != nil {
		return "", fmt.Errorf("reply %q", line)
	}
	buf := make([]byte, n)
	_, err = io.ReadFull(r, buf)
	return string(buf), err
}

// A single server is not taken for a cluster.
func TestSingleServerIsNotCluster(t *testing.T) {
	c := dial(t, native.Options{URL: redistest.URL(t)})
	if c.Cluster() {
		t.Fatal("Cluster() = true against a plain redis-server")
	}
}

// One node of a cluster down: calls for its slots fail at once with
// ErrUnavailable, the others go on working, and its slots work again
// once it is back.
func TestClusterNodeDown(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	c := dial(t, native.Options{URL: cl.URL(), ConnectTimeout: 2 * time.Second})
	node := cl.Nodes()[2]
	// Keys by slot: node 2 serves the last third.
	var onDown, onUp string
	for i := 0; onDown == "" || onUp == ""; i++ {
		k := "node-" + strconv.Itoa(i)
		if kv.Slot(k) >= 2*kv.Slots/3 {
			onDown = k
		} else {
			onUp = k
		}
	}
	do(t, c, "SET", onDown, "v")
	node.Stop(t)

	ctx := context.Background() // no deadline: calls must fail by themselves
	start := time.Now()
	_, err := c.Do(ctx, "GET", onDown)
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("GET on the stopped node's slot: error %v, want ErrUnavailable", err)
	}
	_, err = c.Eval(ctx, kv.NewScript("return redis.call('GET', KEYS[1])"), []string{onDown})
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("Eval on the stopped node's slot: error %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("calls to a stopped node took %v", d)
	}
	do(t, c, "SET", onUp, "still fine")

	node.Restart(t)
	cl.WaitReady(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Do(ctx, "SET", onDown, "back")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET on the restarted node's slot still fails after 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterResharding: a slot moves to another node while a client
// runs scripts, pipelines and cached reads on its keys. Every call
// succeeds (the client follows ASK and MOVED), the script's two counters
// stay equal and exact, and cached reads see the moved keys' new values.
func TestClusterResharding(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{})
	c := dial(t, native.Options{URL: cl.URL()})
	slot := kv.Slot("{rs}")
	// Keys enough that MIGRATE takes several batches.
	for i := range 250 {
		do(t, c, "SET", fmt.Sprintf("{rs}:k%d", i), "v")
	}
	both := kv.NewScript(`redis.call("INCR", KEYS[1]); return redis.call("INCR", KEYS[2])`)
	ctx := testCtx(t)
	stop := make(chan struct{})
	var scripts, pipes, reads atomic.Int64
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default: // enough to fail the test with
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Eval(ctx, both, []string{"{rs}:a", "{rs}:b"}); err != nil {
				report(fmt.Errorf("script: %w", err))
				continue
			}
			scripts.Add(1)
			res, err := c.Pipeline(ctx, []string{"INCR", "{rs}:p"}, []string{"GET", "{rs}:k7"})
			if err == nil {
				err = res[0].Err
			}
			if err != nil {
				report(fmt.Errorf("pipeline: %w", err))
				continue
			}
			pipes.Add(1)
			if _, err := kv.DoCached(ctx, c, time.Minute, "GET", "{rs}:k3"); err != nil {
				report(fmt.Errorf("cached read: %w", err))
				continue
			}
			reads.Add(1)
		}
	})
	testproc.WaitFor(t, 20*time.Second, "20 scripts before the move", func() bool { return scripts.Load() >= 20 })
	owner := slot * 3 / kv.Slots
	movedBefore := movedReplies(t, cl.Addrs())
	cl.MoveSlot(t, slot, (owner+1)%3)
	do(t, c, "SET", "{rs}:k3", "after the move")
	n := scripts.Load()
	testproc.WaitFor(t, 20*time.Second, "20 scripts after the move", func() bool { return scripts.Load() >= n+20 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("during the move: %v", err)
	}
	text := func(v kv.Value) string { s, _ := v.Text(); return s }
	if a, b := text(do(t, c, "GET", "{rs}:a")), text(do(t, c, "GET", "{rs}:b")); a != b || a != fmt.Sprint(scripts.Load()) {
		t.Errorf("script counters %s and %s after %d scripts", a, b, scripts.Load())
	}
	if p := text(do(t, c, "GET", "{rs}:p")); p != fmt.Sprint(pipes.Load()) {
		t.Errorf("pipeline counter %s after %d pipelines", p, pipes.Load())
	}
	if v, err := kv.DoCached(ctx, c, time.Minute, "GET", "{rs}:k3"); err != nil || text(v) != "after the move" {
		t.Errorf("cached read after the move: %v %v", v, err)
	}
	// The old owner redirected the client at least once: the slot did
	// move under it.
	if n := movedReplies(t, cl.Addrs()) - movedBefore; n == 0 {
		t.Error("no node answered MOVED: the client never met the move")
	}
	t.Logf("during the move: %d scripts, %d pipelines, %d cached reads", scripts.Load(), pipes.Load(), reads.Load())
}

// TestClusterFailover: a master with a replica is killed; the cluster
// promotes the replica, and the client carries on: while a slot is
// unserved every call fails fast with ErrUnavailable (Redis answers
// CLUSTERDOWN), and after the promotion the dead master's keys work
// again, with what was written before the kill.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Replicas: 1, NodeTimeout: time.Second})
	c := dial(t, native.Options{URL: cl.URL(), ConnectTimeout: 2 * time.Second})
	// A key on master 0 (the first third of the slots) and one elsewhere.
	var onDead, onLive string
	for i := 0; onDead == "" || onLive == ""; i++ {
		k := "failover-" + strconv.Itoa(i)
		if kv.Slot(k) < kv.Slots/3 {
			onDead = k
		} else {
			onLive = k
		}
	}
	do(t, c, "SET", onDead, "written before")
	do(t, c, "SET", onLive, "0")
	// The write reached the replica before the kill: its replication
	// offset caught up with the master's.
	offset := func(addr string) int64 {
		info, err := rawInfo(addr, "replication")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "master_repl_offset:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatalf("no master_repl_offset in INFO replication of %s", addr)
		return 0
	}
	want := offset(cl.Nodes()[0].Addr())
	testproc.WaitFor(t, 10*time.Second, "the replica has the write", func() bool { return offset(cl.Replicas()[0].Addr()) >= want })

	cl.Nodes()[0].Stop(t)
	killed := time.Now()
	failures := 0
	var back time.Duration
	for i := 0; ; i++ {
		// The live masters refuse too while a slot is unserved (CLUSTERDOWN,
		// with Redis's default cluster-require-full-coverage), as
		// unavailable, never with another error.
		if _, err := c.Do(testCtx(t), "INCR", onLive); err != nil && !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("a key of a live master during the failover: %v, want success or ErrUnavailable", err)
		}
		v, err := c.Do(testCtx(t), "GET", onDead)
		if err == nil {
			if s, _ := v.Text(); s != "written before" {
				t.Fatalf("after the failover the key holds %v", v)
			}
			back = time.Since(killed)
			break
		}
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("a key of the dead master: %v, want ErrUnavailable", err)
		}
		failures++
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("the replica was not promoted within 30 s (node timeout 1 s): %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	do(t, c, "SET", onDead, "written after")
	if s, _ := do(t, c, "GET", onDead).Text(); s != "written after" {
		t.Fatalf("a write after the failover reads back %q", s)
	}
	t.Logf("the dead master's keys answered again %v after the kill (%d fast failures meanwhile)", back.Round(10*time.Millisecond), failures)
}
