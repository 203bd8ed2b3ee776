package metrics

import (
	"fmt"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/kv"
)

// sourceCollector turns the Sources' snapshots into const metrics at
// scrape time.
type sourceCollector struct {
	src  Sources
	opts Options
	// started is the reference of the usage flush lag until a first flush.
	started int64 // unix nanos

	redisProtocol, redisUp, redisTransitions, redisFallbacks, redisRejected *prometheus.Desc
	redisInFlight, redisDuration, redisErrors                               *prometheus.Desc
	redisConns, redisDials, redisDialErrors, redisRetries                   *prometheus.Desc
	redisCacheHits, redisCacheMisses                                        *prometheus.Desc
	cacheHits, cacheMisses, cacheErrors                                     *prometheus.Desc
	rateDecisions                                                           *prometheus.Desc
	breakerState, breakerTransitions                                        *prometheus.Desc
	loginSessions, agentSessions, usageLag                                  *prometheus.Desc

	mu sync.Mutex
	// seenAgents are the agent label sets reported before, reported as 0
	// once they have no session rather than vanishing.
	seenAgents map[[2]string]bool
}

func newSourceCollector(src Sources, o Options) *sourceCollector {
	d := func(subsystem, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, name), help, labels, nil)
	}
	agentLabels := []string{"agent"}
	if o.TenantLabels {
		agentLabels = append(agentLabels, "tenant")
	}
	return &sourceCollector{
		src: src, opts: o, started: o.Now().UnixNano(), seenAgents: map[[2]string]bool{},

		redisProtocol:    d("redis", "protocol", "1 for the Redis endpoint calls go to now, 0 for the others.", "protocol"),
		redisUp:          d("redis", "endpoint_up", "1 while the Redis endpoint answers, 0 while it is down.", "protocol"),
		redisTransitions: d("redis", "endpoint_transitions_total", "Changes of the Redis endpoint between up and down.", "protocol"),
		redisFallbacks:   d("redis", "fallbacks_total", "Switches from the Redis endpoint in use to another one."),
		redisRejected:    d("redis", "rejected_calls_total", "Redis calls failed at once because no endpoint was up."),
		redisInFlight:    d("redis", "calls_in_flight", "Redis calls waiting for the endpoint now.", "protocol"),
		redisDuration:    d("redis", "command_duration_seconds", "Duration of Redis calls (a pipeline is one call), failed ones included.", "protocol", "op"),
		redisErrors:      d("redis", "errors_total", "Failed Redis calls by kind of error.", "protocol", "kind"),
		redisConns:       d("redis", "connections", "Connections open to the Redis server.", "protocol"),
		redisDials:       d("redis", "dials_total", "Connection attempts to the Redis server.", "protocol"),
		redisDialErrors:  d("redis", "dial_errors_total", "Connection attempts to the Redis server that failed.", "protocol"),
		redisRetries:     d("redis", "retries_total", "Redis attempts repeated after a transient failure.", "protocol"),
		redisCacheHits:   d("redis", "client_cache_hits_total", "Cached Redis reads answered from the client-side cache.", "protocol"),
		redisCacheMisses: d("redis", "client_cache_misses_total", "Cached Redis reads that went to the server.", "protocol"),

		cacheHits:   d("cache", "hits_total", "Cache lookups answered from the cache.", "cache"),
		cacheMisses: d("cache", "misses_total", "Cache lookups that were not answered from the cache.", "cache"),
		cacheErrors: d("cache", "errors_total", "Cache lookups that failed.", "cache"),

		rateDecisions: d("ratelimit", "decisions_total", "Rate-limit decisions by limit and outcome.", "limit", "outcome"),

		breakerState:       d("breaker", "state", "Circuit breakers in each state: 1 or 0 for a breaker of its own, a count for a group.", "breaker", "state"),
		breakerTransitions: d("breaker", "transitions_total", "Circuit breaker state changes seen by this instance, by the state changed to.", "breaker", "to"),

		loginSessions: d("", "login_sessions", "Login sessions held."),
		agentSessions: d("", "agent_sessions", "Agent sessions running on this instance.", agentLabels...),
		usageLag:      d("usage", "flush_lag_seconds", "Seconds since usage records were last written to the system of record."),
	}
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.redisProtocol, c.redisUp, c.redisTransitions, c.redisFallbacks, c.redisRejected,
		c.redisInFlight, c.redisDuration, c.redisErrors,
		c.redisConns, c.redisDials, c.redisDialErrors, c.redisRetries, c.redisCacheHits, c.redisCacheMisses,
		c.cacheHits, c.cacheMisses, c.cacheErrors, c.rateDecisions,
		c.breakerState, c.breakerTransitions, c.loginSessions, c.agentSessions, c.usageLag,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Redis != nil {
		c.safely(ch, "Redis", c.redisProtocol, func() { c.collectRedis(ch, c.src.Redis.Stats()) })
	}
	if c.src.Caches != nil {
		c.safely(ch, "Caches", c.cacheHits, func() { c.collectCaches(ch, c.src.Caches()) })
	}
	if c.src.RateLimits != nil {
		c.safely(ch, "RateLimits", c.rateDecisions, func() { c.collectRates(ch, c.src.RateLimits()) })
	}
	if c.src.Breakers != nil {
		c.safely(ch, "Breakers", c.breakerState, func() { c.collectBreakers(ch) })
	}
	if c.src.LoginSessions != nil {
		c.safely(ch, "LoginSessions", c.loginSessions, func() { ch <- gauge(c.loginSessions, float64(c.src.LoginSessions())) })
	}
	if c.src.AgentSessions != nil {
		c.safely(ch, "AgentSessions", c.agentSessions, func() { c.collectAgents(ch) })
	}
	if c.src.UsageLastFlush != nil {
		c.safely(ch, "UsageLastFlush", c.usageLag, func() {
			ref := c.started
			if t := c.src.UsageLastFlush(); !t.IsZero() {
				ref = t.UnixNano()
			}
			lag := float64(c.opts.Now().UnixNano()-ref) / 1e9
			ch <- gauge(c.usageLag, max(lag, 0))
		})
	}
}

