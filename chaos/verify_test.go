package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// verified is what the end-of-run checks found.
type verified struct {
	Whole         bool           `json:"whole"`
	Sessions      int            `json:"sessions"`
	Unanswered    int            `json:"sessions_started_unanswered"`
	AckedMessages int            `json:"acked_messages"`
	RepliesRead   int            `json:"replies_read"`
	LostMessages  []string       `json:"lost_messages"`
	LostReplies   []string       `json:"lost_replies"`
	Tokens        int            `json:"tokens"`
	TokensLost    int            `json:"tokens_lost"`
	Usage         []usageCheck   `json:"usage"`
	Bursts        map[string]int `json:"bursts"`
	GracefulStops int            `json:"graceful_stops"`
	AgentsLeft    []string       `json:"agents_left"`
	failures      []string
}

type usageCheck struct {
	User    string `json:"user"`
	Metric  string `json:"metric"`
	Low     int64  `json:"answered"`
	High    int64  `json:"sent"`
	Counted int64  `json:"counted"`
	OK      bool   `json:"ok"`
}

func (v *verified) fail(format string, args ...any) {
	v.failures = append(v.failures, fmt.Sprintf(format, args...))
}

func (v verified) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  every instance whole after the last fault: %v\n", v.Whole)
	fmt.Fprintf(&b, "  sessions: %d (and %d started though the answer was lost with an instance); acknowledged messages: %d, missing from stored transcripts: %d\n", v.Sessions, v.Unanswered, v.AckedMessages, len(v.LostMessages))
	fmt.Fprintf(&b, "  agent replies read by clients: %d, missing from stored transcripts: %d\n", v.RepliesRead, len(v.LostReplies))
	fmt.Fprintf(&b, "  login tokens issued: %d, no longer valid: %d\n", v.Tokens, v.TokensLost)
	fmt.Fprintf(&b, "  rate-limited volleys: %v\n", v.Bursts)
	b.WriteString("  usage (answered <= counted <= sent):\n")
	for _, u := range v.Usage {
		mark := "ok"
		if !u.OK {
			mark = "WRONG"
		}
		fmt.Fprintf(&b, "    %-30s %-13s %6d <= %6d <= %6d  %s\n", u.User, u.Metric, u.Low, u.Counted, u.High, mark)
	}
	fmt.Fprintf(&b, "  instances stopped cleanly with SIGTERM: %d; agent processes left behind: %d\n", v.GracefulStops, len(v.AgentsLeft))
	return b.String()
}

