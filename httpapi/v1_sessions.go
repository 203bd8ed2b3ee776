package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-chi/chi/v5"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/runner"
)

type createSessionInput struct {
	Body struct {
		AgentType     string `json:"agent_type" minLength:"1" maxLength:"100" doc:"An agent from the operator's catalog (GET /v1/agents)."`
		Name          string `json:"name,omitempty" maxLength:"200"`
		InitialPrompt string `json:"initial_prompt,omitempty" maxLength:"65536" doc:"Sent to the agent once it is ready."`
	}
}

type sessionBody struct{ Body agentapi.AgentSession }

type sessionsBody struct {
	Body struct {
		Sessions []agentapi.AgentSession `json:"sessions" nullable:"false"`
	}
}

type sessionPath struct {
	ID string `path:"id" maxLength:"100"`
}

type agentsBody struct {
	Body struct {
		Agents []string `json:"agents" nullable:"false"`
	}
}

var errSessionMissing = agentapi.E("sessions", agentapi.KindNotFound, errors.New("no such agent session"))

// visibleSession loads a session the caller may see: their own, or any of
// their tenant's for a tenant admin. Anything else is "not found".
func (v *V1) visibleSession(ctx context.Context, p *Principal, id string) (agentapi.AgentSession, error) {
	s, err := v.Sessions.GetAgentSession(ctx, p.TenantID, id)
	if err != nil {
		return s, err
	}
	if s.UserID != p.UserID && p.Role != agentapi.RoleAdmin && !p.Platform() {
		return s, errSessionMissing
	}
	return s, nil
}

func (v *V1) sessionRoutes(api huma.API) {
	huma.Register(api, op("list-agents", http.MethodGet, "/v1/agents", "Agents this server can run", 401), func(ctx context.Context, _ *struct{}) (*agentsBody, error) {
		if _, err := v.principal(ctx); err != nil {
			return nil, err
		}
		out := &agentsBody{}
		out.Body.Agents = v.Catalog.Names()
		return out, nil
	})
	huma.Register(api, op("create-session", http.MethodPost, "/v1/sessions", "Start an agent session", 400, 401, 429, 503), func(ctx context.Context, in *createSessionInput) (*sessionBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		s, err := v.Runner.Start(ctx, p.TenantID, p.UserID, runner.StartRequest{Agent: in.Body.AgentType, Name: in.Body.Name, InitialPrompt: in.Body.InitialPrompt})
		if err != nil {
			return nil, v.humaError(err)
		}
		return &sessionBody{Body: s}, nil
	})
	huma.Register(api, op("list-sessions", http.MethodGet, "/v1/sessions", "List agent sessions (yours; all of the tenant's for admins)", 401), func(ctx context.Context, _ *struct{}) (*sessionsBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		user := p.UserID
		if p.Role == agentapi.RoleAdmin || p.Platform() {
			user = ""
		}
		ss, err := v.Sessions.ListAgentSessions(ctx, p.TenantID, user)
		if err != nil {
			return nil, v.humaError(err)
		}
		out := &sessionsBody{}
		out.Body.Sessions = append([]agentapi.AgentSession{}, ss...)
		return out, nil
	})
	huma.Register(api, op("get-session", http.MethodGet, "/v1/sessions/{id}", "Get an agent session", 401, 404), func(ctx context.Context, in *sessionPath) (*sessionBody, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		s, err := v.visibleSession(ctx, p, in.ID)
		if err != nil {
			return nil, v.humaError(err)
		}
		return &sessionBody{Body: s}, nil
	})
	huma.Register(api, op("stop-session", http.MethodDelete, "/v1/sessions/{id}", "Stop an agent session (its transcript stays)", 401, 404, 409), func(ctx context.Context, in *sessionPath) (*struct{}, error) {
		p, err := v.principal(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := v.visibleSession(ctx, p, in.ID); err != nil {
			return nil, v.humaError(err)
		}
		if err := v.Runner.Stop(ctx, p.TenantID, in.ID); err != nil {
			return nil, v.humaError(err)
		}
		return nil, nil
	})
}

// sessionAPI serves /v1/sessions/{id}/... with the single-agent API of a
// running session. A session that has ended still answers GET messages
// from its transcript; its other routes are 409.
func (v *V1) sessionAPI(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="agentapi"`)
		WriteError(w, errNoCredentials)
		return
	}
	id := chi.URLParam(r, "id")
	rest := "/" + chi.URLParam(r, "*")
	s, err := v.visibleSession(r.Context(), p, id)
	if err != nil {
		WriteError(w, err)
		return
	}
	if h, ok := v.Runner.Handler(p.TenantID, id); ok {
		call := classify(r, rest)
		served, ok := v.admitSessionCall(w, r, p, call)
		if !ok {
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		switch {
		case call.message:
			v.serveRecorded(w, r2, h, p, id, served)
		case rest == "/messages" && r.Method == http.MethodGet:
			// What a client reads is stored first, so that it is never
			// lost; with the database down it is shown anyway (and stored
			// once the database answers).
			held := cache.NewRecorder()
			h.ServeHTTP(held, r2)
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			v.Runner.Record(ctx, p.TenantID, id)
			cancel()
			held.Send(w)
		case call.upload != nil:
			rec := &statusRecorder{ResponseWriter: w}
			h.ServeHTTP(rec, r2)
			served(rec.status)
		default:
			h.ServeHTTP(w, r2) // streams (events) keep the plain writer
		}
		return
	}
	if rest == "/messages" && r.Method == http.MethodGet {
		msgs, err := v.Sessions.Messages(r.Context(), p.TenantID, id)
		if err != nil {
			WriteError(w, err)
			return
		}
		out := make([]map[string]any, 0, len(msgs))
		for _, m := range msgs {
			out = append(out, map[string]any{"id": m.ID, "content": m.Content, "role": m.Role, "time": m.Time})
		}
		// A stored transcript changes only through writes that invalidate
		// its cached copy: it may be cached (see v1_cache.go).
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"messages": out})
		return
	}
	state := strings.ReplaceAll(s.State, "_", " ")
	WriteError(w, agentapi.E("sessions", agentapi.KindConflict, errors.New("the agent session is "+state+"; only GET messages (its transcript) is available")))
}

// recordTimeout bounds how long acknowledging a message waits for its
// transcript to be stored (the database may be restarting).
const recordTimeout = 10 * time.Second

// serveRecorded delivers a message to a running session's agent and
// acknowledges it only once the transcript holding it is stored: an
// acknowledged message is never lost, even if this instance dies the next
// moment. If the store does not take it within recordTimeout the answer is
// 503 -- the agent has the message, and the transcript is stored once the
// database answers again, unless this instance dies first.
func (v *V1) serveRecorded(w http.ResponseWriter, r *http.Request, h http.Handler, p *Principal, id string, served func(int)) {
	held := cache.NewRecorder()
	h.ServeHTTP(held, r)
	served(held.Status())
	if held.Status()/100 == 2 {
		ctx, cancel := context.WithTimeout(r.Context(), recordTimeout)
		err := v.Runner.Record(ctx, p.TenantID, id)
		cancel()
		// KindNotFound: the session ended meanwhile (the agent exited, a
		// stop), and its end stored the whole transcript.
		if err != nil && agentapi.KindOf(err) != agentapi.KindNotFound {
			v.Log.Error("a message was delivered but its transcript could not be stored in time", "session", id, "error", err)
			WriteError(w, agentapi.E("sessions.message", agentapi.KindUnavailable,
				errors.New("the agent received the message, but the database could not record it in time; do not resend it -- the transcript is stored once the database answers")))
			return
		}
	}
	held.Send(w)
}
