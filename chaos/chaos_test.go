package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	duration   = flag.Duration("chaos.duration", 0, "run fault cycles for this long (0: one cycle, the short form)")
	reportPath = flag.String("chaos.report", "", "also write the report as JSON to this file")
	race       = flag.Bool("chaos.race", true, "build the server with the race detector")
	steadyFor  = flag.Duration("chaos.steady", 5*time.Second, "steady spell before each fault")
	downFor    = flag.Duration("chaos.down", 3*time.Second, "how long each fault lasts")
	recoverFor = flag.Duration("chaos.recover", 8*time.Second, "time allowed to recover after each fault")
)

var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "agentapi-chaos-*")
	if err != nil {
		panic(err)
	}
	if testing.Short() {
		os.Exit(m.Run())
	}
	binary, err = buildBinary(dir, *race)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fault is one thing production does to the service.
type fault struct {
	name   string
	break_ func()
	repair func()
}

// TestChaos: see the package documentation.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite starts Redis, PostgreSQL and three servers")
	}
	started := time.Now()
	sys := startSystem(t, 3)
	st := newStats()
	c := newClient(sys.insts, st)
	l := newLedger()
	members, bursters := setup(t, c, 3, 2)
	t.Logf("system up in %v: redis %s, postgres :%d, instances %s, %s, %s",
		time.Since(started).Round(time.Millisecond), sys.redis.Addr(), sys.pg.Port(),
		sys.insts[0].base(), sys.insts[1].base(), sys.insts[2].base())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, u := range members {
		w := &worker{c: c, l: l, u: u}
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx) }()
	}
	for _, u := range bursters {
		b := &burster{c: c, l: l, u: u, size: volleySize, limit: burstSize, perSec: burstPerMinute / 60.0}
		wg.Add(1)
		go func() { defer wg.Done(); b.run(ctx) }()
	}
	stopLoad := func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stopLoad)

	victim := 0
	faults := []fault{
		{name: "redis", break_: func() { sys.redis.Stop(t) }, repair: func() { sys.redis.Restart(t) }},
		{name: "instance", break_: func() { sys.insts[victim%3].kill() }, repair: func() {
			sys.insts[victim%3].start(t)
			victim++
		}},
		{name: "postgres", break_: func() { sys.pg.Stop(t) }, repair: func() { sys.pg.Restart(t) }},
	}
	var timeline []string
	mark := func(format string, args ...any) {
		line := fmt.Sprintf("%7.1fs  ", time.Since(started).Seconds()) + fmt.Sprintf(format, args...)
		timeline = append(timeline, line)
		t.Log(line)
	}
	loadStart := time.Now()
	for cycle := 1; ; cycle++ {
		for _, f := range faults {
			st.setPhase("steady")
			time.Sleep(*steadyFor)
			name := f.name
			if name == "instance" {
				name += " " + sys.insts[victim%3].id
			}
			st.setPhase(f.name + "-down")
			mark("cycle %d: %s killed", cycle, name)
			f.break_()
			time.Sleep(*downFor)
			f.repair()
			mark("cycle %d: %s back", cycle, name)
			st.setPhase(f.name + "-recovering")
			time.Sleep(*recoverFor)
		}
		if time.Since(loadStart) >= *duration {
			break
		}
	}
	st.setPhase("steady")
	time.Sleep(*steadyFor)
	mark("load stopped")
	stopLoad()
	loadTime := time.Since(loadStart)

	v := verify(t, sys, c, l, members, bursters)
	mark("verified")
	r := buildReport(st, l, v, loadTime, timeline)
	t.Log("\n" + r.text())
	if *reportPath != "" {
		writeReport(t, *reportPath, r)
	}
	if dir := os.Getenv("AGENTAPI_TEST_ARTIFACTS"); dir != "" {
		writeReport(t, filepath.Join(dir, "chaos-report.json"), r)
	}
	for _, f := range r.Failures {
		t.Error(f)
	}
}

func writeReport(t *testing.T, path string, r report) {
	data, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Errorf("report: %v", err)
		return
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Errorf("report: %v", err)
	}
	if err := os.WriteFile(strings.TrimSuffix(path, ".json")+".txt", []byte(r.text()), 0o644); err != nil {
		t.Errorf("report: %v", err)
	}
}

// report is what a run shows.
type report struct {
	LoadSeconds float64                     `json:"load_seconds"`
	Served      int64                       `json:"requests_served"`
	Answers     map[string]map[string]int64 `json:"answers_by_operation"`
	ByPhase     map[string]map[string]int64 `json:"answers_by_phase"`
	Latency     map[string]latency          `json:"latency_ms"`
	Examples    map[string][]string         `json:"examples"`
	Checked     verified                    `json:"checked"`
	Timeline    []string                    `json:"timeline"`
	Failures    []string                    `json:"failures"`
}

type latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Kinds that no fault explains, in any phase.
var neverOK = []string{kindServerError, kindUnauthorized, kindForbidden, kindClientError, kindQuota}

