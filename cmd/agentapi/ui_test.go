package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser tests drive the real `serve` (embedded defaults: no Redis,
// SQLite) with Debian's chromium through chromedp. They skip when chromium
// is missing, except when CI is set (CI=true in CI), where that is a
// failure. Screenshots go to $AGENTAPI_TEST_ARTIFACTS/ui-screenshots or
// <temp dir>/agentapi-ui-screenshots (the test logs which).

// chromiumPath finds the browser or skips (fails in CI).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and CI must run the browser tests: apt-get install -y chromium")
	}
	t.Skip("chromium is not installed: apt-get install -y chromium to run the browser tests")
	return ""
}

// screenshotDir is where the tests save their screenshots.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("AGENTAPI_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "agentapi-ui-screenshots")
	} else {
		dir = filepath.Join(dir, "ui-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one headless chromium tab on the server under test.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
	logs  *strings.Builder

	mu     sync.Mutex
	errors []string // uncaught JavaScript exceptions
}

func newBrowser(t *testing.T, base string, serverLogs *strings.Builder) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// Without these, chromium reaches for the network, which this
		// machine's closed network refuses.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: base, shots: screenshotDir(t), logs: serverLogs}
	// The first call starts the browser, which lives as long as the context
	// of that call: no timeout here.
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return b
}

// do runs actions, failing the test (with a screenshot) on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 25*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, serr := chromedp.Run(ctx, chromedp.CaptureScreenshot()); serr == nil {
		name := filepath.Join(b.shots, "failure-"+strings.NewReplacer("/", "-", " ", "-").Replace(b.t.Name())+".png")
		os.WriteFile(name, png, 0o644)
		b.t.Logf("screenshot of the failure: %s", name)
	}
	if text, terr := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`)); terr == nil {
		b.t.Logf("page text:\n%s", text)
	}
	b.t.Logf("server logs:\n%s", b.logs.String())
	b.t.Fatalf("%s: %v (JavaScript exceptions: %v)", what, err, b.exceptions())
}

func (b *browser) exceptions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

func (b *browser) eval(what, expr string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err == nil {
		err = json.Unmarshal(v, out)
	}
	if err != nil {
		b.fail(what, err)
	}
}

func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// hasText waits until the element sel contains text.
func hasText(sel, text string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.textContent.includes(%s); })()`, jsString(sel), jsString(text)),
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := poll(ctx, t); err != nil {
			return chromedp.Void{}, fmt.Errorf("waiting for %q in %s: %w", text, sel, err)
		}
		return chromedp.Void{}, nil
	}
}

// until waits until the JavaScript expression is true.
func until(expr string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		if _, err := poll(ctx, t); err != nil {
			return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", expr, err)
		}
		return chromedp.Void{}, nil
	}
}

