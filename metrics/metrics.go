// Package metrics exposes the server's Prometheus metrics on GET /metrics.
//
// The packages it reports on know nothing of Prometheus: they keep plain
// counters and return snapshots (kv.Switch.Stats, breaker.Registry.Stats,
// runner.Manager.ActiveByType, ...), or the server hands in a function that
// returns them. A custom collector reads every source when /metrics is
// scraped, so nothing is pushed and an idle server does no metrics work.
// Only the HTTP series are recorded as requests happen, by Middleware.
//
// Each Metrics has its own registry (never the global default one), so a
// test can make as many as it likes.
//
// # Labels and tenants
//
// No series carries a tenant id, a user id, a session id, a raw URL path or
// a secret unless Options.TenantLabels is set: routes are chi patterns
// ("/v1/sessions/{id}/messages"), breakers whose names hold a tenant id are
// grouped (Options.BreakerLabel), agent sessions are counted by agent type.
// With TenantLabels, agentapi_agent_sessions gains a tenant label and
// breakers keep their full names: one series per tenant, for small
// deployments whose operator wants them.
//
// # Series
//
// Every name starts with agentapi_. Types: c counter, g gauge, h histogram.
//
// HTTP (Middleware):
//
//	agentapi_http_requests_total{method,route,status}          c  requests answered, by chi route pattern ("unmatched" when no route matched) and status code
//	agentapi_http_request_duration_seconds{method,route}       h  time to answer, until the handler returned (an event stream counts its whole life)
//	agentapi_http_requests_in_flight                           g  requests being answered now (open event streams included)
//
// Redis (Sources.Redis, a kv.Switch; protocol is the endpoint, "native" or "rest"):
//
//	agentapi_redis_protocol{protocol}                          g  1 for the endpoint calls go to now, 0 for the others (all 0: Redis unreachable)
//	agentapi_redis_endpoint_up{protocol}                       g  1 while the endpoint answers, 0 while it is down
//	agentapi_redis_endpoint_transitions_total{protocol}        c  changes between up and down
//	agentapi_redis_fallbacks_total                             c  switches from the endpoint in use to another one (transport fallbacks)
//	agentapi_redis_rejected_calls_total                        c  calls failed at once because no endpoint was up
//	agentapi_redis_calls_in_flight{protocol}                   g  calls waiting for the endpoint now
//	agentapi_redis_command_duration_seconds{protocol,op}       h  duration of calls (op: do, do_cached, pipeline, multi_exec, eval, ping; a pipeline is one call), failed ones included
//	agentapi_redis_errors_total{protocol,kind}                 c  failed calls by kind: server (Redis refused the command), unavailable, unauthorized, invalid, canceled, timeout (the caller's deadline), other
//	agentapi_redis_connections{protocol}                       g  connections open to the server (native: rueidis's; rest: its HTTP client's)
//	agentapi_redis_dials_total{protocol}                       c  connection attempts
//	agentapi_redis_dial_errors_total{protocol}                 c  connection attempts that failed
//	agentapi_redis_retries_total{protocol}                     c  attempts repeated after a transient failure (REST; native never retries)
//	agentapi_redis_client_cache_hits_total{protocol}           c  cached reads answered from the client-side cache (native with CLIENT TRACKING)
//	agentapi_redis_client_cache_misses_total{protocol}         c  cached reads that went to the server
//
// The transport series (connections to client_cache) appear once an
// endpoint's client exists; connections only where the transport can see
// them.
//
// Caches (Sources.Caches):
//
//	agentapi_cache_hits_total{cache}                           c  lookups answered from the cache
//	agentapi_cache_misses_total{cache}                         c  lookups that were not
//	agentapi_cache_errors_total{cache}                         c  lookups that failed (the cache's backend is down; served as misses)
//
// Rate limits (Sources.RateLimits):
//
//	agentapi_ratelimit_decisions_total{limit,outcome}          c  decisions by limit (ip, login, user, tenant) and outcome (allowed, denied, error)
//
// Circuit breakers (Sources.Breakers, a breaker.Registry; breaker is the
// name or its group, see Options.BreakerLabel):
//
//	agentapi_breaker_state{breaker,state}                      g  breakers in each state (closed, open, half_open): 1 or 0 for a breaker of its own, a count for a group
//	agentapi_breaker_transitions_total{breaker,to}             c  state changes this instance saw, by the state changed to
//
// Sessions and usage:
//
//	agentapi_login_sessions                                    g  login sessions held (Sources.LoginSessions)
//	agentapi_agent_sessions{agent}                             g  agent sessions running on this instance, by agent type (Sources.AgentSessions); {agent,tenant} with TenantLabels
//	agentapi_usage_flush_lag_seconds                           g  time since usage records were last written to the system of record (Sources.UsageLastFlush; since start until the first flush)
//
// Process:
//
//	agentapi_build_info{version,goversion}                     g  always 1
//	go_*                                                          Go runtime (collectors.NewGoCollector)
//	process_*                                                     CPU, memory, file descriptors, start time (collectors.NewProcessCollector)
//
// docs/metrics.md lists the same series with the alerts worth setting.
package metrics

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/kv"
)

