package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/runner"
)

// fuzzPlane is the control plane of newPlane, built for a fuzz target
// (testing.TB, set up once per fuzzing process) and served in-process
// without a listener. Its catalog has one agent, "broken", whose command
// does not exist: POST /v1/sessions goes all the way to starting it and
// fails, so no agent ever runs while fuzzing.
type fuzzPlane struct {
	handler    http.Handler
	api        huma.API
	rootKey    string // API key of the platform admin
	tenant     string // a tenant the requests act on
	user       string // a user of tenant
	rootUserID string
}

func newFuzzPlane(tb testing.TB, databaseURL string) *fuzzPlane {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	catalog := runner.Catalog{"broken": runner.Agent{Type: "custom", Command: []string{filepath.Join(dir, "no-such-agent")}}}
	a := assemble(tb, databaseURL, catalog, filepath.Join(dir, "no-such-binary"))
	db, router, api := a.db, a.router, a.api

	now := time.Now().UTC()
	seed := func(tenant, name string, role agentapi.UserRole) (userID, secret string) {
		u := agentapi.User{ID: agentapi.NewID("usr"), TenantID: tenant, Name: name, Role: role, CreatedAt: now, UpdatedAt: now}
		if err := db.CreateUser(ctx, u); err != nil {
			tb.Fatal(err)
		}
		secret, prefix, hash := auth.NewAPIKey()
		if err := db.CreateAPIKey(ctx, agentapi.APIKey{ID: agentapi.NewID("key"), TenantID: tenant, UserID: u.ID, Prefix: prefix, Hash: hash, CreatedAt: now}); err != nil {
			tb.Fatal(err)
		}
		return u.ID, secret
	}
	for _, t := range []agentapi.Tenant{
		{ID: agentapi.PlatformTenantID, Name: "Platform", CreatedAt: now, UpdatedAt: now},
		{ID: "fuzz-tenant", Name: "Fuzz", CreatedAt: now, UpdatedAt: now},
	} {
		if err := db.CreateTenant(ctx, t); err != nil {
			tb.Fatal(err)
		}
	}
	p := &fuzzPlane{handler: router, api: api, tenant: "fuzz-tenant"}
	p.rootUserID, p.rootKey = seed(agentapi.PlatformTenantID, "root", agentapi.RolePlatformAdmin)
	p.user, _ = seed("fuzz-tenant", "member", agentapi.RoleMember)
	return p
}

// fuzzRoute is one route that takes a request body.
type fuzzRoute struct {
	method, path string
	id           string
}

