package breaker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/kv"
)

// Stats reports the enforced state and counts each transition by the state
// changed to, as OnTransition sees them.
func TestStatsCountsTransitions(t *testing.T) {
	clock := newClock()
	r := breaker.NewRegistry(settings, breaker.Options{Clock: clock.Now})
	if got := r.Stats(); len(got) != 0 {
		t.Fatalf("Stats of an unused registry: %+v", got)
	}
	b := r.Get("dep")
	r.Get("other")
	for range settings.FailureThreshold {
		mustCall(t, b, errFail)
	}
	st := statsOf(t, r, "dep")
	want := map[agentapi.BreakerState]uint64{agentapi.BreakerClosed: 0, agentapi.BreakerOpen: 1, agentapi.BreakerHalfOpen: 0}
	if st.State != agentapi.BreakerOpen || st.Mode != "local" || !sameCounts(st.Transitions, want) {
		t.Fatalf("after opening: %+v", st)
	}
	// The timeout passed: reported half-open, as Status does, though no
	// call has made the transition yet.
	clock.Advance(settings.Timeout)
	if st := statsOf(t, r, "dep"); st.State != agentapi.BreakerHalfOpen || !sameCounts(st.Transitions, want) {
		t.Fatalf("after the timeout: %+v", st)
	}
	mustCall(t, b, errFail) // probe fails: half-open, then open again
	clock.Advance(settings.Timeout)
	mustCall(t, b, nil)
	mustCall(t, b, nil) // closed
	want = map[agentapi.BreakerState]uint64{agentapi.BreakerClosed: 1, agentapi.BreakerOpen: 2, agentapi.BreakerHalfOpen: 2}
	if st := statsOf(t, r, "dep"); st.State != agentapi.BreakerClosed || !sameCounts(st.Transitions, want) {
		t.Fatalf("after closing: %+v", st)
	}
	if st := statsOf(t, r, "other"); st.State != agentapi.BreakerClosed || st.Transitions[agentapi.BreakerOpen] != 0 {
		t.Fatalf("untouched breaker: %+v", st)
	}
	if got := r.Stats(); len(got) != 2 || got[0].Name != "dep" || got[1].Name != "other" {
		t.Fatalf("Stats not sorted by name: %+v", got)
	}
}

// Stats never reads Redis (List does): a scrape costs no round trip.
func TestStatsDoesNoIO(t *testing.T) {
	c := &countingKV{}
	r := breaker.NewRegistry(settings, breaker.Options{KV: c, Clock: newClock().Now})
	r.Get("dep")
	st := r.Stats()
	if len(st) != 1 || st[0].State != agentapi.BreakerClosed || st[0].Mode != "shared" {
		t.Fatalf("Stats: %+v", st)
	}
	if n := c.calls.Load(); n != 0 {
		t.Fatalf("Stats made %d Redis calls", n)
	}
	r.List()
	if c.calls.Load() == 0 {
		t.Fatal("List made no Redis call: the stub does not count")
	}
}

func statsOf(t *testing.T, r *breaker.Registry, name string) breaker.Stats {
	t.Helper()
	for _, s := range r.Stats() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stats for %q", name)
	return breaker.Stats{}
}

func sameCounts(a, b map[agentapi.BreakerState]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// countingKV is a kv.Client whose every call fails after being counted.
type countingKV struct{ calls atomic.Int64 }

var errStub = kv.Unavailable("stub", errors.New("no server"))

func (c *countingKV) Do(context.Context, ...string) (kv.Value, error) {
	c.calls.Add(1)
	return kv.Value{}, errStub
}

func (c *countingKV) Pipeline(context.Context, ...[]string) ([]kv.Result, error) {
	c.calls.Add(1)
	return nil, errStub
}

func (c *countingKV) MultiExec(context.Context, ...[]string) ([]kv.Result, error) {
	c.calls.Add(1)
	return nil, errStub
}

func (c *countingKV) Eval(context.Context, *kv.Script, []string, ...string) (kv.Value, error) {
	c.calls.Add(1)
	return kv.Value{}, errStub
}

func (c *countingKV) Close() error { return nil }
