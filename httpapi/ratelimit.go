package httpapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentapi-mt/agentapi"
)

// RateLimits limits requests by client IP (every request, before
// authentication; logins with their own, stricter limit against key
// guessing) and by authenticated user. Health and metrics routes are
// exempt.
type RateLimits struct {
	Limiter agentapi.RateLimiter
	IP      agentapi.RateLimit
	Login   agentapi.RateLimit
	User    agentapi.RateLimit
	// TrustedProxies are the peers whose X-Forwarded-For / Forwarded
	// headers are believed; from anyone else they are ignored.
	TrustedProxies []netip.Prefix
	// Prefix starts every key ("agentapi:").
	Prefix string
	// Tenant, when set, returns a tenant's configuration: its user limit
	// replaces User for its users, and its tenant-wide limit, when set,
	// applies to all of them together.
	Tenant func(ctx context.Context, tenantID string) (agentapi.TenantConfig, error)
	// Forwarded, when set, recognizes requests another instance forwarded
	// (it limited them already): they are not limited again.
	Forwarded func(*http.Request) bool
	// Limited, when set, is told of each request refused by the user or
	// tenant limit (usage tracking counts them).
	Limited func(tenantID, userID string)

	counts sync.Map // policy -> *decisionCounts
}

// decisionCounts counts one policy's decisions.
type decisionCounts struct{ allowed, denied, errors atomic.Uint64 }

// RateDecisionCount is how many decisions one policy made, by outcome.
type RateDecisionCount struct {
	Policy                   string
	Allowed, Denied, Errored uint64
}

