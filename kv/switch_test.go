package kv_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
)

const token = "switch-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func nativeEndpoint(url string, timeout time.Duration) kv.Endpoint {
	return kv.Endpoint{
		Name: "native",
		Addr: url,
		Dial: func(ctx context.Context) (kv.Client, error) {
			c, err := native.Dial(ctx, native.Options{URL: url, ConnectTimeout: timeout})
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Describe: func(c kv.Client) map[string]string {
			nc := c.(*native.Client)
			return map[string]string{"caching": strconv.FormatBool(nc.Caching()), "tls": strconv.FormatBool(nc.TLS())}
		},
	}
}

func restEndpoint(base string) kv.Endpoint {
	return kv.Endpoint{
		Name: "rest",
		Addr: base,
		Dial: func(ctx context.Context) (kv.Client, error) {
			c, err := rest.New(rest.Options{URL: base, Token: token, Backoff: time.Millisecond, MaxRetries: 1, Timeout: 2 * time.Second})
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	}
}

func newSwitch(t *testing.T, eps ...kv.Endpoint) *kv.Switch {
	t.Helper()
	s := kv.NewSwitch(testCtx(t), eps, kv.SwitchOptions{ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 2 * time.Second})
	t.Cleanup(func() { s.Close() })
	return s
}

// direct returns a plain native client to url, to look at a server behind
// the Switch's back.
func direct(t *testing.T, url string) *native.Client {
	t.Helper()
	c, err := native.Dial(testCtx(t), native.Options{URL: url, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t *testing.T, c kv.Client, key string) kv.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), "GET", key)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, d, what, cond)
}

// The Switch is a kv.Client like any other: native preferred, REST behind
// it, both over the same server as in production (Upstash serves both).
func TestSwitchConformance(t *testing.T) {
	u := redistest.URL(t)
	base, _ := restserver.StartTest(t, u, token)
	kvtest.Run(t, func(t *testing.T) kv.Client {
		s := kv.NewSwitch(testCtx(t), []kv.Endpoint{nativeEndpoint(u, 5*time.Second), restEndpoint(base)}, kv.SwitchOptions{})
		if st := s.Status(); st.Protocol != "native" {
			t.Fatalf("Switch status %+v, want native active", st)
		}
		return s
	})
}

// And with REST only, as when the native port is blocked.
func TestSwitchConformanceRESTOnly(t *testing.T) {
	base, _ := restserver.StartTest(t, redistest.URL(t), token)
	kvtest.Run(t, func(t *testing.T) kv.Client {
		return kv.NewSwitch(testCtx(t), []kv.Endpoint{restEndpoint(base)}, kv.SwitchOptions{})
	})
}

type iteration struct {
	i              int
	setErr, getErr error
	got, want      string
}

