package httpapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi"
)

func TestTenantConfigurationRoutes(t *testing.T) {
	p := newPlane(t)
	for _, id := range []string{"acme", "globex"} {
		p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": id, "name": id})
	}
	p.seedUser("acme-admin", "acme", agentapi.RoleAdmin)
	p.seedUser("acme-member", "acme", agentapi.RoleMember)
	p.seedUser("globex-admin", "globex", agentapi.RoleAdmin)

	cfg := map[string]any{"max_sessions": 1, "allowed_agents": []string{"echo"}, "monthly_message_quota": 500, "rate_limit_per_minute": 600, "rate_limit_burst": 50}
	// Only platform admins set limits; another tenant's admin sees nothing.
	for actor, want := range map[string]int{"acme-admin": 403, "acme-member": 403, "globex-admin": 403} {
		if code, body := p.do(actor, "PUT", "/v1/admin/tenants/acme/config", cfg); code != want {
			t.Fatalf("%s PUT config: %d %v, want %d", actor, code, body, want)
		}
	}
	if code, _ := p.do("globex-admin", "GET", "/v1/admin/tenants/acme/config", nil); code != 404 {
		t.Fatalf("another tenant's admin reads acme's config: %d", code)
	}
	code, got := p.do("root", "PUT", "/v1/admin/tenants/acme/config", cfg)
	if code != 200 || got["version"] != float64(1) || got["max_sessions"] != float64(1) {
		t.Fatalf("PUT config: %d %v", code, got)
	}
	if code, _ := p.do("root", "PUT", "/v1/admin/tenants/nope/config", cfg); code != 404 {
		t.Fatalf("config of a missing tenant: %d", code)
	}
	// Bad input: named, refused, nothing changed.
	for _, bad := range []map[string]any{
		{"allowed_agents": []string{"echo", "nonesuch"}},
		{"rate_limit_burst": 5},
		{"max_sessions": -1},
		{"flags": map[string]any{"Not A Name": map[string]any{"enabled": true}}},
		{"flags": map[string]any{"beta": map[string]any{"enabled": true, "percent": 101}}},
	} {
		code, body := p.do("root", "PUT", "/v1/admin/tenants/acme/config", bad)
		if code != 400 && code != 422 {
			t.Errorf("bad config %v: %d %v", bad, code, body)
		}
	}
	if _, c := p.do("acme-admin", "GET", "/v1/admin/tenants/acme/config", nil); c["version"] != float64(1) {
		t.Fatalf("a refused config changed the stored one: %v", c)
	}
	if code, c := p.do("acme-member", "GET", "/v1/tenant/config", nil); code != 200 || c["monthly_message_quota"] != float64(500) {
		t.Fatalf("member reads the tenant config: %d %v", code, c)
	}
	if _, c := p.do("globex-admin", "GET", "/v1/tenant/config", nil); c["version"] != float64(0) {
		t.Fatalf("globex sees a config it never had: %v", c)
	}

	// The configuration is honoured: one session, echo only.
	if code, body := p.do("acme-member", "POST", "/v1/sessions", map[string]string{"agent_type": "env"}); code != 403 || !strings.Contains(fmt.Sprint(body), "may not run") {
		t.Fatalf("an agent outside allowed_agents: %d %v", code, body)
	}
	if code, _ := p.do("acme-member", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"}); code != 200 {
		t.Fatalf("first session: %d", code)
	}
	if code, _ := p.do("acme-admin", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"}); code != 429 {
		t.Fatalf("second session of a tenant with max_sessions 1: %d", code)
	}
	_, audit := p.do("root", "GET", "/v1/admin/tenants/acme/audit", nil)
	if s := fmt.Sprint(audit); strings.Count(s, "tenant.config") != 1 {
		t.Fatalf("audit of config changes: %v", audit)
	}
}

