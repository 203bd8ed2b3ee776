package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSessionsAreRoutedAcrossInstances runs three serve processes on one
// Redis and one PostgreSQL: a session created on A is messaged through B,
// streamed through C and stopped through B; new sessions go to the least
// loaded instance; when A is killed its sessions are reported lost within
// the instance TTL and their transcripts stay readable.
func TestSessionsAreRoutedAcrossInstances(t *testing.T) {
	t.Parallel()
	redisURL, dbURL := redistest.URL(t), pgtest.URL(t)
	common := []string{
		"REDIS_ENABLE=true", "REDIS_URL=" + redisURL, "DATABASE_URL=" + dbURL,
		"TOKEN_ENCRYPTION_KEY=" + strings.Repeat("ef", 32), "AGENTAPI_ADMIN_API_KEY=" + testAdminKey,
		"RATE_LIMIT_ENABLED=false", "AGENTAPI_INSTANCE_TTL=2s",
	}
	type inst struct {
		pid  int
		base string
	}
	start := func(id string) inst {
		port := freePort(t)
		env := append([]string{"HOME=" + t.TempDir(), "AGENTAPI_INSTANCE_ID=" + id, fmt.Sprintf("PORT=%d", port),
			fmt.Sprintf("AGENTAPI_ADVERTISE_URL=http://127.0.0.1:%d", port)}, common...)
		cmd, addr, logs := started(t, env, "serve")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s logs:\n%s", id, logs.String())
			}
		})
		return inst{pid: cmd.Process.Pid, base: "http://" + addr}
	}
	a, b, c := start("route-a"), start("route-b"), start("route-c")

	if code, body := call(t, "POST", a.base+"/v1/admin/tenants", testAdminKey, map[string]string{"id": "routed", "name": "Routed"}); code != 200 {
		t.Fatalf("tenant: %d %v", code, body)
	}
	_, u := call(t, "POST", a.base+"/v1/admin/tenants/routed/users", testAdminKey, map[string]string{"name": "ana", "role": "member"})
	_, k := call(t, "POST", a.base+"/v1/admin/tenants/routed/users/"+u["id"].(string)+"/keys", testAdminKey, map[string]string{})
	key := k["secret"].(string)

	// Every instance sees all three.
	waitUntil(t, 10*time.Second, "all three instances registered", func() bool {
		for _, in := range []inst{a, b, c} {
			_, view := call(t, "GET", in.base+"/v1/admin/instances", testAdminKey, nil)
			if list, _ := view["instances"].([]any); len(list) != 3 {
				return false
			}
		}
		return true
	})

	code, s := call(t, "POST", a.base+"/v1/sessions", key, map[string]string{"agent_type": "echo", "name": "routed"})
	if code != 200 || s["instance"] != "route-a" {
		t.Fatalf("session on A: %d %v", code, s)
	}
	id := s["id"].(string)
	base := "/v1/sessions/" + id
	waitUntil(t, 20*time.Second, "the agent is stable (asked through C)", func() bool {
		_, st := call(t, "GET", c.base+base+"/status", key, nil)
		return st["status"] == "stable"
	})

	// Stream through C while B sends the message.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+base+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("events through C: %v %v", err, resp)
	}
	defer resp.Body.Close()
	if code, body := call(t, "POST", b.base+base+"/message", key, map[string]string{"content": "hello via B", "type": "user"}); code != 200 {
		t.Fatalf("message through B: %d %v", code, body)
	}
	sc := bufio.NewScanner(resp.Body)
	seen := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Echo: hello via B") {
			seen = true
			break
		}
	}
	if !seen {
		t.Fatalf("C's stream ended without the reply: %v", sc.Err())
	}
	cancel()

	// The transcript through C, live from A.
	_, msgs := call(t, "GET", c.base+base+"/messages", key, nil)
	if !strings.Contains(fmt.Sprint(msgs), "Echo: hello via B") {
		t.Fatalf("messages through C: %v", msgs)
	}
	// Stop through B.
	if code, body := call(t, "DELETE", b.base+base, key, nil); code != 204 {
		t.Fatalf("stop through B: %d %v", code, body)
	}
	if _, rec := call(t, "GET", c.base+base, key, nil); rec["state"] != "stopped" {
		t.Fatalf("after the stop: %v", rec)
	}

	// Placement: an instance running a session is not offered the next
	// one while others run none (loads are exchanged at each renewal).
	code, s2 := call(t, "POST", a.base+"/v1/sessions", key, map[string]string{"agent_type": "echo", "name": "first"})
	if code != 200 {
		t.Fatalf("second session: %d %v", code, s2)
	}
	busy := s2["instance"].(string)
	bases := map[string]string{"route-a": a.base, "route-b": b.base, "route-c": c.base}
	// Every instance learns the new load at its next renewal (TTL/5).
	waitUntil(t, 10*time.Second, "every instance knows "+busy+" runs a session", func() bool {
		for _, base := range bases {
			_, view := call(t, "GET", base+"/v1/admin/instances", testAdminKey, nil)
			list, _ := view["instances"].([]any)
			found := false
			for _, x := range list {
				in := x.(map[string]any)
				found = found || (in["id"] == busy && in["load"] == float64(1))
			}
			if !found || len(list) != 3 {
				return false
			}
		}
		return true
	})
	code, s3 := call(t, "POST", bases[busy]+"/v1/sessions", key, map[string]string{"agent_type": "echo", "name": "placed"})
	if code != 200 || s3["instance"] == busy || bases[s3["instance"].(string)] == "" {
		t.Fatalf("a session asked of %s (running one) was placed on %v: %d", busy, s3["instance"], code)
	}
	for _, x := range []map[string]any{s2, s3} {
		call(t, "DELETE", a.base+"/v1/sessions/"+x["id"].(string), key, nil)
	}

	// A session on A to lose: A takes it once its load is back to 0.
	var lostID string
	waitUntil(t, 10*time.Second, "a session placed on A", func() bool {
		code, x := call(t, "POST", a.base+"/v1/sessions", key, map[string]string{"agent_type": "echo", "name": "on A"})
		if code != 200 {
			t.Fatalf("session: %d %v", code, x)
		}
		if x["instance"] == "route-a" {
			lostID = x["id"].(string)
			return true
		}
		call(t, "DELETE", a.base+"/v1/sessions/"+x["id"].(string), key, nil)
		return false
	})

	// Kill A: its running session is reported lost, its transcript stays.
	waitUntil(t, 20*time.Second, "the session on A is stable", func() bool {
		_, st := call(t, "GET", b.base+"/v1/sessions/"+lostID+"/status", key, nil)
		return st["status"] == "stable"
	})
	if err := syscall.Kill(a.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitUntil(t, 15*time.Second, "A's session marked lost", func() bool {
		_, rec := call(t, "GET", b.base+"/v1/sessions/"+lostID, key, nil)
		return rec["state"] == "lost"
	})
	t.Logf("A's session was marked lost %v after the kill (TTL 2s)", time.Since(killed).Round(10*time.Millisecond))
	if _, msgs := call(t, "GET", c.base+"/v1/sessions/"+lostID+"/messages", key, nil); !strings.Contains(fmt.Sprint(msgs), "Demo agent ready") {
		t.Fatalf("transcript of the lost session: %v", msgs)
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, limit, what, cond)
}
