package breaker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/redistest"
)

// openIt fails calls through the breaker until it opens.
func openIt(t *testing.T, r *breaker.Registry, name string) {
	t.Helper()
	b := r.Get(name)
	for range r.Settings().FailureThreshold {
		done, err := b.Allow(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done(agentapi.E("test", agentapi.KindUnavailable, errors.New("down")))
	}
	if s := b.State(); s != agentapi.BreakerOpen {
		t.Fatalf("state after %d failures: %s", r.Settings().FailureThreshold, s)
	}
}

func waitState(t *testing.T, b *breaker.Breaker, want agentapi.BreakerState) time.Duration {
	t.Helper()
	start := time.Now()
	for b.State() != want {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s is %s, not %s, 5s on", b.Name(), b.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// TestWatchClosesWhenTheProbeSucceeds: an open breaker with an hour's
// Timeout closes at the first successful probe, which runs only while
// the breaker is open.
func TestWatchClosesWhenTheProbeSucceeds(t *testing.T) {
	r := breaker.NewRegistry(breaker.Settings{Timeout: time.Hour}, breaker.Options{})
	var calls, healthy atomic.Int64
	stop := r.Watch("db", 20*time.Millisecond, func(ctx context.Context) error {
		calls.Add(1)
		if healthy.Load() == 0 {
			return errors.New("still down")
		}
		return nil
	})
	defer stop()

	time.Sleep(100 * time.Millisecond)
	if n := calls.Load(); n != 0 {
		t.Fatalf("the probe ran %d times while the breaker was closed", n)
	}
	openIt(t, r, "db")
	for calls.Load() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	if s := r.Get("db").State(); s != agentapi.BreakerOpen {
		t.Fatalf("failing probes changed the state to %s", s)
	}
	healthy.Store(1)
	waitState(t, r.Get("db"), agentapi.BreakerClosed)
	n := calls.Load()
	time.Sleep(100 * time.Millisecond)
	if calls.Load() != n {
		t.Fatalf("the probe kept running after the breaker closed: %d then %d calls", n, calls.Load())
	}
	done, err := r.Get("db").Allow(context.Background())
	if err != nil {
		t.Fatalf("a call after the probe closed the breaker: %v", err)
	}
	done(nil)
}

// TestWatchClosesEverywhere: with shared state, the instance whose probe
// succeeds closes the breaker for the other instances too.
func TestWatchClosesEverywhere(t *testing.T) {
	url := redistest.URL(t)
	p := prefix()
	a := breaker.NewRegistry(breaker.Settings{Timeout: time.Hour}, breaker.Options{KV: dialNative(t, url), Prefix: p})
	b := breaker.NewRegistry(breaker.Settings{Timeout: time.Hour}, breaker.Options{KV: dialNative(t, url), Prefix: p})
	openIt(t, a, "db")
	waitState(t, b.Get("db"), agentapi.BreakerOpen)
	stop := a.Watch("db", 20*time.Millisecond, func(ctx context.Context) error { return nil })
	defer stop()
	waitState(t, a.Get("db"), agentapi.BreakerClosed)
	waitState(t, b.Get("db"), agentapi.BreakerClosed)
}

// TestWatchDisabled: with breakers switched off the probe never runs.
func TestWatchDisabled(t *testing.T) {
	r := breaker.NewRegistry(breaker.Settings{Timeout: time.Hour}, breaker.Options{})
	openIt(t, r, "db")
	r.SetEnabled(false)
	var calls atomic.Int64
	stop := r.Watch("db", 10*time.Millisecond, func(ctx context.Context) error { calls.Add(1); return nil })
	time.Sleep(100 * time.Millisecond)
	stop()
	if n := calls.Load(); n != 0 {
		t.Fatalf("the probe ran %d times with breakers disabled", n)
	}
}
