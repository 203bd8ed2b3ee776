package main

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
)

// TestUsageIsExactAcrossInstancesAndSurvivesShutdownAndKill runs three
// serve processes on one Redis and one PostgreSQL. Requests of one user
// spread over all three are counted exactly; a SIGTERM loses nothing; a
// SIGKILL loses at most what the killed instance counted in its last push
// interval (1 s) -- until the instance is restarted on its data
// directory, whose usage journal gives the rest back: then nothing is
// lost.
func TestUsageIsExactAcrossInstancesAndSurvivesShutdownAndKill(t *testing.T) {
	t.Parallel()
	redisURL, dbURL := redistest.URL(t), pgtest.URL(t)
	common := []string{
		"REDIS_ENABLE=true", "REDIS_URL=" + redisURL, "DATABASE_URL=" + dbURL,
		"TOKEN_ENCRYPTION_KEY=" + strings.Repeat("cd", 32), "AGENTAPI_ADMIN_API_KEY=" + testAdminKey,
		"RATE_LIMIT_ENABLED=false",
	}
	type instance struct {
		cmd  interface{ Wait() error }
		pid  int
		base string
	}
	homes := map[string]string{}
	start := func(id string) instance {
		if homes[id] == "" {
			homes[id] = t.TempDir()
		}
		env := append([]string{"HOME=" + homes[id], "AGENTAPI_INSTANCE_ID=" + id}, common...)
		cmd, addr, logs := started(t, env, "serve", "--port", "0")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s logs:\n%s", id, logs.String())
			}
		})
		return instance{cmd: cmd, pid: cmd.Process.Pid, base: "http://" + addr}
	}
	a, b, c := start("usage-a"), start("usage-b"), start("usage-c")

	// A tenant with three members.
	if code, body := call(t, "POST", a.base+"/v1/admin/tenants", testAdminKey, map[string]string{"id": "metered", "name": "Metered"}); code != 200 {
		t.Fatalf("tenant: %d %v", code, body)
	}
	keys, ids := map[string]string{}, map[string]string{}
	for _, name := range []string{"spread", "killed", "stopped"} {
		code, u := call(t, "POST", a.base+"/v1/admin/tenants/metered/users", testAdminKey, map[string]string{"name": name, "role": "member"})
		if code != 200 {
			t.Fatalf("user: %d %v", code, u)
		}
		ids[name] = u["id"].(string)
		_, k := call(t, "POST", a.base+"/v1/admin/tenants/metered/users/"+ids[name]+"/keys", testAdminKey, map[string]string{})
		keys[name] = k["secret"].(string)
	}
	get := func(base, key string) bool {
		req, _ := http.NewRequest("GET", base+"/v1/sessions", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	// load sends n requests as user over bases from workers goroutines,
	// each waiting pace between its requests, and returns how many were
	// answered 200, and when each was.
	load := func(user string, bases []string, workers, n int, pace time.Duration) (int64, []time.Time) {
		var ok atomic.Int64
		var mu sync.Mutex
		var at []time.Time
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					time.Sleep(pace)
					if get(bases[i%len(bases)], keys[user]) {
						ok.Add(1)
						mu.Lock()
						at = append(at, time.Now())
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return ok.Load(), at
	}
	count := func(base, user string) float64 {
		code, rep := call(t, "GET", base+"/v1/admin/usage?tenant=metered", testAdminKey, nil)
		if code != 200 {
			t.Fatalf("report: %d %v", code, rep)
		}
		var sum float64
		for _, r := range rep["rows"].([]any) {
			row := r.(map[string]any)
			if row["user_id"] == ids[user] && row["metric"] == "requests" {
				sum += row["count"].(float64)
			}
		}
		return sum
	}

	// 1. One user over three instances: the report (SQL + Redis) reaches
	// the exact count once every instance has pushed (each pushes every
	// second), and never goes past it.
	// reaches waits until a report through base shows want requests of
	// user, failing if it ever shows more or not within 15 s.
	reaches := func(base, user string, want int64, what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := count(base, user)
			if got > float64(want) {
				t.Fatalf("%s: counted %v requests of %d answered", what, got, want)
			}
			if got == float64(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the report shows %v of %d requests after 15 s", what, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	spread, _ := load("spread", []string{a.base, b.base, c.base}, 12, 600, 0)
	reaches(a.base, "spread", spread, "spread over three instances")

	// 2. Load on C over about 3 s, then SIGKILL at once; load on A, then
	// SIGTERM at once.
	killed, killedAt := load("killed", []string{c.base}, 3, 300, 30*time.Millisecond)
	if err := syscall.Kill(c.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	killTime := time.Now()
	stopped, _ := load("stopped", []string{a.base}, 6, 300, 0)
	if err := syscall.Kill(a.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("A did not stop cleanly: %v", err)
	}
	// B is the survivor; a report through B merges SQL with Redis.
	if got := count(b.base, "stopped"); got != float64(stopped) {
		t.Fatalf("SIGTERM lost counts: %v of %d", got, stopped)
	}
	if got := count(b.base, "spread"); got != float64(spread) {
		t.Fatalf("the spread user's count changed to %v (want %d)", got, spread)
	}
	// What C answered in its last push interval (plus scheduling slack)
	// may be lost; nothing else.
	var recent int64
	for _, at := range killedAt {
		if killTime.Sub(at) < 1500*time.Millisecond {
			recent++
		}
	}
	got := count(b.base, "killed")
	if got > float64(killed) || got < float64(killed-recent) {
		t.Fatalf("after SIGKILL: %v counted of %d answered; at most the %d of the last push interval may be lost", got, killed, recent)
	}
	// C restarted on its data directory pushes what its journal kept.
	start("usage-c")
	reaches(b.base, "killed", killed, "C restarted on its journal")
	t.Logf("spread over 3 instances: %d exact; SIGTERM: %d exact; SIGKILL: %v of %d kept (%d answered in its last 1.5 s), all %d once restarted", spread, stopped, got, killed, recent, killed)
}
