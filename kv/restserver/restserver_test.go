package restserver_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "test-token-123"

// env is one REST server in front of a Redis server, plus an HTTP client.
type env struct {
	t      *testing.T
	base   string
	srv    *restserver.Server
	hc     *http.Client
	prefix string

	mu   sync.Mutex
	keys []string // every key handed out by key, deleted at cleanup
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	base, srv := restserver.StartTest(t, redistest.URL(t), testToken)
	tr := &http.Transport{}
	e := &env{
		t:      t,
		base:   base,
		srv:    srv,
		hc:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		prefix: fmt.Sprintf("restserver:%s:%d:", t.Name(), time.Now().UnixNano()),
	}
	// Cleanups run last-in first-out: these run before the server closes.
	t.Cleanup(tr.CloseIdleConnections)
	t.Cleanup(e.deleteKeys)
	return e
}

// key returns a key unique to the test.
func (e *env) key(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := e.prefix + name
	e.keys = append(e.keys, k)
	return k
}

// deleteKeys removes the test's keys, which matters when REDIS_TEST_URL
// points at a shared server.
func (e *env) deleteKeys() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.keys) == 0 {
		return
	}
	e.srv.SetToken(testToken) // a test may have rotated it
	args := []any{"DEL"}
	for _, k := range e.keys {
		args = append(args, k)
	}
	if r := e.requestNoFatal(http.MethodPost, "/", args); r.status != http.StatusOK {
		e.t.Errorf("deleting test keys: status %d body %s", r.status, r.raw)
	}
}

type response struct {
	status int
	header http.Header
	raw    []byte
}

// request sends a request; body may be nil, a []byte (sent raw) or any value
// (sent as JSON). Unless headers contain "Authorization" (even empty), the
// test token is sent as a bearer token.
func (e *env) request(method, path string, body any, headers map[string]string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, ok := headers["Authorization"]; !ok {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, raw: raw}
}

// envelope is {"result":...} or {"error":"..."}.
type envelope struct {
	Result json.RawMessage `json:"result"`
	Error  *string         `json:"error"`
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.raw, &v); err != nil {
		t.Fatalf("decode %q: %v", r.raw, err)
	}
	return v
}

// cmd runs one command with POST / and requires HTTP 200; it returns the raw
// JSON result.
func (e *env) cmd(args ...any) json.RawMessage {
	e.t.Helper()
	return e.cmdH(nil, args...)
}

func (e *env) cmdH(headers map[string]string, args ...any) json.RawMessage {
	e.t.Helper()
	r := e.request(http.MethodPost, "/", args, headers)
	if r.status != http.StatusOK {
		e.t.Fatalf("%v: status %d, body %s", args, r.status, r.raw)
	}
	env := decode[envelope](e.t, r)
	if env.Error != nil {
		e.t.Fatalf("%v: unexpected error %q", args, *env.Error)
	}
	if env.Result == nil {
		e.t.Fatalf("%v: no result member in %s", args, r.raw)
	}
	return env.Result
}

// cmdErr runs one command that must fail with HTTP 400; it returns the error.
func (e *env) cmdErr(args ...any) string {
	e.t.Helper()
	r := e.request(http.MethodPost, "/", args, nil)
	if r.status != http.StatusBadRequest {
		e.t.Fatalf("%v: status %d, want 400; body %s", args, r.status, r.raw)
	}
	env := decode[envelope](e.t, r)
	if env.Error == nil {
		e.t.Fatalf("%v: no error member in %s", args, r.raw)
	}
	return *env.Error
}

func jsonEq(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expected JSON %s: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestSetGetRoundTrip(t *testing.T) {
	e := newEnv(t)
	k := e.key("k")
	jsonEq(t, e.cmd("SET", k, "hello", "EX", 100), `"OK"`)
	jsonEq(t, e.cmd("GET", k), `"hello"`)
	var ttl int64
	if err := json.Unmarshal(e.cmd("TTL", k), &ttl); err != nil || ttl <= 0 || ttl > 100 {
		t.Fatalf("TTL = %d (%v), want 1..100", ttl, err)
	}
	r := e.request(http.MethodPost, "/", []any{"GET", k}, nil)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
}

func TestNil(t *testing.T) {
	e := newEnv(t)
	r := e.request(http.MethodPost, "/", []any{"GET", e.key("missing")}, nil)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.raw)) != `{"result":null}` {
		t.Fatalf("status %d body %s, want 200 {\"result\":null}", r.status, r.raw)
	}
}

