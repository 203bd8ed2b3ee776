// Package every runs background work at a fixed interval: the loop behind
// the instance registry's renewals, the runner's sweeps, the tenant
// configuration's epoch polls and the database breaker's probes.
package every

import (
	"context"
	"time"
)

// Run calls fn every interval until ctx ends, then returns. The first
// call comes one interval after Run starts; a call that takes longer than
// the interval delays the next one (calls never overlap). fn gets ctx.
func Run(ctx context.Context, interval time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		fn(ctx)
	}
}
