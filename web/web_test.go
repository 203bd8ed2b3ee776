package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/agentapi-mt/agentapi/agenthttp"
	"github.com/agentapi-mt/agentapi/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, method, target string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The handler does not know where it is mounted: it must work as /ui/ and
// under any prefix in front of it.
func TestServesTheAppWhereverMounted(t *testing.T) {
	h := web.Handler()
	for _, prefix := range []string{"/ui", "/some/prefix/ui"} {
		r := get(t, h, "GET", prefix+"/")
		page := body(t, r)
		if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(page, "<title>AgentAPI</title>") {
			t.Fatalf("%s/: %d %s", prefix, r.StatusCode, r.Header.Get("Content-Type"))
		}
		if r.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("the page must be revalidated: Cache-Control %q", r.Header.Get("Cache-Control"))
		}
		csp := r.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Error("no X-Content-Type-Options: nosniff")
		}

		// Without the slash: a relative redirect, so the prefix survives.
		r = get(t, h, "GET", prefix)
		if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "ui/" {
			t.Fatalf("%s: %d Location %q, want 301 ui/", prefix, r.StatusCode, r.Header.Get("Location"))
		}
	}
}

func TestVersionedFilesAreCachedForever(t *testing.T) {
	h := web.Handler()
	v := web.Version()
	r := get(t, h, "GET", "/ui/app.js?v="+v)
	js := body(t, r)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("app.js: %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if cc := r.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Errorf("versioned app.js: Cache-Control %q", cc)
	}
	if strings.Contains(js, "__V__") || !strings.Contains(js, "chat.js?v="+v) {
		t.Error("the version token was not replaced in app.js")
	}
	// Another version (an old page asking): served, but not cached for long.
	r = get(t, h, "GET", "/ui/app.js?v=old")
	if r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("unversioned app.js: %d %q", r.StatusCode, r.Header.Get("Cache-Control"))
	}
	etag := r.Header.Get("ETag")
	if r := get(t, h, "GET", "/ui/app.js", "If-None-Match", etag); etag == "" || r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %q: %d", etag, r.StatusCode)
	}
	if r := get(t, h, "GET", "/ui/chat.css"); r.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("chat.css: %q", r.Header.Get("Content-Type"))
	}
	if r := get(t, h, "HEAD", "/ui/"); r.StatusCode != 200 {
		t.Errorf("HEAD: %d", r.StatusCode)
	}
}

func TestUnknownFilesAndMethods(t *testing.T) {
	h := web.Handler()
	if r := get(t, h, "GET", "/ui/nope.js"); r.StatusCode != 404 {
		t.Errorf("unknown file: %d", r.StatusCode)
	}
	// Only the embedded files are served, never anything beside them.
	for _, p := range []string{"/ui/../web.go", "/ui/..%2fweb.go", "/ui/web_test.go"} {
		if r := get(t, h, "GET", p); r.StatusCode != 404 {
			t.Errorf("%s: %d", p, r.StatusCode)
		}
	}
	// An unknown name without an extension is taken for a directory.
	if r := get(t, h, "GET", "/ui/sessions"); r.StatusCode != 301 || r.Header.Get("Location") != "sessions/" {
		t.Errorf("/ui/sessions: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := get(t, h, "POST", "/ui/"); r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q", r.StatusCode, r.Header.Get("Allow"))
	}
}

// Every file the pages load or import exists, with the current version:
// a typo would otherwise show only in a browser.
func TestReferencesResolve(t *testing.T) {
	h := web.Handler()
	ref := regexp.MustCompile(`(?:src|href)="([^"#:]+)"|from "\./([^"]+)"|import\("\./([^"]+)"\)`)
	seen := map[string]bool{}
	queue := []string{"index.html"}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		text, _, ok := web.Asset(name)
		if !ok {
			t.Errorf("%s is referenced but not embedded", name)
			continue
		}
		for _, m := range ref.FindAllStringSubmatch(string(text), -1) {
			target := strings.TrimPrefix(m[1]+m[2]+m[3], "./")
			file, query, _ := strings.Cut(target, "?")
			if query != "v="+web.Version() {
				t.Errorf("%s refers to %s without the current version", name, target)
			}
			if r := get(t, h, "GET", "/ui/"+target); r.StatusCode != 200 {
				t.Errorf("%s refers to %s: %d", name, target, r.StatusCode)
			}
			queue = append(queue, file)
		}
	}
	for _, want := range []string{"app.js", "chat.js", "dashboard.js", "app.css", "chat.css"} {
		if !seen[want] {
			t.Errorf("%s is not reachable from index.html", want)
		}
	}
}

// The single-agent server's /chat page uses the same chat view.
func TestSingleAgentChatPageSharesTheChatView(t *testing.T) {
	s, err := agenthttp.New(agenthttp.Config{Embedded: true})
	if err != nil {
		t.Fatal(err)
	}
	r := get(t, s.Handler(), "GET", "/chat/")
	page := body(t, r)
	if r.StatusCode != 200 || !strings.Contains(page, `src="chat-page.js"`) || !strings.Contains(page, `href="chat.css"`) {
		t.Fatalf("/chat/: %d\n%s", r.StatusCode, page)
	}
	for _, name := range []string{"chat.js", "chat.css", "chat-page.js"} {
		r := get(t, s.Handler(), "GET", "/chat/"+name)
		want, ctype, _ := web.Asset(name)
		if got := body(t, r); r.StatusCode != 200 || got != string(want) || r.Header.Get("Content-Type") != ctype {
			t.Errorf("/chat/%s: %d %q", name, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
}
