package kv_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/redistest"
)

// Stats counts each call once by kind, its errors by kind, and reports the
// native transport's connections and client-side cache.
func TestSwitchStats(t *testing.T) {
	s := newSwitch(t, nativeEndpoint(redistest.Start(t, redistest.Options{}).URL(), 5*time.Second))
	ctx := testCtx(t)
	st := s.Stats()
	if st.Preferred != "native" || st.Protocol != "native" || len(st.Endpoints) != 1 {
		t.Fatalf("initial stats %+v", st)
	}
	if e := st.Endpoints[0]; !e.Up || !e.Active || e.Transitions != 1 || e.Calls[kv.OpDo].Count() != 0 {
		t.Fatalf("initial endpoint %+v", e)
	}

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Do(ctx, "SET", "stats:k", "v"))
	must(s.Do(ctx, "GET", "stats:k"))
	must(s.DoCached(ctx, time.Minute, "GET", "stats:k")) // miss
	must(s.DoCached(ctx, time.Minute, "GET", "stats:k")) // hit
	must(s.Pipeline(ctx, []string{"GET", "stats:k"}, []string{"GET", "stats:k"}))
	must(s.MultiExec(ctx, []string{"INCR", "stats:n"}))
	must(s.Eval(ctx, kv.NewScript("return 1"), nil))
	must(s.Ping(ctx))
	// Errors: a refusal, an argument the transport refuses, a cancelled
	// call, a missed deadline.
	if _, err := s.Do(ctx, "INCR", "stats:k"); !kv.IsServerError(err) {
		t.Fatalf("INCR on a string: %v", err)
	}
	if _, err := s.Do(ctx, ""); err == nil {
		t.Fatal("an empty command was accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s.Do(cctx, "PING")
	dctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-dctx.Done()
	s.Do(dctx, "PING")

	e := s.Stats().Endpoints[0]
	wantCalls := map[string]uint64{kv.OpDo: 6, kv.OpDoCached: 2, kv.OpPipeline: 1, kv.OpMultiExec: 1, kv.OpEval: 1, kv.OpPing: 1}
	if len(e.Calls) != len(wantCalls) {
		t.Errorf("call kinds %v", e.Calls)
	}
	for op, n := range wantCalls {
		h := e.Calls[op]
		if h.Count() != n || len(h.Counts) != len(h.Bounds)+1 || len(h.Bounds) != len(kv.LatencyBuckets()) {
			t.Errorf("%s: %d calls in %+v, want %d", op, h.Count(), h, n)
		}
		if n > 0 && h.Sum <= 0 {
			t.Errorf("%s: sum %v", op, h.Sum)
		}
	}
	wantErrs := map[string]uint64{kv.ErrKindServer: 1, kv.ErrKindInvalid: 1, kv.ErrKindCanceled: 1, kv.ErrKindTimeout: 1,
		kv.ErrKindUnavailable: 0, kv.ErrKindUnauthorized: 0, kv.ErrKindOther: 0}
	if len(e.Errors) != len(wantErrs) {
		t.Errorf("error kinds %v", e.Errors)
	}
	for kind, n := range wantErrs {
		if e.Errors[kind] != n {
			t.Errorf("errors %s = %d, want %d (all: %v)", kind, e.Errors[kind], n, e.Errors)
		}
	}
	if e.InFlight != 0 {
		t.Errorf("in flight %d after every call returned", e.InFlight)
	}
	tr := e.Transport
	if tr == nil || !tr.ConnsTracked || tr.Conns < 1 || tr.Dials < uint64(tr.Conns) || tr.DialErrors != 0 || tr.Retries != 0 {
		t.Fatalf("transport %+v", tr)
	}
	if tr.CacheMisses != 1 || tr.CacheHits != 1 {
		t.Errorf("client-side cache: %d hits, %d misses; want 1 and 1", tr.CacheHits, tr.CacheMisses)
	}
	if st := s.Stats(); st.Rejected != 0 || st.Fallbacks != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Calls refused because every endpoint is down are counted as rejected,
// not as an endpoint's calls; an endpoint never dialed has no transport
// counters.
func TestSwitchStatsRejected(t *testing.T) {
	s := newSwitch(t, restEndpoint("http://"+closedAddr(t)))
	for range 3 {
		if _, err := s.Do(testCtx(t), "PING"); !errors.Is(err, kv.ErrUnavailable) {
			t.Fatalf("PING with every endpoint down: %v", err)
		}
	}
	s.Caching() // not a call
	st := s.Stats()
	if st.Rejected != 3 || st.Protocol != "" {
		t.Fatalf("stats %+v", st)
	}
	e := st.Endpoints[0]
	if e.Up || e.Active || e.Calls[kv.OpDo].Count() != 0 {
		t.Fatalf("endpoint %+v", e)
	}
}

// The REST transport counts its retries and its own HTTP connections.
func TestRESTTransportStats(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, err := rest.New(rest.Options{URL: srv.URL, Token: "t", MaxRetries: 2, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.TransportStats(); !st.ConnsTracked || st.Conns != 0 || st.Dials != 0 {
		t.Fatalf("before any request: %+v", st)
	}
	if _, err := c.Do(testCtx(t), "PING"); !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("PING answered 503: %v", err)
	}
	st := c.TransportStats()
	if st.Retries != 2 || st.Dials < 1 || st.Conns < 1 || st.DialErrors != 0 {
		t.Fatalf("after a failed call: %+v", st)
	}
	c.Close() // closes the idle connections
	waitFor(t, 5*time.Second, "connections closed", func() bool { return c.TransportStats().Conns == 0 })

	given, err := rest.New(rest.Options{URL: srv.URL, Token: "t", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer given.Close()
	if st := given.TransportStats(); st.ConnsTracked {
		t.Errorf("a given http.Client's connections reported as tracked: %+v", st)
	}
}

// Closing the native client closes the connections it counted.
func TestNativeTransportStatsClose(t *testing.T) {
	c, err := native.Dial(testCtx(t), native.Options{URL: redistest.Start(t, redistest.Options{}).URL()})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.TransportStats(); st.Conns < 1 || st.Dials < 1 {
		c.Close()
		t.Fatalf("after Dial: %+v", st)
	}
	c.Close()
	waitFor(t, 5*time.Second, "connections closed", func() bool { return c.TransportStats().Conns == 0 })
}

func TestTransportCounters(t *testing.T) {
	var tc kv.TransportCounters
	if st := tc.Snapshot(); st != (kv.TransportStats{}) {
		t.Fatalf("zero value %+v", st)
	}
	a, b := net.Pipe()
	defer b.Close()
	conn, err := tc.Dialed(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Dialed(nil, errors.New("refused")); err == nil {
		t.Fatal("Dialed dropped the error")
	}
	tc.Retried()
	tc.CacheRead(true)
	tc.CacheRead(false)
	tc.CacheRead(false)
	want := kv.TransportStats{Conns: 1, ConnsTracked: true, Dials: 2, DialErrors: 1, Retries: 1, CacheHits: 1, CacheMisses: 2}
	if st := tc.Snapshot(); st != want {
		t.Fatalf("snapshot %+v, want %+v", st, want)
	}
	conn.Close()
	conn.Close() // counted once
	if st := tc.Snapshot(); st.Conns != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}

func TestErrorKind(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want string
	}{
		{ctx, nil, ""},
		{ctx, &kv.ServerError{Msg: "WRONGTYPE no"}, kv.ErrKindServer},
		{ctx, kv.Unavailable("op", errors.New("refused")), kv.ErrKindUnavailable},
		{ctx, kv.Unauthorized("op", &kv.ServerError{Msg: "WRONGPASS"}), kv.ErrKindUnauthorized},
		{ctx, kv.Invalid("op", errors.New("bad")), kv.ErrKindInvalid},
		{ctx, kv.ErrClosed, kv.ErrKindOther},
		{cancelled, kv.Unavailable("op", context.Canceled), kv.ErrKindCanceled},
		{ctx, context.Canceled, kv.ErrKindCanceled},
		{expired, errors.New("i/o timeout"), kv.ErrKindTimeout},
	} {
		if got := kv.ErrorKind(c.ctx, c.err); got != c.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