// bodyRoutes lists the POST, PUT and PATCH operations of the OpenAPI
// document, sorted so that a fuzzed index always means the same route.
func (p *fuzzPlane) bodyRoutes() []fuzzRoute {
	var out []fuzzRoute
	for path, item := range p.api.OpenAPI().Paths {
		for method, op := range map[string]*huma.Operation{http.MethodPost: item.Post, http.MethodPut: item.Put, http.MethodPatch: item.Patch} {
			if op != nil {
				out = append(out, fuzzRoute{method: method, path: path, id: op.OperationID})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

var pathParam = regexp.MustCompile(`\{[a-z]+\}`)

// fillPath puts real ids in route's path parameters: the fuzzed tenant,
// its user, a flag, secret or breaker name. param, when set, replaces the
// last parameter; it never names the platform tenant or its admin, whom
// the fuzzer must not rename, demote or lock out (the API refuses to
// disable the platform tenant, but a quota or a rename of root would
// still change every later request).
func (p *fuzzPlane) fillPath(r fuzzRoute, param string) string {
	params := pathParam.FindAllStringIndex(r.path, -1)
	var b strings.Builder
	prev := 0
	for i, loc := range params {
		b.WriteString(r.path[prev:loc[0]])
		prev = loc[1]
		v := map[string]string{"{tenant}": p.tenant, "{user}": p.user, "{name}": "FUZZ_NAME", "{key}": "key_none", "{id}": "ses_none"}[r.path[loc[0]:loc[1]]]
		if r.id == "put-global-flag" || r.id == "put-tenant-flag" {
			v = strings.ReplaceAll(v, "FUZZ_NAME", "fuzz_flag")
		}
		if i == len(params)-1 && param != "" && param != agentapi.PlatformTenantID && param != p.rootUserID {
			v = param
		}
		b.WriteString(url.PathEscape(v))
	}
	b.WriteString(r.path[prev:])
	return b.String()
}

// FuzzRequestBodies sends arbitrary bodies to every route that takes one
// (POST, PUT and PATCH operations of the OpenAPI document) as the platform
// admin, on the real router: SQLite, memory login sessions, tenant
// configuration, usage metering, the response cache. The server must never
// answer 500 (nor any 5xx but a 503 from a breaker or a store it cannot
// reach) and never panic; every error is problem+json naming its own
// status; a success carries JSON; the admin's key is never echoed.
//
// The session sub-API (/v1/sessions/{id}/...) is not covered: it needs a
// running agent, which costs a process per session.
func FuzzRequestBodies(f *testing.F) {
	fuzzRequestBodies(f, newFuzzPlane(f, ""))
}

// FuzzRequestBodiesPostgres is FuzzRequestBodies on PostgreSQL, which
// refuses some text SQLite stores (NUL characters). It starts a private
// server (or uses DATABASE_TEST_URL), as the sql package's tests do.
func FuzzRequestBodiesPostgres(f *testing.F) {
	fuzzRequestBodies(f, newFuzzPlane(f, pgtest.URL(f)))
}

func fuzzRequestBodies(f *testing.F, p *fuzzPlane) {
	routes := p.bodyRoutes()
	if len(routes) < 10 {
		f.Fatalf("only %d routes with a body: %v", len(routes), routes)
	}
	index := map[string]uint8{}
	for i, r := range routes {
		index[r.id] = uint8(i)
	}
	seeds := map[string][]string{
		"login":                 {`{"api_key":"` + p.rootKey + `"}`, `{"api_key":"agk_` + strings.Repeat("0", 43) + `"}`, `{"api_key":""}`, `{}`},
		"logout":                {``, `{}`},
		"revoke-login-sessions": {``},
		"create-tenant":         {`{"name":"Acme","id":"acme"}`, `{"name":"Acme"}`, `{"name":""}`, `{"name":"x","id":"UPPER"}`, `{"name":"x","id":"platform"}`, `{"name":"a\u0000b"}`},
		"update-tenant":         {`{"name":"Renamed"}`, `{"disabled":true}`, `{"disabled":false}`, `{"name":null}`, `{}`},
		"create-user":           {`{"name":"bob","role":"member"}`, `{"name":"bob","role":"platform_admin"}`, `{"name":"bob","role":"god"}`, `{"name":"bob"}`},
		"update-user":           {`{"role":"admin"}`, `{"name":"new name"}`, `{"role":"platform_admin"}`},
		"create-api-key":        {`{"name":"ci"}`, `{}`, ``},
		"reset-breaker":         {``, `{}`},
		"put-tenant-config":     {`{"max_sessions":2,"allowed_agents":["broken"],"flags":{"raw_input":{"enabled":true}}}`, `{"allowed_agents":["nope"]}`, `{"rate_limit_per_minute":-1}`, `{"monthly_message_quota":9223372036854775807}`, `{"version":5}`},
		"put-tenant-flag":       {`{"enabled":true}`, `{"enabled":true,"percent":50}`, `{"percent":101}`},
		"put-global-flag":       {`{"enabled":false}`, `{"enabled":true,"percent":0}`},
		"put-secret":            {`{"value":"s3cret"}`, `{"value":""}`},
		"create-session":        {`{"agent_type":"broken"}`, `{"agent_type":"claude"}`, `{"agent_type":"broken","name":"` + strings.Repeat("n", 201) + `"}`, `{"agent_type":""}`},
	}
	for id, bodies := range seeds {
		i, ok := index[id]
		if !ok {
			f.Fatalf("no route %s among %v", id, routes)
		}
		for _, b := range bodies {
			f.Add(i, []byte(b), "", uint8(0))
		}
	}
	for _, generic := range []string{`null`, `[]`, `"x"`, `{"a":`, `{"name":1}`, "\xff", `{"name":"a","name":"b"}`} {
		f.Add(index["create-tenant"], []byte(generic), "", uint8(0))
	}
	f.Add(index["update-user"], []byte(`{"role":"member"}`), "usr_missing", uint8(0))
	f.Add(index["put-secret"], []byte(`{"value":"v"}`), "BAD NAME", uint8(0))
	f.Add(index["put-tenant-flag"], []byte(`{"enabled":true}`), "Bad Flag!", uint8(0))
	f.Add(index["create-tenant"], []byte(`{"name":"x"}`), "", uint8(1))
	f.Add(index["create-tenant"], []byte(`{"name":"x"}`), "", uint8(3))
	f.Add(index["update-tenant"], []byte(`{"name":"x"}`), "", uint8(2))

	f.Fuzz(func(t *testing.T, route uint8, body []byte, param string, ctype uint8) {
		r := routes[int(route)%len(routes)]
		target := p.fillPath(r, param)
		req := httptest.NewRequest(r.method, target, bytes.NewReader(body))
		switch ctype % 4 {
		case 0:
			req.Header.Set("Content-Type", "application/json")
		case 1: // none
		case 2:
			req.Header.Set("Content-Type", "application/merge-patch+json")
		case 3:
			req.Header.Set("Content-Type", "text/plain")
		}
		req.Header.Set("Authorization", "Bearer "+p.rootKey)
		rec := httptest.NewRecorder()
		p.handler.ServeHTTP(rec, req)

		what := r.method + " " + target + " " + string(body)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s: %d %s", what, rec.Code, rec.Body.String())
		}
		if strings.Contains(rec.Body.String(), p.rootKey) || strings.Contains(rec.Header().Get("Set-Cookie"), p.rootKey) {
			t.Fatalf("%s: the answer shows the admin's API key", what)
		}
		if rec.Code >= 400 {
			if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, "problem+json") {
				t.Fatalf("%s: %d with Content-Type %q, want problem+json: %s", what, rec.Code, ct, rec.Body.String())
			}
			var prob struct {
				Status int    `json:"status"`
				Title  string `json:"title"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &prob); err != nil || prob.Status != rec.Code || prob.Title == "" {
				t.Fatalf("%s: %d with problem %q (%v)", what, rec.Code, rec.Body.String(), err)
			}
			return
		}
		if b := bytes.TrimSpace(rec.Body.Bytes()); len(b) > 0 && !json.Valid(b) {
			t.Fatalf("%s: %d with a body that is not JSON: %q", what, rec.Code, b)
		}
	})
}