func TestSwitchFallbackAndBack(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	b := redistest.Start(t, redistest.Options{})
	base, _ := restserver.StartTest(t, b.URL(), token)
	s := newSwitch(t, nativeEndpoint(a.URL(), 5*time.Second), restEndpoint(base))
	ctx := testCtx(t)

	st := s.Status()
	if st.Protocol != "native" || st.Preferred != "native" || st.FallenBack || st.Fallbacks != 0 {
		t.Fatalf("initial status %+v", st)
	}
	if len(st.Endpoints) != 2 || !st.Endpoints[0].Up || !st.Endpoints[1].Up {
		t.Fatalf("initial endpoints %+v", st.Endpoints)
	}
	if d := st.Endpoints[0].Details; d["caching"] != "true" || d["tls"] != "false" {
		t.Errorf("native details %v", d)
	}

	// Refusals and the caller's cancellations are not outages.
	if _, err := s.Do(ctx, "NOSUCHCOMMAND"); !kv.IsServerError(err) {
		t.Fatalf("unknown command: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s.Do(cctx, "PING")
	if st := s.Status(); st.Protocol != "native" {
		t.Fatalf("status after a server error and a cancelled call: %+v", st)
	}

	// A loop of SET/GET pairs runs while A is killed under it.
	var (
		mu       sync.Mutex
		its      []iteration
		okCount  atomic.Int64
		stopLoop = make(chan struct{})
		loopDone = make(chan struct{})
	)
	go func() {
		defer close(loopDone)
		for i := 0; ; i++ {
			select {
			case <-stopLoop:
				return
			default:
			}
			it := iteration{i: i, want: "v" + strconv.Itoa(i)}
			k := "loop:" + strconv.Itoa(i)
			_, it.setErr = s.Do(ctx, "SET", k, it.want)
			if it.setErr == nil {
				var v kv.Value
				// Through the client-side cache: a cached read of a dead
				// server must fail (and trip the breaker) as fast as Do.
				v, it.getErr = kv.DoCached(ctx, s, time.Minute, "GET", k)
				it.got, _ = v.Text()
			}
			mu.Lock()
			its = append(its, it)
			mu.Unlock()
			if it.setErr == nil && it.getErr == nil {
				okCount.Add(1)
			}
		}
	}()
	stopped := false
	defer func() {
		if !stopped {
			close(stopLoop)
			<-loopDone
		}
	}()

	waitFor(t, 10*time.Second, "20 iterations on native", func() bool { return okCount.Load() >= 20 })
	a.Stop(t)
	atStop := okCount.Load()
	waitFor(t, 10*time.Second, "50 iterations after A stopped", func() bool { return okCount.Load() >= atStop+50 })
	close(stopLoop)
	<-loopDone
	stopped = true

	failed := 0
	for _, it := range its {
		for _, err := range []error{it.setErr, it.getErr} {
			if err == nil {
				continue
			}
			failed++
			if !errors.Is(err, kv.ErrUnavailable) {
				t.Errorf("iteration %d failed with %v, want ErrUnavailable", it.i, err)
			}
		}
		if it.setErr == nil && it.getErr == nil && it.got != it.want {
			t.Errorf("iteration %d: GET = %q, want %q", it.i, it.got, it.want)
		}
	}
	if failed > 1 {
		t.Errorf("%d calls failed while falling back, want at most 1 (the one in flight)", failed)
	}
	t.Logf("%d iterations, %d failed call(s)", len(its), failed)

	st = s.Status()
	if st.Protocol != "rest" || !st.FallenBack || st.Fallbacks != 1 {
		t.Errorf("status after A stopped: %+v", st)
	}
	if st.Endpoints[0].Up || st.Endpoints[0].LastError == "" || st.Endpoints[0].LastErrorAt == nil || !st.Endpoints[1].Up {
		t.Errorf("endpoints after A stopped: %+v", st.Endpoints)
	}
	// The writes after the fallback went to B.
	last := its[len(its)-1]
	if v := get(t, direct(t, b.URL()), "loop:"+strconv.Itoa(last.i)); !v.Equal(kv.StringValue(last.want)) {
		t.Errorf("last write in B = %v, want %q", v, last.want)
	}

	// A comes back: the prober notices and traffic returns to native.
	a.Restart(t)
	start := time.Now()
	waitFor(t, 5*time.Second, "switch back to native", func() bool { return s.Status().Protocol == "native" })
	t.Logf("switched back %v after A answered again", time.Since(start).Round(time.Millisecond))
	st = s.Status()
	if st.FallenBack || !st.Endpoints[0].Up || st.Fallbacks != 1 {
		t.Errorf("status after recovery: %+v", st)
	}
	for i := range 10 {
		k := "after:" + strconv.Itoa(i)
		if _, err := s.Do(ctx, "SET", k, "back"); err != nil {
			t.Fatalf("SET after recovery: %v", err)
		}
		if v := get(t, s, k); !v.Equal(kv.StringValue("back")) {
			t.Errorf("GET after recovery = %v", v)
		}
	}
	if v := get(t, direct(t, a.URL()), "after:9"); !v.Equal(kv.StringValue("back")) {
		t.Errorf("write after recovery is not in A: %v", v)
	}
	if v := get(t, direct(t, b.URL()), "after:9"); !v.IsNil() {
		t.Errorf("write after recovery went to B: %v", v)
	}
}

// failFast checks that n calls all fail with ErrUnavailable within budget.
func failFast(t *testing.T, s *kv.Switch, n int, budget time.Duration) {
	t.Helper()
	ctx := testCtx(t)
	start := time.Now()
	for i := range n {
		var err error
		switch i % 4 {
		case 0:
			_, err = s.Do(ctx, "GET", "k")
		case 1:
			_, err = s.Pipeline(ctx, []string{"GET", "k"})
		case 2:
			_, err = s.MultiExec(ctx, []string{"GET", "k"})
		case 3:
			_, err = s.Eval(ctx, kv.NewScript("return 1"), nil)
		}
		if !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("call %d: error %v, want ErrUnavailable", i, err)
		}
	}
	if d := time.Since(start); d > budget {
		t.Errorf("%d calls with every endpoint down took %v, want < %v", n, d, budget)
	}
}

func TestSwitchNoFallback(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	// A long connect timeout: failing fast must come from the breaker.
	s := newSwitch(t, nativeEndpoint(a.URL(), 5*time.Second))
	ctx := testCtx(t)
	if _, err := s.Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}

	a.Stop(t)
	if _, err := s.Do(ctx, "GET", "k"); !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("first call after Stop: %v, want ErrUnavailable", err)
	}
	failFast(t, s, 20, time.Second)
	if _, err := s.Ping(ctx); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("Ping with the server down: %v", err)
	}
	st := s.Status()
	if st.Protocol != "" || st.FallenBack || st.Fallbacks != 0 || st.Endpoints[0].Up {
		t.Errorf("status with the only endpoint down: %+v", st)
	}

	a.Restart(t)
	waitFor(t, 5*time.Second, "recovery", func() bool {
		_, err := s.Do(ctx, "SET", "k", "again")
		return err == nil
	})
	if v := get(t, s, "k"); !v.Equal(kv.StringValue("again")) {
		t.Errorf("GET after recovery = %v", v)
	}
	if rtt, err := s.Ping(ctx); err != nil || rtt <= 0 {
		t.Errorf("Ping after recovery = %v, %v", rtt, err)
	}
	if st := s.Status(); st.Protocol != "native" || !st.Endpoints[0].Up {
		t.Errorf("status after recovery: %+v", st)
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSwitchAllDownAtStart(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	a.Stop(t)

	start := time.Now()
	s := newSwitch(t,
		nativeEndpoint(a.URL(), 5*time.Second),
		restEndpoint("http://"+closedAddr(t)),
	)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("NewSwitch took %v with every endpoint down", d)
	}
	st := s.Status()
	if st.Protocol != "" || st.Endpoints[0].Up || st.Endpoints[1].Up {
		t.Fatalf("status with every endpoint down: %+v", st)
	}
	if st.Endpoints[0].LastError == "" || st.Endpoints[1].LastError == "" {
		t.Errorf("down endpoints report no error: %+v", st.Endpoints)
	}
	failFast(t, s, 20, time.Second)
	// DoCached fails fast too.
	if _, err := kv.DoCached(testCtx(t), s, time.Minute, "GET", "k"); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("DoCached: %v", err)
	}

	a.Restart(t)
	waitFor(t, 5*time.Second, "native comes up", func() bool { return s.Status().Protocol == "native" })
	if _, err := s.Do(testCtx(t), "SET", "k", "up"); err != nil {
		t.Fatal(err)
	}
	if v := get(t, direct(t, a.URL()), "k"); !v.Equal(kv.StringValue("up")) {
		t.Errorf("GET from A = %v", v)
	}
	if st := s.Status(); st.FallenBack || st.Endpoints[1].Up {
		t.Errorf("status: %+v", st)
	}
}

