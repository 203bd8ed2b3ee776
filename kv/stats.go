package kv

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// This file holds the counters a Switch and its transports keep for
// metrics. They are plain atomics read by snapshot methods (Switch.Stats,
// StatsReporter.TransportStats): this package knows nothing of Prometheus;
// package metrics turns the snapshots into series when it is scraped.

// latencyBuckets are the upper bounds, in seconds, of the buckets of every
// call-duration Histogram: from 100µs (a native call on a LAN) to 5s (a
// REST call retried to its limit).
var latencyBuckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// LatencyBuckets returns the upper bounds, in seconds, of the buckets of
// every call-duration Histogram.
func LatencyBuckets() []float64 { return append([]float64(nil), latencyBuckets[:]...) }

// Call kinds, the keys of EndpointStats.Calls: one per Switch method that
// reaches an endpoint. A pipeline or transaction is one call.
const (
	OpDo        = "do"
	OpDoCached  = "do_cached"
	OpPipeline  = "pipeline"
	OpMultiExec = "multi_exec"
	OpEval      = "eval"
	OpPing      = "ping"
)

// Error kinds, the keys of EndpointStats.Errors.
const (
	// ErrKindServer: Redis refused the command (a *ServerError).
	ErrKindServer = "server"
	// ErrKindUnavailable: the server could not be reached (ErrUnavailable).
	ErrKindUnavailable = "unavailable"
	// ErrKindUnauthorized: the server rejected the credentials.
	ErrKindUnauthorized = "unauthorized"
	// ErrKindInvalid: the transport refused the arguments.
	ErrKindInvalid = "invalid"
	// ErrKindCanceled: the caller cancelled the call.
	ErrKindCanceled = "canceled"
	// ErrKindTimeout: the caller's deadline passed during the call.
	ErrKindTimeout = "timeout"
	// ErrKindOther: anything else (a closed client, say).
	ErrKindOther = "other"
)

type opIndex int

const (
	opDo opIndex = iota
	opDoCached
	opPipeline
	opMultiExec
	opEval
	opPing
)

var opNames = [...]string{opDo: OpDo, opDoCached: OpDoCached, opPipeline: OpPipeline, opMultiExec: OpMultiExec, opEval: OpEval, opPing: OpPing}

const (
	ekServer = iota
	ekUnavailable
	ekUnauthorized
	ekInvalid
	ekCanceled
	ekTimeout
	ekOther
)

var errKindNames = [...]string{
	ekServer: ErrKindServer, ekUnavailable: ErrKindUnavailable, ekUnauthorized: ErrKindUnauthorized,
	ekInvalid: ErrKindInvalid, ekCanceled: ErrKindCanceled, ekTimeout: ErrKindTimeout, ekOther: ErrKindOther,
}

// ErrorKind names the kind of a call's error, one of the ErrKind
// constants; "" for nil. ctx is the call's context: an error after it ended
// is the caller's cancellation or deadline, whatever the transport made
// of it.
func ErrorKind(ctx context.Context, err error) string {
	if err == nil {
		return ""
	}
	return errKindNames[errKind(ctx, err)]
}

func errKind(ctx context.Context, err error) int {
	switch {
	case errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, context.Canceled):
		return ekCanceled
	case ctx.Err() != nil:
		return ekTimeout
	case errors.Is(err, ErrUnauthorized):
		return ekUnauthorized
	case errors.Is(err, ErrUnavailable): // before server errors: CLUSTERDOWN is both
		return ekUnavailable
	case IsServerError(err):
		return ekServer
	case agentapi.KindOf(err) == agentapi.KindInvalid:
		return ekInvalid
	}
	return ekOther
}

// Histogram is a snapshot of call durations.
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds (LatencyBuckets()).
	Bounds []float64
	// Counts has one more element than Bounds: Counts[i] is the number of
	// calls that took at most Bounds[i] and more than Bounds[i-1]; the last
	// one counts those slower than every bound. Not cumulative.
	Counts []uint64
	// Sum is the total duration of the calls counted.
	Sum time.Duration
}

// Count is the number of calls in h.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// histogram counts durations into latencyBuckets with atomics: observing
// takes no lock and allocates nothing.
type histogram struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(latencyBuckets) && s > latencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: LatencyBuckets(), Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sum.Load())}
	for i := range out.Counts {
		out.Counts[i] = h.counts[i].Load()
	}
	return out
}

// callStats are one endpoint's call counters.
type callStats struct {
	inFlight atomic.Int64
	calls    [len(opNames)]histogram
	errs     [len(errKindNames)]atomic.Uint64
}

// begin notes the start of a call and returns its start time for end.
func (c *callStats) begin() time.Time {
	c.inFlight.Add(1)
	return time.Now()
}

// end records a call that began at start and ended with err.
func (c *callStats) end(ctx context.Context, op opIndex, start time.Time, err error) {
	c.calls[op].observe(time.Since(start))
	c.inFlight.Add(-1)
	if err != nil {
		c.errs[errKind(ctx, err)].Add(1)
	}
}

