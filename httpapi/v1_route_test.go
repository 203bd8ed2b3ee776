package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
)

func TestForwardedRequestsNeedAValidSignature(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	alice := p.users["alice"]
	send := func(sign func(r *http.Request)) (int, map[string]any) {
		req, _ := http.NewRequest("GET", p.srv.URL+"/v1/auth/session", nil)
		sign(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		jsonDecode(resp, &body)
		return resp.StatusCode, body
	}
	principal := []byte(`{"t":"acme","u":"` + alice.ID + `","r":"member"}`)
	code, who := send(func(r *http.Request) { p.v1.Signer.Sign(r.Header, "GET", "/v1/auth/session", principal, time.Now()) })
	if code != 200 || who["user_id"] != alice.ID || who["tenant_id"] != "acme" {
		t.Fatalf("a signed forward: %d %v", code, who)
	}
	for name, sign := range map[string]func(r *http.Request){
		"stale": func(r *http.Request) {
			p.v1.Signer.Sign(r.Header, "GET", "/v1/auth/session", principal, time.Now().Add(-5*time.Minute))
		},
		"another path": func(r *http.Request) {
			p.v1.Signer.Sign(r.Header, "GET", "/v1/admin/tenants", principal, time.Now())
		},
		"forged": func(r *http.Request) {
			p.v1.Signer.Sign(r.Header, "GET", "/v1/auth/session", principal, time.Now())
			r.Header.Set("X-Agentapi-Forwarded-Principal", "eyJ0IjoicGxhdGZvcm0iLCJ1IjoieCIsInIiOiJwbGF0Zm9ybV9hZG1pbiJ9")
		},
	} {
		if code, body := send(sign); code != 401 {
			t.Errorf("%s: %d %v, want 401", name, code, body)
		}
	}
}

func jsonDecode(resp *http.Response, v any) { json.NewDecoder(resp.Body).Decode(v) }