func TestSwitchClose(t *testing.T) {
	u := redistest.URL(t)
	s := kv.NewSwitch(testCtx(t), []kv.Endpoint{nativeEndpoint(u, time.Second)}, kv.SwitchOptions{ProbeInterval: 10 * time.Millisecond})
	if _, err := s.Do(testCtx(t), "PING"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Do(testCtx(t), "PING")
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("Do after Close: %v", err)
	}
	if st := s.Status(); st.Protocol != "" {
		t.Errorf("status after Close: %+v", st)
	}
}

// Many goroutines through the Switch while its preferred endpoint dies: the
// breaker trips once and the rest of the traffic moves over.
func TestSwitchConcurrentFallback(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	b := redistest.Start(t, redistest.Options{})
	base, _ := restserver.StartTest(t, b.URL(), token)
	s := newSwitch(t, nativeEndpoint(a.URL(), 5*time.Second), restEndpoint(base))
	ctx := testCtx(t)

	var failures, successes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Do(ctx, "SET", fmt.Sprintf("w%d:%d", w, i), "x"); err != nil {
					failures.Add(1)
				} else {
					successes.Add(1)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "traffic on native", func() bool { return successes.Load() >= 100 })
	a.Stop(t)
	at := successes.Load()
	waitFor(t, 10*time.Second, "traffic on REST", func() bool { return successes.Load() >= at+200 })
	close(stop)
	wg.Wait()
	// At most the calls in flight when A died fail: one per worker.
	if n := failures.Load(); n > workers {
		t.Errorf("%d calls failed, want at most %d (those in flight)", n, workers)
	}
	if st := s.Status(); st.Protocol != "rest" || st.Fallbacks != 1 {
		t.Errorf("status: %+v", st)
	}
}

