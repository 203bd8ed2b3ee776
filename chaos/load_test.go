package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// user is one API user of the load: a member of a tenant with an API key.
type user struct {
	tenant, id, name, key string
}

// sessionLog is what the clients were told about one agent session.
type sessionLog struct {
	id, tenant, user string
	mu               sync.Mutex
	acked            []string            // messages answered 200
	replies          map[string]struct{} // every agent reply ever read back
	ended            bool                // stopped by its user, or seen lost
}

// ledger is everything the clients were acknowledged, to check against
// the system's state at the end.
type ledger struct {
	mu        sync.Mutex
	sessions  map[string]*sessionLog // by id
	byTenant  map[string][]string    // tenant -> its session ids
	tokens    []issuedToken
	usage     map[string]*usageSeen // tenant/user -> counts
	leaks     []string              // any sight of another tenant's data (the first ones)
	leakCount int
	orphans   map[string]bool // the user's own sessions whose start was not answered
	bursts    []burst
}

type issuedToken struct {
	user  user
	token string
	at    time.Time
}

// usageSeen bounds what the usage report must say for a user: each
// answered request was counted (low), none beyond those sent was (high).
type usageSeen struct {
	requestsLow, requestsHigh int64
	messagesLow, messagesHigh int64
	rateLimitedLow            int64
}

// burst is one volley of concurrent requests by a rate-limited user.
type burst struct {
	admitted, limited, other int
	phase                    string // the phase at both ends, or "mixed"
	allowed                  int    // the most the limit may admit
}

func newLedger() *ledger {
	return &ledger{sessions: map[string]*sessionLog{}, byTenant: map[string][]string{}, usage: map[string]*usageSeen{}}
}

func (l *ledger) usageOf(u user) *usageSeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := u.tenant + "/" + u.id
	if l.usage[k] == nil {
		l.usage[k] = &usageSeen{}
	}
	return l.usage[k]
}

// count records what a request by u may have added to its usage.
func (l *ledger) count(u user, a answer, message bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := u.tenant + "/" + u.id
	us := l.usage[k]
	if us == nil {
		us = &usageSeen{}
		l.usage[k] = us
	}
	if !a.sent {
		return
	}
	us.requestsHigh++
	if message {
		us.messagesHigh++
	}
	if a.err != nil {
		return
	}
	switch {
	case a.status < 300:
		us.requestsLow++
		if message {
			us.messagesLow++
		}
	case a.status == 429 && !strings.Contains(a.problem, "quota"):
		us.rateLimitedLow++
	}
}

// leak records a sight of data the user should not have seen, or of an
// answer inconsistent with what the user did (the first 20; leakCount
// counts them all).
func (l *ledger) leak(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leakCount++
	if len(l.leaks) < 20 {
		l.leaks = append(l.leaks, fmt.Sprintf(format, args...))
	}
}

func (l *ledger) orphan(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.orphans == nil {
		l.orphans = map[string]bool{}
	}
	l.orphans[id] = true
}

func (l *ledger) addSession(u user, id string) *sessionLog {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &sessionLog{id: id, tenant: u.tenant, user: u.id}
	l.sessions[id] = s
	l.byTenant[u.tenant] = append(l.byTenant[u.tenant], id)
	return s
}

// otherTenantsSession returns a session id of another tenant, if any.
func (l *ledger) otherTenantsSession(tenant string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for t, list := range l.byTenant {
		if t != tenant {
			ids = append(ids, list...)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	return ids[rand.IntN(len(ids))]
}

func (l *ledger) owns(tenant, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sessions[id]
	return s != nil && s.tenant == tenant
}

// worker is one member's loop: log in now and then, keep a session,
// message it, read lists and transcripts, probe another tenant's session,
// and stop the session now and then.
type worker struct {
	c   *client
	l   *ledger
	u   user
	seq int

	token string
	sess  *sessionLog
}

func (w *worker) cred() string {
	if w.token != "" && rand.IntN(2) == 0 {
		return w.token
	}
	return w.u.key
}

func (w *worker) do(ctx context.Context, op, method, path string, body any, message bool) answer {
	cred := w.cred()
	a := w.c.do(ctx, op, method, path, cred, body)
	if a.status == 401 && cred == w.token {
		// Reported as unauthorized (a failure) by kindOf; also forget the
		// token so the loop goes on with the key.
		w.token = ""
	}
	w.l.count(w.u, a, message)
	return a
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.step(ctx)
		// A user thinks between actions; 20-60ms keeps ~6 users at a
		// load two cores serve alongside the rest of the test suite.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(20+rand.IntN(40)) * time.Millisecond):
		}
	}
}

func (w *worker) step(ctx context.Context) {
	if w.token == "" || rand.IntN(40) == 0 {
		w.login(ctx)
		return
	}
	if w.sess == nil {
		w.start(ctx)
		return
	}
	switch r := rand.IntN(100); {
	case r < 45:
		w.message(ctx)
	case r < 62:
		w.list(ctx)
	case r < 80:
		w.transcript(ctx)
	case r < 88:
		w.probe(ctx)
	case r < 98:
		w.get(ctx)
	default:
		w.stop(ctx)
	}
}

