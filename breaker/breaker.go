// Package breaker holds circuit breakers: named guards around calls to a
// dependency that stop calling it for a while after it keeps failing.
//
// # Semantics
//
// A breaker is closed at first: calls go through and consecutive failures
// are counted; a success resets the count. At FailureThreshold consecutive
// failures it opens: every call is refused at once with an error wrapping
// agentapi.ErrBreakerOpen that carries how long to wait (RetryAfter). Once
// Timeout has passed it is half-open: up to MaxProbes calls at a time go
// through as probes and the others are refused. SuccessThreshold successful
// probes close it; a failed probe opens it again for another Timeout.
//
// A call whose error is context.Canceled, or that ends with an error after
// its context was cancelled, counts neither as a failure nor as a success
// (its probe slot, if it had one, is given back); context.DeadlineExceeded
// is a failure (the dependency was too slow). Errors for which
// Options.IsFailure reports false count as successes: the dependency
// answered. Outcomes of calls admitted before the breaker last changed state
// are ignored, so a slow call from before an opening cannot close or reopen
// it.
//
// Allow never holds a lock while the protected call runs: it decides,
// returns a done function, and done records the outcome.
//
// # Shared state
//
// Without Options.KV every breaker is local to its process. With it, the
// state lives in Redis and every instance using the same KV and Prefix
// shares it: when one opens a breaker the others refuse calls too, and a
// close or a Reset is seen everywhere.
//
// One hash per breaker, <Prefix>breaker:<name>, with the fields state
// (closed, open, half_open), failures, successes, probes, opened_at,
// open_until, probe_lease (unix milliseconds), gen and v. Every change is
// made by one Lua script (every key in KEYS, the time passed in by the
// caller, so it runs on Upstash too and a fake clock works) that also sets
// the key's TTL to four times Timeout, at least 10s: the key of a breaker
// nobody uses vanishes, which reads as closed with no failures (so, unlike
// a local breaker, a shared one forgets a few consecutive failures after
// that long without any call).
//
// Round trips: reading the state goes through kv.DoCached. Over the native
// transport with client-side caching that is served from memory and
// invalidated by Redis when the key changes, so a closed, healthy
// breaker's calls cost no round trip, and other instances see a change as
// soon as the invalidation arrives (a millisecond or so on a LAN). Over
// REST there is no such cache, so each breaker keeps the state it read for
// Options.LocalCacheTTL (500ms by default): a REST instance sees changes
// made elsewhere within that time. An instance always sees its own changes
// at once. A success costs a round trip only when the shared failure count
// may be non-zero (as far as the state last read says) or when it is a
// probe; a failure always costs one (the script counts it and opens the
// breaker at the threshold, atomically); so do half-open probes (a script
// hands out at most MaxProbes slots across every instance; a slot not given
// back within Timeout is presumed lost and handed out again).
//
// When Redis cannot be reached (or answers with an error), a breaker falls
// back to its local state machine, seeded with the last shared state it
// knew, and keeps working on its own: it counts this instance's failures
// only. It tries the shared state again at most once per
// Options.RetryInterval and uses it as soon as Redis answers; what it
// counted locally meanwhile is dropped. Wrap the client in a kv.Switch (as
// kv/connect does) so that calls to an unreachable Redis fail at once
// rather than each waiting for a timeout.
//
// Clocks: Options.Clock drives the breaker's own timing (Timeout, open
// until, RetryAfter); instances sharing breakers should have roughly synced
// clocks. LocalCacheTTL and RetryInterval are measured on the real,
// monotonic clock.
package breaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// Defaults for Settings and Options.
const (
	DefaultFailureThreshold = 5
	DefaultSuccessThreshold = 2
	DefaultTimeout          = 30 * time.Second
	DefaultMaxProbes        = 1
	DefaultLocalCacheTTL    = 500 * time.Millisecond
	DefaultRetryInterval    = time.Second
	DefaultOpTimeout        = 2 * time.Second
)

