// Package agenthttp serves one agent over the HTTP API of the upstream
// AgentAPI: GET /status, GET /messages, POST /message, POST /upload,
// GET /events (SSE), GET /internal/screen (SSE), the chat page and the
// OpenAPI document. Routes, JSON shapes and event names are upstream's, so
// its clients work unchanged; the differences are additions (event IDs
// with Last-Event-ID resume, agent_error events, 409 for a busy agent).
package agenthttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
	"github.com/danielgtaylor/huma/v2/sse"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/agent"
	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// MaxUploadBytes is the largest file POST /upload accepts.
const MaxUploadBytes = 10 << 20

// Defaults of the host and origin checks, as upstream.
var (
	DefaultAllowedHosts   = []string{"localhost", "127.0.0.1", "[::1]"}
	DefaultAllowedOrigins = []string{"http://localhost:3284", "http://localhost:3000", "http://localhost:3001"}
)

// Config configures a Server.
type Config struct {
	// Agent is the agent served. It may be nil only to build the OpenAPI
	// document.
	Agent     *agent.Agent
	AgentType msgfmt.AgentType
	// UploadDir receives files from POST /upload. Required with Agent.
	UploadDir      string
	ChatBasePath   string   // default /chat
	AllowedHosts   []string // host names without ports; "*" allows any
	AllowedOrigins []string // CORS origins; "*" allows any
	Version        string
	Logger         *slog.Logger
	// Embedded skips the host and CORS checks: the server is mounted inside
	// another one (agentapi serve) that does its own.
	Embedded bool
	// UploadOwner, when set, is called on every uploaded file: the agent
	// may run as another user, who must be able to read it.
	UploadOwner func(path string) error
}

// Server is the HTTP handler for one agent.
type Server struct {
	cfg    Config
	router chi.Router
	api    huma.API
	log    *slog.Logger
}

// New builds the handler. It validates the host and origin lists the way
// upstream does, so a list split wrongly (commas in an env value meant to
// be space-separated) is an error rather than a silent lock-out.
func New(cfg Config) (*Server, error) {
	if cfg.ChatBasePath == "" {
		cfg.ChatBasePath = "/chat"
	}
	cfg.ChatBasePath = "/" + strings.Trim(cfg.ChatBasePath, "/")
	if cfg.AllowedHosts == nil {
		cfg.AllowedHosts = DefaultAllowedHosts
	}
	if cfg.AllowedOrigins == nil {
		cfg.AllowedOrigins = DefaultAllowedOrigins
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	hosts, err := ParseAllowedHosts(cfg.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("allowed hosts: %w", err)
	}
	origins, err := ParseAllowedOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("allowed origins: %w", err)
	}
	r := chi.NewMux()
	if !cfg.Embedded {
		r.Use(hostCheck(hosts))
		r.Use(corsHandler(origins))
	}
	hc := huma.DefaultConfig("AgentAPI", cfg.Version)
	hc.Info.Description = "HTTP API for terminal coding agents (Claude Code, Goose, Aider, Codex, Gemini and others)."
	api := humachi.New(r, hc)
	s := &Server{cfg: cfg, router: r, api: api, log: cfg.Logger}
	s.routes()
	return s, nil
}

func corsHandler(origins []string) func(http.Handler) http.Handler {
	return cors.Handler(cors.Options{
		AllowedOrigins:   origins,
		AllowedMethods:   []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"},
		AllowedHeaders:   []string{"Accept", "Authorization", "Content-Type", "X-CSRF-Token", "Last-Event-ID"},
		ExposedHeaders:   []string{"Link"},
		AllowCredentials: true,
		MaxAge:           300,
	})
}

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.router }

// StatusBody is GET /status's answer.
type StatusBody struct {
	Status    agentapi.AgentStatus `json:"status" enum:"stable,running" doc:"'running' while the agent is working or a message is being delivered; 'stable' when it is idle and waiting for input."`
	AgentType string               `json:"agent_type" doc:"Type of the agent being served."`
	Backend   string               `json:"backend" doc:"How the agent is driven: always 'pty'."`
}

// MessageBody is one message in GET /messages.
type MessageBody struct {
	ID      int           `json:"id" doc:"Identifier of the message; also its position in the conversation."`
	Content string        `json:"content" doc:"Message content, without terminal padding."`
	Role    agentapi.Role `json:"role" enum:"user,agent" doc:"Who wrote the message."`
	Time    string        `json:"time" format:"date-time" doc:"When the message was written or last updated."`
}

