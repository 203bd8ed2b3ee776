package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
	"github.com/go-chi/chi/v5"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/breaker"
	"github.com/agentapi-mt/agentapi/cache"
	"github.com/agentapi-mt/agentapi/cluster"
	"github.com/agentapi-mt/agentapi/internal/testproc"
	"github.com/agentapi-mt/agentapi/memory"
	"github.com/agentapi-mt/agentapi/runner"
	"github.com/agentapi-mt/agentapi/sql"
	"github.com/agentapi-mt/agentapi/tenantcfg"
	"github.com/agentapi-mt/agentapi/usage"
)

// plane is a control plane in-process: SQLite, memory login sessions, and
// the runner with the demo agent (this test binary re-run as demo-agent).
type plane struct {
	t      *testing.T
	srv    *httptest.Server
	db     *sql.DB
	logins *auth.Sessions
	mgr    *runner.Manager
	v1     *V1
	keys   map[string]string // actor name -> API key
	users  map[string]agentapi.User
}

// assembled is a control plane wired as serve wires it, in-process:
// SQLite (or the PostgreSQL at databaseURL), memory login sessions, memory
// usage and response caches, and a runner with catalog.
type assembled struct {
	router chi.Router
	api    huma.API
	v1     *V1
	db     *sql.DB
	logins *auth.Sessions
	mgr    *runner.Manager
}

