package rest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
)

const token = "test-token"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client for base, closed when t ends. Retries back off
// for a millisecond only, to keep the tests fast.
func newClient(t *testing.T, o rest.Options) *rest.Client {
	t.Helper()
	if o.Token == "" {
		o.Token = token
	}
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	c, err := rest.New(o)
	if err != nil {
		t.Fatalf("rest.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// start runs a REST server over a private Redis.
func start(t *testing.T) (string, *restserver.Server) {
	t.Helper()
	return restserver.StartTest(t, redistest.URL(t), token)
}

func do(t *testing.T, c kv.Client, args ...string) kv.Value {
	t.Helper()
	v, err := c.Do(testCtx(t), args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

func TestConformance(t *testing.T) {
	base, _ := start(t)
	kvtest.Run(t, func(t *testing.T) kv.Client {
		return newClient(t, rest.Options{URL: base})
	})
}

func TestNewValidates(t *testing.T) {
	for name, o := range map[string]rest.Options{
		"no scheme":   {URL: "127.0.0.1:8080", Token: "x"},
		"redis URL":   {URL: "redis://127.0.0.1:6379", Token: "x"},
		"no host":     {URL: "https://", Token: "x"},
		"empty token": {URL: "https://example.upstash.io"},
	} {
		if _, err := rest.New(o); agentapi.KindOf(err) != agentapi.KindInvalid {
			t.Errorf("%s: New error %v, want KindInvalid", name, err)
		}
	}
}

func TestWrongTokenNotRetried(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base, Token: "wrong"})
	ctx := testCtx(t)
	calls := map[string]func() error{
		"Do":        func() error { _, err := c.Do(ctx, "GET", "k"); return err },
		"Pipeline":  func() error { _, err := c.Pipeline(ctx, []string{"GET", "k"}); return err },
		"MultiExec": func() error { _, err := c.MultiExec(ctx, []string{"GET", "k"}); return err },
		"Eval": func() error {
			_, err := c.Eval(ctx, kv.NewScript("return 1"), nil)
			return err
		},
	}
	for name, call := range calls {
		before := srv.Requests()
		err := call()
		if !errors.Is(err, kv.ErrUnauthorized) {
			t.Errorf("%s with a wrong token: error %v, want ErrUnauthorized", name, err)
		}
		if kv.IsServerError(err) {
			t.Errorf("%s: a 401 must not be a *ServerError (it would hide the outage from the Switch)", name)
		}
		if n := srv.Requests() - before; n != 1 {
			t.Errorf("%s with a wrong token sent %d requests, want 1 (a 401 is not retried)", name, n)
		}
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	ctx := testCtx(t)
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusBadGateway} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			srv.FailNext(2, status)
			before := srv.Requests()
			v, err := c.Do(ctx, "SET", "retried", "yes")
			if err != nil || !v.Equal(kv.StringValue("OK")) {
				t.Fatalf("SET after two %d answers = %v, %v; want OK", status, v, err)
			}
			if n := srv.Requests() - before; n != 3 {
				t.Errorf("SET sent %d requests, want 3", n)
			}
		})
	}
	// Batches are retried as a whole.
	srv.FailNext(1, http.StatusServiceUnavailable)
	before := srv.Requests()
	rs, err := c.Pipeline(ctx, []string{"GET", "retried"}, []string{"PING"})
	if err != nil || len(rs) != 2 || !rs[0].Value.Equal(kv.StringValue("yes")) {
		t.Fatalf("Pipeline after a 503 = %v, %v", rs, err)
	}
	if n := srv.Requests() - before; n != 2 {
		t.Errorf("Pipeline sent %d requests, want 2", n)
	}
}

func TestRetriesExhausted(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base, MaxRetries: 2})
	srv.FailNext(10, http.StatusServiceUnavailable)
	t.Cleanup(func() { srv.FailNext(0, 0) })
	before := srv.Requests()
	_, err := c.Do(testCtx(t), "GET", "k")
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", err)
	}
	if errors.Is(err, kv.ErrUnauthorized) || kv.IsServerError(err) {
		t.Errorf("error %v: a 5xx is an outage, not a refusal", err)
	}
	if n := srv.Requests() - before; n != 3 {
		t.Errorf("sent %d requests, want 3 (1 + MaxRetries 2)", n)
	}

	// MaxRetries < 0: no retry at all.
	none := newClient(t, rest.Options{URL: base, MaxRetries: -1})
	before = srv.Requests()
	if _, err := none.Do(testCtx(t), "GET", "k"); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("MaxRetries -1: error %v, want ErrUnavailable", err)
	}
	if n := srv.Requests() - before; n != 1 {
		t.Errorf("MaxRetries -1 sent %d requests, want 1", n)
	}
}

func TestClientErrorNotRetried(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	before := srv.Requests()
	_, err := c.Do(testCtx(t), "INCR") // wrong arity: HTTP 400
	var se *kv.ServerError
	if !errors.As(err, &se) || se.Msg != "ERR wrong number of arguments for 'incr' command" {
		t.Errorf("error %v, want the server's refusal", err)
	}
	if n := srv.Requests() - before; n != 1 {
		t.Errorf("sent %d requests for a 400, want 1", n)
	}
}

