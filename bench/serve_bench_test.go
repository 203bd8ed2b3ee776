package bench

// BenchmarkServeInstances measures whole `agentapi serve` processes (see
// docs/scaling.md):
//
//	go test -run '^$' -bench ServeInstances -benchtime 20000x ./bench
//
// It builds the binary, starts N instances on one Redis and one
// PostgreSQL (throwaway servers), and sends b.N authenticated requests
// from 64 goroutines spread round-robin over the instances:
// GET /v1/tenant/config (authentication, IP, user and tenant limits, the
// usage meter, the response cache) -- the per-request platform cost
// without an agent. It reports requests/s and p50/p99 latency.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
)

func buildServe(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "agentapi")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/agentapi").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startServe(b *testing.B, bin string, env []string) string {
	b.Helper()
	cmd := exec.Command(bin, "serve", "--port", "0")
	cmd.Env = append(env, "HOME="+b.TempDir())
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	re := regexp.MustCompile(`"addr":"\[::\]:(\d+)"`)
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- "http://127.0.0.1:" + m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(30 * time.Second):
		b.Fatal("serve did not listen")
	}
	return ""
}

func BenchmarkServeInstances(b *testing.B) {
	bin := buildServe(b)
	for _, n := range []int{1, 3} {
		for _, credKind := range []string{"apikey", "session"} {
			b.Run(fmt.Sprintf("instances=%d/cred=%s", n, credKind), func(b *testing.B) {
				admin, _, _ := auth.NewAPIKey()
				env := []string{
					"REDIS_ENABLE=true", "REDIS_URL=" + redistest.URL(b), "DATABASE_URL=" + pgtest.URL(b),
					"TOKEN_ENCRYPTION_KEY=" + strings.Repeat("ab", 32), "AGENTAPI_ADMIN_API_KEY=" + admin,
					"RATE_LIMIT_REQUESTS_PER_MINUTE=100000000", "RATE_LIMIT_BURST_SIZE=1000000",
					"RATE_LIMIT_IP_REQUESTS_PER_MINUTE=100000000", "RATE_LIMIT_IP_BURST_SIZE=1000000",
					"PATH=" + os.Getenv("PATH"),
				}
				var bases []string
				for i := range n {
					bases = append(bases, startServe(b, bin, append(env, fmt.Sprintf("AGENTAPI_INSTANCE_ID=bench-%d", i))))
				}
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, DialContext: (&net.Dialer{}).DialContext}}
				cred := admin
				if credKind == "session" {
					resp, err := client.Post(bases[0]+"/v1/auth/login", "application/json", strings.NewReader(`{"api_key":"`+admin+`"}`))
					if err != nil {
						b.Fatal(err)
					}
					var out struct{ Token string }
					json.NewDecoder(resp.Body).Decode(&out)
					resp.Body.Close()
					if out.Token == "" {
						b.Fatalf("login: %d", resp.StatusCode)
					}
					cred = out.Token
				}
				get := func(base, path string) int {
					req, _ := http.NewRequest("GET", base+path, nil)
					req.Header.Set("Authorization", "Bearer "+cred)
					resp, err := client.Do(req)
					if err != nil {
						return 0
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return resp.StatusCode
				}
				for _, base := range bases { // warm up: login caches, config caches
					for range 20 {
						if code := get(base, "/v1/tenant/config"); code != 200 {
							b.Fatalf("warm-up: %d", code)
						}
					}
				}
				const workers = 64
				var next, failed atomic.Int64
				lat := make([][]time.Duration, workers)
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range workers {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							t0 := time.Now()
							if get(bases[i%int64(len(bases))], "/v1/tenant/config") != 200 {
								failed.Add(1)
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(failed.Load()), "failed")
			})
		}
	}
}
