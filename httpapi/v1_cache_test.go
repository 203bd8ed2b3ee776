package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/cache"
)

// get sends a GET as actor with extra headers and returns the response
// (body read) for header checks.
func (p *plane) get(actor, path string, hdr map[string]string) (*http.Response, string) {
	p.t.Helper()
	req, _ := http.NewRequest("GET", p.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+p.keys[actor])
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestCachedReadsAreFreshPerPrincipalAndRevalidate(t *testing.T) {
	p := newPlane(t)
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "acme", "name": "Acme"})
	p.do("root", "POST", "/v1/admin/tenants", map[string]string{"id": "globex", "name": "Globex"})
	p.seedUser("alice", "acme", agentapi.RoleMember)
	p.seedUser("bob", "acme", agentapi.RoleMember)
	p.seedUser("gus", "globex", agentapi.RoleMember)

	resp, first := p.get("alice", "/v1/sessions", nil)
	if resp.Header.Get("X-Cache") != "MISS" || resp.StatusCode != 200 {
		t.Fatalf("first list: %d %v", resp.StatusCode, resp.Header)
	}
	resp, second := p.get("alice", "/v1/sessions", nil)
	etag := resp.Header.Get("ETag")
	if resp.Header.Get("X-Cache") != "HIT" || second != first || etag == "" {
		t.Fatalf("second list: %v %q", resp.Header, second)
	}
	if resp, body := p.get("alice", "/v1/sessions", map[string]string{"If-None-Match": etag}); resp.StatusCode != 304 || body != "" {
		t.Fatalf("revalidation: %d %q", resp.StatusCode, body)
	}
	if resp, _ := p.get("alice", "/v1/sessions", map[string]string{"Cache-Control": "no-cache"}); resp.Header.Get("X-Cache") != "BYPASS" {
		t.Fatalf("no-cache: %v", resp.Header)
	}

	// A new session is in the very next list: the write invalidated it.
	code, s := p.do("alice", "POST", "/v1/sessions", map[string]string{"agent_type": "echo", "name": "fresh"})
	if code != 200 {
		t.Fatalf("start: %d %v", code, s)
	}
	id := s["id"].(string)
	resp, list := p.get("alice", "/v1/sessions", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != 200 || !strings.Contains(list, id) {
		t.Fatalf("list after the start: %d %s", resp.StatusCode, list)
	}
	// Another member and another tenant get their own answers, never
	// alice's, although they ask for the same route.
	for _, actor := range []string{"bob", "gus"} {
		_, other := p.get(actor, "/v1/sessions", nil)
		if strings.Contains(other, id) || strings.Contains(other, "fresh") {
			t.Fatalf("%s was served alice's sessions: %s", actor, other)
		}
		if _, again := p.get(actor, "/v1/sessions", nil); again != other {
			t.Fatalf("%s: cached answer differs", actor)
		}
	}
	if resp, body := p.get("gus", "/v1/sessions/"+id, nil); resp.StatusCode != 404 {
		t.Fatalf("gus reads alice's session: %d %s", resp.StatusCode, body)
	}

	// Stopping changes the record: the cached one is not served.
	waitFor(t, func() bool {
		_, st := p.do("alice", "GET", "/v1/sessions/"+id+"/status", nil)
		return st["status"] == "stable"
	})
	p.get("alice", "/v1/sessions/"+id, nil)
	if code, _ := p.do("alice", "DELETE", "/v1/sessions/"+id, nil); code != 204 {
		t.Fatalf("stop: %d", code)
	}
	_, rec := p.get("alice", "/v1/sessions/"+id, nil)
	var got agentapi.AgentSession
	json.Unmarshal([]byte(rec), &got)
	if got.State != agentapi.SessionStopped {
		t.Fatalf("after stop: %s", rec)
	}
	// The transcript of a stopped session is cached, and complete.
	resp, tr := p.get("alice", "/v1/sessions/"+id+"/messages", nil)
	if resp.Header.Get("X-Cache") != "MISS" || !strings.Contains(tr, "Demo agent ready") {
		t.Fatalf("transcript: %v %s", resp.Header, tr)
	}
	if resp, again := p.get("alice", "/v1/sessions/"+id+"/messages", nil); resp.Header.Get("X-Cache") != "HIT" || again != tr {
		t.Fatalf("transcript again: %v", resp.Header)
	}

	// The tenant configuration: cached, and fresh after a change.
	p.get("alice", "/v1/tenant/config", nil)
	if resp, _ := p.get("alice", "/v1/tenant/config", nil); resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("config not cached: %v", resp.Header)
	}
	if code, _ := p.do("root", "PUT", "/v1/admin/tenants/acme/config", map[string]any{"max_sessions": 4}); code != 200 {
		t.Fatal("put config")
	}
	if _, c := p.get("alice", "/v1/tenant/config", nil); !strings.Contains(c, `"max_sessions":4`) {
		t.Fatalf("config after the change: %s", c)
	}
	st := p.mgrResponses()
	if st.Hits == 0 || st.Misses == 0 {
		t.Fatalf("cache stats %+v", st)
	}
}

func (p *plane) mgrResponses() cache.Stats { return p.v1.Responses.Stats() }
