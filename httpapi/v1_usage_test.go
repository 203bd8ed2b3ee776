package httpapi

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

func TestUsageCountedReportedAndQuotaEnforced(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "globex", "name": "Globex"})
	p.seedUser("acme-admin", "acme", agentapi.RoleAdmin)
	p.seedUser("alice", "acme", agentapi.RoleMember)
	p.seedUser("gus", "globex", agentapi.RoleMember)
	if code, body := p.do("root", "PUT", "/v1/admin/tenants/acme/config", map[string]any{"monthly_message_quota": 2}); code != 200 {
		t.Fatalf("quota: %d %v", code, body)
	}
	code, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo"})
	if code != 200 {
		t.Fatalf("start: %d %v", code, s)
	}
	base := "/v1/sessions/" + s["id"].(string)
	waitFor(t, func() bool { _, st := p.do("alice", "GET", base+"/status", nil); return st["status"] == "stable" })

	// Two messages fit the quota; the third is a 429 quota-exceeded problem.
	for i := range 2 {
		if code, body := p.do("alice", "POST", base+"/message", map[string]string{"content": "hi", "type": "user"}); code != 200 {
			t.Fatalf("message %d: %d %v", i, code, body)
		}
		waitFor(t, func() bool { _, st := p.do("alice", "GET", base+"/status", nil); return st["status"] == "stable" })
	}
	req, _ := http.NewRequest("POST", p.srv.URL+base+"/message", strings.NewReader(`{"content":"hi","type":"user"}`))
	req.Header.Set("Authorization", "Bearer "+p.keys["alice"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var prob Problem
	json.NewDecoder(resp.Body).Decode(&prob)
	resp.Body.Close()
	if resp.StatusCode != 429 || prob.Type != agentapi.ProblemQuotaExceeded || !strings.Contains(prob.Detail, "monthly_message_quota") ||
		resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("over the quota: %d %v %+v", resp.StatusCode, resp.Header, prob)
	}
	// Raw keys are not messages: no quota.
	if code, _ := p.do("alice", "POST", base+"/message", map[string]string{"content": "\x1b", "type": "raw"}); code != 200 {
		t.Fatalf("raw key over the message quota: %d", code)
	}

	// An upload is counted in bytes.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "notes.txt")
	fw.Write(bytes.Repeat([]byte("x"), 1000))
	mw.Close()
	req, _ = http.NewRequest("POST", p.srv.URL+base+"/upload", &body)
	req.Header.Set("Authorization", "Bearer "+p.keys["alice"])
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	p.do("gus", "GET", "/v1/sessions", nil)

	// Alice sees her own counts only, even when she asks for others'.
	today := time.Now().UTC().Format("2006-01-02")
	code, mine := p.do("alice", "GET", "/v1/usage?from="+today+"&to="+today+"&user="+p.users["acme-admin"].ID, nil)
	if code != 200 {
		t.Fatalf("usage: %d %v", code, mine)
	}
	totals := mine["totals"].(map[string]any)
	if totals["messages"] != float64(2) || totals["upload_bytes"].(float64) < 1000 || totals["requests"].(float64) < 5 {
		t.Fatalf("alice's totals: %v", totals)
	}
	for _, r := range mine["rows"].([]any) {
		row := r.(map[string]any)
		if row["user_id"] != p.users["alice"].ID || row["tenant_id"] != "acme" || row["day"] != today {
			t.Fatalf("alice sees a row that is not hers: %v", row)
		}
	}
	// The tenant admin sees the tenant's users; globex is not in it.
	_, all := p.do("acme-admin", "GET", "/v1/usage", nil)
	if strings.Contains(toJSON(all), "globex") || !strings.Contains(toJSON(all), p.users["acme-admin"].ID) {
		t.Fatalf("tenant admin's report: %v", all)
	}
	// The platform admin sees every tenant, or one.
	_, every := p.do("root", "GET", "/v1/admin/usage?from="+today, nil)
	if !strings.Contains(toJSON(every), `"globex"`) || !strings.Contains(toJSON(every), `"acme"`) {
		t.Fatalf("platform report: %v", every)
	}
	_, one := p.do("root", "GET", "/v1/admin/usage?tenant=globex", nil)
	if strings.Contains(toJSON(one), `"acme"`) {
		t.Fatalf("platform report for globex: %v", one)
	}
	for _, bad := range []string{"/v1/usage?from=yesterday", "/v1/usage?from=2026-11-30&to=2026-11-01", "/v1/usage?to=2026-02-30"} {
		if code, body := p.do("alice", "GET", bad, nil); code != 400 && code != 422 {
			t.Errorf("%s: %d %v", bad, code, body)
		}
	}
	if code, _ := p.do("alice", "GET", "/v1/admin/usage", nil); code != 403 {
		t.Fatalf("a member reads the platform report: %d", code)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