func (w *worker) login(ctx context.Context) {
	// The key goes in the body; no usage is counted for a login.
	a := w.c.do(ctx, "login", "POST", "/v1/auth/login", "", map[string]string{"api_key": w.u.key})
	if a.err != nil || a.status != 200 {
		return
	}
	var out struct {
		Token    string `json:"token"`
		TenantID string `json:"tenant_id"`
	}
	if a.decode(&out) != nil || out.Token == "" {
		w.l.leak("login answered 200 without a token: %s", a.body)
		return
	}
	if out.TenantID != w.u.tenant {
		w.l.leak("login of %s/%s answered tenant %q", w.u.tenant, w.u.name, out.TenantID)
	}
	w.token = out.Token
	w.l.mu.Lock()
	w.l.tokens = append(w.l.tokens, issuedToken{user: w.u, token: out.Token, at: time.Now()})
	w.l.mu.Unlock()
}

func (w *worker) start(ctx context.Context) {
	a := w.do(ctx, "session_start", "POST", "/v1/sessions", map[string]string{"agent_type": "echo", "name": "chaos"}, false)
	if a.err != nil || a.status != 200 {
		return
	}
	var rec struct {
		ID       string `json:"id"`
		TenantID string `json:"tenant_id"`
	}
	if err := a.decode(&rec); err != nil || rec.ID == "" {
		w.l.leak("session start answered 200 without an id: %s", a.body)
		return
	}
	if rec.TenantID != w.u.tenant {
		w.l.leak("%s started a session recorded for tenant %q", w.u.tenant, rec.TenantID)
	}
	w.sess = w.l.addSession(w.u, rec.ID)
}

func (w *worker) message(ctx context.Context) {
	s := w.sess
	a := w.do(ctx, "session_status", "GET", "/v1/sessions/"+s.id+"/status", nil, false)
	if a.err != nil || a.status != 200 {
		w.checkEnded(ctx)
		return
	}
	var st struct{ Status string }
	a.decode(&st)
	if st.Status != "stable" {
		return
	}
	w.seq++
	content := fmt.Sprintf("hello from %s %s #%d", w.u.tenant, w.u.name, w.seq)
	a = w.do(ctx, "message", "POST", "/v1/sessions/"+s.id+"/message", map[string]string{"content": content, "type": "user"}, true)
	if a.err == nil && a.status == 200 {
		s.mu.Lock()
		s.acked = append(s.acked, content)
		s.mu.Unlock()
	}
}

func (w *worker) list(ctx context.Context) {
	a := w.do(ctx, "list_sessions", "GET", "/v1/sessions", nil, false)
	if a.err != nil || a.status != 200 {
		return
	}
	var out struct {
		Sessions []struct {
			ID       string `json:"id"`
			TenantID string `json:"tenant_id"`
			UserID   string `json:"user_id"`
		} `json:"sessions"`
	}
	if err := a.decode(&out); err != nil {
		w.l.leak("session list: %v", err)
		return
	}
	for _, s := range out.Sessions {
		switch {
		case s.TenantID != w.u.tenant || s.UserID != w.u.id:
			w.l.leak("%s/%s listed session %s of %s/%s", w.u.tenant, w.u.name, s.ID, s.TenantID, s.UserID)
		case !w.l.owns(w.u.tenant, s.ID):
			// The user's own session, whose start was never answered: the
			// instance that took the request died before relaying the
			// answer of the one that started it. Not a leak.
			w.l.orphan(s.ID)
		}
	}
}

// transcript reads the session's messages and checks each belongs to this
// user; the agent's replies are remembered, to be found in the stored
// transcript at the end.
func (w *worker) transcript(ctx context.Context) {
	s := w.sess
	a := w.do(ctx, "read_transcript", "GET", "/v1/sessions/"+s.id+"/messages", nil, false)
	if a.err != nil || a.status != 200 {
		return
	}
	var out struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := a.decode(&out); err != nil {
		w.l.leak("transcript: %v", err)
		return
	}
	mine := "hello from " + w.u.tenant + " " + w.u.name + " #"
	var replies []string
	for _, m := range out.Messages {
		if strings.Contains(m.Content, "hello from ") && !strings.Contains(m.Content, mine) {
			w.l.leak("%s/%s read %q in the transcript of its session %s", w.u.tenant, w.u.name, m.Content, s.id)
		}
		if m.Role == "agent" && strings.HasPrefix(m.Content, "Echo: ") {
			replies = append(replies, m.Content)
		}
	}
	// A set that only grows: a later read of the stored transcript (the
	// session lost with its instance) must not hide a reply read before.
	s.mu.Lock()
	if s.replies == nil {
		s.replies = map[string]struct{}{}
	}
	for _, r := range replies {
		s.replies[r] = struct{}{}
	}
	s.mu.Unlock()
}