const namespace = "agentapi"

// Sources are where the scrape-time series come from. Every field is
// optional: a nil one means its series are absent. Functions are called
// on every scrape, concurrently with everything else; they must be quick,
// safe for concurrent use, and do no network I/O. A source that panics
// loses its series for that scrape (logged), not the process.
type Sources struct {
	// Redis is the kv.Switch in use (*kv.Switch implements it).
	Redis RedisSource
	// Breakers is the breaker registry (*breaker.Registry implements it).
	Breakers BreakerSource
	// AgentSessions counts the agent sessions running here
	// (*runner.Manager implements it).
	AgentSessions AgentSessionSource
	// LoginSessions returns the number of login sessions held.
	LoginSessions func() int
	// RateLimits returns the rate-limit decisions made since start.
	RateLimits func() []RateCount
	// Caches returns each named cache's counters since start.
	Caches func() []CacheCount
	// UsageLastFlush returns when usage records were last written to the
	// system of record; the zero time when they have not been yet.
	UsageLastFlush func() time.Time
}

// RedisSource reports a kv.Switch's state and counters.
type RedisSource interface {
	Stats() kv.SwitchStats
}

// BreakerSource reports the circuit breakers' states and counters.
type BreakerSource interface {
	Stats() []breaker.Stats
}

// AgentSessionSource counts running agent sessions.
type AgentSessionSource interface {
	// ActiveByType counts sessions by agent type.
	ActiveByType() map[string]int
	// ActiveByTenant counts them by tenant id, then agent type. It is
	// asked only with Options.TenantLabels.
	ActiveByTenant() map[string]map[string]int
}

// RateCount is a number of rate-limit decisions, counted since start.
type RateCount struct {
	// Limit is the kind of limit: "ip", "login", "user" or "tenant".
	Limit string
	// Outcome is "allowed", "denied" or "error" (no decision could be made).
	Outcome string
	Count   uint64
}

// Rate-limit outcomes.
const (
	Allowed = "allowed"
	Denied  = "denied"
	Error   = "error"
)

// CacheCount is one named cache's counters since start.
type CacheCount struct {
	Name                 string
	Hits, Misses, Errors uint64
}

// Options tune a Metrics. Zero values mean the defaults.
type Options struct {
	// TenantLabels adds tenant ids to the series that can carry them
	// (agent sessions by tenant; breakers by full name). Off by default:
	// the number of series then grows with the number of tenants.
	TenantLabels bool
	// BreakerLabel maps a breaker's name to its breaker label when
	// TenantLabels is off; breakers mapped to the same label are counted
	// together. runner.BreakerGroup drops the tenant from runner's
	// breakers. Default: the name up to its first ':' ("agent-start:claude"
	// -> "agent-start"), which never holds a tenant id.
	BreakerLabel func(name string) string
	// Version is reported by agentapi_build_info.
	Version string
	// BearerToken, when set, is required by Handler in an
	// "Authorization: Bearer <token>" header.
	BearerToken string
	// Now is the clock of the usage flush lag. Default time.Now.
	Now func() time.Time
	// Logger receives collection errors (a source that panicked); the
	// scrape then serves every other series. Default: discard.
	Logger *slog.Logger
}

// Metrics holds one registry with every series.
type Metrics struct {
	reg  *prometheus.Registry
	opts Options
	http *httpMetrics
}

// New returns a Metrics reading src, with the Go runtime and process
// collectors registered.
func New(src Sources, o Options) *Metrics {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BreakerLabel == nil {
		o.BreakerLabel = firstSegment
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if isNil(src.Redis) {
		src.Redis = nil
	}
	if isNil(src.Breakers) {
		src.Breakers = nil
	}
	if isNil(src.AgentSessions) {
		src.AgentSessions = nil
	}
	m := &Metrics{reg: prometheus.NewRegistry(), opts: o, http: newHTTPMetrics()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace:   namespace,
			Name:        "build_info",
			Help:        "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": o.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
		newSourceCollector(src, o),
	)
	m.http.register(m.reg)
	return m
}

// Registry is the registry every series is in, for tests and for adding
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format (or
// OpenMetrics, when asked for). Mount it at GET /metrics.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// One failing source must not hide every other series.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(m.opts.Logger.Handler(), slog.LevelWarn),
		// Collection reads in-memory snapshots only; a few concurrent
		// scrapes are plenty, more are refused with 503.
		MaxRequestsInFlight: 4,
	})
	if m.opts.BearerToken == "" {
		return h
	}
	want := []byte("Bearer " + m.opts.BearerToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics need the bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// firstSegment is the default BreakerLabel.
func firstSegment(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// isNil reports whether v is nil or a nil pointer in an interface (a nil
// *kv.Switch assigned to Sources.Redis, say).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
