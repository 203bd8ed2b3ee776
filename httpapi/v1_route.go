package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cluster"
)

// Session routing between instances. An agent session runs on one
// instance (its record's Instance); the others forward requests for it
// there, streams included, so a client can talk to any instance. A new
// session is placed on the least-loaded live instance. The forwarded
// request is signed (cluster.Signer) and carries the principal the first
// instance authenticated; the owner neither limits nor counts it again.
//
// Forwarded: POST /v1/sessions (placement), DELETE /v1/sessions/{id} and
// every /v1/sessions/{id}/... route of a session running elsewhere. Reads
// of records (GET /v1/sessions, GET /v1/sessions/{id}) are answered by any
// instance from the database. A session whose instance is not live is
// answered here from its record and transcript until it is marked lost.

var errOwnerUnreachable = agentapi.E("sessions", agentapi.KindUnavailable, errors.New("the instance running this agent session cannot be reached; try again shortly"))

// RouteSessions is the middleware that forwards session requests to the
// instance that runs (or should run) the session. It runs after
// authentication, the limits and the usage meter. Without a cluster it is
// a no-op.
func (v *V1) RouteSessions(next http.Handler) http.Handler {
	if v.Cluster == nil || v.Signer == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalFrom(r.Context())
		if p == nil || p.Forwarded || !strings.HasPrefix(r.URL.Path, "/v1/sessions") {
			next.ServeHTTP(w, r)
			return
		}
		target, ok := v.owner(w, r, p)
		if !ok {
			return // answered
		}
		if target == "" {
			next.ServeHTTP(w, r)
			return
		}
		v.forward(w, r, p, target)
	})
}

// owner decides where r goes: "" for here, or the URL of another
// instance. It answers the request itself (ok false) when it cannot.
func (v *V1) owner(w http.ResponseWriter, r *http.Request, p *Principal) (target string, ok bool) {
	self := v.Cluster.Self()
	if r.URL.Path == "/v1/sessions" {
		if r.Method != http.MethodPost {
			return "", true
		}
		in, found := v.Cluster.Place()
		if !found || in.ID == self {
			return "", true
		}
		return in.URL, true
	}
	id, sub, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/sessions/"), "/")
	if id == "" || (sub == "" && r.Method != http.MethodDelete) {
		return "", true
	}
	if _, live := v.Runner.Handler(p.TenantID, id); live {
		return "", true
	}
	s, err := v.visibleSession(r.Context(), p, id)
	if err != nil || s.State != agentapi.SessionRunning || s.Instance == self {
		return "", true // the local route answers (404, 409, transcript)
	}
	in, live := v.Cluster.Lookup(s.Instance)
	if !live {
		return "", true
	}
	return in.URL, true
}

// forward proxies r to the instance at base, signed as p.
func (v *V1) forward(w http.ResponseWriter, r *http.Request, p *Principal, base string) {
	u, err := url.Parse(base)
	if err != nil {
		WriteError(w, errOwnerUnreachable)
		return
	}
	principal, _ := json.Marshal(forwardedPrincipal{TenantID: p.TenantID, UserID: p.UserID, Role: p.Role, KeyID: p.KeyID})
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
			// The owner trusts the signed principal, not the client's
			// credentials, which stay here.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			v.Signer.Sign(pr.Out.Header, pr.Out.Method, pr.Out.URL.RequestURI(), principal, time.Now())
		},
		FlushInterval: -1, // event streams go through as they are written
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			v.Log.Warn("forwarding a session request failed", "to", base, "path", r.URL.Path, "error", err)
			WriteError(w, errOwnerUnreachable)
		},
	}
	proxy.ServeHTTP(w, r)
}

type instancesBody struct {
	Body struct {
		Self      string             `json:"self" doc:"The instance that answered."`
		Instances []cluster.Instance `json:"instances" nullable:"false" doc:"Live instances as this one saw them at its last renewal."`
	}
}

func (v *V1) instanceRoutes(api huma.API) {
	huma.Register(api, op("list-instances", http.MethodGet, "/v1/admin/instances", "Live server instances, their load and whether they drain (platform admins)", 401, 403), func(ctx context.Context, _ *struct{}) (*instancesBody, error) {
		if _, err := v.platform(ctx); err != nil {
			return nil, err
		}
		out := &instancesBody{}
		out.Body.Instances = []cluster.Instance{}
		if v.Cluster != nil {
			out.Body.Self = v.Cluster.Self()
			out.Body.Instances = v.Cluster.Live()
		}
		return out, nil
	})
}