// probe asks for another tenant's session: it must not exist for us.
func (w *worker) probe(ctx context.Context) {
	id := w.l.otherTenantsSession(w.u.tenant)
	if id == "" {
		return
	}
	paths := []string{"/v1/sessions/" + id, "/v1/sessions/" + id + "/messages", "/v1/sessions/" + id + "/status"}
	a := w.do(ctx, "probe_other_tenant", "GET", paths[rand.IntN(len(paths))], nil, false)
	if a.err == nil && a.status < 300 {
		w.l.leak("%s/%s read another tenant's session %s: %d %s", w.u.tenant, w.u.name, id, a.status, a.body)
	}
}

func (w *worker) get(ctx context.Context) {
	w.checkEnded(ctx)
}

// checkEnded reads the session's record and lets go of it once it ended
// (lost with its instance, say).
func (w *worker) checkEnded(ctx context.Context) {
	s := w.sess
	a := w.do(ctx, "get_session", "GET", "/v1/sessions/"+s.id, nil, false)
	if a.err != nil || a.status != 200 {
		return
	}
	var rec struct {
		State    string `json:"state"`
		TenantID string `json:"tenant_id"`
	}
	a.decode(&rec)
	if rec.TenantID != w.u.tenant {
		w.l.leak("%s read session %s as tenant %q's", w.u.tenant, s.id, rec.TenantID)
	}
	if rec.State != "running" && rec.State != "starting" {
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		w.sess = nil
	}
}

func (w *worker) stop(ctx context.Context) {
	s := w.sess
	a := w.do(ctx, "session_stop", "DELETE", "/v1/sessions/"+s.id, nil, false)
	if a.err == nil && (a.status == 204 || a.status == 409) {
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		w.sess = nil
	}
}

// burster is the user of the rate-limited tenant: every couple of seconds
// it sends a volley of concurrent requests, which the tenant's per-user
// limit must cut down to its burst.
type burster struct {
	c       *client
	l       *ledger
	u       user
	size    int
	limit   int // the per-user burst of its tenant
	perSec  float64
	counter int
}

func (b *burster) run(ctx context.Context) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(2000+rand.IntN(1000)) * time.Millisecond):
		}
		b.volley(ctx)
	}
}

func (b *burster) volley(ctx context.Context) {
	phase := b.c.st.currentPhase()
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	bu := burst{}
	for range b.size {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := b.c.do(ctx, "burst", "GET", "/v1/tenant/flags", b.u.key, nil)
			b.l.count(b.u, a, false)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case a.err == nil && a.status == 200:
				bu.admitted++
			case a.err == nil && a.status == 429:
				bu.limited++
			default:
				bu.other++
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	bu.phase = phase
	if b.c.st.currentPhase() != phase {
		bu.phase = "mixed"
	}
	// What refills during the volley, plus the bucket: at most the burst
	// after the pause before it (2s at 1/s refill does not overfill it).
	bu.allowed = b.limit + int(time.Since(start).Seconds()*b.perSec) + 1
	b.l.mu.Lock()
	b.l.bursts = append(b.l.bursts, bu)
	b.l.mu.Unlock()
}

// setup creates the tenants, their users and keys, and the burst tenant's
// tight per-user limit, through the API as a platform admin.
func setup(t *testing.T, c *client, tenants, usersPerTenant int) (members []user, bursters []user) {
	t.Helper()
	ctx := context.Background()
	must := func(what string, a answer, want int) answer {
		t.Helper()
		if a.err != nil || a.status != want {
			t.Fatalf("%s: %d %v %s", what, a.status, a.err, a.body)
		}
		return a
	}
	mkUser := func(tenant, name string) user {
		a := must("user "+name, c.do(ctx, "setup", "POST", "/v1/admin/tenants/"+tenant+"/users", adminKey, map[string]string{"name": name, "role": "member"}), 200)
		var u struct{ ID string }
		a.decode(&u)
		a = must("key "+name, c.do(ctx, "setup", "POST", "/v1/admin/tenants/"+tenant+"/users/"+url.PathEscape(u.ID)+"/keys", adminKey, map[string]string{}), 200)
		var k struct{ Secret string }
		a.decode(&k)
		return user{tenant: tenant, id: u.ID, name: name, key: k.Secret}
	}
	for i := range tenants {
		tenant := fmt.Sprintf("tenant%d", i+1)
		must("tenant "+tenant, c.do(ctx, "setup", "POST", "/v1/admin/tenants", adminKey, map[string]string{"id": tenant, "name": "Chaos " + tenant}), 200)
		for j := range usersPerTenant {
			members = append(members, mkUser(tenant, fmt.Sprintf("user%d", j+1)))
		}
	}
	must("burst tenant", c.do(ctx, "setup", "POST", "/v1/admin/tenants", adminKey, map[string]string{"id": "bursty", "name": "Chaos bursts"}), 200)
	must("burst limits", c.do(ctx, "setup", "PUT", "/v1/admin/tenants/bursty/config", adminKey,
		map[string]any{"user_rate_limit_per_minute": burstPerMinute, "user_rate_limit_burst": burstSize}), 200)
	bursters = append(bursters, mkUser("bursty", "volley"))
	return members, bursters
}

// The burst tenant's per-user limit.
const (
	burstPerMinute = 60
	burstSize      = 5
	volleySize     = 15
)