func assemble(tb testing.TB, databaseURL string, catalog runner.Catalog, self string) *assembled {
	tb.Helper()
	dir := tb.TempDir()
	db, err := sql.Open(context.Background(), databaseURL, filepath.Join(dir, "agentapi.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	kr, err := auth.NewKeyring(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	ms := memory.NewSessionStore(time.Now, time.Minute)
	tb.Cleanup(func() { ms.Close() })
	logins := auth.NewSessions(ms, kr, time.Hour, 24*time.Hour, time.Now)
	breakers := breaker.NewRegistry(breaker.Settings{FailureThreshold: 3, SuccessThreshold: 1, Timeout: time.Hour}, breaker.Options{
		IsFailure: func(err error) bool { return agentapi.KindOf(err) == agentapi.KindUnavailable },
	})
	cfg := tenantcfg.New(tenantcfg.Options{Store: db})
	tb.Cleanup(cfg.Close)
	responses := cache.NewLoader("responses", cache.NewMemory(cache.MemoryOptions{}), cache.LoaderOptions{})
	tb.Cleanup(func() { responses.Close() })
	changed := SessionInvalidator(responses, slog.New(slog.DiscardHandler))
	mgr := runner.New(runner.Options{Store: db, Catalog: catalog, WorkRoot: filepath.Join(dir, "work"), Instance: "test", Self: self, MaxPerUser: 3, SettleWindow: 300 * time.Millisecond, Env: runner.SecretEnv(db, kr), Breakers: breakers, Tenant: cfg.Config, Changed: changed})
	tb.Cleanup(mgr.Close)
	meter, err := usage.New(usage.Options{Store: usage.NewMemory(usage.MemoryOptions{}), DB: db, PushInterval: -1, FlushInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { meter.Close(context.Background()) })
	v1 := &V1{Tenants: db, Users: db, Keys: db, Sessions: db, Audit: db, Secrets: db, Keyring: kr, Logins: logins, Runner: mgr, Catalog: catalog, Breakers: breakers, Config: cfg, Usage: meter, Responses: responses, Signer: cluster.NewSigner(bytes.Repeat([]byte{7}, 32))}
	router := NewRouter(NewHealth("test"), v1.Authenticate(), v1.Meter, v1.CacheReads)
	api := humachi.New(router, huma.DefaultConfig("test", "test"))
	v1.Mount(router, api)
	return &assembled{router: router, api: api, v1: v1, db: db, logins: logins, mgr: mgr}
}

func newPlane(t *testing.T) *plane {
	t.Helper()
	self, _ := os.Executable()
	catalog := runner.DefaultCatalog()
	// "env" is a custom agent that prints its environment: the secrets test
	// reads what an agent receives.
	catalog["env"] = runner.Agent{Type: "custom", Command: []string{"/bin/sh", "-c", "env | sort; sleep 30"}}
	// "broken" cannot start: its breaker opens.
	catalog["broken"] = runner.Agent{Type: "custom", Command: []string{filepath.Join(t.TempDir(), "no-such-agent")}}
	a := assemble(t, "", catalog, self)
	p := &plane{t: t, v1: a.v1, srv: httptest.NewServer(a.router), db: a.db, logins: a.logins, mgr: a.mgr, keys: map[string]string{}, users: map[string]agentapi.User{}}
	t.Cleanup(p.srv.Close)

	// The platform admin, seeded directly as bootstrap would.
	now := time.Now().UTC()
	must(t, a.db.CreateTenant(context.Background(), agentapi.Tenant{ID: agentapi.PlatformTenantID, Name: "Platform", CreatedAt: now, UpdatedAt: now}))
	p.seedUser("root", agentapi.PlatformTenantID, agentapi.RolePlatformAdmin)
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (p *plane) seedUser(name, tenant string, role agentapi.UserRole) {
	now := time.Now().UTC()
	u := agentapi.User{ID: agentapi.NewID("usr"), TenantID: tenant, Name: name, Role: role, CreatedAt: now, UpdatedAt: now}
	must(p.t, p.db.CreateUser(context.Background(), u))
	secret, prefix, hash := auth.NewAPIKey()
	must(p.t, p.db.CreateAPIKey(context.Background(), agentapi.APIKey{ID: agentapi.NewID("key"), TenantID: tenant, UserID: u.ID, Prefix: prefix, Hash: hash, CreatedAt: now}))
	p.keys[name], p.users[name] = secret, u
}

// do sends a request as actor ("" for none) and decodes a JSON answer.
func (p *plane) do(actor, method, path string, body any) (int, map[string]any) {
	p.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, p.srv.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if actor != "" {
		cred := p.keys[actor]
		if cred == "" {
			cred = actor // a raw token
		}
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &out)
	if resp.StatusCode >= 400 && !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		p.t.Errorf("%s %s: %d answered %q, want problem+json", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, out
}

func TestIsolationMatrix(t *testing.T) {
	p := newPlane(t)
	for _, tenant := range []string{"acme", "globex"} {
		if code, body := p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": tenant, "name": tenant}); code != 200 {
			t.Fatalf("create tenant %s: %d %v", tenant, code, body)
		}
	}
	p.seedUser("acme-admin", "acme", agentapi.RoleAdmin)
	p.seedUser("acme-member", "acme", agentapi.RoleMember)
	p.seedUser("acme-member2", "acme", agentapi.RoleMember)
	p.seedUser("globex-admin", "globex", agentapi.RoleAdmin)
	p.seedUser("globex-member", "globex", agentapi.RoleMember)

	// A session per tenant, owned by a member.
	_, acmeSess := p.do("acme-member", "POST", "/v1/sessions", map[string]string{"agent_type": "echo", "name": "acme work"})
	_, globexSess := p.do("globex-member", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
	acmeID, globexID := acmeSess["id"].(string), globexSess["id"].(string)
	if acmeID == "" || globexID == "" {
		t.Fatalf("sessions: %v %v", acmeSess, globexSess)
	}
	acmeUser := p.users["acme-member"].ID
	acmeKeyID := func() string {
		ks, _ := p.db.ListAPIKeys(context.Background(), "acme", acmeUser)
		return ks[0].ID
	}()

	type check struct {
		actor, method, path string
		body                any
		want                int
	}
	var checks []check
	// Foreign tenants' resources: 404 for everyone but platform admins.
	for _, actor := range []string{"globex-admin", "globex-member"} {
		checks = append(checks,
			check{actor, "GET", "/v1/admin/tenants/acme", nil, 404},
			check{actor, "PATCH", "/v1/admin/tenants/acme", map[string]any{"disabled": true}, 403},
			check{actor, "GET", "/v1/admin/tenants/acme/users", nil, 404},
			check{actor, "POST", "/v1/admin/tenants/acme/users", map[string]string{"name": "x", "role": "member"}, 404},
			check{actor, "GET", "/v1/admin/tenants/acme/users/" + acmeUser, nil, 404},
			check{actor, "DELETE", "/v1/admin/tenants/acme/users/" + acmeUser, nil, 404},
			check{actor, "POST", "/v1/admin/tenants/acme/users/" + acmeUser + "/keys", map[string]string{}, 404},
			check{actor, "GET", "/v1/admin/tenants/acme/keys", nil, 404},
			check{actor, "DELETE", "/v1/admin/tenants/acme/keys/" + acmeKeyID, nil, 404},
			check{actor, "GET", "/v1/admin/tenants/acme/audit", nil, 404},
			check{actor, "GET", "/v1/sessions/" + acmeID, nil, 404},
			check{actor, "DELETE", "/v1/sessions/" + acmeID, nil, 404},
			check{actor, "GET", "/v1/sessions/" + acmeID + "/status", nil, 404},
			check{actor, "GET", "/v1/sessions/" + acmeID + "/messages", nil, 404},
			check{actor, "POST", "/v1/sessions/" + acmeID + "/message", map[string]string{"content": "hi", "type": "raw"}, 404},
		)
	}
	// Another member of the same tenant: the session is not theirs.
	checks = append(checks,
		check{"acme-member2", "GET", "/v1/sessions/" + acmeID, nil, 404},
		check{"acme-member2", "GET", "/v1/sessions/" + acmeID + "/messages", nil, 404},
		check{"acme-member2", "DELETE", "/v1/sessions/" + acmeID, nil, 404},
	)
	// Members cannot administer their own tenant.
	for _, c := range []check{
		{"acme-member", "GET", "/v1/admin/tenants/acme/users", nil, 403},
		{"acme-member", "POST", "/v1/admin/tenants/acme/users", map[string]string{"name": "x", "role": "admin"}, 403},
		{"acme-member", "GET", "/v1/admin/tenants/acme/keys", nil, 403},
		{"acme-member", "POST", "/v1/admin/tenants/acme/users/" + acmeUser + "/keys", map[string]string{}, 403},
		{"acme-member", "GET", "/v1/admin/tenants", nil, 403},
		{"acme-member", "POST", "/v1/admin/tenants", map[string]string{"name": "mine"}, 403},
		{"acme-admin", "GET", "/v1/admin/tenants", nil, 403},
		{"acme-admin", "DELETE", "/v1/admin/tenants/acme", nil, 403},
		{"acme-admin", "POST", "/v1/admin/tenants/acme/users", map[string]string{"name": "x", "role": "platform_admin"}, 400},
	} {
		checks = append(checks, c)
	}
	// Allowed: tenant admins in their tenant, owners on their sessions.
	checks = append(checks,
		check{"acme-admin", "GET", "/v1/admin/tenants/acme/users", nil, 200},
		check{"acme-admin", "GET", "/v1/admin/tenants/acme/keys", nil, 200},
		check{"acme-admin", "GET", "/v1/sessions/" + acmeID, nil, 200},
		check{"acme-member", "GET", "/v1/sessions/" + acmeID, nil, 200},
		check{"acme-member", "GET", "/v1/sessions/" + acmeID + "/status", nil, 200},
		check{"root", "GET", "/v1/admin/tenants/acme/users", nil, 200},
		check{"", "GET", "/v1/sessions", nil, 401},
		check{"agk_not-a-real-key-000000000000000000000000", "GET", "/v1/sessions", nil, 401},
	)
	for _, c := range checks {
		code, body := p.do(c.actor, c.method, c.path, c.body)
		if code != c.want {
			t.Errorf("%s %s %s: %d, want %d (%v)", c.actor, c.method, c.path, code, c.want, body)
		}
		// A denial never names what it protects.
		if code == 404 {
			if s := fmt.Sprint(body); strings.Contains(s, "acme work") || strings.Contains(s, acmeUser) {
				t.Errorf("%s %s %s: the 404 reveals the resource: %v", c.actor, c.method, c.path, body)
			}
		}
	}
	// Listings never include another tenant's records.
	_, list := p.do("globex-admin", "GET", "/v1/sessions", nil)
	if s := fmt.Sprint(list); strings.Contains(s, acmeID) {
		t.Errorf("globex lists acme's session: %v", list)
	}
	_, list = p.do("acme-member2", "GET", "/v1/sessions", nil)
	if s := fmt.Sprint(list); strings.Contains(s, acmeID) {
		t.Errorf("a member lists another member's session: %v", list)
	}
	_, list = p.do("acme-admin", "GET", "/v1/sessions", nil)
	if s := fmt.Sprint(list); !strings.Contains(s, acmeID) || strings.Contains(s, globexID) {
		t.Errorf("acme admin's listing: %v", list)
	}
	// Nothing was changed by the denied calls.
	if _, err := p.db.GetUser(context.Background(), "acme", acmeUser); err != nil {
		t.Errorf("a denied DELETE removed the user: %v", err)
	}
	if k, _ := p.db.APIKeyByHash(context.Background(), auth.HashAPIKey(p.keys["acme-member"])); k.RevokedAt != nil {
		t.Error("a denied DELETE revoked the key")
	}
	if code, _ := p.do("acme-member", "GET", "/v1/sessions/"+acmeID+"/status", nil); code != 200 {
		t.Errorf("a denied DELETE stopped the session: %d", code)
	}
}

func TestDisabledTenantIsLockedOutAtOnce(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("acme-member", "acme", agentapi.RoleMember)
	code, login := p.do("", "POST", "/v1/auth/login", map[string]string{"api_key": p.keys["acme-member"]})
	if code != 200 {
		t.Fatalf("login: %d %v", code, login)
	}
	token := login["token"].(string)
	if code, _ := p.do(token, "GET", "/v1/auth/session", nil); code != 200 {
		t.Fatalf("token before disabling: %d", code)
	}
	if code, _ := p.do("root", "PATCH", "/v1/admin/tenants/acme", map[string]any{"disabled": true}); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	for _, cred := range []string{token, p.keys["acme-member"]} {
		if code, _ := p.do(cred, "GET", "/v1/auth/session", nil); code != 401 {
			t.Errorf("credential of a disabled tenant: %d, want 401", code)
		}
	}
	p.do("root", "PATCH", "/v1/admin/tenants/acme", map[string]any{"disabled": false})
	if code, _ := p.do(token, "GET", "/v1/auth/session", nil); code != 200 {
		t.Errorf("token after re-enabling: %d", code)
	}
}

func TestLoginLogoutAndRevoke(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleAdmin)
	login := func() string {
		code, body := p.do("", "POST", "/v1/auth/login", map[string]string{"api_key": p.keys["alice"]})
		if code != 200 || body["token"] == "" || body["expires_at"] == nil {
			t.Fatalf("login: %d %v", code, body)
		}
		return body["token"].(string)
	}
	t1, t2 := login(), login()
	if code, who := p.do(t1, "GET", "/v1/auth/session", nil); code != 200 || who["via"] != "session" || who["tenant_id"] != "acme" {
		t.Fatalf("session: %d %v", code, who)
	}
	// A session token is not an API key.
	if code, _ := p.do("", "POST", "/v1/auth/login", map[string]string{"api_key": t1}); code != 401 {
		t.Fatalf("login with a session token: %d", code)
	}
	if code, _ := p.do(t1, "POST", "/v1/auth/logout", nil); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := p.do(t1, "GET", "/v1/auth/session", nil); code != 401 {
		t.Fatalf("token after logout: %d, want 401", code)
	}
	if code, _ := p.do(t2, "GET", "/v1/auth/session", nil); code != 200 {
		t.Fatalf("the other token after logout: %d", code)
	}
	t3 := login()
	if code, body := p.do(t3, "POST", "/v1/auth/sessions/revoke", nil); code != 200 || body["revoked"].(float64) < 2 {
		t.Fatalf("revoke all: %d %v", code, body)
	}
	for _, tok := range []string{t2, t3} {
		if code, _ := p.do(tok, "GET", "/v1/auth/session", nil); code != 401 {
			t.Fatalf("token after revoke-all: %d", code)
		}
	}
	// Wrong and tampered credentials.
	for _, bad := range []string{"nonsense", t2[:len(t2)-1] + "A", p.keys["alice"] + "x"} {
		if code, _ := p.do(bad, "GET", "/v1/auth/session", nil); code != 401 {
			t.Errorf("credential %q: %d, want 401", bad, code)
		}
	}
	// A revoked API key stops working and ends its user's logins.
	t4 := login()
	ks, _ := p.db.ListAPIKeys(context.Background(), "acme", p.users["alice"].ID)
	if code, _ := p.do("root", "DELETE", "/v1/admin/tenants/acme/keys/"+ks[0].ID, nil); code != 204 {
		t.Fatalf("revoke key: %d", code)
	}
	if code, _ := p.do("alice", "GET", "/v1/auth/session", nil); code != 401 {
		t.Errorf("revoked key: %d", code)
	}
	if code, _ := p.do(t4, "GET", "/v1/auth/session", nil); code != 401 {
		t.Errorf("login made with a revoked key: %d", code)
	}
	// The audit log saw the administrative actions.
	_, audit := p.do("root", "GET", "/v1/admin/tenants/acme/audit", nil)
	if s := fmt.Sprint(audit); !strings.Contains(s, "apikey.revoke") || !strings.Contains(s, "sessions.revoke") {
		t.Errorf("audit: %v", audit)
	}
}

func TestAdminFlowAndSecretShownOnce(t *testing.T) {
	p := newPlane(t)
	code, tenant := p.do("root", "POST", "/v1/admin/tenants", map[string]string{"name": "Initech"})
	if code != 200 {
		t.Fatalf("create tenant: %d %v", code, tenant)
	}
	tid := tenant["id"].(string)
	code, user := p.do("root", "POST", "/v1/admin/tenants/"+tid+"/users", map[string]string{"name": "Peter", "role": "member"})
	if code != 200 {
		t.Fatalf("create user: %d %v", code, user)
	}
	uid := user["id"].(string)
	code, key := p.do("root", "POST", "/v1/admin/tenants/"+tid+"/users/"+uid+"/keys", map[string]string{"name": "laptop"})
	secret, _ := key["secret"].(string)
	if code != 200 || !strings.HasPrefix(secret, "agk_") {
		t.Fatalf("create key: %d %v", code, key)
	}
	_, keys := p.do("root", "GET", "/v1/admin/tenants/"+tid+"/keys", nil)
	if s := fmt.Sprint(keys); strings.Contains(s, secret) || !strings.Contains(s, key["prefix"].(string)) {
		t.Fatalf("listing shows the secret or lacks the prefix: %v", keys)
	}
	p.keys["peter"] = secret
	if code, who := p.do("peter", "GET", "/v1/auth/session", nil); code != 200 || who["user_id"] != uid {
		t.Fatalf("the new key: %d %v", code, who)
	}
	_, keys = p.do("root", "GET", "/v1/admin/tenants/"+tid+"/keys", nil)
	if !strings.Contains(fmt.Sprint(keys), "last_used_at") {
		t.Errorf("last use not recorded: %v", keys)
	}
	// Deleting the tenant removes its users (and so their keys).
	if code, _ := p.do("root", "DELETE", "/v1/admin/tenants/"+tid, nil); code != 204 {
		t.Fatalf("delete tenant: %d", code)
	}
	if code, _ := p.do("peter", "GET", "/v1/auth/session", nil); code != 401 {
		t.Errorf("key of a deleted tenant: %d", code)
	}
	if code, _ := p.do("root", "DELETE", "/v1/admin/tenants/platform", nil); code != 400 {
		t.Errorf("deleting the platform tenant: %d, want 400", code)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleAdmin)
	count := func() int {
		ts, _ := p.db.ListTenants(context.Background())
		us, _ := p.db.ListUsers(context.Background(), "acme")
		ss, _ := p.db.ListAgentSessions(context.Background(), "acme", "")
		return len(ts)*1000 + len(us)*100 + len(ss)
	}
	before := count()
	for _, c := range []struct {
		actor, method, path string
		body                any
		want                []int
	}{
		{"root", "POST", "/v1/admin/tenants", `{"name": "x"`, []int{400}},
		{"root", "POST", "/v1/admin/tenants", `{}`, []int{422}},
		{"root", "POST", "/v1/admin/tenants", map[string]string{"name": strings.Repeat("x", 100<<10)}, []int{413}},
		{"root", "POST", "/v1/admin/tenants", map[string]string{"id": "Bad Id!", "name": "x"}, []int{422}},
		{"root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "dup"}, []int{409}},
		{"alice", "POST", "/v1/admin/tenants/acme/users", map[string]string{"name": "x", "role": "wizard"}, []int{422}},
		{"alice", "POST", "/v1/sessions", map[string]string{"agent_type": "rm -rf /"}, []int{400}},
		{"alice", "POST", "/v1/sessions", map[string]string{}, []int{422}},
		{"alice", "POST", "/v1/sessions", `[1,2,3]`, []int{400, 422}},
		{"", "POST", "/v1/auth/login", map[string]string{"api_key": ""}, []int{422}},
	} {
		code, body := p.do(c.actor, c.method, c.path, c.body)
		ok := false
		for _, w := range c.want {
			ok = ok || code == w
		}
		if !ok || body["detail"] == nil {
			t.Errorf("%s %s %.60v: %d %v, want %v with a detail", c.method, c.path, c.body, code, body, c.want)
		}
	}
	if after := count(); after != before {
		t.Errorf("bad input changed the records: %d -> %d", before, after)
	}
}

func TestAgentSessionLifecycleAndTranscript(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	code, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo", "initial_prompt": "first words"})
	if code != 200 {
		t.Fatalf("start: %d %v", code, s)
	}
	id := s["id"].(string)
	base := "/v1/sessions/" + id
	want := []string{"agent:Demo agent ready. Type a message.", "user:first words", "agent:Echo: first words"}
	transcript := func() []string {
		_, m := p.do("alice", "GET", base+"/messages", nil)
		var out []string
		list, _ := m["messages"].([]any)
		for _, x := range list {
			mm := x.(map[string]any)
			out = append(out, fmt.Sprint(mm["role"], ":", mm["content"]))
		}
		return out
	}
	waitFor(t, func() bool { return strings.Join(transcript(), "|") == strings.Join(want, "|") })
	waitFor(t, func() bool { _, st := p.do("alice", "GET", base+"/status", nil); return st["status"] == "stable" })
	if code, _ := p.do("alice", "POST", base+"/message", map[string]string{"content": "second", "type": "user"}); code != 200 {
		t.Fatalf("message: %d", code)
	}
	want = append(want, "user:second", "agent:Echo: second")
	waitFor(t, func() bool { return strings.Join(transcript(), "|") == strings.Join(want, "|") })

	// The transcript is in the system of record while the agent runs...
	stored := func() int { ms, _ := p.db.Messages(context.Background(), "acme", id); return len(ms) }
	waitFor(t, func() bool { return stored() == len(want) })
	// ...and stays readable after the agent stopped.
	if code, _ := p.do("alice", "DELETE", base, nil); code != 204 {
		t.Fatalf("stop: %d", code)
	}
	if got := transcript(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("transcript after stop: %q", got)
	}
	_, after := p.do("alice", "GET", base, nil)
	if after["state"] != "stopped" {
		t.Fatalf("state after stop: %v", after)
	}
	if code, body := p.do("alice", "GET", base+"/status", nil); code != 409 {
		t.Fatalf("status of a stopped session: %d %v", code, body)
	}
	if code, _ := p.do("alice", "DELETE", base, nil); code != 409 {
		t.Fatalf("stopping twice: %d", code)
	}
}

func TestSessionLimitsPerUser(t *testing.T) {
	p := newPlane(t) // MaxPerUser 3
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	for i := 0; i < 3; i++ {
		if code, body := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"}); code != 200 {
			t.Fatalf("session %d: %d %v", i, code, body)
		}
	}
	if code, body := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"}); code != 429 {
		t.Fatalf("fourth session: %d %v, want 429", code, body)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, 20*time.Second, "condition", cond)
}

func TestTenantSecretsReachAgentsSealed(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "globex", "name": "Globex"})
	p.seedUser("acme-admin", "acme", agentapi.RoleAdmin)
	p.seedUser("acme-member", "acme", agentapi.RoleMember)
	p.seedUser("globex-admin", "globex", agentapi.RoleAdmin)
	const value = "sk-live-very-secret-value"
	if code, body := p.do("acme-admin", "PUT", "/v1/admin/tenants/acme/secrets/MODEL_API_KEY", map[string]string{"value": value}); code != 204 {
		t.Fatalf("put secret: %d %v", code, body)
	}
	for _, c := range []struct {
		actor, method, path string
		body                any
		want                int
	}{
		{"acme-member", "PUT", "/v1/admin/tenants/acme/secrets/X", map[string]string{"value": "v"}, 403},
		{"globex-admin", "GET", "/v1/admin/tenants/acme/secrets", nil, 404},
		{"globex-admin", "DELETE", "/v1/admin/tenants/acme/secrets/MODEL_API_KEY", nil, 404},
		{"acme-admin", "PUT", "/v1/admin/tenants/acme/secrets/PATH", map[string]string{"value": "/evil"}, 400},
		{"acme-admin", "PUT", "/v1/admin/tenants/acme/secrets/lower", map[string]string{"value": "v"}, 400},
	} {
		if code, body := p.do(c.actor, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s %s: %d, want %d (%v)", c.actor, c.method, c.path, code, c.want, body)
		}
	}
	_, list := p.do("acme-admin", "GET", "/v1/admin/tenants/acme/secrets", nil)
	if s := fmt.Sprint(list); !strings.Contains(s, "MODEL_API_KEY") || strings.Contains(s, value) {
		t.Fatalf("listing: %v", list)
	}
	// Stored sealed: the value is not in the database.
	sealed, _ := p.db.Secrets(context.Background(), "acme")
	if bytes.Contains(sealed["MODEL_API_KEY"], []byte(value)) {
		t.Fatal("the secret is stored in the clear")
	}
	// An acme agent sees it; a globex agent does not.
	screenOf := func(actor string) string {
		code, s := p.do(actor, "POST", "/v1/sessions", map[string]string{"agent_type": "env"})
		if code != 200 {
			t.Fatalf("start: %d %v", code, s)
		}
		var text string
		waitFor(t, func() bool {
			_, m := p.do(actor, "GET", "/v1/sessions/"+s["id"].(string)+"/messages", nil)
			text = fmt.Sprint(m)
			return strings.Contains(text, "PATH=")
		})
		return text
	}
	if got := screenOf("acme-admin"); !strings.Contains(got, "MODEL_API_KEY="+value) {
		t.Fatalf("acme's agent environment lacks the secret: %s", got)
	}
	if got := screenOf("globex-admin"); strings.Contains(got, value) {
		t.Fatalf("globex's agent received acme's secret: %s", got)
	}
}

func TestSessionChatPageUnderItsPrefix(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	_, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
	base := p.srv.URL + "/v1/sessions/" + s["id"].(string) + "/"
	client := &http.Client{}
	req, _ := http.NewRequest("GET", base, nil)
	req.Header.Set("Authorization", "Bearer "+p.keys["alice"])
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Redirected (with the credential re-sent by the test's client rules:
	// same host) to the session's own chat page, not the root's.
	if resp.Request.URL.Path != "/v1/sessions/"+s["id"].(string)+"/chat/" || !strings.Contains(string(body), "<title>AgentAPI chat</title>") {
		t.Fatalf("landed on %s (%d)", resp.Request.URL.Path, resp.StatusCode)
	}
}

func TestBrokenAgentTypeOpensItsBreaker(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleAdmin)
	for i := 0; i < 3; i++ {
		if code, body := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "broken"}); code != 503 || strings.Contains(fmt.Sprint(body), "breaker") {
			t.Fatalf("start %d: %d %v, want 503 (a real attempt)", i, code, body)
		}
	}
	req, _ := http.NewRequest("POST", p.srv.URL+"/v1/sessions", strings.NewReader(`{"agent_type":"broken"}`))
	req.Header.Set("Authorization", "Bearer "+p.keys["alice"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "circuit breaker open") {
		t.Fatalf("start with the breaker open: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Other agent types are unaffected.
	if code, body := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"}); code != 200 {
		t.Fatalf("echo while broken's breaker is open: %d %v", code, body)
	}
	// Platform admins see it and can reset it; tenant admins cannot.
	if code, _ := p.do("alice", "GET", "/v1/admin/breakers", nil); code != 403 {
		t.Fatalf("tenant admin listing breakers: %d", code)
	}
	_, list := p.do("root", "GET", "/v1/admin/breakers", nil)
	if s := fmt.Sprint(list); !strings.Contains(s, "agent-start:broken") || !strings.Contains(s, "open") {
		t.Fatalf("breakers: %v", list)
	}
	if code, _ := p.do("root", "POST", "/v1/admin/breakers/agent-start:broken/reset", nil); code != 204 {
		t.Fatalf("reset: %d", code)
	}
	if code, body := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "broken"}); code != 503 || strings.Contains(fmt.Sprint(body), "breaker") {
		t.Fatalf("after reset, a real attempt again: %d %v", code, body)
	}
}

