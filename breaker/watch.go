package breaker

import (
	"context"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/internal/every"
)

// Watch closes the breaker called name as soon as its dependency answers
// again, instead of after the rest of Timeout: while the breaker is open
// (as this instance enforces it), probe runs every interval, and its
// first success Resets the breaker (on every instance when the state is
// shared). probe must check the dependency directly, not through the
// breaker -- a PING, say. A breaker that is closed or half-open is left to
// its calls; the probe does not run then.
//
// This suits a dependency whose health one cheap call shows, such as a
// database: a short outage then costs an interval after it ends, not the
// whole Timeout. Stop stops the watcher and waits for it.
func (r *Registry) Watch(name string, interval time.Duration, probe func(ctx context.Context) error) (stop func()) {
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		every.Run(ctx, interval, func(ctx context.Context) {
			if !r.Enabled() || r.Get(name).State() != agentapi.BreakerOpen {
				return
			}
			pctx, pcancel := context.WithTimeout(ctx, interval)
			err := probe(pctx)
			pcancel()
			if err != nil || ctx.Err() != nil {
				return
			}
			if err := r.Reset(ctx, name); err != nil {
				r.log.Warn("breaker: the dependency answers again, but closing the breaker everywhere failed", "breaker", name, "error", err)
				return
			}
			r.log.Info("breaker: the dependency answers again; breaker closed", "breaker", name)
		})
	}()
	return func() {
		cancel()
		<-done
	}
}