func TestIntegerAndNumberArguments(t *testing.T) {
	e := newEnv(t)
	k := e.key("n")
	jsonEq(t, e.cmd("INCR", k), `1`)
	jsonEq(t, e.cmd("INCRBY", k, 41), `42`)
	jsonEq(t, e.cmd("SET", e.key("f"), 1.5), `"OK"`)
	jsonEq(t, e.cmd("GET", e.key("f")), `"1.5"`)
	jsonEq(t, e.cmd("SET", e.key("e"), json.Number("1e3")), `"OK"`)
	jsonEq(t, e.cmd("GET", e.key("e")), `"1000"`)
	jsonEq(t, e.cmd("SET", e.key("big"), json.Number("123456789012345678901234567890")), `"OK"`)
	jsonEq(t, e.cmd("GET", e.key("big")), `"123456789012345678901234567890"`)
}

func TestArrays(t *testing.T) {
	e := newEnv(t)
	l, h, s := e.key("list"), e.key("hash"), e.key("stream")
	jsonEq(t, e.cmd("RPUSH", l, "a", "b", "c"), `3`)
	jsonEq(t, e.cmd("LRANGE", l, 0, -1), `["a","b","c"]`)
	jsonEq(t, e.cmd("LRANGE", e.key("nolist"), 0, -1), `[]`)

	jsonEq(t, e.cmd("HSET", h, "f1", "v1", "f2", "v2"), `2`)
	var flat []string
	if err := json.Unmarshal(e.cmd("HGETALL", h), &flat); err != nil {
		t.Fatal(err)
	}
	if len(flat) != 4 {
		t.Fatalf("HGETALL = %q, want a flat array of 4", flat)
	}
	got := map[string]string{flat[0]: flat[1], flat[2]: flat[3]}
	if got["f1"] != "v1" || got["f2"] != "v2" {
		t.Fatalf("HGETALL = %q", flat)
	}

	jsonEq(t, e.cmd("XADD", s, "1-1", "field", "value"), `"1-1"`)
	jsonEq(t, e.cmd("XRANGE", s, "-", "+"), `[["1-1",["field","value"]]]`)

	// Nested arrays mixing types, from Lua.
	jsonEq(t, e.cmd("EVAL", "return {1, {'a', false, KEYS[1]}, 'z'}", 1, "kk"), `[1,["a",null,"kk"],"z"]`)
	// A double comes back as a string.
	jsonEq(t, e.cmd("ZADD", e.key("z"), 1.5, "m"), `1`)
	jsonEq(t, e.cmd("ZSCORE", e.key("z"), "m"), `"1.5"`)
	jsonEq(t, e.cmd("ZRANGE", e.key("z"), 0, -1, "WITHSCORES"), `["m","1.5"]`)
}

