package breaker

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/agentapi-mt/agentapi"
)

// Stats is a breaker's state and counters as this instance knows them,
// for metrics.
type Stats struct {
	Name string
	// State is the state this instance enforces, as Status reports it (an
	// open breaker whose Timeout has passed is half-open), from what it
	// last learned: Stats never reads Redis, so a change made by another
	// instance shows once this one has used the breaker since (or read it
	// through List or Status).
	State agentapi.BreakerState
	// Mode is "local", "shared" or "fallback", as in Status.
	Mode string
	// Transitions counts the changes of the enforced state this instance
	// has seen (those logged and passed to Options.OnTransition), by the
	// state changed to. Every state is present.
	Transitions map[agentapi.BreakerState]uint64
}

// Stats returns the state and counters of every breaker this instance has
// used, by name. Unlike List it does no I/O, so scraping metrics never
// waits for Redis nor adds a round trip per breaker.
func (r *Registry) Stats() []Stats {
	r.mu.Lock()
	bs := make([]*Breaker, 0, len(r.breakers))
	for _, b := range r.breakers {
		bs = append(bs, b)
	}
	r.mu.Unlock()
	slices.SortFunc(bs, func(a, b *Breaker) int { return strings.Compare(a.name, b.name) })
	now := r.now()
	out := make([]Stats, len(bs))
	for i, b := range bs {
		b.mu.Lock()
		s := b.enforcedLocked()
		mode := b.mode()
		b.mu.Unlock()
		st := Stats{Name: b.name, State: s.State, Mode: mode, Transitions: b.transitions.snapshot()}
		if s.State == agentapi.BreakerOpen && now >= s.Until {
			st.State = agentapi.BreakerHalfOpen
		}
		out[i] = st
	}
	return out
}

// transitionCounts counts transitions by the state changed to.
type transitionCounts struct {
	closed, open, halfOpen atomic.Uint64
}

func (t *transitionCounts) add(to agentapi.BreakerState) {
	switch to {
	case agentapi.BreakerClosed:
		t.closed.Add(1)
	case agentapi.BreakerOpen:
		t.open.Add(1)
	case agentapi.BreakerHalfOpen:
		t.halfOpen.Add(1)
	}
}

func (t *transitionCounts) snapshot() map[agentapi.BreakerState]uint64 {
	return map[agentapi.BreakerState]uint64{
		agentapi.BreakerClosed:   t.closed.Load(),
		agentapi.BreakerOpen:     t.open.Load(),
		agentapi.BreakerHalfOpen: t.halfOpen.Load(),
	}
}
