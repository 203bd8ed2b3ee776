package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/cluster"
)

// Principal is who a request acts as.
type Principal struct {
	TenantID string
	UserID   string
	Role     agentapi.UserRole
	KeyID    string
	// Token is the session token when the request used one ("" for an API
	// key): logout revokes it.
	Token     string
	ExpiresAt time.Time
	// Forwarded: another instance authenticated the request, limited and
	// counted it, and forwarded it here to the instance that runs its
	// agent session.
	Forwarded bool
}

// Platform reports whether the principal is a platform admin.
func (p *Principal) Platform() bool { return p.Role == agentapi.RolePlatformAdmin }

type principalKey struct{}

func principalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// SessionCookie carries the session token for the web UI.
const SessionCookie = "agentapi_session"

var errBadCredentials = agentapi.E("auth", agentapi.KindUnauthenticated, errors.New("invalid or expired credentials"))

// authenticator resolves credentials to a Principal.
type authenticator struct {
	tenants agentapi.TenantStore
	users   agentapi.UserStore
	keys    agentapi.APIKeyStore
	logins  *auth.Sessions
	now     func() time.Time
	signer  *cluster.Signer
	// touched is when this instance last recorded each API key's use (key
	// id -> time.Time). The store keeps last use to the minute
	// (TouchAPIKey writes at most once a minute), so asking it on every
	// request would cost two round trips for nothing.
	touched sync.Map
}

// keyTouchEvery is how often an instance records an API key's use.
const keyTouchEvery = time.Minute

// forwardedPrincipal is what a forwarding instance vouches for.
type forwardedPrincipal struct {
	TenantID string            `json:"t"`
	UserID   string            `json:"u"`
	Role     agentapi.UserRole `json:"r"`
	KeyID    string            `json:"k,omitempty"`
}

var errBadForward = agentapi.E("auth", agentapi.KindUnauthenticated, errors.New("the request claims to be forwarded by another instance, but its signature is invalid or expired"))

// fromForward returns the principal of a request forwarded by another
// instance, nil when r is not one, or an error when its signature fails.
func (a *authenticator) fromForward(r *http.Request) (*Principal, error) {
	if !cluster.Forwarded(r) {
		return nil, nil
	}
	raw, ok := a.signer.Verify(r, a.now())
	var fp forwardedPrincipal
	if !ok || json.Unmarshal(raw, &fp) != nil || fp.TenantID == "" || fp.UserID == "" {
		return nil, errBadForward
	}
	return &Principal{TenantID: fp.TenantID, UserID: fp.UserID, Role: fp.Role, KeyID: fp.KeyID, Forwarded: true}, nil
}

// credential extracts the bearer token, or the session cookie (fromCookie).
func credential(r *http.Request) (cred string, fromCookie bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:]), false
		}
		return "\x00malformed", false
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		return c.Value, true
	}
	return "", false
}

// resolve checks a credential: an API key (not revoked, user present) or a
// session token; either way the tenant must exist and not be disabled, so
// disabling a tenant locks it out at once.
func (a *authenticator) resolve(ctx context.Context, cred string) (*Principal, error) {
	var p *Principal
	switch {
	case auth.LooksLikeAPIKey(cred):
		k, err := a.keys.APIKeyByHash(ctx, auth.HashAPIKey(cred))
		if agentapi.KindOf(err) == agentapi.KindNotFound || (err == nil && k.RevokedAt != nil) {
			return nil, errBadCredentials
		}
		if err != nil {
			return nil, err
		}
		u, err := a.users.GetUser(ctx, k.TenantID, k.UserID)
		if agentapi.KindOf(err) == agentapi.KindNotFound {
			return nil, errBadCredentials
		}
		if err != nil {
			return nil, err
		}
		if now := a.now(); a.touchDue(k.ID, now) {
			a.keys.TouchAPIKey(ctx, k.ID, now)
		}
		p = &Principal{TenantID: k.TenantID, UserID: k.UserID, Role: u.Role, KeyID: k.ID}
	default:
		s, err := a.logins.Validate(ctx, cred)
		if agentapi.KindOf(err) == agentapi.KindUnauthenticated || agentapi.KindOf(err) == agentapi.KindNotFound {
			return nil, errBadCredentials
		}
		if err != nil {
			return nil, err
		}
		// The session says who it was made for; the user must still exist
		// with that role (a deleted or demoted user's sessions stop at once,
		// even if ending them in the store failed).
		u, err := a.users.GetUser(ctx, s.TenantID, s.UserID)
		if agentapi.KindOf(err) == agentapi.KindNotFound || (err == nil && u.Role != s.Role) {
			return nil, errBadCredentials
		}
		if err != nil {
			return nil, err
		}
		p = &Principal{TenantID: s.TenantID, UserID: s.UserID, Role: s.Role, KeyID: s.KeyID, Token: cred, ExpiresAt: s.ExpiresAt}
	}
	t, err := a.tenants.GetTenant(ctx, p.TenantID)
	if agentapi.KindOf(err) == agentapi.KindNotFound || (err == nil && t.Disabled) {
		return nil, errBadCredentials
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// touchDue reports whether the use of key id at now should be recorded,
// and if so notes it as recorded.
func (a *authenticator) touchDue(id string, now time.Time) bool {
	if last, ok := a.touched.Load(id); ok && now.Sub(last.(time.Time)) < keyTouchEvery {
		return false
	}
	a.touched.Store(id, now)
	return true
}

// middleware authenticates requests that carry credentials. Requests
// without any go on unauthenticated (the handlers that need a principal
// answer 401); bad credentials are answered 401 here.
func (a *authenticator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, err := a.fromForward(r); err != nil {
			WriteError(w, err)
			return
		} else if p != nil {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
			return
		}
		cred, fromCookie := credential(r)
		if cred == "" {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.resolve(r.Context(), cred)
		if err != nil && fromCookie && agentapi.KindOf(err) == agentapi.KindUnauthenticated {
			// A stale cookie (expired, logged out elsewhere) must not lock
			// the browser out of logging in again: drop it and go on
			// unauthenticated.
			http.SetCookie(w, &http.Cookie{Name: SessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
			next.ServeHTTP(w, r)
			return
		}
		if err != nil {
			if agentapi.KindOf(err) == agentapi.KindUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="agentapi"`)
			}
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// contextWithPrincipal attaches p to ctx (tests build principals directly).
func contextWithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}