func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// clearField empties a form field.
func clearField(sel string) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = ""; return e.value === ""; })()`, jsString(sel)))
}

// screenshot saves the page at a desktop and at a phone width.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	for _, size := range []struct {
		suffix string
		w, h   int64
		mobile bool
	}{{"desktop", 1280, 800, false}, {"phone", 375, 812, true}} {
		var opts []chromedp.EmulateViewportOption
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
		png, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
			if _, err := chromedp.EmulateViewport(size.w, size.h, opts...)(ctx, t); err != nil {
				return nil, err
			}
			// At the top, once painted.
			if _, err := chromedp.Evaluate[bool](`new Promise(done => {
				document.activeElement?.blur();
				document.querySelector("#main")?.scrollTo(0, 0);
				requestAnimationFrame(() => requestAnimationFrame(() => done(true)));
			})`, chromedp.EvalAwaitPromise)(ctx, t); err != nil {
				return nil, err
			}
			return chromedp.CaptureScreenshot()(ctx, t)
		})
		cancel()
		if err != nil {
			b.fail("screenshot "+name, err)
		}
		if size.mobile {
			// Nothing may be wider than the phone's screen.
			var overflow int
			b.eval("page width", `document.documentElement.scrollWidth - document.documentElement.clientWidth`, &overflow)
			if overflow > 0 {
				b.fail("phone layout", fmt.Errorf("%s is %d px wider than a 375 px screen", name, overflow))
			}
		}
		file := filepath.Join(b.shots, name+"-"+size.suffix+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.do("restore the viewport", chromedp.EmulateViewport(1280, 800))
}

// fullScreenshot saves the whole of a long page at the desktop width.
func (b *browser) fullScreenshot(name string) {
	b.t.Helper()
	var height int64
	b.eval("page height", `document.querySelector("#main").scrollHeight + document.querySelector(".top").offsetHeight + 40`, &height)
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		if _, err := chromedp.EmulateViewport(1280, min(height, 6000))(ctx, t); err != nil {
			return nil, err
		}
		return chromedp.CaptureScreenshot()(ctx, t)
	})
	if err != nil {
		b.fail("screenshot "+name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.do("restore the viewport", chromedp.EmulateViewport(1280, 800))
}

// accessible checks that every visible control has an accessible name.
func (b *browser) accessible(where string) {
	b.t.Helper()
	var unnamed []string
	b.eval("accessible names", `(() => {
		const bad = [];
		for (const el of document.querySelectorAll("input, select, textarea, button, a[href], [role=img]")) {
			if (el.closest("[hidden]") || el.getClientRects().length === 0 && el.type !== "file") continue;
			const labels = el.labels ? [...el.labels].map(l => l.textContent).join(" ") : "";
			const own = (el.tagName === "BUTTON" || el.tagName === "A") ? el.textContent : "";
			const name = labels || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || own || el.title || "";
			if (!name.trim()) bad.push(el.outerHTML.slice(0, 120));
		}
		return bad;
	})()`, &unnamed)
	if len(unnamed) > 0 {
		b.t.Errorf("%s: controls without an accessible name: %v", where, unnamed)
	}
}

// prefixProxy is a reverse proxy that serves the server under a path
// prefix, as an operator's proxy might, and can cut the open event
// streams to show that the page reconnects without losing anything.
type prefixProxy struct {
	prefix string
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	next    int
	streams map[int]context.CancelFunc
	resumes []string // Last-Event-ID of each /events request
}

func newPrefixProxy(t *testing.T, prefix, addr string) (*prefixProxy, string) {
	target := &url.URL{Scheme: "http", Host: addr}
	p := &prefixProxy{prefix: prefix, streams: map[int]context.CancelFunc{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
		},
		FlushInterval: -1, // event streams go through as they come
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return p, srv.URL + prefix
}

func (p *prefixProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, p.prefix+"/") && r.URL.Path != p.prefix {
		http.NotFound(w, r)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/events") {
		ctx, cancel := context.WithCancel(r.Context())
		p.mu.Lock()
		id := p.next
		p.next++
		p.streams[id] = cancel
		p.resumes = append(p.resumes, r.Header.Get("Last-Event-ID"))
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			delete(p.streams, id)
			p.mu.Unlock()
			cancel()
		}()
		r = r.WithContext(ctx)
	}
	p.rp.ServeHTTP(w, r)
}

// cut breaks every open event stream and returns how many there were.
func (p *prefixProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cancel := range p.streams {
		cancel()
	}
	return len(p.streams)
}

func (p *prefixProxy) lastEventIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.resumes...)
}

func TestUI(t *testing.T) {
	began := time.Now()
	env := []string{
		"HOME=" + t.TempDir(), "AGENTAPI_ADMIN_API_KEY=" + testAdminKey,
		// The test clicks faster than a person, and rate limits have tests
		// of their own (with the default per-IP burst of 10, loading the
		// page alone spends most of it; see docs/ui.md).
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE=60000", "RATE_LIMIT_IP_BURST_SIZE=1000",
		"RATE_LIMIT_REQUESTS_PER_MINUTE=60000", "RATE_LIMIT_BURST_SIZE=1000",
		"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE=6000", "RATE_LIMIT_LOGIN_BURST_SIZE=100",
	}
	_, addr, logs := started(t, env, "serve", "--port", "0")
	proxy, base := newPrefixProxy(t, "/agentapi", addr)
	b := newBrowser(t, base, logs)
	t.Logf("screenshots in %s", b.shots)

	var sessionID, memberKey string
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"Chat", func(t *testing.T) { sessionID = uiChat(t, b) }},
		{"Reconnect", func(t *testing.T) { uiReconnect(t, b, proxy, "http://"+addr, sessionID) }},
		{"Dashboard", func(t *testing.T) { memberKey = uiDashboard(t, b, sessionID) }},
		{"Member", func(t *testing.T) { uiMember(t, b, memberKey) }},
		{"TenantAdmin", func(t *testing.T) { uiTenantAdmin(t, b) }},
		{"ChartHelpers", func(t *testing.T) { uiChartHelpers(t, b) }},
	}
	for _, s := range steps {
		start := time.Now()
		b.t = t
		ok := t.Run(s.name, func(t *testing.T) {
			b.t = t
			s.run(t)
			if errs := b.exceptions(); len(errs) > 0 {
				t.Fatalf("uncaught JavaScript exceptions: %v", errs)
			}
		})
		b.t = t
		t.Logf("%s took %v", s.name, time.Since(start).Round(time.Millisecond))
		if !ok {
			return
		}
	}
	t.Logf("UI tests took %v", time.Since(began).Round(time.Millisecond))
}

// uiChat: sign in, start an echo session, chat, send raw keys, upload,
// reload, and use the session's own chat page. Returns the session id.
func uiChat(t *testing.T, b *browser) string {
	b.do("open the sign-in page",
		chromedp.Navigate(b.base+"/ui"), // redirected to /ui/
		chromedp.WaitVisible(css("#login-key")))
	b.accessible("sign-in")
	b.do("a wrong key is refused with the server's detail",
		chromedp.SendKeys(css("#login-key"), "agk_wrong\r"),
		hasText("#login-error", "invalid or expired credentials"))
	b.screenshot("signin")
	b.do("sign in with the keyboard",
		clearField("#login-key"),
		chromedp.SendKeys(css("#login-key"), testAdminKey+"\r"),
		chromedp.WaitVisible(css("#app")),
		hasText("#who", "platform admin"),
		chromedp.WaitVisible(css("#nav-dashboard")),
		hasText("#new-agent", "echo"))
	b.do("start a session with the demo agent",
		chromedp.SetValue(css("#new-agent"), "echo"),
		chromedp.SendKeys(css("#new-name"), "demo"),
		chromedp.Click(css(".new-session button[type=submit]")),
		hasText("#session-title", "demo"),
		hasText(".chat-status", "Agent ready"),
		hasText(".chat-log", "Demo agent ready"))
	var hash string
	b.eval("session id", `location.hash`, &hash)
	id := strings.TrimPrefix(hash, "#/sessions/")
	if id == "" || id == hash {
		t.Fatalf("no session in the location: %q", hash)
	}
	b.do("send a message and see the reply stream in",
		chromedp.SendKeys(css(".chat-form textarea"), "hello browser\r"),
		hasText(".chat-log .msg.user", "hello browser"),
		hasText(".chat-log .msg.agent:last-child", "Echo: hello browser"),
		hasText(".chat-status", "Agent ready"))
	b.accessible("chat")
	b.screenshot("chat")

	b.do("the terminal view shows the raw screen",
		chromedp.Click(css(`button[aria-controls$="-term"]`)),
		chromedp.WaitVisible(css(".chat-screen")),
		hasText(".chat-screen", "Echo: hello browser"))
	b.do("ask for a permission prompt",
		chromedp.SendKeys(css(".chat-form textarea"), "/confirm\r"),
		hasText(".chat-screen", "1. Yes"),
		hasText(".chat-status", "Agent ready"))
	b.do("raw keys: Down arrow moves the selection, Enter chooses",
		chromedp.Click(css(`button[data-key="Down arrow"]`)),
		hasText(".chat-note", "Sent Down arrow"),
		hasText(".chat-screen", "❯ 2. No"),
		chromedp.Click(css(`button[data-key="Enter"]`)),
		hasText(".chat-screen", "Declined."))
	b.screenshot("terminal")
	b.do("keys typed into the terminal reach the agent",
		chromedp.SendKeys(css(".chat-screen"), "xyz"),
		hasText(".chat-screen", "> xyz"),
		chromedp.Click(css(`button[data-key="Control C"]`)),
		until(`!document.querySelector(".chat-screen").textContent.includes("> xyz")`),
		chromedp.Click(css(`button[aria-controls$="-log"]`)),
		chromedp.WaitVisible(css(".chat-log")))

	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte("notes for the agent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.do("upload a file",
		chromedp.SetUploadFiles(css(".chat input[type=file]"), []string{file}),
		hasText(".chat-note", "Uploaded notes.txt to"))
	var saved string
	b.eval("uploaded path", `document.querySelector(".chat-note code").textContent`, &saved)
	if got, err := os.ReadFile(saved); err != nil || string(got) != "notes for the agent\n" {
		t.Fatalf("the upload at %q: %q, %v", saved, got, err)
	}
	b.do("insert the uploaded path into the message",
		chromedp.Click(css(".chat-note button")),
		until(`document.querySelector(".chat-form textarea").value.endsWith(`+jsString(saved)+`)`),
		clearField(".chat-form textarea"))

	b.do("reload: the conversation is back",
		chromedp.Reload(),
		chromedp.WaitVisible(css("#app")),
		hasText("#session-title", "demo"),
		hasText(".chat-log", "Echo: hello browser"),
		hasText(".chat-log", "/confirm"),
		hasText(".chat-status", "Agent ready"))
	b.do("the session's own chat page uses the same chat view",
		chromedp.Navigate(b.base+"/v1/sessions/"+id+"/chat/"),
		hasText(".chat-log", "Echo: hello browser"),
		hasText(".chat-status", "Agent ready"),
		chromedp.Navigate(b.base+"/ui/#/sessions/"+id),
		hasText(".chat-log", "Echo: hello browser"))
	return id
}

// uiDashboard: a platform admin sees health and the live session, creates
// a tenant, a member and keys (the secret shown once), revokes one, stops
// the session and signs out. Returns the member's key.
func uiDashboard(t *testing.T, b *browser, sessionID string) string {
	b.do("open the dashboard",
		chromedp.Click(css("#nav-dashboard")),
		chromedp.WaitVisible(css("#dash-health")),
		hasText("#health-database", "ok"),
		hasText("#health-redis", "disabled"),
		hasText("#dash-sessions", "demo"),
		hasText("#dash-sessions", "1 running"),
		hasText("#dash-breakers", "database"),
		hasText("#dash-people", "admin"))
	b.do("create a tenant",
		chromedp.SendKeys(css("#tenant-name"), "Acme"),
		chromedp.SendKeys(css("#tenant-id"), "acme"),
		chromedp.Click(css("#dash-tenants form button[type=submit]")),
		hasText("#dash-tenants", "Tenant Acme (acme) created."),
		hasText("#dash-people-title", "acme"),
		hasText("#dash-people", "No users yet."))
	b.do("create a member",
		chromedp.SendKeys(css("#user-name"), "alice"),
		chromedp.SetValue(css("#user-role"), "member"),
		chromedp.Click(css("#dash-people form[aria-label='Create a user'] button")),
		hasText("#dash-people table", "alice"))
	b.do("create a key: its secret is shown once",
		chromedp.SendKeys(css("#key-name"), "laptop"),
		chromedp.Click(css("#dash-people form[aria-label='Create an API key'] button")),
		chromedp.WaitVisible(css("#new-key-secret")),
		hasText("#new-key", "shown this once"))
	var key string
	b.eval("the new key", `document.querySelector("#new-key-secret").textContent`, &key)
	if !strings.HasPrefix(key, "agk_") {
		t.Fatalf("the key shown: %q", key)
	}
	b.do("create a second key and revoke it",
		chromedp.Click(css("#new-key button:last-child")),
		chromedp.WaitNotVisible(css("#new-key")),
		chromedp.SendKeys(css("#key-name"), "old"),
		chromedp.Click(css("#dash-people form[aria-label='Create an API key'] button")),
		chromedp.WaitVisible(css("#new-key-secret")))
	var second string
	b.eval("the second key", `document.querySelector("#new-key-secret").textContent`, &second)
	b.do("revoke it",
		chromedp.Click(css(fmt.Sprintf(`#dash-people button[aria-label="Revoke key %s"]`, second[:12]))),
		hasText(`#dash-people [aria-label="API keys"]`, "revoked"))
	if code, _ := call(t, "GET", b.base+"/v1/auth/session", second, nil); code != http.StatusUnauthorized {
		t.Fatalf("the revoked key still works: %d", code)
	}
	if code, who := call(t, "GET", b.base+"/v1/auth/session", key, nil); code != 200 || who["role"] != "member" || who["tenant_id"] != "acme" {
		t.Fatalf("the created key: %d %v", code, who)
	}
	// The panels fed by routes other work may not have yet render either
	// way: data, or "not available".
	b.do("metrics and usage panels render",
		until(`["#dash-traffic", "#dash-usage"].every(s => !document.querySelector(s + " .panel-body").textContent.includes("Loading"))`))
	b.accessible("dashboard")
	b.screenshot("dashboard")
	b.fullScreenshot("dashboard-full-desktop")

	b.do("stop the session from the dashboard",
		chromedp.Click(css("#dash-sessions td button.danger")),
		hasText("#dash-sessions", "0 running"))
	b.do("its chat shows the transcript of an ended session",
		chromedp.Navigate(b.base+"/ui/#/sessions/"+sessionID),
		hasText(".chat-status", "Session ended"),
		hasText(".chat-log", "Echo: hello browser"),
		hasText("#session-state", "stopped"))
	b.do("sign out",
		chromedp.Click(css("#signout")),
		chromedp.WaitVisible(css("#login-key")),
		hasText("#login-note", "signed out"))
	if code, _ := call(t, "GET", b.base+"/v1/sessions", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d", code)
	}
	return key
}