const (
	// ownWriteWindow: a reading older (lower v) than a state this instance
	// learned less than this long ago is ignored as stale. Redis may send
	// the invalidation of this instance's own write after answering it, so
	// the client-side cache can briefly serve the state from before.
	ownWriteWindow = time.Second
	// serverCacheTTL bounds how long the client-side cache may keep a
	// reading; invalidations normally end it much sooner.
	serverCacheTTL = time.Minute
	// minKeyTTL is the least TTL of a breaker's key.
	minKeyTTL = 10 * time.Second
	// probeRetryAfter caps the RetryAfter of a call refused because the
	// probes are taken: a probe may end any moment.
	probeRetryAfter = time.Second
)

// Settings are a breaker's thresholds. Zero values mean the defaults
// (CIRCUIT_BREAKER_FAILURE_THRESHOLD, _SUCCESS_THRESHOLD and _TIMEOUT in
// package config).
type Settings struct {
	// FailureThreshold is the number of consecutive failures that opens a
	// closed breaker. Default 5.
	FailureThreshold int
	// SuccessThreshold is the number of successful probes that closes a
	// half-open breaker. Default 2.
	SuccessThreshold int
	// Timeout is how long an open breaker refuses calls before it lets
	// probes through; also how long a probe may run before its slot is
	// presumed lost. Default 30s.
	Timeout time.Duration
	// MaxProbes bounds the probes in flight at once while half-open, across
	// every instance when the state is shared. Default 1.
	MaxProbes int
}

