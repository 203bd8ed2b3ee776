package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-chi/chi/v5"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/cluster"
	"github.com/agentapi-mt/agentapi/runner"
	"github.com/agentapi-mt/agentapi/tenantcfg"
	"github.com/agentapi-mt/agentapi/usage"
)

// V1 is the multi-tenant API under /v1: authentication, administration of
// tenants, users and keys, and agent sessions with the single-agent API
// mounted per session.
type V1 struct {
	Tenants  agentapi.TenantStore
	Users    agentapi.UserStore
	Keys     agentapi.APIKeyStore
	Sessions agentapi.AgentSessionStore
	Audit    agentapi.AuditLog
	Secrets  agentapi.TenantSecretStore
	// Keyring seals tenant secrets.
	Keyring *auth.Keyring
	Logins  *auth.Sessions
	Runner  *runner.Manager
	Catalog runner.Catalog
	// Breakers, when set, are listed and reset under /v1/admin/breakers.
	Breakers *breaker.Registry
	// Config serves tenant configurations and feature flags.
	Config *tenantcfg.Service
	// Cluster and Signer, when set (with Redis), route requests for agent
	// sessions to the instance that runs them (v1_route.go).
	Cluster *cluster.Registry
	Signer  *cluster.Signer
	// Responses, when set, caches the reads listed in v1_cache.go.
	Responses *cache.Loader
	// Usage, when set, counts requests, messages and uploads, enforces
	// message quotas and serves the usage reports.
	Usage *usage.Recorder
	// SecureCookies marks the session cookie Secure (set it behind HTTPS).
	SecureCookies bool
	Log           *slog.Logger
	Now           func() time.Time

	authn *authenticator
}

// humaError converts an error to huma's problem+json error using the one
// kind-to-status mapping (StatusOf). Internal errors say nothing more.
func (v *V1) humaError(err error) error {
	status := StatusOf(err)
	if status == http.StatusInternalServerError {
		v.Log.Error("request failed", "error", err)
		return huma.NewError(status, "internal error")
	}
	var e *agentapi.Error
	detail := err.Error()
	if errors.As(err, &e) && e.Err != nil {
		detail = e.Err.Error()
	}
	return retryHeaders(err, huma.NewError(status, detail))
}

var (
	errNoCredentials = agentapi.E("auth", agentapi.KindUnauthenticated, errors.New("authentication required: send Authorization: Bearer <api key or session token>"))
	errNotAdmin      = agentapi.E("auth", agentapi.KindForbidden, errors.New("this needs the admin role"))
	errNotPlatform   = agentapi.E("auth", agentapi.KindForbidden, errors.New("this needs a platform admin"))
	errTenantMissing = agentapi.E("admin", agentapi.KindNotFound, errors.New("no such tenant"))
)

func (v *V1) principal(ctx context.Context) (*Principal, error) {
	if p := principalFrom(ctx); p != nil {
		return p, nil
	}
	return nil, v.humaError(errNoCredentials)
}

// adminOf checks that the caller administers tenant: platform admins any
// existing tenant, tenant admins their own. Another tenant is "not found",
// never "forbidden", so its existence is not revealed.
func (v *V1) adminOf(ctx context.Context, tenant string) (*Principal, error) {
	p, err := v.principal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Platform() {
		if _, err := v.Tenants.GetTenant(ctx, tenant); err != nil {
			return nil, v.humaError(err)
		}
		return p, nil
	}
	if tenant != p.TenantID {
		return nil, v.humaError(errTenantMissing)
	}
	if p.Role != agentapi.RoleAdmin {
		return nil, v.humaError(errNotAdmin)
	}
	return p, nil
}

func (v *V1) platform(ctx context.Context) (*Principal, error) {
	p, err := v.principal(ctx)
	if err != nil {
		return nil, err
	}
	if !p.Platform() {
		return nil, v.humaError(errNotPlatform)
	}
	return p, nil
}

// endLogins ends a user's login sessions on every instance. Its failure
// fails the request: answering success while the sessions live on would
// be a lie (the change itself is kept, and sessions are re-checked against
// the user on every request anyway).
func (v *V1) endLogins(ctx context.Context, tenantID, userID string) error {
	if _, err := v.Logins.RevokeUser(ctx, tenantID, userID); err != nil {
		v.Log.Error("ending login sessions failed", "tenant", tenantID, "user", userID, "error", err)
		return v.humaError(agentapi.E("auth.revoke", agentapi.KindUnavailable, errors.New("the change was made, but ending the user's login sessions failed; retry")))
	}
	return nil
}

func (v *V1) audit(ctx context.Context, p *Principal, tenant, action, target, detail string) {
	if err := v.Audit.Audit(ctx, agentapi.AuditEntry{At: v.Now().UTC(), TenantID: tenant, ActorID: p.UserID, Action: action, Target: target, Detail: detail}); err != nil {
		v.Log.Error("writing the audit log failed", "action", action, "error", err)
	}
}

func (v *V1) init() {
	if v.authn != nil {
		return
	}
	if v.Now == nil {
		v.Now = time.Now
	}
	if v.Log == nil {
		v.Log = slog.New(slog.DiscardHandler)
	}
	v.authn = &authenticator{tenants: v.Tenants, users: v.Users, keys: v.Keys, logins: v.Logins, now: v.Now, signer: v.Signer}
}

// Authenticate is the middleware that resolves credentials; pass it to
// NewRouter so it runs before every route.
func (v *V1) Authenticate() func(http.Handler) http.Handler {
	v.init()
	return v.authn.middleware
}

