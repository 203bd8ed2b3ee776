package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is one way to reach Redis, in a Switch's order of preference.
type Endpoint struct {
	// Name is the protocol, "native" or "rest"; it is what status reports
	// and logs show.
	Name string
	// Addr describes the server without credentials, for status reports.
	Addr string
	// Dial connects. It is called at start and again by the prober after a
	// failed dial; a dialed client is kept and reused after it recovers.
	Dial func(ctx context.Context) (Client, error)
	// Describe, when set, adds transport details to the status (TLS,
	// client-side caching) once a client exists.
	Describe func(Client) map[string]string
}

// SwitchOptions tune a Switch. Zero values mean the defaults.
type SwitchOptions struct {
	Logger *slog.Logger
	// ProbeInterval is how often an endpoint that is down is tried again.
	// Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds each dial and PING of a probe. Default 5s.
	ProbeTimeout time.Duration
}

// Switch is a Client over one or more endpoints. It sends every call to the
// first endpoint that is up, in the order given.
//
// It is also the breaker around Redis: a call that fails because its
// endpoint cannot be reached (an error matching ErrUnavailable or
// ErrUnauthorized, not a reply error and not the caller's cancellation)
// marks that endpoint down at once. Later calls go to the next endpoint
// that is up or, when none is, fail immediately with ErrUnavailable instead
// of each waiting for a timeout. A background prober dials and PINGs every
// endpoint that is down each ProbeInterval and marks it up when it answers,
// so traffic returns to the preferred endpoint by itself. Each transition is
// logged once.
//
// Stats reports, for metrics, each endpoint's calls (durations by kind of
// call, errors by kind, calls in flight) and its transport's own counters.
type Switch struct {
	eps  []*endpoint
	log  *slog.Logger
	opts SwitchOptions

	wake   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
	closed sync.Once

	mu        sync.Mutex
	fallbacks int64
	starting  bool // initial probes: NewSwitch logs one summary instead

	rejected atomic.Uint64 // calls refused because no endpoint was up (Stats)
}

type endpoint struct {
	Endpoint

	mu          sync.Mutex
	client      Client
	up          bool
	lastErr     error
	lastErrAt   time.Time
	latency     time.Duration
	transitions int64

	stats callStats // for Stats; atomics, not under mu
}

// NewSwitch dials every endpoint (each bounded by ProbeTimeout) and starts
// the prober. It never fails: endpoints that cannot be dialed start down
// and are retried in the background. Close stops the prober.
func NewSwitch(ctx context.Context, eps []Endpoint, o SwitchOptions) *Switch {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 5 * time.Second
	}
	if len(eps) == 0 {
		panic("kv.NewSwitch: no endpoints")
	}
	s := &Switch{log: o.Logger, opts: o, wake: make(chan struct{}, 1), done: make(chan struct{})}
	for _, e := range eps {
		s.eps = append(s.eps, &endpoint{Endpoint: e})
	}
	s.starting = true
	var wg sync.WaitGroup
	for _, e := range s.eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.probe(ctx, e)
		}()
	}
	wg.Wait()
	s.mu.Lock()
	s.starting = false
	s.mu.Unlock()
	if a := s.active(); a == s.eps[0] {
		s.log.Info("redis connected", "protocol", a.Name, "addr", a.Addr)
	} else if a != nil {
		s.log.Warn("redis preferred protocol unreachable at start; using the fallback until it answers",
			"preferred", s.eps[0].Name, "error", s.eps[0].err(), "protocol", a.Name, "addr", a.Addr)
	} else if len(s.eps) > 0 {
		s.log.Warn("redis unreachable at start; features run on local fallbacks until it answers", "error", s.eps[0].err())
	}
	pctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.prober(pctx)
	return s
}

// probe dials e if needed and PINGs it, marking it up or down.
func (s *Switch) probe(ctx context.Context, e *endpoint) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	e.mu.Lock()
	c := e.client
	e.mu.Unlock()
	if c == nil {
		nc, err := e.Dial(ctx)
		if err != nil {
			s.markDown(e, err)
			return
		}
		e.mu.Lock()
		e.client, c = nc, nc
		e.mu.Unlock()
	}
	start := time.Now()
	if _, err := c.Do(ctx, "PING"); err != nil {
		s.markDown(e, err)
		return
	}
	s.markUp(e, time.Since(start))
}