// Kinds a fault explains while it lasts and while the system recovers,
// never in a steady spell.
var onlyUnderFault = []string{kindUnavailable, kindBadGateway, kindTransport, kindInstanceDown}

func buildReport(st *stats, l *ledger, v verified, loadTime time.Duration, timeline []string) report {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := report{
		LoadSeconds: loadTime.Seconds(), Answers: st.counts, ByPhase: st.byPhase,
		Latency: map[string]latency{}, Examples: st.examples, Checked: v, Timeline: timeline,
	}
	var all []time.Duration
	for op, ds := range st.lat {
		r.Latency[op] = latency{N: len(ds), P50: ms(percentile(ds, 50)), P99: ms(percentile(ds, 99)), Max: ms(percentile(ds, 100))}
		if op != "setup" {
			all = append(all, ds...)
			r.Served += int64(len(ds))
		}
	}
	r.Latency["all"] = latency{N: len(all), P50: ms(percentile(all, 50)), P99: ms(percentile(all, 99)), Max: ms(percentile(all, 100))}

	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	for op, kinds := range st.counts {
		for _, k := range neverOK {
			if n := kinds[k]; n > 0 {
				fail("%d %s answers to %s (examples: %v)", n, k, op, examplesOf(st.examples, k))
			}
		}
		if n := kinds[kindNotFound]; n > 0 && op != "probe_other_tenant" {
			fail("%d not_found answers to %s, about the user's own sessions (examples: %v)", n, op, examplesOf(st.examples, kindNotFound))
		}
	}
	if n := st.counts["probe_other_tenant"][kindOK]; n > 0 {
		fail("%d probes read another tenant's session", n)
	}
	if n := st.byPhase["steady"]; n != nil {
		for _, k := range onlyUnderFault {
			if n[k] > 0 {
				fail("%d %s answers while the system was whole (examples: %v)", n[k], k, st.examples["steady/"+k])
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.leaks {
		fail("cross-tenant or inconsistent data: %s", x)
	}
	if l.leakCount > len(l.leaks) {
		fail("%d sights of cross-tenant or inconsistent data in all", l.leakCount)
	}
	for _, b := range l.bursts {
		if b.phase == "steady" && b.admitted > b.allowed {
			fail("a volley of %d admitted %d, more than the %d its limit allows (limited %d, other %d)", volleySize, b.admitted, b.allowed, b.limited, b.other)
		}
	}
	r.Failures = append(r.Failures, v.failures...)
	sort.Strings(r.Failures)
	return r
}

// examplesOf gathers the examples of a kind across phases.
func examplesOf(ex map[string][]string, kind string) []string {
	var out []string
	for k, list := range ex {
		if strings.HasSuffix(k, "/"+kind) {
			out = append(out, list...)
		}
	}
	sort.Strings(out)
	return out[:min(len(out), 5)]
}

func (r report) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos report: %.0fs of load, %d requests answered (%.0f/s)\n", r.LoadSeconds, r.Served, float64(r.Served)/r.LoadSeconds)
	b.WriteString("\ntimeline:\n")
	for _, l := range r.Timeline {
		b.WriteString("  " + l + "\n")
	}
	kinds := map[string]bool{}
	for _, m := range r.Answers {
		for k := range m {
			kinds[k] = true
		}
	}
	var ks []string
	for k := range kinds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var ops []string
	for op := range r.Answers {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	fmt.Fprintf(&b, "\n%-20s %8s %8s %8s", "operation", "p50 ms", "p99 ms", "max ms")
	for _, k := range ks {
		fmt.Fprintf(&b, " %*s", max(len(k), 6), k)
	}
	b.WriteString("\n")
	for _, op := range append(ops, "all") {
		lt := r.Latency[op]
		fmt.Fprintf(&b, "%-20s %8.1f %8.1f %8.1f", op, lt.P50, lt.P99, lt.Max)
		for _, k := range ks {
			var n int64
			if op == "all" {
				for o, m := range r.Answers {
					if o != "setup" {
						n += m[k]
					}
				}
			} else {
				n = r.Answers[op][k]
			}
			fmt.Fprintf(&b, " %*d", max(len(k), 6), n)
		}
		b.WriteString("\n")
	}
	var phases []string
	for p := range r.ByPhase {
		phases = append(phases, p)
	}
	sort.Strings(phases)
	b.WriteString("\nanswers by phase:\n")
	for _, p := range phases {
		fmt.Fprintf(&b, "  %-22s %v\n", p, r.ByPhase[p])
	}
	b.WriteString("\nchecked:\n" + r.Checked.text())
	if len(r.Failures) == 0 {
		b.WriteString("\nresult: PASS\n")
	} else {
		b.WriteString("\nresult: FAIL\n")
		for _, f := range r.Failures {
			b.WriteString("  - " + f + "\n")
		}
	}
	return b.String()
}