// Mount registers the routes on r (chi) and api (huma, for OpenAPI). r
// must have been built with Authenticate.
func (v *V1) Mount(r chi.Router, api huma.API) {
	v.init()
	v.authRoutes(api)
	v.adminRoutes(api)
	v.secretRoutes(api)
	v.breakerRoutes(api)
	v.configRoutes(api)
	v.usageRoutes(api)
	v.instanceRoutes(api)
	v.sessionRoutes(api)
	// The single-agent API of each session, upstream's routes and shapes.
	r.HandleFunc("/v1/sessions/{id}/*", v.sessionAPI)
}

const maxBody = 64 << 10

func op(id, method, path, summary string, errs ...int) huma.Operation {
	return huma.Operation{OperationID: id, Method: method, Path: path, Summary: summary, MaxBodyBytes: maxBody, Errors: errs, Tags: []string{strings.Split(strings.TrimPrefix(path, "/v1/"), "/")[0]}}
}

// ---- authentication ----

type loginInput struct {
	Body struct {
		APIKey string `json:"api_key" minLength:"1" doc:"An API key (agk_...)."`
	}
}

type loginOutput struct {
	SetCookie http.Cookie `header:"Set-Cookie"`
	Body      struct {
		Token     string            `json:"token" doc:"Session token: send it as Authorization: Bearer <token>."`
		ExpiresAt time.Time         `json:"expires_at" doc:"The session's absolute end; it also ends after SESSION_TTL without use."`
		TenantID  string            `json:"tenant_id"`
		UserID    string            `json:"user_id"`
		Role      agentapi.UserRole `json:"role"`
	}
}

type sessionInfo struct {
	Body struct {
		TenantID  string            `json:"tenant_id"`
		UserID    string            `json:"user_id"`
		Role      agentapi.UserRole `json:"role"`
		Via       string            `json:"via" enum:"api_key,session"`
		ExpiresAt *time.Time        `json:"expires_at,omitempty"`
	}
}

type logoutOutput struct {
	SetCookie http.Cookie `header:"Set-Cookie"`
}

type revokeOutput struct {
	Body struct {
		Revoked int `json:"revoked" doc:"How many login sessions were ended."`
	}
}

func (v *V1) cookie(token string, expires time.Time) http.Cookie {
	c := http.Cookie{Name: SessionCookie, Value: token, Path: "/", HttpOnly: true, Secure: v.SecureCookies, SameSite: http.SameSiteLaxMode}
	if token == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires
	}
	return c
}

func (v *V1) authRoutes(api huma.API) {
	huma.Register(api, op("login", http.MethodPost, "/v1/auth/login", "Log in with an API key", 400, 401), func(ctx context.Context, in *loginInput) (*loginOutput, error) {
		p, err := v.authn.resolve(ctx, strings.TrimSpace(in.Body.APIKey))
		if err == nil && p.Token != "" {
			err = errBadCredentials // a session token is not an API key
		}
		if err != nil {
			return nil, v.humaError(err)
		}
		token, exp, err := v.Logins.Create(ctx, agentapi.LoginSession{TenantID: p.TenantID, UserID: p.UserID, Role: p.Role, KeyID: p.KeyID})
		if err != nil {
			return nil, v.humaError(err)
		}
		// A revoke that ran between the key check and Create would have
		// missed this session: check again and undo.
		if _, err := v.authn.resolve(ctx, strings.TrimSpace(in.Body.APIKey)); err != nil {
			v.Logins.Revoke(ctx, token)
			return nil, v.humaError(err)
		}
		out := &loginOutput{SetCookie: v.cookie(token, exp)}
		out.Body.Token, out.Body.ExpiresAt, out.Body.TenantID, out.Body.UserID, out.Body.Role = token, exp, p.TenantID, p.UserID, p.Role
		return out, nil
	})
	huma.Register(api, op("logout", http.MethodPost, "/v1/auth/logout", "End this login session", 401), func(ctx context.Context, _ *struct{}) (*logoutOutput, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		if p.Token != "" {
			if err := v.Logins.Revoke(ctx, p.Token); err != nil {
				return nil, v.humaError(err)
			}
		}
		return &logoutOutput{SetCookie: v.cookie("", time.Time{})}, nil
	})
	huma.Register(api, op("get-login-session", http.MethodGet, "/v1/auth/session", "Who am I", 401), func(ctx context.Context, _ *struct{}) (*sessionInfo, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		out := &sessionInfo{}
		out.Body.TenantID, out.Body.UserID, out.Body.Role, out.Body.Via = p.TenantID, p.UserID, p.Role, "api_key"
		if p.Token != "" {
			out.Body.Via = "session"
			exp := p.ExpiresAt
			out.Body.ExpiresAt = &exp
		}
		return out, nil
	})
	huma.Register(api, op("revoke-login-sessions", http.MethodPost, "/v1/auth/sessions/revoke", "End all of my login sessions, on every instance", 401), func(ctx context.Context, _ *struct{}) (*revokeOutput, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		n, err := v.Logins.RevokeUser(ctx, p.TenantID, p.UserID)
		if err != nil {
			return nil, v.humaError(err)
		}
		v.audit(ctx, p, p.TenantID, "sessions.revoke", p.UserID, fmt.Sprintf("%d sessions", n))
		out := &revokeOutput{}
		out.Body.Revoked = n
		return out, nil
	})
}
