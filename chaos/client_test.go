package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Answer kinds, as the report counts them.
const (
	kindOK           = "ok"
	kindRateLimited  = "rate_limited"  // 429 from a rate limit
	kindQuota        = "quota"         // 429 over a monthly quota
	kindConflict     = "conflict"      // 409: the agent is busy, or the session is not running
	kindNotFound     = "not_found"     // 404
	kindUnavailable  = "unavailable"   // 503
	kindBadGateway   = "bad_gateway"   // 502/504: the session's owner did not answer
	kindUnauthorized = "unauthorized"  // 401
	kindForbidden    = "forbidden"     // 403
	kindClientError  = "client_error"  // any other 4xx
	kindServerError  = "server_error"  // 500 and other 5xx
	kindInstanceDown = "instance_down" // connection refused: tried on another instance
	kindTransport    = "transport"     // the connection failed after the request was sent
)

// answer is one request's outcome.
type answer struct {
	status  int
	problem string // the problem+json type, if any
	detail  string
	body    []byte
	err     error // transport error (after retries on refused connections)
	sent    bool  // the request may have reached a server
	served  string
}

// stats collects every answer, by operation, kind and phase.
type stats struct {
	mu       sync.Mutex
	counts   map[string]map[string]int64 // op -> kind -> n
	lat      map[string][]time.Duration  // op -> latencies of answered requests
	byPhase  map[string]map[string]int64 // phase -> kind -> n
	phase    string
	examples map[string][]string // phase/kind -> a few examples
}

func newStats() *stats {
	return &stats{
		counts: map[string]map[string]int64{}, lat: map[string][]time.Duration{},
		byPhase: map[string]map[string]int64{}, phase: "steady", examples: map[string][]string{},
	}
}

func (s *stats) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

func (s *stats) currentPhase() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

func (s *stats) record(op, kind, phase string, d time.Duration, answered bool, example string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts[op] == nil {
		s.counts[op] = map[string]int64{}
	}
	s.counts[op][kind]++
	if s.byPhase[phase] == nil {
		s.byPhase[phase] = map[string]int64{}
	}
	s.byPhase[phase][kind]++
	if answered {
		s.lat[op] = append(s.lat[op], d)
	}
	if ek := phase + "/" + kind; kind != kindOK && len(s.examples[ek]) < 3 && example != "" {
		s.examples[ek] = append(s.examples[ek], example)
	}
}

// client sends each request to a random live instance, as a load balancer
// without sticky sessions would; a refused connection (the instance is
// down) is retried on the next one, as a load balancer's health checks
// would route around it.
type client struct {
	insts []*instance
	http  *http.Client
	st    *stats
}

func newClient(insts []*instance, st *stats) *client {
	return &client{
		insts: insts, st: st,
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     5 * time.Second,
			},
		},
	}
}

// do sends one request; op names it in the report.
func (c *client) do(ctx context.Context, op, method, path, cred string, body any) answer {
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	phase := c.st.currentPhase()
	start := time.Now()
	first := rand.IntN(len(c.insts))
	var a answer
	for i := range len(c.insts) {
		in := c.insts[(first+i)%len(c.insts)]
		a = c.once(ctx, in, method, path, cred, data)
		if a.err == nil || !refused(a.err) {
			break
		}
		c.st.record(op, kindInstanceDown, c.st.currentPhase(), 0, false, "")
	}
	if ctx.Err() != nil {
		return a // the test stopped the load: not the system's answer
	}
	// A request that overlapped a fault counts in the fault's phase.
	if end := c.st.currentPhase(); end != "steady" {
		phase = end
	}
	kind := kindOf(a)
	example := ""
	if kind != kindOK {
		example = fmt.Sprintf("%s %s via %s at %s: %d %s %s %v", method, path, a.served, time.Now().Format("15:04:05.000"), a.status, a.problem, a.detail, a.err)
	}
	c.st.record(op, kind, phase, time.Since(start), a.err == nil, example)
	return a
}

func (c *client) once(ctx context.Context, in *instance, method, path, cred string, data []byte) answer {
	a := answer{served: in.id}
	var rd io.Reader
	if data != nil {
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, in.base()+path, rd)
	if err != nil {
		a.err = err
		return a
	}
	if data != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		a.err = err
		a.sent = !refused(err)
		return a
	}
	defer resp.Body.Close()
	a.sent = true
	a.status = resp.StatusCode
	a.body, err = io.ReadAll(resp.Body)
	if err != nil {
		a.err = err
		return a
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		var p struct{ Type, Detail string }
		json.Unmarshal(a.body, &p)
		a.problem, a.detail = p.Type, p.Detail
	}
	return a
}

func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func kindOf(a answer) string {
	switch {
	case a.err != nil && refused(a.err):
		return kindInstanceDown
	case a.err != nil:
		return kindTransport
	case a.status < 300:
		return kindOK
	case a.status == 429 && strings.Contains(a.problem, "quota"):
		return kindQuota
	case a.status == 429:
		return kindRateLimited
	case a.status == 401:
		return kindUnauthorized
	case a.status == 403:
		return kindForbidden
	case a.status == 409:
		return kindConflict
	case a.status == 404:
		return kindNotFound
	case a.status == 503:
		return kindUnavailable
	case a.status == 502 || a.status == 504:
		return kindBadGateway
	case a.status >= 500:
		return kindServerError
	default:
		return kindClientError
	}
}

func (a answer) decode(v any) error {
	if err := json.Unmarshal(a.body, v); err != nil {
		return fmt.Errorf("decoding %q: %w", a.body, err)
	}
	return nil
}

// percentile returns the p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