// verify checks the system against the ledger once the load has stopped.
func verify(t *testing.T, sys *system, c *client, l *ledger, members, bursters []user) verified {
	t.Helper()
	ctx := context.Background()
	var v verified
	c.st.setPhase("verify")

	// Whole again: every instance answers, Redis and the database ok.
	v.Whole = true
	for _, in := range sys.insts {
		a := c.once(ctx, in, "GET", "/status", "", nil)
		if a.err != nil || a.status != 200 || !bytes.Contains(a.body, []byte(`"status":"ok"`)) {
			v.Whole = false
			v.fail("%s is not whole after the last fault: %d %v %s", in.id, a.status, a.err, a.body)
		}
	}

	// Usage first: the checks below make requests of their own.
	v.Usage = checkUsage(t, c, l, append(append([]user(nil), members...), bursters...), &v)

	// Every login token the server issued still works.
	l.mu.Lock()
	tokens := append([]issuedToken(nil), l.tokens...)
	l.mu.Unlock()
	v.Tokens = len(tokens)
	for _, tk := range tokens {
		a := c.do(ctx, "verify", "GET", "/v1/auth/session", tk.token, nil)
		if a.err != nil || a.status != 200 {
			v.TokensLost++
			if v.TokensLost <= 5 {
				v.fail("the login token issued to %s/%s at %s no longer works: %d %s", tk.user.tenant, tk.user.name, tk.at.Format(time.TimeOnly), a.status, a.detail)
			}
		}
	}
	if v.TokensLost > 5 {
		v.fail("%d login tokens in all no longer work", v.TokensLost)
	}

	keys := map[string]user{}
	for _, u := range members {
		keys[u.tenant+"/"+u.id] = u
	}
	l.mu.Lock()
	var sessions []*sessionLog
	for _, s := range l.sessions {
		sessions = append(sessions, s)
	}
	l.mu.Unlock()
	sort.Slice(sessions, func(i, j int) bool { return sessions[i].id < sessions[j].id })
	v.Sessions = len(sessions)
	l.mu.Lock()
	v.Unanswered = len(l.orphans)
	l.mu.Unlock()

	// Stop what still runs, so that each transcript is the stored one.
	for _, s := range sessions {
		u := keys[s.tenant+"/"+s.user]
		a := c.do(ctx, "verify", "DELETE", "/v1/sessions/"+s.id, u.key, nil)
		if a.err != nil || (a.status != 204 && a.status != 409) {
			v.fail("stopping session %s: %d %v %s", s.id, a.status, a.err, a.body)
		}
	}
	for _, s := range sessions {
		u := keys[s.tenant+"/"+s.user]
		a := c.do(ctx, "verify", "GET", "/v1/sessions/"+s.id+"/messages", u.key, nil)
		var out struct {
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		if a.err != nil || a.status != 200 || a.decode(&out) != nil {
			v.fail("reading the stored transcript of %s: %d %v %s", s.id, a.status, a.err, a.body)
			continue
		}
		have := map[string]bool{}
		mine := "hello from " + s.tenant + " " + u.name + " #"
		for _, m := range out.Messages {
			have[m.Role+"\x00"+m.Content] = true
			if strings.Contains(m.Content, "hello from ") && !strings.Contains(m.Content, mine) {
				v.fail("the transcript of %s/%s's session %s holds %q", s.tenant, u.name, s.id, m.Content)
			}
		}
		s.mu.Lock()
		v.AckedMessages += len(s.acked)
		v.RepliesRead += len(s.replies)
		for _, m := range s.acked {
			if !have["user\x00"+m] {
				v.LostMessages = append(v.LostMessages, s.id+": "+m)
			}
		}
		for m := range s.replies {
			if !have["agent\x00"+m] {
				v.LostReplies = append(v.LostReplies, s.id+": "+m)
			}
		}
		s.mu.Unlock()
	}
	if n := len(v.LostMessages); n > 0 {
		v.fail("%d acknowledged messages are missing from the stored transcripts, e.g. %q", n, v.LostMessages[:min(n, 5)])
	}
	if n := len(v.LostReplies); n > 0 {
		v.fail("%d agent replies clients read are missing from the stored transcripts, e.g. %q", n, v.LostReplies[:min(n, 5)])
	}
	if v.AckedMessages == 0 {
		v.fail("no message was acknowledged: the load did not exercise the agents")
	}

	// The bursts: the limit held whenever the system was whole.
	v.Bursts = map[string]int{}
	l.mu.Lock()
	for _, b := range l.bursts {
		v.Bursts["volleys"]++
		v.Bursts["admitted"] += b.admitted
		v.Bursts["limited"] += b.limited
		v.Bursts["other"] += b.other
	}
	l.mu.Unlock()
	if v.Bursts["limited"] == 0 {
		v.fail("no volley was rate limited: the burst tenant's limit did not act")
	}

	// Graceful stops, then nothing of ours may be left running.
	for _, in := range sys.insts {
		if err := in.stop(); err != nil {
			v.fail("%v", err)
		} else {
			v.GracefulStops++
		}
	}
	v.AgentsLeft = agentsLeft(binary)
	if len(v.AgentsLeft) > 0 {
		v.fail("agent processes outlived their servers: %v", v.AgentsLeft)
	}
	return v
}

// checkUsage polls the usage report until every user's counts reach what
// the clients were answered (other instances push within a second), then
// checks none exceeds what they sent.
func checkUsage(t *testing.T, c *client, l *ledger, users []user, v *verified) []usageCheck {
	t.Helper()
	ctx := context.Background()
	l.mu.Lock()
	seen := map[string]usageSeen{}
	for k, u := range l.usage {
		seen[k] = *u
	}
	l.mu.Unlock()
	type want struct {
		u      user
		metric string
		lo, hi int64
	}
	var wants []want
	for _, u := range users {
		s := seen[u.tenant+"/"+u.id]
		wants = append(wants,
			want{u, "requests", s.requestsLow, s.requestsHigh},
			want{u, "messages", s.messagesLow, s.messagesHigh},
			want{u, "rate_limited", s.rateLimitedLow, s.requestsHigh})
	}
	counted := func() (map[string]int64, error) {
		out := map[string]int64{}
		tenants := map[string]bool{}
		for _, u := range users {
			tenants[u.tenant] = true
		}
		for tenant := range tenants {
			a := c.do(ctx, "verify", "GET", "/v1/admin/usage?tenant="+url.QueryEscape(tenant), adminKey, nil)
			var body struct {
				Rows []struct {
					TenantID string `json:"tenant_id"`
					UserID   string `json:"user_id"`
					Metric   string `json:"metric"`
					Count    int64  `json:"count"`
				} `json:"rows"`
			}
			if a.err != nil || a.status != 200 {
				return nil, fmt.Errorf("usage of %s: %d %v %s", tenant, a.status, a.err, a.body)
			}
			if err := a.decode(&body); err != nil {
				return nil, err
			}
			for _, r := range body.Rows {
				out[r.TenantID+"/"+r.UserID+"/"+r.Metric] += r.Count
			}
		}
		return out, nil
	}
	var got map[string]int64
	var err error
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err = counted()
		short := err != nil
		for _, w := range wants {
			if !short && got[w.u.tenant+"/"+w.u.id+"/"+w.metric] < w.lo {
				short = true
			}
		}
		if !short || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		v.fail("reading usage: %v", err)
		return nil
	}
	var out []usageCheck
	for _, w := range wants {
		n := got[w.u.tenant+"/"+w.u.id+"/"+w.metric]
		uc := usageCheck{User: w.u.tenant + "/" + w.u.name, Metric: w.metric, Low: w.lo, High: w.hi, Counted: n, OK: n >= w.lo && n <= w.hi}
		out = append(out, uc)
		switch {
		case n < w.lo:
			v.fail("usage lost counts: %s %s counted %d, but %d were answered", uc.User, w.metric, n, w.lo)
		case n > w.hi:
			v.fail("usage invented counts: %s %s counted %d, but only %d were sent", uc.User, w.metric, n, w.hi)
		}
	}
	return out
}

// agentsLeft lists the processes still running the server binary.
func agentsLeft(bin string) []string {
	var left []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte(bin+"\x00")) {
			continue
		}
		left = append(left, filepath.Base(d)+": "+strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " "))
	}
	return left
}
