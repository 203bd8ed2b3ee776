package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/agent/demo"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/redistest"
)

func TestMain(m *testing.M) {
	// The runner starts the demo agent as "<this binary> demo-agent".
	if len(os.Args) > 1 && os.Args[1] == "demo-agent" {
		os.Exit(demo.Main(os.Args[2:], os.Stdin, os.Stdout))
	}
	goleak.VerifyTestMain(m)
}

func fixed(status string) func(context.Context) CheckResult {
	return func(context.Context) CheckResult { return CheckResult{Status: status} }
}

func get(t *testing.T, h http.Handler, path string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: %v: %s", path, err, rec.Body.String())
	}
	return rec.Code, body
}

func TestStatusCombinesChecks(t *testing.T) {
	cases := []struct {
		name              string
		checks            []Check
		status            string
		code, ready, live int
	}{
		{"all ok", []Check{{Name: "a", Critical: true, Run: fixed(StatusOK)}, {Name: "b", Run: fixed(StatusOK)}}, StatusOK, 200, 200, 200},
		{"disabled counts as ok", []Check{{Name: "redis", Run: fixed(StatusDisabled)}}, StatusOK, 200, 200, 200},
		{"non-critical down is degraded", []Check{{Name: "a", Critical: true, Run: fixed(StatusOK)}, {Name: "redis", Run: fixed(StatusDown)}}, StatusDegraded, 200, 200, 200},
		{"non-critical degraded is degraded", []Check{{Name: "redis", Run: fixed(StatusDegraded)}}, StatusDegraded, 200, 200, 200},
		{"critical down is down", []Check{{Name: "db", Critical: true, Run: fixed(StatusDown)}, {Name: "redis", Run: fixed(StatusDegraded)}}, StatusDown, 503, 503, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRouter(NewHealth("test", tc.checks...))
			code, body := get(t, r, "/status")
			if code != tc.code || body["status"] != tc.status {
				t.Fatalf("/status = %d %v, want %d %s", code, body["status"], tc.code, tc.status)
			}
			if got := len(body["checks"].(map[string]any)); got != len(tc.checks) {
				t.Fatalf("%d checks reported, want %d", got, len(tc.checks))
			}
			if code, _ := get(t, r, "/readyz"); code != tc.ready {
				t.Fatalf("/readyz = %d, want %d", code, tc.ready)
			}
			if code, _ := get(t, r, "/healthz"); code != tc.live {
				t.Fatalf("/healthz = %d, want %d", code, tc.live)
			}
		})
	}
}

func TestDrainingReportsDown(t *testing.T) {
	h := NewHealth("test", Check{Name: "a", Run: fixed(StatusOK)})
	r := NewRouter(h)
	h.Drain()
	code, body := get(t, r, "/status")
	if code != 503 || body["status"] != StatusDown || body["draining"] != true {
		t.Fatalf("/status while draining = %d %v", code, body)
	}
	if code, _ := get(t, r, "/readyz"); code != 503 {
		t.Fatalf("/readyz while draining = %d", code)
	}
	if code, _ := get(t, r, "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining = %d, want 200 (alive)", code)
	}
}

func TestChecksAreBoundedByTimeout(t *testing.T) {
	h := NewHealth("test", Check{Name: "slow", Critical: true, Run: func(ctx context.Context) CheckResult {
		<-ctx.Done()
		return CheckResult{Status: StatusDown, Detail: ctx.Err().Error()}
	}})
	h.Timeout = 50 * time.Millisecond
	code, body := get(t, NewRouter(h), "/status")
	if code != 503 || body["checks"].(map[string]any)["slow"].(map[string]any)["detail"] != "context deadline exceeded" {
		t.Fatalf("/status = %d %v", code, body)
	}
}

func TestUnknownRouteIsProblemJSON(t *testing.T) {
	r := NewRouter(NewHealth("test"))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec.Code != 404 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("GET /nope = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	rec = httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/status", nil))
	if rec.Code != 405 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("POST /status = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestStatusOfMapsEveryKind(t *testing.T) {
	want := map[agentapi.Kind]int{
		agentapi.KindOther: 500, agentapi.KindInvalid: 400, agentapi.KindNotFound: 404,
		agentapi.KindConflict: 409, agentapi.KindUnauthenticated: 401, agentapi.KindForbidden: 403,
		agentapi.KindRateLimited: 429, agentapi.KindUnavailable: 503, agentapi.KindInternal: 500,
	}
	for k, code := range want {
		err := fmt.Errorf("wrapped: %w", agentapi.E("op", k, errors.New("x")))
		if got := StatusOf(err); got != code {
			t.Errorf("StatusOf(%v) = %d, want %d", k, got, code)
		}
	}
	if StatusOf(kv.ErrUnavailable) != 503 {
		t.Error("kv.ErrUnavailable does not map to 503")
	}
	rec := httptest.NewRecorder()
	WriteError(rec, errors.New("secret internals"))
	var p Problem
	json.Unmarshal(rec.Body.Bytes(), &p)
	if rec.Code != 500 || p.Detail != "internal error" {
		t.Fatalf("internal error leaked: %d %+v", rec.Code, p)
	}
}

func TestRedisCheckDisabled(t *testing.T) {
	res := RedisCheck(nil).Run(context.Background())
	if res.Status != StatusDisabled || res.Detail.(RedisDetail).Enabled {
		t.Fatalf("nil switch: %+v", res)
	}
}

// TestStatusFollowsRedisFallback: with native preferred and REST as the
// fallback, stopping the native Redis makes /status say degraded with the
// REST protocol in use, and restarting it brings back ok on native.
func TestStatusFollowsRedisFallback(t *testing.T) {
	a := redistest.Start(t, redistest.Options{})
	b := redistest.Start(t, redistest.Options{})
	restURL, _ := restserver.StartTest(t, b.URL(), "tok")
	sw := kv.NewSwitch(context.Background(), []kv.Endpoint{
		{Name: "native", Addr: a.Addr(), Dial: func(ctx context.Context) (kv.Client, error) {
			return native.Dial(ctx, native.Options{URL: a.URL(), ConnectTimeout: time.Second})
		}},
		{Name: "rest", Addr: restURL, Dial: func(ctx context.Context) (kv.Client, error) {
			return rest.New(rest.Options{URL: restURL, Token: "tok", MaxRetries: -1})
		}},
	}, kv.SwitchOptions{ProbeInterval: 20 * time.Millisecond, ProbeTimeout: time.Second})
	defer sw.Close()
	r := NewRouter(NewHealth("test", RedisCheck(sw)))

	redisOf := func() (string, map[string]any) {
		_, body := get(t, r, "/status")
		c := body["checks"].(map[string]any)["redis"].(map[string]any)
		return body["status"].(string), c
	}
	if st, c := redisOf(); st != StatusOK || c["detail"].(map[string]any)["protocol"] != "native" {
		t.Fatalf("before: %s %v", st, c)
	}

	a.Stop(t)
	// The check's own PING is the call in flight: it may fail once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, c := redisOf()
		d := c["detail"].(map[string]any)
		if st == StatusDegraded && c["status"] == StatusDegraded && d["protocol"] == "rest" && d["fallen_back"] == true {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after stopping native: %s %v", st, c)
		}
	}

	a.Restart(t)
	deadline = time.Now().Add(10 * time.Second)
	for {
		st, c := redisOf()
		if st == StatusOK && c["detail"].(map[string]any)["protocol"] == "native" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restarting native: %s %v", st, c)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for state
	}
}