// A cancelled context stops the retry loop at once.
func TestRetryHonoursContext(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base, Backoff: time.Second, MaxRetries: 5})
	srv.FailNext(100, http.StatusServiceUnavailable)
	t.Cleanup(func() { srv.FailNext(0, 0) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Do(ctx, "GET", "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want DeadlineExceeded", err)
	}
	if errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("error %v: the caller's deadline is not an outage", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Do returned after %v, want soon after the 100ms deadline", d)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, rest.Options{URL: "http://" + addr, MaxRetries: 1})
	if _, err := c.Do(testCtx(t), "PING"); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", err)
	}
}

func TestOneRequestPerBatch(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	cmds := make([][]string, 100)
	for i := range cmds {
		cmds[i] = []string{"INCR", "batched"}
	}
	before := srv.Requests()
	rs, err := c.Pipeline(testCtx(t), cmds...)
	if err != nil || len(rs) != 100 || !rs[99].Value.Equal(kv.IntValue(100)) {
		t.Fatalf("Pipeline = %d results, %v", len(rs), err)
	}
	if n := srv.Requests() - before; n != 1 {
		t.Errorf("a 100-command Pipeline sent %d requests, want 1", n)
	}
	before = srv.Requests()
	rs, err = c.MultiExec(testCtx(t), cmds...)
	if err != nil || len(rs) != 100 || !rs[99].Value.Equal(kv.IntValue(200)) {
		t.Fatalf("MultiExec = %d results, %v", len(rs), err)
	}
	if n := srv.Requests() - before; n != 1 {
		t.Errorf("a 100-command MultiExec sent %d requests, want 1", n)
	}
	// Empty batches send nothing.
	before = srv.Requests()
	c.Pipeline(testCtx(t))
	c.MultiExec(testCtx(t))
	if n := srv.Requests() - before; n != 0 {
		t.Errorf("empty batches sent %d requests", n)
	}
}

// Arguments the API cannot carry are refused before anything is sent.
func TestBinaryRefusedLocally(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	before := srv.Requests()
	_, err := c.Do(testCtx(t), "SET", "bin", "\xff\xfe")
	if agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("error %v, want KindInvalid", err)
	}
	_, err = c.MultiExec(testCtx(t), []string{"SET", "a", "1"}, []string{"SET", "bin", "\x80"})
	if agentapi.KindOf(err) != agentapi.KindInvalid {
		t.Errorf("MultiExec error %v, want KindInvalid", err)
	}
	if n := srv.Requests() - before; n != 0 {
		t.Errorf("refused arguments sent %d requests", n)
	}
}

func TestSyncToken(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	if tok := c.SyncToken(); tok != "" {
		t.Fatalf("SyncToken before any call = %q", tok)
	}
	do(t, c, "SET", "k", "v")
	first := c.SyncToken()
	if first == "" {
		t.Fatal("no sync token after the first answer")
	}
	do(t, c, "GET", "k")
	if got := srv.LastSyncToken(); got != first {
		t.Errorf("server received sync token %q, want %q from the first answer", got, first)
	}
	if c.SyncToken() == first {
		t.Errorf("SyncToken not updated by the second answer")
	}
	// Batches carry it too.
	second := c.SyncToken()
	if _, err := c.Pipeline(testCtx(t), []string{"GET", "k"}); err != nil {
		t.Fatal(err)
	}
	if got := srv.LastSyncToken(); got != second {
		t.Errorf("Pipeline sent sync token %q, want %q", got, second)
	}
}

func TestDecodeResult(t *testing.T) {
	cases := []struct {
		raw  string
		want kv.Value
	}{
		{`"OK"`, kv.StringValue("OK")},         // status reply, sent as is
		{`"T0s="`, kv.StringValue("OK")},       // the bulk string "OK"
		{`"VDBzPQ=="`, kv.StringValue("T0s=")}, // a stored "T0s="
		{`"aGk="`, kv.StringValue("hi")},
		{`"8J+agA=="`, kv.StringValue("🚀")},
		{`""`, kv.StringValue("")},
		{`null`, kv.NilValue()},
		{``, kv.NilValue()},
		{`42`, kv.IntValue(42)},
		{`-7`, kv.IntValue(-7)},
		{`9223372036854775807`, kv.IntValue(9223372036854775807)},
		{`1.5`, kv.StringValue("1.5")},
		{`true`, kv.IntValue(1)},
		{`false`, kv.IntValue(0)},
		{`[]`, kv.ArrayValue()},
		{`["aGk=", null, 1, ["T0s=", [], "OK"]]`, kv.ArrayValue(
			kv.StringValue("hi"), kv.NilValue(), kv.IntValue(1),
			kv.ArrayValue(kv.StringValue("OK"), kv.ArrayValue(), kv.StringValue("OK")))},
	}
	for _, tc := range cases {
		got, err := rest.DecodeResult(json.RawMessage(tc.raw))
		if err != nil {
			t.Errorf("DecodeResult(%s): %v", tc.raw, err)
			continue
		}
		if !got.Equal(tc.want) {
			t.Errorf("DecodeResult(%s) = %v (%s), want %v (%s)", tc.raw, got, got.Type(), tc.want, tc.want.Type())
		}
	}
	for _, raw := range []string{`"not base64!"`, `{"a":1}`, `[1, "%%%"]`, `[1,`} {
		if v, err := rest.DecodeResult(json.RawMessage(raw)); err == nil {
			t.Errorf("DecodeResult(%s) = %v, want an error", raw, v)
		}
	}
}