func (s Settings) withDefaults() Settings {
	if s.FailureThreshold <= 0 {
		s.FailureThreshold = DefaultFailureThreshold
	}
	if s.SuccessThreshold <= 0 {
		s.SuccessThreshold = DefaultSuccessThreshold
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxProbes <= 0 {
		s.MaxProbes = DefaultMaxProbes
	}
	return s
}

// Options configure a Registry. Zero values mean the defaults.
type Options struct {
	// KV, when set, holds the breakers' state so that every instance shares
	// it. Nil: breakers are local to this process.
	KV kv.Client
	// Prefix namespaces the Redis keys: <Prefix>breaker:<name>.
	Prefix string
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives state transitions and fallbacks. Default: discard.
	Logger *slog.Logger
	// OnTransition, when set, is called after a breaker's state, as this
	// instance enforces it, changes (for metrics). It is called without any
	// lock held, and must not block.
	OnTransition func(name string, from, to agentapi.BreakerState)
	// Disabled switches breakers off: every Allow succeeds and nothing is
	// recorded (CIRCUIT_BREAKER_ENABLED=false). See Registry.SetEnabled.
	Disabled bool
	// IsFailure reports whether a call's error counts as a failure of the
	// dependency; errors it rejects count as successes. Cancellation is
	// decided before it is asked. Default: every non-nil error.
	IsFailure func(err error) bool
	// LocalCacheTTL is how long a breaker reuses the shared state it read
	// when KV has no server-invalidated client-side cache (REST): changes
	// made by other instances are seen within that time. Negative: never
	// reuse, read on every call. Default 500ms. Ignored when KV caches.
	LocalCacheTTL time.Duration
	// RetryInterval is how often a breaker that fell back to local state
	// tries the shared state again. Default 1s.
	RetryInterval time.Duration
	// OpTimeout bounds each Redis call made to record an outcome (the
	// caller's context may be over by then). Default 2s.
	OpTimeout time.Duration
}

// Registry holds named breakers, created on first use, with one Settings.
// It is safe for concurrent use.
type Registry struct {
	set      Settings
	p        params
	o        Options
	log      *slog.Logger
	disabled atomic.Bool
	caching  cacheDetector

	mu       sync.Mutex
	breakers map[string]*Breaker
}

// NewRegistry returns a Registry of breakers with settings s.
func NewRegistry(s Settings, o Options) *Registry {
	s = s.withDefaults()
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.IsFailure == nil {
		o.IsFailure = func(err error) bool { return err != nil }
	}
	if o.LocalCacheTTL == 0 {
		o.LocalCacheTTL = DefaultLocalCacheTTL
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	ttl := max(4*s.Timeout, minKeyTTL)
	r := &Registry{
		set: s,
		p: params{
			failureThreshold: int64(s.FailureThreshold),
			successThreshold: int64(s.SuccessThreshold),
			maxProbes:        int64(s.MaxProbes),
			timeout:          max(s.Timeout.Milliseconds(), 1),
			keyTTL:           ttl.Milliseconds(),
		},
		o:        o,
		log:      o.Logger,
		caching:  cacheDetector{c: o.KV},
		breakers: make(map[string]*Breaker),
	}
	r.disabled.Store(o.Disabled)
	return r
}

// Settings returns the registry's settings, defaults filled in.
func (r *Registry) Settings() Settings { return r.set }

// Shared reports whether the breakers' state is kept in Redis.
func (r *Registry) Shared() bool { return r.o.KV != nil }

// Enabled reports whether breakers are on.
func (r *Registry) Enabled() bool { return !r.disabled.Load() }

// SetEnabled switches every breaker of r on or off. While off, Allow
// always succeeds and records nothing; the state is kept as it was.
func (r *Registry) SetEnabled(on bool) { r.disabled.Store(!on) }

// Get returns the breaker called name, creating it (closed) on first use.
func (r *Registry) Get(name string) *Breaker {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b, ok := r.breakers[name]; ok {
		return b
	}
	b := &Breaker{
		name:     name,
		key:      r.o.Prefix + "breaker:" + name,
		r:        r,
		local:    state{State: agentapi.BreakerClosed},
		reported: agentapi.BreakerClosed,
	}
	r.breakers[name] = b
	return b
}

// List returns the status of every breaker this instance has used, by
// name. With shared state it reads each one's state (from the client-side
// cache where there is one).
func (r *Registry) List() []Status {
	r.mu.Lock()
	bs := make([]*Breaker, 0, len(r.breakers))
	for _, b := range r.breakers {
		bs = append(bs, b)
	}
	r.mu.Unlock()
	slices.SortFunc(bs, func(a, b *Breaker) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	out := make([]Status, len(bs))
	for i, b := range bs {
		out[i] = b.Status()
	}
	return out
}

// Reset forces the breaker called name closed with no failures, on every
// instance when the state is shared. Calls in flight are forgotten. When
// Redis cannot be reached the breaker is reset on this instance only and
// the error (KindUnavailable) says so.
func (r *Registry) Reset(ctx context.Context, name string) error {
	b := r.Get(name)
	if r.o.KV == nil {
		b.mu.Lock()
		b.local.apply(opReset, r.now(), 0, r.p)
		ev := b.noteLocked()
		b.mu.Unlock()
		b.fire(ev)
		return nil
	}
	if _, _, err := b.run(ctx, opReset, 0); err != nil {
		b.mu.Lock()
		b.local.apply(opReset, r.now(), 0, r.p)
		ev := b.noteLocked()
		b.mu.Unlock()
		b.fire(ev)
		return agentapi.E("breaker.reset", agentapi.KindUnavailable,
			fmt.Errorf("breaker %q reset on this instance only: %w", name, err))
	}
	return nil
}

func (r *Registry) now() int64 { return r.o.Clock().UnixMilli() }

// localTTL is how long a shared reading may be reused without asking KV.
func (r *Registry) localTTL() time.Duration {
	if r.o.LocalCacheTTL < 0 || r.caching.cached() {
		return 0
	}
	return r.o.LocalCacheTTL
}

// cacheDetector tells whether kv.DoCached on c is served from a
// server-invalidated client-side cache: c says so with a Caching() bool
// method (kv/native, and kv.Switch for its active endpoint).
type cacheDetector struct {
	c kv.Client
}

func (d *cacheDetector) cached() bool {
	cc, ok := d.c.(interface{ Caching() bool })
	return ok && cc.Caching()
}

// Guard returns the Allow of breaker name, in the shape that packages
// taking a guard (runner, sql) accept without importing this one.
func (r *Registry) Guard(name string) func(ctx context.Context) (done func(error), err error) {
	return r.Get(name).Allow
}

// Breaker is one named circuit breaker. It is safe for concurrent use.
type Breaker struct {
	name string
	key  string
	r    *Registry

	mu       sync.Mutex
	local    state     // the state in local mode, and during a fallback
	view     state     // shared mode: the newest shared state known
	haveView bool      // view has been read or written at least once
	viewAt   time.Time // when view was learned (real time)
	reading  bool      // a read of the shared state is in flight
	fallback bool      // shared mode, Redis unreachable: local decides
	lastTry  time.Time // when the last attempt to leave the fallback was made
	reported agentapi.BreakerState

	transitions transitionCounts // reported changes, by new state (Stats)
}

// Name is the breaker's name.
func (b *Breaker) Name() string { return b.name }

// ticket is what done needs to know about an admitted call.
type ticket struct {
	shared bool  // admitted on the shared state (else on the local one)
	gen    int64 // the state generation it was admitted under
	probe  bool  // it holds a half-open probe slot
}

func noop(error) {}

// Allow asks to make one call. When the call may go ahead, Allow returns a
// done function that must be called exactly once with the call's error
// (nil for success); later calls of done are ignored. When it is refused,
// the error wraps agentapi.ErrBreakerOpen (test with errors.Is) and
// RetryAfter(err) tells how long to wait. When ctx ends while the shared
// state is read, the error is ctx's.
func (b *Breaker) Allow(ctx context.Context) (done func(err error), err error) {
	if !b.r.Enabled() {
		return noop, nil
	}
	if b.r.o.KV == nil {
		return b.allowLocal(ctx)
	}
	view, shared, err := b.sharedView(ctx)
	if err != nil {
		return nil, err
	}
	if !shared {
		return b.allowLocal(ctx)
	}
	now := b.r.now()
	trial := view
	granted, changed := trial.apply(opAcquire, now, 0, b.r.p)
	if !changed {
		// Decided by the state known: closed, or refused.
		if !granted {
			return nil, b.refusal(trial, now)
		}
		return b.doneFunc(ctx, ticket{shared: true, gen: trial.Gen}), nil
	}
	// A transition to half-open or a probe slot: ask Redis.
	st, granted, err := b.run(ctx, opAcquire, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return b.allowLocal(ctx) // run has switched to the fallback
	}
	if !granted {
		return nil, b.refusal(st, now)
	}
	return b.doneFunc(ctx, ticket{shared: true, gen: st.Gen, probe: st.State == agentapi.BreakerHalfOpen}), nil
}

// allowLocal decides on the local state machine: always without KV, and
// while a shared breaker falls back.
func (b *Breaker) allowLocal(ctx context.Context) (func(error), error) {
	now := b.r.now()
	b.mu.Lock()
	granted, _ := b.local.apply(opAcquire, now, 0, b.r.p)
	st := b.local
	ev := b.noteLocked()
	b.mu.Unlock()
	b.fire(ev)
	if !granted {
		return nil, b.refusal(st, now)
	}
	return b.doneFunc(ctx, ticket{gen: st.Gen, probe: st.State == agentapi.BreakerHalfOpen}), nil
}

// Do runs fn if the breaker allows it and records its outcome. It returns
// the refusal or fn's error. A panic in fn counts as a failure and is
// propagated.
func (b *Breaker) Do(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	done, err := b.Allow(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			done(errors.New("breaker: call panicked"))
		}
	}()
	err = fn(ctx)
	finished = true
	done(err)
	return err
}

// doneFunc returns the done function of an admitted call.
func (b *Breaker) doneFunc(ctx context.Context, t ticket) func(error) {
	var once atomic.Bool
	return func(err error) {
		if !once.CompareAndSwap(false, true) {
			return
		}
		o := b.outcome(ctx, err)
		if o == opRelease && !t.probe {
			return // a cancelled ordinary call changes nothing
		}
		if !t.shared {
			b.finishLocal(t, o)
			return
		}
		b.finishShared(ctx, t, o)
	}
}

// outcome classifies a finished call.
func (b *Breaker) outcome(ctx context.Context, err error) op {
	switch {
	case err == nil:
		return opSuccess
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return opRelease
	case b.r.o.IsFailure(err):
		return opFailure
	}
	return opSuccess
}

// finishLocal records an outcome on the local machine. In shared mode a
// call admitted during a fallback that is over by now is forgotten.
func (b *Breaker) finishLocal(t ticket, o op) {
	now := b.r.now()
	b.mu.Lock()
	if b.r.o.KV != nil && !b.fallback {
		b.mu.Unlock()
		return
	}
	b.local.apply(o, now, t.gen, b.r.p)
	ev := b.noteLocked()
	b.mu.Unlock()
	b.fire(ev)
}

// finishShared records an outcome in Redis, or locally when Redis cannot
// be reached.
func (b *Breaker) finishShared(ctx context.Context, t ticket, o op) {
	b.mu.Lock()
	if b.fallback {
		b.mu.Unlock()
		b.finishLocal(t, o)
		return
	}
	// A closed breaker's success costs a round trip only when the shared
	// failure count may be non-zero.
	skip := o == opSuccess && !t.probe && (b.view.Gen != t.gen || b.view.Failures == 0)
	b.mu.Unlock()
	if skip {
		return
	}
	if _, _, err := b.run(context.WithoutCancel(ctx), o, t.gen); err != nil {
		b.finishLocal(t, o) // run has switched to the fallback
	}
}

// sharedView returns the shared state to decide on, reading it when the
// known one may be stale. shared is false while the breaker falls back
// to local state. err is non-nil only when ctx ended.
func (b *Breaker) sharedView(ctx context.Context) (view state, shared bool, err error) {
	b.mu.Lock()
	if b.fallback {
		if time.Since(b.lastTry) < b.r.o.RetryInterval {
			b.mu.Unlock()
			return state{}, false, nil
		}
		b.lastTry = time.Now()
	} else if b.haveView {
		ttl := b.r.localTTL()
		if b.reading || (ttl > 0 && time.Since(b.viewAt) < ttl) {
			view = b.view
			b.mu.Unlock()
			return view, true, nil
		}
	}
	b.reading = true
	b.mu.Unlock()

	rctx, cancel := context.WithTimeoutCause(ctx, b.r.o.OpTimeout, errOpTimeout)
	v, err := kv.DoCached(rctx, b.r.o.KV, serverCacheTTL, "HGETALL", b.key)
	callerEnded := callerEnded(rctx)
	cancel()
	var st state
	if err == nil {
		st, err = parseHash(v)
	}

	b.mu.Lock()
	b.reading = false
	if err != nil {
		if callerEnded {
			b.mu.Unlock()
			return state{}, false, ctx.Err()
		}
		b.enterFallbackLocked(err)
		ev := b.noteLocked()
		b.mu.Unlock()
		b.fire(ev)
		return state{}, false, nil
	}
	b.learnLocked(st, false)
	view = b.view
	ev := b.noteLocked()
	b.mu.Unlock()
	b.fire(ev)
	return view, true, nil
}

// run applies o in Redis for a call admitted under gen and learns the
// resulting state. It bounds the call by OpTimeout. Any error switches
// the breaker to its fallback, unless ctx ended first.
func (b *Breaker) run(ctx context.Context, o op, gen int64) (state, bool, error) {
	rctx, cancel := context.WithTimeoutCause(ctx, b.r.o.OpTimeout, errOpTimeout)
	v, err := b.r.o.KV.Eval(rctx, script, []string{b.key}, scriptArgs(o, b.r.now(), gen, b.r.p)...)
	callerEnded := callerEnded(rctx)
	cancel()
	var st state
	var granted bool
	if err == nil {
		st, granted, err = parseScript(v)
	}
	b.mu.Lock()
	if err != nil {
		if !callerEnded {
			b.enterFallbackLocked(err)
		}
		ev := b.noteLocked()
		b.mu.Unlock()
		b.fire(ev)
		return state{}, false, err
	}
	b.learnLocked(st, true)
	ev := b.noteLocked()
	b.mu.Unlock()
	b.fire(ev)
	return st, granted, nil
}

// learnLocked takes st, read from Redis or returned by a script, as the
// known shared state unless it is older than one learned just before.
// Either leaves a fallback: Redis answered.
func (b *Breaker) learnLocked(st state, written bool) {
	if b.fallback {
		b.fallback = false
		b.r.log.Info("circuit breaker shared state reachable again; using it", "breaker", b.name, "state", st.State)
	} else if b.haveView && st.V < b.view.V && time.Since(b.viewAt) < ownWriteWindow {
		return // a stale cached reading, or replies crossing
	}
	b.view, b.haveView, b.viewAt = st, true, time.Now()
}

// enterFallbackLocked switches to the local machine, seeded with the last
// shared state known.
func (b *Breaker) enterFallbackLocked(cause error) {
	if b.fallback {
		return
	}
	b.fallback, b.lastTry = true, time.Now()
	if b.haveView {
		b.local = b.view
	} else {
		b.local = state{State: agentapi.BreakerClosed}
	}
	b.r.log.Warn("circuit breaker shared state unreachable; deciding locally until Redis answers",
		"breaker", b.name, "state", b.local.State, "error", cause)
}

// errOpTimeout is the cause of a Redis call's context that OpTimeout ended:
// Redis is too slow, unlike a context the caller ended.
var errOpTimeout = errors.New("breaker: redis call timed out")

// callerEnded reports whether ctx, derived with errOpTimeout as its
// timeout cause, was ended by its parent rather than by OpTimeout.
func callerEnded(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errOpTimeout)
}

// transition is a change of the enforced state, to report.
type transition struct {
	from, to agentapi.BreakerState
	s        state
}

// noteLocked compares the state this instance now enforces with the last
// one reported and returns the change to report, if any.
func (b *Breaker) noteLocked() *transition {
	s := b.enforcedLocked()
	if s.State == b.reported {
		return nil
	}
	t := &transition{from: b.reported, to: s.State, s: s}
	b.reported = s.State
	return t
}

// enforcedLocked is the state this instance decides on.
func (b *Breaker) enforcedLocked() state {
	switch {
	case b.r.o.KV == nil || b.fallback:
		return b.local
	case b.haveView:
		return b.view
	}
	return state{State: agentapi.BreakerClosed}
}

func (b *Breaker) mode() string {
	switch {
	case b.r.o.KV == nil:
		return "local"
	case b.fallback:
		return "fallback"
	}
	return "shared"
}

// fire logs t and reports it to OnTransition. No lock may be held.
func (b *Breaker) fire(t *transition) {
	if t == nil {
		return
	}
	b.mu.Lock()
	mode := b.mode()
	b.mu.Unlock()
	attrs := []any{"breaker", b.name, "from", t.from, "to", t.to, "mode", mode}
	switch t.to {
	case agentapi.BreakerOpen:
		wait := time.Duration(t.s.Until-b.r.now()) * time.Millisecond
		b.r.log.Warn("circuit breaker opened", append(attrs, "failures", t.s.Failures, "retry_after", wait)...)
	case agentapi.BreakerHalfOpen:
		b.r.log.Info("circuit breaker half-open; probing", attrs...)
	default:
		b.r.log.Info("circuit breaker closed", attrs...)
	}
	b.transitions.add(t.to)
	if b.r.o.OnTransition != nil {
		b.r.o.OnTransition(b.name, t.from, t.to)
	}
}

// refusal is the error for a call refused in state s.
func (b *Breaker) refusal(s state, now int64) error {
	var wait time.Duration
	if s.State == agentapi.BreakerOpen {
		wait = time.Duration(s.Until-now) * time.Millisecond
	} else {
		wait = min(b.r.set.Timeout, probeRetryAfter)
		if s.Lease > now {
			wait = min(wait, time.Duration(s.Lease-now)*time.Millisecond)
		}
	}
	return &OpenError{Name: b.name, State: s.State, RetryAfter: max(wait, time.Millisecond)}
}

// State returns the breaker's state as this instance enforces it: an open
// breaker whose Timeout has passed reports half-open (its next call is a
// probe).
func (b *Breaker) State() agentapi.BreakerState { return b.Status().State }

// Status describes the breaker, reading the shared state when needed.
func (b *Breaker) Status() Status {
	if b.r.o.KV != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.r.o.OpTimeout)
		b.sharedView(ctx)
		cancel()
	}
	now := b.r.now()
	b.mu.Lock()
	s := b.enforcedLocked()
	mode := b.mode()
	b.mu.Unlock()
	st := Status{Name: b.name, State: s.State, Failures: int(s.Failures), Mode: mode}
	if s.State == agentapi.BreakerOpen && now >= s.Until {
		st.State = agentapi.BreakerHalfOpen
	}
	if s.State != agentapi.BreakerClosed {
		at := time.UnixMilli(s.OpenedAt)
		st.OpenedAt = &at
	}
	if st.State == agentapi.BreakerOpen {
		st.RetryAfter = time.Duration(s.Until-now) * time.Millisecond
	}
	return st
}