// clusterDownClient answers PING, but every command of a pipeline with
// CLUSTERDOWN, as a Redis Cluster node does while a slot is unserved; the
// round trip itself succeeds.
type clusterDownClient struct{ kv.Client }

func (clusterDownClient) Pipeline(ctx context.Context, cmds ...[]string) ([]kv.Result, error) {
	out := make([]kv.Result, len(cmds))
	for i := range out {
		out[i].Err = kv.ReplyError("test", &kv.ServerError{Msg: "CLUSTERDOWN The cluster is down"})
	}
	return out, nil
}

func (clusterDownClient) Do(ctx context.Context, args ...string) (kv.Value, error) {
	return kv.StringValue("PONG"), nil
}

func (clusterDownClient) Close() error { return nil }

// TestSwitchTakesClusterDownForAnOutage: a pipeline whose commands were
// refused with CLUSTERDOWN marks the endpoint down, so later calls fail
// fast as unavailable instead of each going to the cluster.
func TestSwitchTakesClusterDownForAnOutage(t *testing.T) {
	s := kv.NewSwitch(testCtx(t), []kv.Endpoint{{Name: "native", Addr: "cluster", Dial: func(context.Context) (kv.Client, error) {
		return clusterDownClient{}, nil
	}}}, kv.SwitchOptions{ProbeInterval: time.Hour})
	defer s.Close()
	if st := s.Status(); len(st.Endpoints) != 1 || !st.Endpoints[0].Up {
		t.Fatalf("status at start: %+v", st)
	}
	rs, err := s.Pipeline(testCtx(t), []string{"GET", "k"})
	if err != nil || !errors.Is(rs[0].Err, kv.ErrUnavailable) {
		t.Fatalf("the refused pipeline: %v %v", rs, err)
	}
	if st := s.Status(); st.Endpoints[0].Up {
		t.Fatal("the endpoint is still up after CLUSTERDOWN")
	}
	if _, err := s.Pipeline(testCtx(t), []string{"GET", "k"}); !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("a call while the only endpoint is down: %v", err)
	}
}