// Decisions reports the decisions made so far per policy (ip, login,
// user, tenant), for metrics.
func (l *RateLimits) Decisions() []RateDecisionCount {
	var out []RateDecisionCount
	l.counts.Range(func(k, v any) bool {
		c := v.(*decisionCounts)
		out = append(out, RateDecisionCount{Policy: k.(string), Allowed: c.allowed.Load(), Denied: c.denied.Load(), Errored: c.errors.Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Policy < out[j].Policy })
	return out
}

func (l *RateLimits) counter(policy string) *decisionCounts {
	if c, ok := l.counts.Load(policy); ok {
		return c.(*decisionCounts)
	}
	c, _ := l.counts.LoadOrStore(policy, &decisionCounts{})
	return c.(*decisionCounts)
}

var exempt = map[string]bool{"/status": true, "/healthz": true, "/readyz": true, "/metrics": true}

const loginPath = "/v1/auth/login"

// staticUI reports a read of the browser UI's embedded files: they cost
// nothing to serve and a page load fetches several, so they do not spend
// the client's request allowance (the API calls the page makes do).
func staticUI(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		(r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/"))
}

// ByIP is the middleware that limits by client IP. It runs before
// authentication.
func (l *RateLimits) ByIP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt[r.URL.Path] || staticUI(r) || (l.Forwarded != nil && l.Forwarded(r)) {
			next.ServeHTTP(w, r)
			return
		}
		ip := l.ClientIP(r)
		policy, limit, key := "ip", l.IP, l.Prefix+"rl:ip:"+ip
		if r.URL.Path == loginPath {
			policy, limit, key = "login", l.Login, l.Prefix+"rl:login:"+ip
		}
		if !l.check(w, r, policy, key, limit) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ByUser is the middleware that limits by authenticated user. It runs
// after authentication; unauthenticated requests pass (ByIP covers them).
func (l *RateLimits) ByUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalFrom(r.Context())
		if p == nil || p.Forwarded || exempt[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		limit := l.User
		var tenantLimit agentapi.RateLimit
		if l.Tenant != nil {
			c, err := l.Tenant(r.Context(), p.TenantID)
			if err != nil {
				WriteError(w, err)
				return
			}
			if c.UserRateLimitPerMinute > 0 {
				limit = agentapi.RateLimit{Rate: c.UserRateLimitPerMinute, Period: time.Minute, Burst: c.UserRateLimitBurst}
			}
			if c.RateLimitPerMinute > 0 {
				tenantLimit = agentapi.RateLimit{Rate: c.RateLimitPerMinute, Period: time.Minute, Burst: c.RateLimitBurst}
			}
		}
		// The tenant in a hash tag keeps a tenant's keys in one cluster
		// slot. The user's own limit first: a user refused by it does not
		// spend the tenant's allowance.
		tag := l.Prefix + "{t:" + p.TenantID + "}:rl:"
		if !l.check(w, r, "user", tag+"user:"+p.UserID, limit) ||
			(tenantLimit.Rate > 0 && !l.check(w, r, "tenant", tag+"tenant", tenantLimit)) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// check decides one request, writes the headers, and answers 429 (or 503
// when no decision could be made) itself. It reports whether to go on.
func (l *RateLimits) check(w http.ResponseWriter, r *http.Request, policy, key string, limit agentapi.RateLimit) bool {
	d, err := l.Limiter.Allow(r.Context(), key, limit, 1)
	c := l.counter(policy)
	if err != nil {
		c.errors.Add(1)
		// The limiter's failure policy is fail-closed (fail-open never
		// errors): refuse rather than serve unlimited.
		WriteError(w, agentapi.E("ratelimit", agentapi.KindUnavailable, errors.New("rate limiting is unavailable; try again shortly")))
		return false
	}
	setRateHeaders(w.Header(), policy, d)
	if d.Allowed {
		c.allowed.Add(1)
		return true
	}
	c.denied.Add(1)
	if p := principalFrom(r.Context()); p != nil && l.Limited != nil {
		l.Limited(p.TenantID, p.UserID)
	}
	retry := int(math.Ceil(d.RetryAfter.Seconds()))
	if d.RetryAfter < 0 {
		retry = int(math.Ceil(d.ResetAfter.Seconds()))
	}
	w.Header().Set("Retry-After", strconv.Itoa(max(retry, 1)))
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTooManyRequests)
	fmt.Fprintf(w, `{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"rate limit exceeded (%s: %d requests per %s, burst %d); retry in %d s"}`+"\n",
		policy, limit.Rate, limit.Period, max(limit.Burst, 1), max(retry, 1))
	return false
}

// setRateHeaders writes the IETF draft fields (RateLimit-Policy and
// RateLimit, structured lists that grow by one item per policy applied to
// the request) and the common X-RateLimit-* fields of the last policy.
func setRateHeaders(h http.Header, policy string, d agentapi.RateDecision) {
	window := int(math.Ceil(d.Limit.Period.Seconds()))
	reset := int(math.Ceil(d.ResetAfter.Seconds()))
	h.Add("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", policy, d.Limit.Rate, window))
	h.Add("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", policy, d.Remaining, reset))
	h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit.Rate))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(d.ResetAfter).Unix(), 10))
}

// ClientIP is the request's client address: the peer's, unless the peer is
// a trusted proxy, in which case the right-most address in X-Forwarded-For
// (or Forwarded) that is not itself a trusted proxy.
func (l *RateLimits) ClientIP(r *http.Request) string {
	peer := hostOf(r.RemoteAddr)
	if !l.trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		if !l.trusted(hops[i]) {
			return hops[i]
		}
	}
	return peer
}

func (l *RateLimits) trusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range l.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.Unmap().String()
	}
	return addr
}

// forwardedFor lists the client chain from X-Forwarded-For, or else from
// Forwarded's for= parameters, left (origin) to right (nearest).
func forwardedFor(h http.Header) []string {
	var out []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, part := range strings.Split(v, ",") {
			if ip := hostOf(strings.TrimSpace(part)); ip != "" {
				out = append(out, ip)
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, v := range h.Values("Forwarded") {
		for _, elem := range strings.Split(v, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if !ok || !strings.EqualFold(k, "for") {
					continue
				}
				val = strings.Trim(val, `"`)
				if h, _, err := net.SplitHostPort(val); err == nil {
					val = h
				}
				if ip := hostOf(strings.Trim(val, "[]")); ip != "" {
					out = append(out, ip)
				}
			}
		}
	}
	return out
}

// ParseTrustedProxies reads a comma-separated list of IPs and CIDRs.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR", part)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
