package every

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunCallsUntilCancelled: calls come one interval apart, never
// overlap, and stop when the context ends; Run then returns.
func TestRunCallsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls, running atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	var first atomic.Int64
	go func() {
		defer close(done)
		Run(ctx, 10*time.Millisecond, func(context.Context) {
			if running.Add(1) != 1 {
				t.Error("calls overlap")
			}
			if calls.Add(1) == 1 {
				first.Store(int64(time.Since(start)))
			}
			time.Sleep(15 * time.Millisecond) // longer than the interval
			running.Add(-1)
		})
	}()
	for calls.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if d := time.Duration(first.Load()); d < 10*time.Millisecond {
		t.Fatalf("the first call came %v after Run started, before one interval", d)
	}
	n := calls.Load()
	time.Sleep(30 * time.Millisecond)
	if calls.Load() != n {
		t.Fatal("a call came after Run returned")
	}
}