func (s *Switch) prober(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
			// An endpoint just went down: wait one interval before the
			// first retry rather than hammering a server that is failing.
			continue
		}
		for _, e := range s.eps {
			e.mu.Lock()
			up := e.up
			e.mu.Unlock()
			if !up {
				s.probe(ctx, e)
			}
		}
	}
}

func (s *Switch) markUp(e *endpoint, rtt time.Duration) {
	before := s.active()
	e.mu.Lock()
	was := e.up
	e.up, e.latency = true, rtt
	if !was {
		e.transitions++
	}
	e.mu.Unlock()
	if was || s.isStarting() {
		return
	}
	after := s.active()
	switch {
	case before == nil:
		s.log.Info("redis reachable", "protocol", e.Name, "addr", e.Addr)
	case after == e && before != e:
		s.log.Info("redis preferred protocol recovered; switching back", "protocol", e.Name, "from", before.Name)
	default:
		s.log.Info("redis endpoint recovered", "protocol", e.Name)
	}
}

func (s *Switch) markDown(e *endpoint, err error) {
	before := s.active()
	e.mu.Lock()
	was := e.up
	e.up, e.lastErr, e.lastErrAt = false, err, time.Now()
	if was {
		e.transitions++
	}
	e.mu.Unlock()
	if !was || s.isStarting() {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	after := s.active()
	switch {
	case after != nil && before == e:
		s.mu.Lock()
		s.fallbacks++
		s.mu.Unlock()
		s.log.Warn("redis protocol unreachable; falling back", "protocol", e.Name, "fallback", after.Name, "error", err)
	case after == nil:
		s.log.Error("redis unreachable; calls fail fast until it answers", "protocol", e.Name, "error", err)
	default:
		s.log.Warn("redis endpoint unreachable", "protocol", e.Name, "error", err)
	}
}

func (s *Switch) isStarting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starting
}

func (e *endpoint) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// active is the first endpoint that is up, or nil.
func (s *Switch) active() *endpoint {
	for _, e := range s.eps {
		e.mu.Lock()
		up := e.up
		e.mu.Unlock()
		if up {
			return e
		}
	}
	return nil
}

// pick returns the endpoint and client to use, or a fast ErrUnavailable.
func (s *Switch) pick() (*endpoint, Client, error) {
	for _, e := range s.eps {
		e.mu.Lock()
		up, c := e.up, e.client
		e.mu.Unlock()
		if up {
			return e, c, nil
		}
	}
	var last error
	if len(s.eps) > 0 {
		last = s.eps[0].err()
	}
	if last == nil {
		last = errors.New("no endpoint configured")
	}
	return nil, nil, Unavailable("kv.switch", fmt.Errorf("every endpoint is down (breaker open): %w", stripUnavailable(last)))
}

// pickCall is pick for a call, counting refusals for Stats.
func (s *Switch) pickCall() (*endpoint, Client, error) {
	e, c, err := s.pick()
	if err != nil {
		s.rejected.Add(1)
	}
	return e, c, err
}

// stripUnavailable avoids "redis unavailable: redis unavailable" chains.
func stripUnavailable(err error) error {
	var w *wrapped
	if errors.As(err, &w) && w.cause != nil {
		return w.cause
	}
	return err
}

// observe marks e down when err says its server cannot be used.
func (s *Switch) observe(ctx context.Context, e *endpoint, err error) {
	if err == nil || ctx.Err() != nil {
		return
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthorized) {
		s.markDown(e, err)
	}
}

// Do implements Client.
func (s *Switch) Do(ctx context.Context, args ...string) (Value, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return Value{}, err
	}
	start := e.stats.begin()
	v, err := c.Do(ctx, args...)
	e.stats.end(ctx, opDo, start, err)
	s.observe(ctx, e, err)
	return v, err
}

// DoCached implements CachingClient, through the active endpoint's cache
// when it has one.
func (s *Switch) DoCached(ctx context.Context, ttl time.Duration, args ...string) (Value, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return Value{}, err
	}
	start := e.stats.begin()
	v, err := DoCached(ctx, c, ttl, args...)
	e.stats.end(ctx, opDoCached, start, err)
	s.observe(ctx, e, err)
	return v, err
}

// Pipeline implements Client.
func (s *Switch) Pipeline(ctx context.Context, cmds ...[]string) ([]Result, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return nil, err
	}
	start := e.stats.begin()
	rs, err := c.Pipeline(ctx, cmds...)
	e.stats.end(ctx, opPipeline, start, err)
	s.observe(ctx, e, orUnavailable(err, rs))
	return rs, err
}