// uiMember: the web_ui flag turned off keeps a member out; with it on, a
// member sees no admin view, and the dashboard URL shows the API's refusal.
func uiMember(t *testing.T, b *browser, key string) {
	if code, body := call(t, "PUT", b.base+"/v1/admin/tenants/acme/flags/web_ui", testAdminKey, map[string]any{"enabled": false}); code != 200 {
		t.Fatalf("turning web_ui off: %d %v", code, body)
	}
	b.do("with web_ui off the app is not shown",
		chromedp.SendKeys(css("#login-key"), key+"\r"),
		hasText("#blocked-message", "feature flag web_ui"))
	if code, body := call(t, "DELETE", b.base+"/v1/admin/tenants/acme/flags/web_ui", testAdminKey, nil); code != 200 {
		t.Fatalf("turning web_ui back on: %d %v", code, body)
	}
	b.do("sign out and in again",
		chromedp.Click(css("#blocked-signout")),
		chromedp.WaitVisible(css("#login-key")),
		chromedp.SendKeys(css("#login-key"), key+"\r"),
		chromedp.WaitVisible(css("#app")),
		hasText("#who", "acme · member"),
		hasText("#session-items", "No sessions yet"))
	var navHidden bool
	b.eval("dashboard link", `document.querySelector("#nav-dashboard").hidden`, &navHidden)
	if !navHidden {
		t.Fatal("a member is offered the dashboard")
	}
	b.do("the dashboard URL shows the API's refusal",
		chromedp.Navigate(b.base+"/ui/#/dashboard"),
		hasText("#dashboard-denied", "this needs the admin role"),
		hasText("#dashboard-denied", "HTTP 403"))
	var panels int
	b.eval("admin panels", `document.querySelectorAll(".panel[id^=dash-]").length`, &panels)
	if panels != 0 {
		t.Fatalf("a member sees %d admin panels", panels)
	}
	b.do("sign out", chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#login-key")))
}

// uiReconnect: the event stream breaks (a proxy cuts it) while the agent
// answers a message sent elsewhere; the page resumes with Last-Event-ID
// and shows the exchange exactly once.
func uiReconnect(t *testing.T, b *browser, proxy *prefixProxy, direct, id string) {
	b.do("the chat is live",
		hasText(".chat-status", "Agent ready"))
	before := len(proxy.lastEventIDs())
	if n := proxy.cut(); n == 0 {
		t.Fatal("no open event stream to cut")
	}
	b.do("the page says it reconnects",
		until(`["reconnecting", "connecting"].includes(document.querySelector(".chat-status").dataset.state)`))
	// Sent straight to the server, while the page is cut off.
	if code, body := call(t, "POST", direct+"/v1/sessions/"+id+"/message", testAdminKey, map[string]string{"content": "while away", "type": "user"}); code != 200 {
		t.Fatalf("message while away: %d %v", code, body)
	}
	b.do("the missed exchange arrives after the reconnect",
		hasText(".chat-log", "Echo: while away"),
		hasText(".chat-status", "Agent ready"))
	var users, replies int
	b.eval("count", `[...document.querySelectorAll(".chat-log .msg.user")].filter(e => e.textContent.includes("while away")).length`, &users)
	b.eval("count", `[...document.querySelectorAll(".chat-log .msg.agent")].filter(e => e.textContent.includes("Echo: while away")).length`, &replies)
	if users != 1 || replies != 1 {
		t.Fatalf("after the reconnect: %d user messages and %d replies 'while away', want 1 and 1", users, replies)
	}
	ids := proxy.lastEventIDs()[before:]
	if len(ids) == 0 || ids[0] == "" {
		t.Fatalf("the page reconnected without Last-Event-ID: %q", ids)
	}
}

// uiTenantAdmin: a tenant's admin gets the dashboard of their own tenant,
// without the platform's panels (tenants, breakers).
func uiTenantAdmin(t *testing.T, b *browser) {
	code, u := call(t, "POST", b.base+"/v1/admin/tenants/acme/users", testAdminKey, map[string]string{"name": "bob", "role": "admin"})
	if code != 200 {
		t.Fatalf("create bob: %d %v", code, u)
	}
	code, k := call(t, "POST", b.base+"/v1/admin/tenants/acme/users/"+u["id"].(string)+"/keys", testAdminKey, map[string]string{})
	if code != 200 {
		t.Fatalf("bob's key: %d %v", code, k)
	}
	b.do("a tenant admin opens the dashboard",
		chromedp.SendKeys(css("#login-key"), k["secret"].(string)+"\r"),
		chromedp.WaitVisible(css("#nav-dashboard")),
		chromedp.Click(css("#nav-dashboard")),
		hasText("#dash-people-title", "acme"),
		hasText("#dash-people", "alice"),
		hasText("#dash-sessions", "0 running"))
	var platformPanels int
	b.eval("platform panels", `document.querySelectorAll("#dash-tenants, #dash-breakers").length`, &platformPanels)
	if platformPanels != 0 {
		t.Fatalf("a tenant admin sees %d platform panels", platformPanels)
	}
	b.do("sign out", chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#login-key")))
}

// uiChartHelpers: the dashboard's parsers and charts on inputs that the
// routes still being written may produce (their panels only show "not
// available" until then).
func uiChartHelpers(t *testing.T, b *browser) {
	var out struct {
		Decisions float64            `json:"decisions"`
		Label     string             `json:"label"`
		Rows      map[string]float64 `json:"rows"`
		Wide      map[string]float64 `json:"wide"`
		Byday     map[string]float64 `json:"byday"`
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](`import("./dashboard.js").then(m => {
		const text = '# HELP x\n# TYPE agentapi_ratelimit_decisions_total counter\n' +
			'agentapi_ratelimit_decisions_total{limit="user",outcome="denied"} 3\n' +
			'agentapi_ratelimit_decisions_total{limit="ip",outcome="denied"} 4\n' +
			'agentapi_cache_hits_total{cache="tenant \\"cfg\\""} 2e1\n';
		const s = m.parseMetrics(text);
		return {
			decisions: s.filter(x => x.labels.outcome === "denied").reduce((a, x) => a + x.value, 0),
			label: s[2].labels.cache + "=" + s[2].value,
			rows: m.usageSeries({from: "2026-01-01", rows: [{tenant_id: "t", user_id: "u", day: "2026-01-02", metric: "messages", count: 5}, {tenant_id: "t", user_id: "v", day: "2026-01-02", metric: "messages", count: 1}], totals: {messages: 6}}).messages,
			wide: m.usageSeries([{date: "2026-01-03", requests: 7, user_id: "u"}]).requests,
			byday: m.usageSeries({days: {"2026-01-04": {uploads: 9}}}).uploads,
		};
	})`, chromedp.EvalAwaitPromise))
	if err == nil {
		err = json.Unmarshal(raw, &out)
	}
	if err != nil {
		b.fail("chart helpers", err)
	}
	if out.Decisions != 7 || out.Label != `tenant "cfg"=20` || out.Rows["2026-01-02"] != 6 || out.Wide["2026-01-03"] != 7 || out.Byday["2026-01-04"] != 9 {
		t.Fatalf("chart helpers: %+v", out)
	}
}