// MessageRequestBody is POST /message's body.
type MessageRequestBody struct {
	Content string `json:"content" example:"Hello, agent!" doc:"Message content."`
	Type    string `json:"type" enum:"user,raw" doc:"'user': typed into the agent and recorded once the agent's screen reacts; the agent must be 'stable'. 'raw': written to the terminal as keystrokes (escape sequences included), not recorded."`
}

type statusOutput struct{ Body StatusBody }

type messagesOutput struct {
	Body struct {
		Messages []MessageBody `json:"messages" nullable:"false" doc:"The conversation, oldest first."`
	}
}

type messageInput struct{ Body MessageRequestBody }

type okOutput struct {
	Body struct {
		Ok bool `json:"ok" doc:"True when the message was delivered."`
	}
}

type uploadRequest struct {
	File huma.FormFile `form:"file" required:"true" doc:"The file to upload (at most 10 MB)."`
}

type uploadOutput struct {
	Body struct {
		Ok       bool   `json:"ok" doc:"True when the file was saved."`
		FilePath string `json:"filePath" doc:"Where the file was saved, for the agent to read."`
	}
}

type eventsInput struct {
	LastEventID string `header:"Last-Event-ID" doc:"ID of the last event received, to resume a stream without losing or repeating events."`
}

// ScreenUpdate is an /internal/screen event.
type ScreenUpdate struct {
	Screen string `json:"screen"`
}

func (s *Server) routes() {
	huma.Register(s.api, huma.Operation{
		OperationID: "get-status", Method: http.MethodGet, Path: "/status",
		Summary: "Get status", Description: "Returns the current status of the agent. Never waits for a message being delivered.",
	}, s.getStatus)
	huma.Register(s.api, huma.Operation{
		OperationID: "get-messages", Method: http.MethodGet, Path: "/messages",
		Summary: "Get messages", Description: "Returns the conversation history with the agent. Never waits for a message being delivered.",
	}, s.getMessages)
	huma.Register(s.api, huma.Operation{
		OperationID: "post-message", Method: http.MethodPost, Path: "/message",
		Summary: "Send a message", Description: "Sends a message to the agent. A 'user' message needs the agent to be 'stable' (409 otherwise) and returns once the agent's screen reacted; the status is 'running' from then on.",
		Errors: []int{http.StatusBadRequest, http.StatusConflict, http.StatusServiceUnavailable},
	}, s.postMessage)
	huma.Register(s.api, huma.Operation{
		OperationID: "upload-files", Method: http.MethodPost, Path: "/upload",
		Summary: "Upload a file", Description: "Saves a file (at most 10 MB) where the agent can read it and returns its path.",
		MaxBodyBytes: MaxUploadBytes + 1<<20,
		Errors:       []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge},
	}, s.upload)
	sse.Register(s.api, huma.Operation{
		OperationID: "subscribeEvents", Method: http.MethodGet, Path: "/events",
		Summary:     "Subscribe to events",
		Description: "Server-Sent Events. On connect: a message_update per message, then a status_change; after that, changes only. Each event carries an id; reconnect with Last-Event-ID to receive exactly the events missed. agent_error events report problems with the agent itself.",
	}, map[string]any{
		agent.EventMessageUpdate: agent.MessageUpdate{},
		agent.EventStatusChange:  agent.StatusChange{},
		agent.EventAgentError:    agent.AgentError{},
	}, s.events)
	sse.Register(s.api, huma.Operation{
		OperationID: "subscribeScreen", Method: http.MethodGet, Path: "/internal/screen",
		Summary: "Subscribe to the screen", Hidden: true,
	}, map[string]any{"screen": ScreenUpdate{}}, s.screen)

	// Relative redirects, so they also work where this API is mounted under
	// a prefix (a reverse proxy, or /v1/sessions/{id}/ in serve).
	// (http.Redirect would resolve them against the request's path, which
	// is the mounted one.)
	s.router.Get("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", strings.TrimPrefix(s.cfg.ChatBasePath, "/")+"/")
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	s.router.Get(s.cfg.ChatBasePath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", path.Base(s.cfg.ChatBasePath)+"/")
		w.WriteHeader(http.StatusMovedPermanently)
	})
	s.router.Get(s.cfg.ChatBasePath+"/*", s.chat)
}