// orUnavailable is err, or else the first command error of rs that says
// the server cannot serve (see ReplyError): a pipeline whose commands
// were all refused with CLUSTERDOWN is an outage, though the round trip
// itself succeeded.
func orUnavailable(err error, rs []Result) error {
	if err != nil {
		return err
	}
	for _, r := range rs {
		if errors.Is(r.Err, ErrUnavailable) {
			return r.Err
		}
	}
	return nil
}

// MultiExec implements Client.
func (s *Switch) MultiExec(ctx context.Context, cmds ...[]string) ([]Result, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return nil, err
	}
	start := e.stats.begin()
	rs, err := c.MultiExec(ctx, cmds...)
	e.stats.end(ctx, opMultiExec, start, err)
	s.observe(ctx, e, orUnavailable(err, rs))
	return rs, err
}

// Eval implements Client.
func (s *Switch) Eval(ctx context.Context, sc *Script, keys []string, args ...string) (Value, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return Value{}, err
	}
	start := e.stats.begin()
	v, err := c.Eval(ctx, sc, keys, args...)
	e.stats.end(ctx, opEval, start, err)
	s.observe(ctx, e, err)
	return v, err
}

// Ping PINGs the active endpoint and records the round trip for Status.
func (s *Switch) Ping(ctx context.Context) (time.Duration, error) {
	e, c, err := s.pickCall()
	if err != nil {
		return 0, err
	}
	start := e.stats.begin()
	_, err = c.Do(ctx, "PING")
	rtt := time.Since(start)
	e.stats.end(ctx, opPing, start, err)
	s.observe(ctx, e, err)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	e.latency = rtt
	e.mu.Unlock()
	return rtt, nil
}

// Close stops the prober and closes every dialed client.
func (s *Switch) Close() error {
	s.closed.Do(func() {
		s.stop()
		<-s.done
		for _, e := range s.eps {
			e.mu.Lock()
			c := e.client
			e.client, e.up = nil, false
			e.lastErr = ErrClosed
			e.mu.Unlock()
			if c != nil {
				c.Close()
			}
		}
	})
	return nil
}

// SwitchStatus describes a Switch for health reports.
type SwitchStatus struct {
	// Protocol is the endpoint calls go to now; "" when none is up.
	Protocol string `json:"protocol"`
	// Preferred is the first endpoint configured.
	Preferred string `json:"preferred"`
	// FallenBack is true when calls go to an endpoint other than Preferred.
	FallenBack bool `json:"fallen_back"`
	// Fallbacks counts switches away from the active endpoint since start.
	Fallbacks int64            `json:"fallbacks"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one endpoint's state.
type EndpointStatus struct {
	Name        string            `json:"protocol"`
	Addr        string            `json:"addr"`
	Up          bool              `json:"up"`
	LatencyMS   float64           `json:"latency_ms"`
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt *time.Time        `json:"last_error_at,omitempty"`
	Details     map[string]string `json:"details,omitempty"`
}

// Status reports where calls go and the state of each endpoint.
func (s *Switch) Status() SwitchStatus {
	st := SwitchStatus{}
	if len(s.eps) > 0 {
		st.Preferred = s.eps[0].Name
	}
	if a := s.active(); a != nil {
		st.Protocol = a.Name
		st.FallenBack = a != s.eps[0]
	}
	s.mu.Lock()
	st.Fallbacks = s.fallbacks
	s.mu.Unlock()
	for _, e := range s.eps {
		e.mu.Lock()
		es := EndpointStatus{Name: e.Name, Addr: e.Addr, Up: e.up, LatencyMS: float64(e.latency.Microseconds()) / 1000}
		if e.lastErr != nil {
			es.LastError = e.lastErr.Error()
			at := e.lastErrAt
			es.LastErrorAt = &at
		}
		if e.client != nil && e.Describe != nil {
			es.Details = e.Describe(e.client)
		}
		e.mu.Unlock()
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}

// Caching reports whether reads through DoCached are currently served from
// a client-side cache that the server keeps current (the active endpoint is
// native with CLIENT TRACKING on). Callers that cache reads themselves when
// there is none (breakers over REST) ask this.
func (s *Switch) Caching() bool {
	_, c, err := s.pick()
	if err != nil {
		return false
	}
	cc, ok := c.(interface{ Caching() bool })
	return ok && cc.Caching()
}