func TestFeatureFlagRoutesAndEnforcement(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "globex", "name": "Globex"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	p.seedUser("gus", "globex", agentapi.RoleMember)
	flagOn := func(actor, name string) bool {
		t.Helper()
		code, body := p.do(actor, "GET", "/v1/tenant/flags", nil)
		if code != 200 {
			t.Fatalf("flags: %d %v", code, body)
		}
		f, _ := body["flags"].(map[string]any)[name].(map[string]any)
		return f["on"] == true
	}
	for _, name := range []string{"raw_input", "file_upload", "web_ui"} {
		if !flagOn("alice", name) {
			t.Fatalf("%s is off by default", name)
		}
	}
	if code, _ := p.do("alice", "PUT", "/v1/admin/flags/raw_input", map[string]any{"enabled": false}); code != 403 {
		t.Fatalf("a member sets a global flag: %d", code)
	}
	if code, body := p.do("root", "PUT", "/v1/admin/flags/raw_input", map[string]any{"enabled": false}); code != 204 {
		t.Fatalf("global flag: %d %v", code, body)
	}
	if flagOn("alice", "raw_input") || flagOn("gus", "raw_input") {
		t.Fatal("the global flag is not in effect")
	}
	// A tenant override turns it back on for globex only.
	if code, body := p.do("root", "PUT", "/v1/admin/tenants/globex/flags/raw_input", map[string]any{"enabled": true}); code != 200 {
		t.Fatalf("tenant flag: %d %v", code, body)
	}
	if flagOn("alice", "raw_input") || !flagOn("gus", "raw_input") {
		t.Fatal("the tenant override is not in effect, or leaks")
	}
	if code, _ := p.do("root", "PUT", "/v1/admin/flags/Bad%20Name", map[string]any{"enabled": true}); code != 400 && code != 422 {
		t.Fatalf("bad flag name: %d", code)
	}
	_, global := p.do("root", "GET", "/v1/admin/flags", nil)
	if f := global["flags"].(map[string]any)["raw_input"].(map[string]any); f["enabled"] != false {
		t.Fatalf("global flags: %v", global)
	}

	// The server honours its flags: raw input and uploads are refused.
	code, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
	if code != 200 {
		t.Fatalf("start: %d %v", code, s)
	}
	base := "/v1/sessions/" + s["id"].(string)
	waitFor(t, func() bool { _, st := p.do("alice", "GET", base+"/status", nil); return st["status"] == "stable" })
	if code, body := p.do("alice", "POST", base+"/message", map[string]string{"content": "\x1b", "type": "raw"}); code != 403 || !strings.Contains(fmt.Sprint(body), "raw_input") {
		t.Fatalf("raw input with the flag off: %d %v", code, body)
	}
	if code, _ := p.do("alice", "POST", base+"/message", map[string]string{"content": "hello", "type": "user"}); code != 200 {
		t.Fatalf("a user message with raw_input off: %d", code)
	}
	if code, body := p.do("root", "PUT", "/v1/admin/tenants/acme/flags/file_upload", map[string]any{"enabled": false}); code != 200 {
		t.Fatalf("tenant flag: %d %v", code, body)
	}
	if code, body := p.do("alice", "POST", base+"/upload", "x"); code != 403 || !strings.Contains(fmt.Sprint(body), "file_upload") {
		t.Fatalf("upload with the flag off: %d %v", code, body)
	}
	// Removing the global flag restores the default.
	if code, _ := p.do("root", "DELETE", "/v1/admin/flags/raw_input", nil); code != 204 {
		t.Fatalf("delete global flag: %d", code)
	}
	if code, _ := p.do("root", "DELETE", "/v1/admin/flags/raw_input", nil); code != 404 {
		t.Fatalf("delete it twice: %d", code)
	}
	if !flagOn("alice", "raw_input") {
		t.Fatal("raw_input did not return to its default")
	}
	if code, _ := p.do("alice", "POST", base+"/message", map[string]string{"content": "\x1b", "type": "raw"}); code != 200 {
		t.Fatalf("raw input with the flag back on: %d", code)
	}
	_, audit := p.do("root", "GET", "/v1/admin/tenants/platform/audit", nil)
	if s := fmt.Sprint(audit); !strings.Contains(s, "flag.global.put") || !strings.Contains(s, "flag.global.delete") {
		t.Fatalf("global flag audit: %v", audit)
	}
	_, audit = p.do("root", "GET", "/v1/admin/tenants/acme/audit", nil)
	if s := fmt.Sprint(audit); !strings.Contains(s, "flag.tenant.put") {
		t.Fatalf("tenant flag audit: %v", audit)
	}
}
