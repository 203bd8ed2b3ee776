package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/agentapi-mt/agentapi/cache"
)

// Response caching. Reads that cost a database query and are asked for
// again and again are answered from the response cache (v.Responses): the
// session list, one session, the transcript of a session that does not run
// here, and the tenant's configuration. Entries belong to the caller's
// tenant and are keyed by the caller's user and role as well, because a
// hit is answered without running the route (and so without its
// authorization check): only the same principal who was served the
// response gets it again. Every write that changes one of these answers
// bumps its scope's generation -- in Redis when there is one, so every
// instance misses at once:
//
//   - "sessions": any session record of the tenant was created or updated
//     (runner.Options.Changed);
//   - "transcript/<id>": a message of that session was written;
//   - "config": the tenant's configuration was replaced.
//
// Clients revalidate with If-None-Match (the ETag is a hash of the body)
// and may skip the cache with Cache-Control: no-cache.

// responseTTL bounds how long a cached response lives; invalidation, not
// the TTL, is what keeps answers fresh.
const responseTTL = time.Minute

// Scopes of the response cache.
const (
	scopeSessions = "sessions"
	scopeConfig   = "config"
)

func scopeTranscript(sessionID string) string { return "transcript/" + sessionID }

// CacheReads is the middleware that serves the cacheable reads from the
// response cache. It runs after authentication; without a cache it is a
// no-op.
func (v *V1) CacheReads(next http.Handler) http.Handler {
	if v.Responses == nil {
		return next
	}
	return v.Responses.Handler(v.cacheKey, responseTTL, next)
}

// cacheKey decides whether a request is a cacheable read, and under which
// tenant, scope and key.
func (v *V1) cacheKey(r *http.Request) (tenant, scope, key string, ok bool) {
	p := principalFrom(r.Context())
	if p == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return "", "", "", false
	}
	path := r.URL.Path
	switch {
	case path == "/v1/sessions":
		scope = scopeSessions
	case path == "/v1/tenant/config":
		scope = scopeConfig
	case strings.HasPrefix(path, "/v1/sessions/"):
		rest := strings.TrimPrefix(path, "/v1/sessions/")
		id, sub, _ := strings.Cut(rest, "/")
		switch {
		case id == "":
			return "", "", "", false
		case sub == "":
			scope = scopeSessions
		case sub == "messages":
			// A session running here answers from its live agent.
			if _, live := v.Runner.Handler(p.TenantID, id); live {
				return "", "", "", false
			}
			scope = scopeTranscript(id)
		default:
			return "", "", "", false
		}
	default:
		return "", "", "", false
	}
	return p.TenantID, scope, path + "?" + r.URL.RawQuery + "|" + p.UserID + "|" + string(p.Role), true
}

// invalidate bumps a scope of the response cache.
func (v *V1) invalidate(ctx context.Context, tenantID, scope string) {
	invalidate(ctx, v.Responses, v.Log, tenantID, scope)
}

// invalidate bumps a scope of l. A failure is logged: the entries then
// live until their TTL.
func invalidate(ctx context.Context, l *cache.Loader, log *slog.Logger, tenantID, scope string) {
	if l == nil {
		return
	}
	if err := l.Invalidate(ctx, tenantID, scope); err != nil {
		log.Warn("invalidating cached responses failed; they expire within a minute", "tenant", tenantID, "scope", scope, "error", err)
	}
}

// SessionInvalidator returns runner.Options.Changed for the response
// cache l: it invalidates the cached answers a session write affects.
func SessionInvalidator(l *cache.Loader, log *slog.Logger) func(tenantID, sessionID string, transcript bool) {
	return func(tenantID, sessionID string, transcript bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if !transcript {
			invalidate(ctx, l, log, tenantID, scopeSessions)
		}
		invalidate(ctx, l, log, tenantID, scopeTranscript(sessionID))
	}
}