func (s *Server) need() (*agent.Agent, error) {
	if s.cfg.Agent == nil {
		return nil, huma.Error503ServiceUnavailable("no agent")
	}
	return s.cfg.Agent, nil
}

func (s *Server) getStatus(ctx context.Context, _ *struct{}) (*statusOutput, error) {
	a, err := s.need()
	if err != nil {
		return nil, err
	}
	return &statusOutput{Body: StatusBody{Status: a.Status(), AgentType: string(s.cfg.AgentType), Backend: "pty"}}, nil
}

func (s *Server) getMessages(ctx context.Context, _ *struct{}) (*messagesOutput, error) {
	a, err := s.need()
	if err != nil {
		return nil, err
	}
	out := &messagesOutput{}
	out.Body.Messages = []MessageBody{}
	for _, m := range a.Messages() {
		out.Body.Messages = append(out.Body.Messages, MessageBody{ID: m.ID, Content: m.Content, Role: m.Role, Time: m.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")})
	}
	return out, nil
}

func (s *Server) postMessage(ctx context.Context, in *messageInput) (*okOutput, error) {
	a, err := s.need()
	if err != nil {
		return nil, err
	}
	switch in.Body.Type {
	case "user":
		err = a.Send(ctx, in.Body.Content)
	case "raw":
		err = a.SendRaw(in.Body.Content)
	default:
		return nil, huma.Error400BadRequest(fmt.Sprintf("type %q: want \"user\" or \"raw\"", in.Body.Type))
	}
	if err != nil {
		return nil, problem(err)
	}
	out := &okOutput{}
	out.Body.Ok = true
	return out, nil
}

// problem maps an agent error to its HTTP status, with its message as the
// detail. Unclassified errors say nothing of their internals.
func problem(err error) error {
	var e *agentapi.Error
	switch k := agentapi.KindOf(err); k {
	case agentapi.KindInvalid:
		return huma.Error400BadRequest(detail(err, e))
	case agentapi.KindConflict:
		return huma.Error409Conflict(detail(err, e))
	case agentapi.KindUnavailable:
		return huma.Error503ServiceUnavailable(detail(err, e))
	}
	return huma.Error500InternalServerError("internal error")
}

func detail(err error, e *agentapi.Error) string {
	if errors.As(err, &e) && e.Err != nil {
		return e.Err.Error()
	}
	return err.Error()
}

func (s *Server) upload(ctx context.Context, in *struct {
	RawBody huma.MultipartFormFiles[uploadRequest]
}) (*uploadOutput, error) {
	if _, err := s.need(); err != nil {
		return nil, err
	}
	f := in.RawBody.Data().File
	buf, err := io.ReadAll(io.LimitReader(f, MaxUploadBytes+1))
	if err != nil {
		return nil, huma.Error400BadRequest("reading the file: " + err.Error())
	}
	if len(buf) > MaxUploadBytes {
		return nil, huma.Error413RequestEntityTooLarge(fmt.Sprintf("the file is larger than %d MB", MaxUploadBytes>>20))
	}
	name := safeName(f.Filename)
	path, err := writeUnique(s.cfg.UploadDir, name, buf)
	if err == nil && s.cfg.UploadOwner != nil {
		if err = s.cfg.UploadOwner(path); err != nil {
			os.Remove(path)
		}
	}
	if err != nil {
		s.log.Error("saving an upload failed", "error", err)
		return nil, huma.Error500InternalServerError("saving the file failed")
	}
	out := &uploadOutput{}
	out.Body.Ok, out.Body.FilePath = true, path
	return out, nil
}

// safeName keeps a file name's base, without path separators or control
// characters, so an upload can never land outside the upload directory.
func safeName(name string) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.Map(func(r rune) rune {
		if r == '/' || unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	if name == "" || name == "." || name == ".." {
		name = "upload"
	}
	return name
}

// writeUnique writes data to dir/name, or dir/name-N.ext when name is taken.
func writeUnique(dir, name string, data []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < 1000; i++ {
		candidate := name
		if i > 0 {
			candidate = stem + "-" + strconv.Itoa(i) + ext
		}
		path := filepath.Join(dir, candidate)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, werr := f.Write(data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return "", werr
		}
		return path, nil
	}
	return "", errors.New("too many files with the same name")
}

func (s *Server) events(ctx context.Context, in *eventsInput, send sse.Sender) {
	a, err := s.need()
	if err != nil {
		return
	}
	last, _ := strconv.ParseInt(strings.TrimSpace(in.LastEventID), 10, 64)
	first, ch, cancel := a.Subscribe(last)
	defer cancel()
	for _, ev := range first {
		if send(sse.Message{ID: int(ev.ID), Data: ev.Data}) != nil {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return // the client fell behind or the agent closed: it reconnects and resumes
			}
			if send(sse.Message{ID: int(ev.ID), Data: ev.Data}) != nil {
				return
			}
		}
	}
}

func (s *Server) screen(ctx context.Context, _ *struct{}, send sse.Sender) {
	a, err := s.need()
	if err != nil {
		return
	}
	cur, ch, cancel := a.SubscribeScreen()
	defer cancel()
	if send.Data(ScreenUpdate{Screen: cur}) != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.Closed():
			return // the session ended: end the stream too
		case scr := <-ch:
			if send.Data(ScreenUpdate{Screen: scr}) != nil {
				return
			}
		}
	}
}