func TestBase64Encoding(t *testing.T) {
	e := newEnv(t)
	b64h := map[string]string{"Upstash-Encoding": "base64"}
	k, l := e.key("k"), e.key("l")
	const val = "héllo wörld ✓ \x00 日本"

	jsonEq(t, e.cmdH(b64h, "SET", k, val), `"OK"`) // status OK stays as is
	jsonEq(t, e.cmdH(b64h, "GET", k), js(b64(val)))
	jsonEq(t, e.cmdH(b64h, "GET", e.key("missing")), `null`)
	jsonEq(t, e.cmdH(b64h, "INCR", e.key("n")), `1`)
	jsonEq(t, e.cmdH(b64h, "PING"), js(b64("PONG")))
	jsonEq(t, e.cmdH(b64h, "RPUSH", l, "x", "ÿ"), `2`)
	jsonEq(t, e.cmdH(b64h, "LRANGE", l, 0, -1), js([]string{b64("x"), b64("ÿ")}))
	jsonEq(t, e.cmdH(b64h, "EVAL", "return {1, {'a', false}}", 0), js([]any{1, []any{b64("a"), nil}}))

	// A stored value "OK" is a bulk string, not a status reply: encoded.
	jsonEq(t, e.cmd("SET", e.key("ok"), "OK"), `"OK"`)
	jsonEq(t, e.cmdH(b64h, "GET", e.key("ok")), js(b64("OK")))

	// Without the header the value comes back as text.
	jsonEq(t, e.cmd("GET", e.key("ok")), `"OK"`)
	plain := e.cmd("GET", k)
	var s string
	if err := json.Unmarshal(plain, &s); err != nil || !strings.HasPrefix(s, "héllo wörld ✓") {
		t.Fatalf("plain GET = %s (%v)", plain, err)
	}

	// Error texts are never encoded.
	r := e.request(http.MethodPost, "/", []any{"NOSUCHCMD"}, b64h)
	env := decode[envelope](t, r)
	if r.status != http.StatusBadRequest || env.Error == nil || !strings.HasPrefix(*env.Error, "ERR unknown command") {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}

	// Pipelines are encoded too.
	r = e.request(http.MethodPost, "/pipeline", [][]any{{"SET", k, "v"}, {"GET", k}}, b64h)
	if r.status != http.StatusOK {
		t.Fatalf("pipeline status %d body %s", r.status, r.raw)
	}
	jsonEq(t, r.raw, js([]any{map[string]any{"result": "OK"}, map[string]any{"result": b64("v")}}))
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	k := e.key("k")
	check401 := func(r response) {
		t.Helper()
		if r.status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401; body %s", r.status, r.raw)
		}
		jsonEq(t, r.raw, `{"error":"Unauthorized"}`)
	}
	check401(e.request(http.MethodPost, "/", []any{"SET", k, "v"}, map[string]string{"Authorization": ""}))
	check401(e.request(http.MethodPost, "/", []any{"SET", k, "v"}, map[string]string{"Authorization": "Bearer wrong"}))
	check401(e.request(http.MethodGet, "/get/"+k, nil, map[string]string{"Authorization": "Basic " + testToken}))
	check401(e.request(http.MethodPost, "/pipeline", [][]any{{"PING"}}, map[string]string{"Authorization": ""}))
	check401(e.request(http.MethodGet, "/get/"+k+"?_token=wrong", nil, map[string]string{"Authorization": ""}))
	jsonEq(t, e.cmd("EXISTS", k), `0`) // nothing was written

	r := e.request(http.MethodGet, "/set/"+k+"/v?_token="+testToken, nil, map[string]string{"Authorization": ""})
	if r.status != http.StatusOK {
		t.Fatalf("_token: status %d body %s", r.status, r.raw)
	}
	jsonEq(t, r.raw, `{"result":"OK"}`)

	e.srv.SetToken("rotated")
	check401(e.request(http.MethodGet, "/get/"+k, nil, nil))
	r = e.request(http.MethodGet, "/get/"+k, nil, map[string]string{"Authorization": "Bearer rotated"})
	if r.status != http.StatusOK {
		t.Fatalf("rotated token: status %d body %s", r.status, r.raw)
	}
	jsonEq(t, r.raw, `{"result":"v"}`)
}

func TestRedisErrors(t *testing.T) {
	e := newEnv(t)
	if msg := e.cmdErr("NOSUCHCMD", "x"); !strings.HasPrefix(msg, "ERR unknown command") {
		t.Fatalf("unknown command error = %q", msg)
	}
	if msg := e.cmdErr("GET"); !strings.HasPrefix(msg, "ERR wrong number of arguments") {
		t.Fatalf("arity error = %q", msg)
	}
	k := e.key("s")
	e.cmd("SET", k, "v")
	if msg := e.cmdErr("LPUSH", k, "x"); !strings.HasPrefix(msg, "WRONGTYPE") {
		t.Fatalf("wrong type error = %q", msg)
	}
	sha := strings.Repeat("f", 40)
	if msg := e.cmdErr("EVALSHA", sha, 0); !strings.HasPrefix(msg, "NOSCRIPT") {
		t.Fatalf("EVALSHA error = %q", msg)
	}
	if msg := e.cmdErr("EVAL", "return redis.error_reply('MYERR custom')", 0); msg != "MYERR custom" {
		t.Fatalf("script error = %q", msg)
	}
}

