package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/auth"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/redis"
	"github.com/agentapi-mt/agentapi/redistest"
)

func dial(t *testing.T, url string) *native.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := native.Dial(ctx, native.Options{URL: url, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("native.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// instance is one server process's view: its own Redis client (with its
// own client-side cache), store and session manager, built from the same
// configuration (key) as every other instance.
func instance(t *testing.T, url string, key []byte) *auth.Sessions {
	return auth.NewSessions(redis.NewSessionStore(dial(t, url), "agentapi:"), keyring(t, key), idle, absolute, nil)
}

// dump reads every key of the server and every value in it: names, string
// values, and members of sets (the only types the session store writes).
func dump(t *testing.T, c kv.Client) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	cursor := "0"
	for {
		v, err := c.Do(ctx, "SCAN", cursor, "COUNT", "1000")
		if err != nil {
			t.Fatal(err)
		}
		arr, _ := v.Array()
		cursor, _ = arr[0].Text()
		keys, _ := arr[1].Strings()
		for _, k := range keys {
			out = append(out, k)
			typ, _ := c.Do(ctx, "TYPE", k)
			switch s, _ := typ.Text(); s {
			case "string":
				v, err := c.Do(ctx, "GET", k)
				if err != nil {
					t.Fatal(err)
				}
				text, _ := v.Text()
				out = append(out, text)
			case "set":
				v, err := c.Do(ctx, "SMEMBERS", k)
				if err != nil {
					t.Fatal(err)
				}
				members, _ := v.Strings()
				out = append(out, members...)
			default:
				t.Errorf("key %q has type %s: the session store writes strings and sets only", k, s)
			}
		}
		if cursor == "0" {
			return out
		}
	}
}

// TestRedisDumpRevealsNothing: with sessions in Redis, a full dump of the
// server (every key name, every value, every set member, and every value
// base64-decoded) contains neither a token in any encoding nor whom the
// sessions belong to.
func TestRedisDumpRevealsNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{}) // private: the dump is ours alone
	key := newKey(t)
	m := instance(t, srv.URL(), key)
	ctx := context.Background()

	const tenant, user, keyID = "tenant-acme-4711", "user-alice-0815", "apikey-77aa"
	var tokens []string
	for i := range 5 {
		s := agentapi.LoginSession{TenantID: tenant, UserID: fmt.Sprintf("%s-%d", user, i%2), Role: agentapi.RoleAdmin, KeyID: keyID}
		token, _, err := m.Create(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Validate(ctx, token); err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, token)
	}

	forbidden := map[string]string{"tenant id": tenant, "user id": user, "api key id": keyID}
	for i, tok := range tokens {
		raw, _ := base64.RawURLEncoding.DecodeString(tok)
		forbidden[fmt.Sprintf("token %d", i)] = tok
		forbidden[fmt.Sprintf("token %d (base64)", i)] = base64.StdEncoding.EncodeToString(raw)
		forbidden[fmt.Sprintf("token %d (base64, unpadded)", i)] = base64.RawStdEncoding.EncodeToString(raw)
		forbidden[fmt.Sprintf("token %d (hex)", i)] = hex.EncodeToString(raw)
		forbidden[fmt.Sprintf("token %d (raw bytes)", i)] = string(raw)
		forbidden[fmt.Sprintf("token %d (base64 of the token)", i)] = base64.StdEncoding.EncodeToString([]byte(tok))
	}
	forbidden["key (hex)"] = hex.EncodeToString(key)
	forbidden["key (raw)"] = string(key)

	raw := dial(t, srv.URL())
	var corpus []string
	for _, s := range dump(t, raw) {
		corpus = append(corpus, s)
		// Values hold base64: search the decoded bytes too.
		for _, part := range strings.Split(s, "|") {
			if b, err := base64.StdEncoding.DecodeString(part); err == nil {
				corpus = append(corpus, string(b))
			}
		}
	}
	if len(corpus) < 10 {
		t.Fatalf("dump has %d entries: the sessions are not in this Redis", len(corpus))
	}
	for _, s := range corpus {
		for what, secret := range forbidden {
			if strings.Contains(s, secret) || bytes.Contains(bytes.ToLower([]byte(s)), bytes.ToLower([]byte(secret))) {
				t.Errorf("the Redis dump contains the %s in %q", what, s)
			}
		}
	}
}

// TestSessionsSurviveRestart: a token issued by one server process is
// valid on a new process (new Redis client, new keyring from the same
// key), and a logout on either is refused on the other at once, even
// where the session was cached.
func TestSessionsSurviveRestart(t *testing.T) {
	u := redistest.URL(t)
	key := newKey(t)
	ctx := context.Background()
	first := instance(t, u, key)
	token, _, err := first.Create(ctx, login("acme", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	second := instance(t, u, key)
	for range 3 { // the third is served from second's cache
		if s, err := second.Validate(ctx, token); err != nil || s.UserID != "alice" {
			t.Fatalf("Validate on a new instance = %+v, %v", s, err)
		}
	}
	if err := first.Revoke(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Validate(ctx, token); agentapi.KindOf(err) != agentapi.KindUnauthenticated {
		t.Fatalf("Validate on the instance that revoked: %v, want KindUnauthenticated at once", err)
	}
	eventuallyRefused(t, second, token, "on the other instance after logout")

	// RevokeUser likewise, in the other direction.
	var toks []string
	for range 3 {
		tok, _, err := second.Create(ctx, login("acme", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
		for range 2 {
			if _, err := first.Validate(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := second.RevokeUser(ctx, "acme", "bob"); n != 3 || err != nil {
		t.Fatalf("RevokeUser = %d, %v; want 3", n, err)
	}
	for _, tok := range toks {
		eventuallyRefused(t, first, tok, "on the other instance after RevokeUser")
	}

	// A restarted process with the wrong key gets nothing.
	tok, _, _ := first.Create(ctx, login("acme", "carol"))
	if _, err := instance(t, u, newKey(t)).Validate(ctx, tok); agentapi.KindOf(err) != agentapi.KindUnauthenticated {
		t.Errorf("Validate under another key: %v, want KindUnauthenticated", err)
	}
}

func eventuallyRefused(t *testing.T, m *auth.Sessions, token, why string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		_, err := m.Validate(context.Background(), token)
		if agentapi.KindOf(err) == agentapi.KindUnauthenticated {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Validate %s: %v after 1s, want KindUnauthenticated", why, err)
		}
		time.Sleep(time.Millisecond)
	}
}