// safely runs collect; when it panics, the scrape reports an error for d
// (served alongside every other series) instead of crashing the process:
// the registry collects in goroutines of its own.
func (c *sourceCollector) safely(ch chan<- prometheus.Metric, source string, d *prometheus.Desc, collect func()) {
	defer func() {
		if r := recover(); r != nil {
			ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("metrics source %s panicked: %v", source, r))
		}
	}()
	collect()
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *sourceCollector) collectRedis(ch chan<- prometheus.Metric, st kv.SwitchStats) {
	ch <- counter(c.redisFallbacks, float64(st.Fallbacks))
	ch <- counter(c.redisRejected, float64(st.Rejected))
	for _, e := range st.Endpoints {
		p := e.Name
		ch <- gauge(c.redisProtocol, b2f(e.Active), p)
		ch <- gauge(c.redisUp, b2f(e.Up), p)
		ch <- counter(c.redisTransitions, float64(e.Transitions), p)
		ch <- gauge(c.redisInFlight, float64(e.InFlight), p)
		for _, op := range sortedKeys(e.Calls) {
			ch <- constHistogram(c.redisDuration, e.Calls[op], p, op)
		}
		for _, kind := range sortedKeys(e.Errors) {
			ch <- counter(c.redisErrors, float64(e.Errors[kind]), p, kind)
		}
		if t := e.Transport; t != nil {
			if t.ConnsTracked {
				ch <- gauge(c.redisConns, float64(t.Conns), p)
			}
			ch <- counter(c.redisDials, float64(t.Dials), p)
			ch <- counter(c.redisDialErrors, float64(t.DialErrors), p)
			ch <- counter(c.redisRetries, float64(t.Retries), p)
			ch <- counter(c.redisCacheHits, float64(t.CacheHits), p)
			ch <- counter(c.redisCacheMisses, float64(t.CacheMisses), p)
		}
	}
}

// constHistogram converts a kv.Histogram (per-bucket counts) to a
// Prometheus one (cumulative counts).
func constHistogram(d *prometheus.Desc, h kv.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, ub := range h.Bounds {
		cum += h.Counts[i]
		buckets[ub] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count(), h.Sum.Seconds(), buckets, labels...)
}

func (c *sourceCollector) collectCaches(ch chan<- prometheus.Metric, counts []CacheCount) {
	sum := map[string]CacheCount{}
	for _, cc := range counts {
		s := sum[cc.Name]
		s.Hits += cc.Hits
		s.Misses += cc.Misses
		s.Errors += cc.Errors
		sum[cc.Name] = s
	}
	for _, name := range sortedKeys(sum) {
		s := sum[name]
		ch <- counter(c.cacheHits, float64(s.Hits), name)
		ch <- counter(c.cacheMisses, float64(s.Misses), name)
		ch <- counter(c.cacheErrors, float64(s.Errors), name)
	}
}

func (c *sourceCollector) collectRates(ch chan<- prometheus.Metric, counts []RateCount) {
	sum := map[[2]string]uint64{}
	for _, rc := range counts {
		sum[[2]string{rc.Limit, rc.Outcome}] += rc.Count
	}
	for k, n := range sum {
		ch <- counter(c.rateDecisions, float64(n), k[0], k[1])
	}
}

var breakerStates = []agentapi.BreakerState{agentapi.BreakerClosed, agentapi.BreakerOpen, agentapi.BreakerHalfOpen}

func (c *sourceCollector) collectBreakers(ch chan<- prometheus.Metric) {
	type group struct {
		states      map[agentapi.BreakerState]int
		transitions map[agentapi.BreakerState]uint64
	}
	groups := map[string]*group{}
	for _, b := range c.src.Breakers.Stats() {
		label := b.Name
		if !c.opts.TenantLabels {
			label = c.opts.BreakerLabel(b.Name)
		}
		g := groups[label]
		if g == nil {
			g = &group{states: map[agentapi.BreakerState]int{}, transitions: map[agentapi.BreakerState]uint64{}}
			groups[label] = g
		}
		g.states[b.State]++
		for to, n := range b.Transitions {
			g.transitions[to] += n
		}
	}
	for label, g := range groups {
		for _, s := range breakerStates {
			ch <- gauge(c.breakerState, float64(g.states[s]), label, string(s))
			ch <- counter(c.breakerTransitions, float64(g.transitions[s]), label, string(s))
		}
	}
}

func (c *sourceCollector) collectAgents(ch chan<- prometheus.Metric) {
	counts := map[[2]string]int{}
	if c.opts.TenantLabels {
		for tenant, byType := range c.src.AgentSessions.ActiveByTenant() {
			for agent, n := range byType {
				counts[[2]string{agent, tenant}] += n
			}
		}
	} else {
		for agent, n := range c.src.AgentSessions.ActiveByType() {
			counts[[2]string{agent}] += n
		}
	}
	c.mu.Lock()
	for k := range counts {
		c.seenAgents[k] = true
	}
	seen := make([][2]string, 0, len(c.seenAgents))
	for k := range c.seenAgents {
		seen = append(seen, k)
	}
	c.mu.Unlock()
	for _, k := range seen {
		if c.opts.TenantLabels {
			ch <- gauge(c.agentSessions, float64(counts[k]), k[0], k[1])
		} else {
			ch <- gauge(c.agentSessions, float64(counts[k]), k[0])
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