// TransportStats are a transport's own counters since it was created.
type TransportStats struct {
	// Conns is the number of connections to the server open now. It is
	// meaningful only when ConnsTracked (a REST client given its own
	// http.Client cannot see its connections).
	Conns        int64
	ConnsTracked bool
	// Dials and DialErrors count connection attempts and those that failed.
	Dials, DialErrors uint64
	// Retries counts attempts repeated after a transient failure (REST;
	// the native transport never retries).
	Retries uint64
	// CacheHits counts DoCached reads answered from the client-side cache,
	// CacheMisses those that went to the server; both stay 0 without a
	// client-side cache.
	CacheHits, CacheMisses uint64
}

// TransportCounters are the atomics behind a TransportStats, for
// transports to keep. The zero value is ready; methods are safe for
// concurrent use.
type TransportCounters struct {
	conns                 atomic.Int64
	tracked               atomic.Bool
	dials, dialErrors     atomic.Uint64
	retries, hits, misses atomic.Uint64
}

// TrackConns marks Conns as tracked before the first dial: the transport
// sends every connection it makes through Dialed.
func (t *TransportCounters) TrackConns() { t.tracked.Store(true) }

// Dialed records a connection attempt that returned conn and err, and
// returns conn wrapped so that closing it (the first time) is counted
// too. Connections that go through Dialed make Conns tracked.
func (t *TransportCounters) Dialed(conn net.Conn, err error) (net.Conn, error) {
	t.tracked.Store(true)
	t.dials.Add(1)
	if err != nil {
		t.dialErrors.Add(1)
		return conn, err
	}
	t.conns.Add(1)
	return &countedConn{Conn: conn, t: t}, nil
}

// Retried records an attempt repeated after a transient failure.
func (t *TransportCounters) Retried() { t.retries.Add(1) }

// CacheRead records a read offered to the client-side cache: hit when it
// was answered from the cache.
func (t *TransportCounters) CacheRead(hit bool) {
	if hit {
		t.hits.Add(1)
	} else {
		t.misses.Add(1)
	}
}

// Snapshot returns the counters' values.
func (t *TransportCounters) Snapshot() TransportStats {
	return TransportStats{
		Conns: t.conns.Load(), ConnsTracked: t.tracked.Load(),
		Dials: t.dials.Load(), DialErrors: t.dialErrors.Load(), Retries: t.retries.Load(),
		CacheHits: t.hits.Load(), CacheMisses: t.misses.Load(),
	}
}

// countedConn takes itself off its TransportCounters' open connections
// when it is first closed.
type countedConn struct {
	net.Conn
	t      *TransportCounters
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.t.conns.Add(-1)
	}
	return c.Conn.Close()
}

// StatsReporter is implemented by transports that count their own work
// (kv/native and kv/rest do). Switch.Stats asks each dialed endpoint.
type StatsReporter interface {
	TransportStats() TransportStats
}

// SwitchStats is a snapshot of a Switch's counters, for metrics.
type SwitchStats struct {
	// Preferred is the first endpoint; Protocol the one calls go to now,
	// "" when none is up.
	Preferred, Protocol string
	// Fallbacks counts switches away from the active endpoint since start
	// (as SwitchStatus.Fallbacks).
	Fallbacks int64
	// Rejected counts calls refused at once because no endpoint was up.
	Rejected uint64
	// Endpoints are in the Switch's order of preference.
	Endpoints []EndpointStats
}

// EndpointStats are one endpoint's state and counters.
type EndpointStats struct {
	Name string
	// Up: the endpoint answers; Active: calls go to it now.
	Up, Active bool
	// Transitions counts changes between up and down, the first one
	// included.
	Transitions int64
	// InFlight is the number of calls waiting for it now.
	InFlight int64
	// Calls holds the durations of the calls it served, by Op constant
	// (every op present), errors included.
	Calls map[string]Histogram
	// Errors counts calls that failed, by ErrKind constant (every kind
	// present). Errors of single commands inside a successful Pipeline or
	// MultiExec are the caller's to see, not counted here.
	Errors map[string]uint64
	// Transport holds the transport's own counters; nil until a client is
	// dialed or when it keeps none.
	Transport *TransportStats
}

// Stats returns a snapshot of the Switch's counters. It does no I/O.
func (s *Switch) Stats() SwitchStats {
	st := SwitchStats{Preferred: s.eps[0].Name, Rejected: s.rejected.Load()}
	active := s.active()
	if active != nil {
		st.Protocol = active.Name
	}
	s.mu.Lock()
	st.Fallbacks = s.fallbacks
	s.mu.Unlock()
	for _, e := range s.eps {
		e.mu.Lock()
		es := EndpointStats{Name: e.Name, Up: e.up, Active: e == active, Transitions: e.transitions}
		c := e.client
		e.mu.Unlock()
		es.InFlight = e.stats.inFlight.Load()
		es.Calls = make(map[string]Histogram, len(opNames))
		for i, name := range opNames {
			es.Calls[name] = e.stats.calls[i].snapshot()
		}
		es.Errors = make(map[string]uint64, len(errKindNames))
		for i, name := range errKindNames {
			es.Errors[name] = e.stats.errs[i].Load()
		}
		if r, ok := c.(StatsReporter); ok {
			ts := r.TransportStats()
			es.Transport = &ts
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}