// Status is a breaker's state for health reports and admin listings.
type Status struct {
	Name  string                `json:"name"`
	State agentapi.BreakerState `json:"state"`
	// Failures is the consecutive failure count while closed, the count
	// that opened it otherwise.
	Failures int `json:"failures"`
	// OpenedAt is when it last opened; nil while closed.
	OpenedAt *time.Time `json:"opened_at,omitempty"`
	// RetryAfter is how long an open breaker keeps refusing calls; 0
	// unless open. It is encoded in JSON as seconds
	// (retry_after_seconds).
	RetryAfter time.Duration `json:"-"`
	// Mode is where the state lives: "local" (no KV), "shared" (Redis) or
	// "fallback" (Redis unreachable, local meanwhile).
	Mode string `json:"mode"`
}

// MarshalJSON encodes s with RetryAfter in seconds.
func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	return json.Marshal(struct {
		plain
		RetryAfter float64 `json:"retry_after_seconds"`
	}{plain(s), s.RetryAfter.Seconds()})
}

// OpenError is the error of a refused call. It wraps
// agentapi.ErrBreakerOpen, so errors.Is(err, agentapi.ErrBreakerOpen) holds
// and agentapi.KindOf(err) is KindUnavailable.
type OpenError struct {
	Name       string                // the breaker
	State      agentapi.BreakerState // open, or half-open with every probe slot taken
	RetryAfter time.Duration         // how long to wait before trying again
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("circuit breaker %q %s: retry after %s", e.Name, e.State, e.RetryAfter.Round(time.Millisecond))
}

// Unwrap returns agentapi.ErrBreakerOpen.
func (e *OpenError) Unwrap() error { return agentapi.ErrBreakerOpen }

// RetryAfter returns how long the breaker that refused a call with err
// asks to wait, or 0 when err is not a refusal.
func RetryAfter(err error) time.Duration {
	var oe *OpenError
	if errors.As(err, &oe) {
		return oe.RetryAfter
	}
	return 0
}