func TestReviewRegressions(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleAdmin)

	t.Run("a stale cookie does not block logging in again", func(t *testing.T) {
		_, login := p.do("", "POST", "/v1/auth/login", map[string]string{"api_key": p.keys["alice"]})
		token := login["token"].(string)
		p.do(token, "POST", "/v1/auth/sessions/revoke", nil)
		body := strings.NewReader(`{"api_key":"` + p.keys["alice"] + `"}`)
		req, _ := http.NewRequest("POST", p.srv.URL+"/v1/auth/login", body)
		req.Header.Set("Content-Type", "application/json")
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: token})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("login with a stale cookie: %d", resp.StatusCode)
		}
	})

	t.Run("a demoted user's old sessions stop at once", func(t *testing.T) {
		p.seedUser("bob", "acme", agentapi.RoleAdmin)
		_, login := p.do("", "POST", "/v1/auth/login", map[string]string{"api_key": p.keys["bob"]})
		token := login["token"].(string)
		// Change the role in the store directly, as if ending the sessions
		// had failed: the session still must not act as an admin.
		u := p.users["bob"]
		u.Role = agentapi.RoleMember
		must(t, p.db.UpdateUser(context.Background(), u))
		if code, _ := p.do(token, "GET", "/v1/admin/tenants/acme/users", nil); code != 401 {
			t.Fatalf("a demoted admin's session: %d, want 401", code)
		}
	})

	t.Run("a blank initial prompt still settles", func(t *testing.T) {
		_, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo", "initial_prompt": "   "})
		waitFor(t, func() bool {
			_, st := p.do("alice", "GET", "/v1/sessions/"+s["id"].(string)+"/status", nil)
			return st["status"] == "stable"
		})
	})

	t.Run("the screen stream ends when the session stops", func(t *testing.T) {
		_, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
		id := s["id"].(string)
		req, _ := http.NewRequest("GET", p.srv.URL+"/v1/sessions/"+id+"/internal/screen", nil)
		req.Header.Set("Authorization", "Bearer "+p.keys["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		ended := make(chan struct{})
		go func() { io.Copy(io.Discard, resp.Body); close(ended) }()
		p.do("alice", "DELETE", "/v1/sessions/"+id, nil)
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the screen stream outlived its session")
		}
	})

	t.Run("deleting a tenant stops its agents and a reused id sees no old audit", func(t *testing.T) {
		p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "gone", "name": "Gone"})
		p.seedUser("g", "gone", agentapi.RoleAdmin)
		_, s := p.do("g", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
		p.do("g", "PUT", "/v1/admin/tenants/gone/secrets/OLD_SECRET", map[string]string{"value": "v"})
		if code, _ := p.do("root", "DELETE", "/v1/admin/tenants/gone", nil); code != 204 {
			t.Fatalf("delete: %d", code)
		}
		// Its agent was stopped: the transcript survives the tenant only as
		// long as the tenant, so check the runner directly.
		if _, live := p.mgr.Handler("gone", s["id"].(string)); live {
			t.Fatal("the deleted tenant's agent still runs")
		}
		time.Sleep(2 * time.Millisecond) // creation times are in milliseconds: the new tenant is later
		p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "gone", "name": "New"})
		_, audit := p.do("root", "GET", "/v1/admin/tenants/gone/audit", nil)
		if s := fmt.Sprint(audit); strings.Contains(s, "OLD_SECRET") || strings.Contains(s, "tenant.delete") {
			t.Fatalf("the new tenant reads the old one's audit: %v", audit)
		}
	})

	t.Run("the last platform admin key cannot be revoked", func(t *testing.T) {
		ks, _ := p.db.ListAPIKeys(context.Background(), agentapi.PlatformTenantID, "")
		if code, body := p.do("root", "DELETE", "/v1/admin/tenants/platform/keys/"+ks[0].ID, nil); code != 400 {
			t.Fatalf("revoking the last platform key: %d %v", code, body)
		}
		if code, _ := p.do("root", "DELETE", "/v1/admin/tenants/platform/users/"+p.users["root"].ID, nil); code != 400 {
			t.Fatalf("deleting the last platform admin: %d", code)
		}
	})
}

// TestAPIKeyUseIsRecordedOnceAMinute: an instance records a key's use at
// its first request and then at most once a minute per key (the store
// keeps it to the minute), not on every request.
func TestAPIKeyUseIsRecordedOnceAMinute(t *testing.T) {
	a := &authenticator{}
	t0 := time.Now()
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"k1", 0, true}, {"k1", time.Second, false}, {"k2", time.Second, true},
		{"k1", 59 * time.Second, false}, {"k1", time.Minute, true}, {"k1", time.Minute + time.Second, false},
	}
	for _, s := range steps {
		if got := a.touchDue(s.key, t0.Add(s.at)); got != s.want {
			t.Fatalf("touchDue(%s, +%v) = %v, want %v", s.key, s.at, got, s.want)
		}
	}
}