func TestNoScriptFallback(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	s := kv.NewScript("return redis.call('INCR', KEYS[1])")
	do(t, c, "SCRIPT", "FLUSH")

	before := srv.Requests()
	v, err := c.Eval(testCtx(t), s, []string{"n"})
	if err != nil || !v.Equal(kv.IntValue(1)) {
		t.Fatalf("Eval after SCRIPT FLUSH = %v, %v", v, err)
	}
	if n := srv.Requests() - before; n != 2 {
		t.Errorf("first Eval sent %d requests, want 2 (EVALSHA, then EVAL)", n)
	}
	before = srv.Requests()
	v, err = c.Eval(testCtx(t), s, []string{"n"})
	if err != nil || !v.Equal(kv.IntValue(2)) {
		t.Fatalf("second Eval = %v, %v", v, err)
	}
	if n := srv.Requests() - before; n != 1 {
		t.Errorf("second Eval sent %d requests, want 1 (EVALSHA)", n)
	}
}

// countingServer serves a restserver.Server and counts the TCP connections
// clients open to it.
func countingServer(t *testing.T) (string, *restserver.Server, *atomic.Int64) {
	t.Helper()
	rc, err := restserver.NewRedisClient(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := restserver.New(rc, token)
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		rc.Close()
	})
	return ts.URL, srv, &conns
}

func TestKeepAlive(t *testing.T) {
	base, srv, conns := countingServer(t)
	c := newClient(t, rest.Options{URL: base})
	ctx := testCtx(t)
	for i := range 50 {
		var err error
		switch i % 5 {
		case 0:
			_, err = c.Do(ctx, "SET", "k", strconv.Itoa(i))
		case 1:
			_, err = c.Do(ctx, "GET", "k")
		case 2:
			_, err = c.Pipeline(ctx, []string{"INCR", "n"}, []string{"GET", "n"})
		case 3:
			// An error answer (HTTP 400) must leave the connection reusable.
			if _, e := c.Do(ctx, "LPUSH", "k", "x"); !kv.IsServerError(e) {
				err = e
			}
		case 4:
			// So must a retried 503.
			srv.FailNext(1, http.StatusServiceUnavailable)
			_, err = c.Do(ctx, "PING")
		}
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential calls opened %d connections, want 1", n)
	}
}

// The same holds with a caller-supplied HTTP client: the client reads and
// closes every body, so its transport can reuse the connection.
func TestKeepAliveCustomHTTPClient(t *testing.T) {
	base, _ := start(t)
	var dials atomic.Int64
	d := &net.Dialer{Timeout: time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c := newClient(t, rest.Options{URL: base, HTTPClient: &http.Client{Transport: tr}})
	for i := range 50 {
		do(t, c, "INCR", "n")
		if i%10 == 0 {
			if _, err := c.Do(testCtx(t), "NOSUCHCOMMAND"); !kv.IsServerError(err) {
				t.Fatalf("unknown command: %v", err)
			}
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("50 sequential calls dialed %d times, want 1", n)
	}
}

func TestClosed(t *testing.T) {
	base, srv := start(t)
	c := newClient(t, rest.Options{URL: base})
	c.Close()
	before := srv.Requests()
	if _, err := c.Do(testCtx(t), "PING"); !errors.Is(err, kv.ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
	if n := srv.Requests() - before; n != 0 {
		t.Errorf("a closed client sent %d requests", n)
	}
}

// A 200 answer that is not the API's JSON is an outage, not a reply.
func TestUndecodableReply(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>captive portal</html>"))
	}))
	t.Cleanup(ts.Close)
	c := newClient(t, rest.Options{URL: ts.URL})
	if _, err := c.Do(testCtx(t), "PING"); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("error %v, want ErrUnavailable", err)
	}
	// A batch answer with the wrong number of results too.
	ts2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"result":"T0s="}]`))
	}))
	t.Cleanup(ts2.Close)
	c2 := newClient(t, rest.Options{URL: ts2.URL})
	if _, err := c2.Pipeline(testCtx(t), []string{"PING"}, []string{"PING"}); !errors.Is(err, kv.ErrUnavailable) {
		t.Errorf("short batch answer: error %v, want ErrUnavailable", err)
	}
}