func TestPipeline(t *testing.T) {
	e := newEnv(t)
	a, s := e.key("a"), e.key("s")
	before := e.srv.Requests()
	r := e.request(http.MethodPost, "/pipeline", [][]any{
		{"SET", a, 1},
		{"SET", s, "str"},
		{"LPUSH", s, "x"}, // fails: wrong type
		{"INCR", a},
		{"GET", e.key("missing")},
	}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	if n := e.srv.Requests() - before; n != 1 {
		t.Fatalf("Requests grew by %d, want 1", n)
	}
	items := decode[[]envelope](t, r)
	if len(items) != 5 {
		t.Fatalf("got %d items: %s", len(items), r.raw)
	}
	jsonEq(t, items[0].Result, `"OK"`)
	jsonEq(t, items[1].Result, `"OK"`)
	if items[2].Error == nil || !strings.HasPrefix(*items[2].Error, "WRONGTYPE") || items[2].Result != nil {
		t.Fatalf("item 2 = %s", r.raw)
	}
	jsonEq(t, items[3].Result, `2`)
	jsonEq(t, items[4].Result, `null`)
	if !strings.Contains(string(r.raw), `{"result":null}`) {
		t.Fatalf("null result must be explicit: %s", r.raw)
	}

	// A 100-command pipeline is one HTTP request.
	cmds := make([][]any, 100)
	for i := range cmds {
		cmds[i] = []any{"INCR", e.key("c")}
	}
	before = e.srv.Requests()
	r = e.request(http.MethodPost, "/pipeline", cmds, nil)
	if n := e.srv.Requests() - before; n != 1 || r.status != http.StatusOK {
		t.Fatalf("status %d, Requests grew by %d", r.status, n)
	}
	items = decode[[]envelope](t, r)
	for i, it := range items {
		jsonEq(t, it.Result, strconv.Itoa(i+1))
	}
	if len(items) != 100 {
		t.Fatalf("got %d items", len(items))
	}

	// A refused command is answered in place without breaking the rest.
	r = e.request(http.MethodPost, "/pipeline", [][]any{{"PING"}, {"SUBSCRIBE", "ch"}, {"PING"}}, nil)
	items = decode[[]envelope](t, r)
	if r.status != http.StatusOK || len(items) != 3 || items[1].Error == nil {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	jsonEq(t, items[2].Result, `"PONG"`)
}

func TestMultiExec(t *testing.T) {
	e := newEnv(t)
	k, s := e.key("k"), e.key("s")

	r := e.request(http.MethodPost, "/multi-exec", [][]any{
		{"SET", k, 1},
		{"INCR", k},
		{"SET", s, "str"},
		{"LPUSH", s, "x"}, // fails at run time; the others still apply
		{"INCR", k},
	}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	items := decode[[]envelope](t, r)
	if len(items) != 5 {
		t.Fatalf("got %s", r.raw)
	}
	jsonEq(t, items[0].Result, `"OK"`)
	jsonEq(t, items[1].Result, `2`)
	jsonEq(t, items[2].Result, `"OK"`)
	if items[3].Error == nil || !strings.HasPrefix(*items[3].Error, "WRONGTYPE") {
		t.Fatalf("item 3: %s", r.raw)
	}
	jsonEq(t, items[4].Result, `3`)

	// A queue-time error aborts everything.
	k2 := e.key("k2")
	r = e.request(http.MethodPost, "/multi-exec", [][]any{{"SET", k2, "x"}, {"GET"}}, nil)
	env := decode[envelope](t, r)
	if r.status != http.StatusBadRequest || env.Error == nil || !strings.HasPrefix(*env.Error, "EXECABORT") {
		t.Fatalf("status %d body %s, want 400 EXECABORT", r.status, r.raw)
	}
	jsonEq(t, e.cmd("EXISTS", k2), `0`)
	// The dedicated connection is healthy afterwards.
	r = e.request(http.MethodPost, "/multi-exec", [][]any{{"SET", k2, "y"}, {"GET", k2}}, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	jsonEq(t, r.raw, `[{"result":"OK"},{"result":"y"}]`)

	// Transaction commands cannot be smuggled in.
	r = e.request(http.MethodPost, "/multi-exec", [][]any{{"SET", k2, "z"}, {"EXEC"}}, nil)
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	jsonEq(t, e.cmd("GET", k2), `"y"`)
}

// TestMultiExecAtomic proves that the commands of one transaction are not
// interleaved with concurrent writers.
func TestMultiExecAtomic(t *testing.T) {
	e := newEnv(t)
	k := e.key("ctr")
	const txs, incrsPerTx = 20, 5
	var wg sync.WaitGroup
	errs := make(chan string, 2*txs)
	for range txs {
		wg.Add(2)
		go func() { // noise: plain INCRs
			defer wg.Done()
			cmds := make([][]any, incrsPerTx)
			for i := range cmds {
				cmds[i] = []any{"INCR", k}
			}
			r := e.requestNoFatal(http.MethodPost, "/pipeline", cmds)
			if r.status != http.StatusOK {
				errs <- fmt.Sprintf("pipeline status %d: %s", r.status, r.raw)
			}
		}()
		go func() {
			defer wg.Done()
			cmds := make([][]any, incrsPerTx)
			for i := range cmds {
				cmds[i] = []any{"INCR", k}
			}
			r := e.requestNoFatal(http.MethodPost, "/multi-exec", cmds)
			if r.status != http.StatusOK {
				errs <- fmt.Sprintf("multi-exec status %d: %s", r.status, r.raw)
				return
			}
			var items []struct{ Result int64 }
			if err := json.Unmarshal(r.raw, &items); err != nil || len(items) != incrsPerTx {
				errs <- fmt.Sprintf("bad multi-exec body %s", r.raw)
				return
			}
			for i := 1; i < len(items); i++ {
				if items[i].Result != items[i-1].Result+1 {
					errs <- fmt.Sprintf("transaction interleaved: %s", r.raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	jsonEq(t, e.cmd("GET", k), js(strconv.Itoa(2*txs*incrsPerTx)))
}

// requestNoFatal is request for use off the test goroutine.
func (e *env) requestNoFatal(method, path string, body any) response {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest(method, e.base+path, bytes.NewReader(data))
	if err != nil {
		return response{raw: []byte(err.Error())}
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := e.hc.Do(req)
	if err != nil {
		return response{raw: []byte(err.Error())}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, raw: raw}
}

func TestSyncToken(t *testing.T) {
	e := newEnv(t)
	if got := e.srv.LastSyncToken(); got != "" {
		t.Fatalf("LastSyncToken before any request = %q", got)
	}
	var last int64
	for i, r := range []response{
		e.request(http.MethodPost, "/", []any{"PING"}, nil),
		e.request(http.MethodPost, "/", []any{"NOSUCHCMD"}, nil),
		e.request(http.MethodPost, "/", []any{"PING"}, map[string]string{"Authorization": ""}),
		e.request(http.MethodPost, "/pipeline", [][]any{{"PING"}}, nil),
		e.request(http.MethodGet, "/pipeline", nil, nil),
		e.request(http.MethodPost, "/", []any{"PING"}, map[string]string{"upstash-sync-token": "client-token-7"}),
	} {
		h := r.header.Get("upstash-sync-token")
		n, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			t.Fatalf("response %d: upstash-sync-token %q: %v", i, h, err)
		}
		if n <= last {
			t.Fatalf("response %d: sync token %d not above %d", i, n, last)
		}
		last = n
	}
	if got := e.srv.LastSyncToken(); got != "client-token-7" {
		t.Fatalf("LastSyncToken = %q", got)
	}
	// A request without the header keeps the last one seen.
	e.cmd("PING")
	if got := e.srv.LastSyncToken(); got != "client-token-7" {
		t.Fatalf("LastSyncToken = %q", got)
	}
}

func TestFailNext(t *testing.T) {
	e := newEnv(t)
	k := e.key("k")
	e.srv.FailNext(2, http.StatusServiceUnavailable)
	before := e.srv.Requests()
	for range 2 {
		r := e.request(http.MethodPost, "/", []any{"SET", k, "v"}, nil)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", r.status)
		}
		jsonEq(t, r.raw, `{"error":"injected"}`)
	}
	jsonEq(t, e.cmd("EXISTS", k), `0`) // Redis was not touched
	if n := e.srv.Requests() - before; n != 3 {
		t.Fatalf("Requests grew by %d, want 3", n)
	}

	e.srv.FailNext(1, http.StatusInternalServerError)
	r := e.request(http.MethodPost, "/pipeline", [][]any{{"SET", k, "v"}}, nil)
	if r.status != http.StatusInternalServerError {
		t.Fatalf("status %d", r.status)
	}
	e.srv.FailNext(5, http.StatusBadGateway)
	e.srv.FailNext(0, 0) // cancels
	jsonEq(t, e.cmd("EXISTS", k), `0`)
}

func TestPathForm(t *testing.T) {
	e := newEnv(t)
	k := e.key("p/q r") // needs escaping
	esc := strings.NewReplacer("/", "%2F", " ", "%20").Replace(k)

	r := e.request(http.MethodGet, "/set/"+esc+"/hello%20world/EX/100", nil, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	jsonEq(t, r.raw, `{"result":"OK"}`)
	r = e.request(http.MethodGet, "/get/"+esc, nil, nil)
	jsonEq(t, r.raw, `{"result":"hello world"}`)
	jsonEq(t, e.cmd("GET", k), `"hello world"`)

	// POST with the path form appends the raw body as the last argument.
	body := []byte(`{"raw": "json/ish", "n": 1}`)
	r = e.request(http.MethodPost, "/set/"+esc, body, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	r = e.request(http.MethodPost, "/get/"+esc, nil, nil)
	jsonEq(t, r.raw, js(map[string]string{"result": string(body)}))

	r = e.request(http.MethodGet, "/incr/"+e.key("n"), nil, nil)
	jsonEq(t, r.raw, `{"result":1}`)
	r = e.request(http.MethodGet, "/nosuchcmd/x", nil, nil)
	if r.status != http.StatusBadRequest {
		t.Fatalf("status %d body %s", r.status, r.raw)
	}
	r = e.request(http.MethodDelete, "/get/x", nil, nil)
	if r.status != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE status %d", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	expect := func(r response, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d; body %s", r.status, status, r.raw)
		}
		env := decode[envelope](t, r)
		if env.Error == nil || *env.Error == "" {
			t.Fatalf("no error member: %s", r.raw)
		}
	}
	expect(e.request(http.MethodPost, "/", []byte(`["SET","k"`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []byte(`{"cmd":"PING"}`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []byte(`["PING"] ["PING"]`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []byte(`[]`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []byte(`[""]`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []any{"SET", e.key("k"), true}, nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []any{"SET", e.key("k"), nil}, nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []any{"SET", e.key("k"), []string{"x"}}, nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/pipeline", []byte(`[["PING"], "PING"]`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/pipeline", []byte(`[]`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/multi-exec", []byte(`[["PING"`), nil), http.StatusBadRequest)
	expect(e.request(http.MethodGet, "/pipeline", nil, nil), http.StatusMethodNotAllowed)
	expect(e.request(http.MethodGet, "/multi-exec", nil, nil), http.StatusMethodNotAllowed)
	expect(e.request(http.MethodGet, "/", nil, nil), http.StatusMethodNotAllowed)
	expect(e.request(http.MethodPost, "/", []any{"SUBSCRIBE", "ch"}, nil), http.StatusBadRequest)
	expect(e.request(http.MethodPost, "/", []any{"select", 1}, nil), http.StatusBadRequest)

	big := make([]byte, restserver.MaxBodyBytes+10)
	for i := range big {
		big[i] = 'a'
	}
	expect(e.request(http.MethodPost, "/", []byte(`["SET","k","`+string(big)+`"]`), nil), http.StatusRequestEntityTooLarge)
	expect(e.request(http.MethodPost, "/pipeline", []byte(`[["SET","k","`+string(big)+`"]]`), nil), http.StatusRequestEntityTooLarge)
	expect(e.request(http.MethodPost, "/set/"+e.key("big"), big, nil), http.StatusRequestEntityTooLarge)
	jsonEq(t, e.cmd("EXISTS", e.key("big")), `0`)

	// Still serving afterwards.
	jsonEq(t, e.cmd("PING"), `"PONG"`)
}

// TestRESP3Client checks the reply conversion with a client that negotiated
// RESP3, where hashes are maps and scores are doubles.
func TestRESP3Client(t *testing.T) {
	t.Parallel()
	opt, err := rueidis.ParseURL(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	srv := restserver.New(client, testToken)
	h := e3(t, srv)
	k := fmt.Sprintf("restserver:resp3:%d:", time.Now().UnixNano())
	t.Cleanup(func() { h("DEL", k+"h", k+"z") })
	jsonEq(t, h("HSET", k+"h", "b", "2", "a", "1"), `2`)
	jsonEq(t, h("HGETALL", k+"h"), `["a","1","b","2"]`)
	jsonEq(t, h("ZADD", k+"z", 2.5, "m"), `1`)
	jsonEq(t, h("ZSCORE", k+"z", "m"), `"2.5"`)
	jsonEq(t, h("EVAL", "return redis.setresp(3) or {double=1.5}", 0), `"1.5"`)
	jsonEq(t, h("EVAL", "redis.setresp(3); return true", 0), `1`)
	jsonEq(t, h("EVAL", "redis.setresp(3); return false", 0), `0`)
}

// e3 serves requests straight through the handler, without a network.
func e3(t *testing.T, srv *restserver.Server) func(args ...any) json.RawMessage {
	return func(args ...any) json.RawMessage {
		t.Helper()
		data, _ := json.Marshal(args)
		req, _ := http.NewRequest(http.MethodPost, "/", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%v: status %d body %s", args, rec.Code, rec.Body.Bytes())
		}
		var env envelope
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error != nil {
			t.Fatalf("%v: body %s (%v)", args, rec.Body.Bytes(), err)
		}
		return env.Result
	}
}