// OpenAPI returns the API description as OpenAPI 3.0 JSON, with lists
// sorted so the output is stable across runs (it is checked in).
func (s *Server) OpenAPI() ([]byte, error) {
	raw, err := s.api.OpenAPI().Downgrade()
	if err != nil {
		return nil, err
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	normalize(doc)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func normalize(v any) {
	switch t := v.(type) {
	case map[string]any:
		for _, e := range t {
			normalize(e)
		}
	case []any:
		for _, e := range t {
			normalize(e)
		}
		sort.SliceStable(t, func(i, j int) bool {
			a, _ := json.Marshal(t[i])
			b, _ := json.Marshal(t[j])
			return string(a) < string(b)
		})
	}
}

// ParseAllowedHosts checks a host allow-list: host names (or IPs, IPv6 in
// brackets) without scheme, port, spaces or commas; "*" allows any host.
func ParseAllowedHosts(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("the list is empty")
	}
	if slices.Contains(in, "*") {
		return []string{"*"}, nil
	}
	out := make([]string, 0, len(in))
	for _, h := range in {
		if strings.ContainsFunc(h, unicode.IsSpace) || strings.Contains(h, ",") {
			return nil, fmt.Errorf("%q contains spaces or commas: give one host per entry", h)
		}
		if strings.Contains(h, "://") {
			return nil, fmt.Errorf("%q must not include a scheme such as http://", h)
		}
		u, err := url.Parse("http://" + h)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("%q is not a host name", h)
		}
		if u.Port() != "" {
			return nil, fmt.Errorf("%q must not include a port", h)
		}
		out = append(out, strings.ToLower(u.Hostname()))
	}
	return out, nil
}

// ParseAllowedOrigins checks a CORS origin list (scheme://host[:port]);
// "*" allows any origin.
func ParseAllowedOrigins(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, errors.New("the list is empty")
	}
	if slices.Contains(in, "*") {
		return []string{"*"}, nil
	}
	out := make([]string, 0, len(in))
	for _, o := range in {
		if strings.ContainsFunc(o, unicode.IsSpace) || strings.Contains(o, ",") {
			return nil, fmt.Errorf("%q contains spaces or commas: give one origin per entry", o)
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("%q is not an origin such as http://localhost:3284", o)
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	return out, nil
}

// hostCheck refuses requests whose Host header (port ignored) is not
// allowed, which keeps DNS-rebinding pages away from a local agent.
func hostCheck(allowed []string) func(http.Handler) http.Handler {
	anyHost := slices.Contains(allowed, "*")
	set := map[string]bool{}
	for _, h := range allowed {
		set[h] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if anyHost {
				next.ServeHTTP(w, r)
				return
			}
			if u, err := url.Parse("http://" + r.Host); err == nil && r.Host != "" && set[strings.ToLower(u.Hostname())] {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{
				"title": "Bad Request", "status": http.StatusBadRequest,
				"detail": "invalid Host header; allowed hosts: " + strings.Join(allowed, ", ") + " (set --allowed-hosts)",
			})
		})
	}
}
