package main

import (
	"bytes"
	"context"
	dbsql "database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi/kv/kvtest"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/restserver"
	"github.com/agentapi-mt/agentapi/pgtest"
	"github.com/agentapi-mt/agentapi/redistest"
	"github.com/agentapi-mt/agentapi/sql"
)

// docEnv is a complete, healthy-by-default environment for doctor: a
// private data directory, a token key, a port that is never busy and a
// short Redis timeout. vars are name, value pairs that override it.
func docEnv(t *testing.T, vars ...string) map[string]string {
	t.Helper()
	env := map[string]string{
		"HOME":                     t.TempDir(),
		"AGENTAPI_DATA_DIR":        filepath.Join(t.TempDir(), "data"),
		"PORT":                     "0",
		"TOKEN_ENCRYPTION_KEY":     strings.Repeat("ab", 32),
		"REDIS_CONNECTION_TIMEOUT": "5s", // TLS handshakes under -race on a loaded CI box
	}
	for i := 0; i+1 < len(vars); i += 2 {
		env[vars[i]] = vars[i+1]
	}
	return env
}

type docReport struct {
	OK       bool      `json:"ok"`
	Failed   int       `json:"failed"`
	Warnings int       `json:"warnings"`
	Checks   []finding `json:"checks"`
}

// the findings of one check, by name.
func (r docReport) get(check string) []finding {
	var out []finding
	for _, f := range r.Checks {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// one returns the only finding of check, failing the test otherwise.
func (r docReport) one(t *testing.T, check string) finding {
	t.Helper()
	fs := r.get(check)
	if len(fs) != 1 {
		t.Fatalf("want one %q line, got %d:\n%s", check, len(fs), r)
	}
	return fs[0]
}

func (r docReport) String() string {
	var b strings.Builder
	for _, f := range r.Checks {
		fmt.Fprintf(&b, "  %-4s %-17s %s\n", f.Status, f.Check, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(&b, "       %-17s fix: %s\n", "", f.Fix)
		}
	}
	return b.String()
}

// doctorRun runs `agentapi doctor --json` in-process, as main would.
func doctorRun(t *testing.T, env map[string]string, args ...string) (int, docReport) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code := run(append([]string{"doctor", "--json"}, args...), lookup, &out, &errb)
	var rep docReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("doctor --json printed no JSON (%v):\n%s\nstderr: %s", err, out.String(), errb.String())
	}
	if rep.OK != (code == 0) {
		t.Errorf("exit %d but ok=%v", code, rep.OK)
	}
	return code, rep
}

// doctorText runs `agentapi doctor` in-process and returns its checklist.
func doctorText(t *testing.T, env map[string]string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run([]string{"doctor"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &out, &errb)
	if errb.Len() > 0 {
		t.Errorf("doctor wrote to stderr: %s", errb.String())
	}
	return code, out.String()
}

func wantStatus(t *testing.T, f finding, status string, substrs ...string) {
	t.Helper()
	if f.Status != status {
		t.Errorf("%s: status %s, want %s: %s (fix: %s)", f.Check, f.Status, status, f.Detail, f.Fix)
	}
	for _, s := range substrs {
		if !strings.Contains(f.Detail+" fix: "+f.Fix, s) {
			t.Errorf("%s: %q not in %q (fix: %q)", f.Check, s, f.Detail, f.Fix)
		}
	}
}

// composeLikeRedis starts a Redis set up as docker-compose.multitenant.yml
// runs it: AOF and RDB snapshots on, a memory cap, allkeys-lru.
func composeLikeRedis(t *testing.T, o redistest.Options) *redistest.Server {
	t.Helper()
	s := redistest.Start(t, o)
	c := kvtest.Native(t, native.Options{URL: s.URL(), TLSConfig: s.TLSConfig()})
	for _, cmd := range [][]string{
		{"CONFIG", "SET", "appendonly", "yes"},
		{"CONFIG", "SET", "save", "900 1 300 10 60 10000"},
		{"CONFIG", "SET", "maxmemory", "64mb"},
		{"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"},
	} {
		if _, err := c.Do(context.Background(), cmd...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	return s
}

// migratedSQLite creates the SQLite database serve would have created at
// its first start in env's data directory.
func migratedSQLite(t *testing.T, env map[string]string) string {
	t.Helper()
	path := filepath.Join(env["AGENTAPI_DATA_DIR"], "agentapi.db")
	db, err := sql.Open(context.Background(), "", path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	return path
}

func TestDoctorHealthy(t *testing.T) {
	s := composeLikeRedis(t, redistest.Options{Password: "s3cret"})
	restURL, _ := restserver.StartTest(t, s.URL(), "rest-token")
	env := docEnv(t,
		"REDIS_ENABLE", "true",
		"REDIS_URL", "redis://127.0.0.1:"+fmt.Sprint(s.Port()),
		"REDIS_PASSWORD", "s3cret",
		"UPSTASH_REDIS_REST_URL", restURL,
		"UPSTASH_REDIS_REST_TOKEN", "rest-token",
	)
	migratedSQLite(t, env)

	code, rep := doctorRun(t, env)
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	for _, f := range rep.Checks {
		if f.Status != checkOK {
			t.Errorf("not ok: %s %s: %s (fix: %s)", f.Status, f.Check, f.Detail, f.Fix)
		}
	}
	wantStatus(t, rep.one(t, "redis native"), checkOK, "PONG", "(preferred)", "client-side caching on")
	wantStatus(t, rep.one(t, "redis rest"), checkOK, "PONG", "(fallback)", "with the token")
	wantStatus(t, rep.one(t, "redis fallback"), checkOK, "rest answers too")
	wantStatus(t, rep.one(t, "redis persistence"), checkOK, "AOF on", "900 1")
	wantStatus(t, rep.one(t, "redis memory"), checkOK, "policy allkeys-lru")
	wantStatus(t, rep.one(t, "migrations"), checkOK, "up to date")
	for _, name := range []string{"configuration", "token key", "data directory", "database", "port"} {
		rep.one(t, name)
	}
	if strings.Contains(rep.String(), "s3cret") || strings.Contains(rep.String(), "rest-token") {
		t.Errorf("a secret reached the output:\n%s", rep)
	}

	code, text := doctorText(t, env)
	t.Logf("healthy setup, exit %d:\n%s", code, text)
	if code != 0 || !strings.Contains(text, "Everything checked is ok.") {
		t.Errorf("text output, exit %d:\n%s", code, text)
	}
}

func TestDoctorWrongPassword(t *testing.T) {
	s := composeLikeRedis(t, redistest.Options{Password: "right"})
	url := "redis://127.0.0.1:" + fmt.Sprint(s.Port())

	env := docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", url, "REDIS_PASSWORD", "wrong")
	code, rep := doctorRun(t, env)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "redis native"), checkFail, "rejected the password", "WRONGPASS", "REDIS_PASSWORD")
	if strings.Contains(rep.String(), "wrong") && !strings.Contains(rep.String(), "xxxxx") {
		t.Errorf("the password reached the output:\n%s", rep)
	}
	code, text := doctorText(t, env)
	t.Logf("wrong password, exit %d:\n%s", code, text)

	// No password at all: the server says NOAUTH.
	_, rep = doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", url))
	wantStatus(t, rep.one(t, "redis native"), checkFail, "requires a password", "NOAUTH", "REDIS_PASSWORD")

	// The password in the URL counts as well.
	_, rep = doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", "redis://:right@127.0.0.1:"+fmt.Sprint(s.Port())))
	wantStatus(t, rep.one(t, "redis native"), checkOK, "PONG")
}

func TestDoctorStoppedRedis(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	env := docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", s.URL())
	s.Stop(t)

	code, rep := doctorRun(t, env)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "redis native"), checkFail, s.Addr(), "not reachable", "connection refused", "is the server running?", "REDIS_URL")
	wantStatus(t, rep.one(t, "redis fallback"), checkOK, "none configured")
	if len(rep.get("redis persistence")) != 0 {
		t.Errorf("settings checked on a server that is down:\n%s", rep)
	}

	// Back up, the same environment passes (with the warnings a bare
	// redis-server earns: no AOF, no memory cap).
	s.Restart(t)
	code, rep = doctorRun(t, env)
	if code != 0 {
		t.Errorf("after restart: exit %d, want 0:\n%s", code, rep)
	}
	wantStatus(t, rep.one(t, "redis native"), checkOK, "PONG")
	wantStatus(t, rep.one(t, "redis persistence"), checkWarn, "AOF is off", "appendonly yes")
	for _, f := range rep.get("redis memory") {
		wantStatus(t, f, checkWarn)
	}
	if len(rep.get("redis memory")) != 2 {
		t.Errorf("want warnings for maxmemory 0 and noeviction:\n%s", rep)
	}
}

func TestDoctorRESTPath(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	restURL, _ := restserver.StartTest(t, s.URL(), "good-token")
	rest := func(t *testing.T, url, token string) (int, docReport) {
		return doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_PROTOCOL", "rest",
			"UPSTASH_REDIS_REST_URL", url, "UPSTASH_REDIS_REST_TOKEN", token))
	}

	t.Run("bad token", func(t *testing.T) {
		code, rep := rest(t, restURL, "bad-token")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "redis rest"), checkFail, "rejected the token", "HTTP 401", "UPSTASH_REDIS_REST_TOKEN")
		if strings.Contains(rep.String(), "bad-token") {
			t.Errorf("the token reached the output:\n%s", rep)
		}
	})
	t.Run("good token", func(t *testing.T) {
		code, rep := rest(t, restURL, "good-token")
		if code != 0 {
			t.Errorf("exit %d, want 0:\n%s", code, rep)
		}
		wantStatus(t, rep.one(t, "redis rest"), checkOK, "PONG", "(preferred)")
		if len(rep.get("redis native")) != 0 {
			t.Errorf("native checked though REDIS_URL is unset and the protocol is rest:\n%s", rep)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		code, rep := rest(t, "http://"+addr, "good-token")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "redis rest"), checkFail, addr, "not reachable", "connection refused", "UPSTASH_REDIS_REST_URL")
	})
	t.Run("not upstash", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html><body>Welcome to the console</body></html>")
		}))
		defer ts.Close()
		code, rep := rest(t, ts.URL, "good-token")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "redis rest"), checkFail, "not in Upstash's REST format", "UPSTASH_REDIS_REST_URL")
	})
	t.Run("path in URL", func(t *testing.T) {
		_, rep := rest(t, restURL+"/v2", "good-token")
		wantStatus(t, rep.one(t, "redis rest"), checkFail, "answered PING with an error", "no path")
	})
	t.Run("fallback takes over", func(t *testing.T) {
		// native preferred but stopped, REST fallback up.
		dead := redistest.Start(t, redistest.Options{})
		dead.Stop(t)
		_, rep := doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", dead.URL(),
			"UPSTASH_REDIS_REST_URL", restURL, "UPSTASH_REDIS_REST_TOKEN", "good-token"))
		wantStatus(t, rep.one(t, "redis native"), checkFail, "not reachable")
		wantStatus(t, rep.one(t, "redis rest"), checkOK, "(fallback)")
		wantStatus(t, rep.one(t, "redis fallback"), checkWarn, "serve would run on the rest fallback")
	})
}

func TestDoctorTLS(t *testing.T) {
	plain := redistest.Start(t, redistest.Options{})
	secure := redistest.Start(t, redistest.Options{TLS: true})
	native := func(t *testing.T, url string) docReport {
		t.Helper()
		code, rep := doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", url, "REDIS_CONNECTION_TIMEOUT", "1s"))
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		return rep
	}
	t.Run("rediss to a plaintext server", func(t *testing.T) {
		rep := native(t, "rediss://"+plain.Addr())
		wantStatus(t, rep.one(t, "redis native"), checkFail, "asks for TLS (rediss://) but the server speaks plain Redis", "use redis:// in REDIS_URL")
	})
	t.Run("redis to a TLS server", func(t *testing.T) {
		rep := native(t, "redis://"+secure.Addr())
		wantStatus(t, rep.one(t, "redis native"), checkFail, "expects TLS", "use rediss:// in REDIS_URL")
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		rep := native(t, secure.URL())
		wantStatus(t, rep.one(t, "redis native"), checkFail, "authority this machine does not trust", "SSL_CERT_FILE")
	})
}

// TestDoctorTLSTrustedWithSSLCertFile runs the binary: the fix doctor
// gives for an untrusted certificate (SSL_CERT_FILE) has to work, and the
// system trust store is read once per process.
func TestDoctorTLSTrustedWithSSLCertFile(t *testing.T) {
	s := composeLikeRedis(t, redistest.Options{TLS: true})
	env := docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", s.URL(), "SSL_CERT_FILE", s.CAFile())
	cmd := exec.Command(binary, "doctor")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PONG") || !strings.Contains(string(out), "; TLS;") {
		t.Errorf("no TLS PONG:\n%s", out)
	}
}

func TestDoctorBadConfig(t *testing.T) {
	env := docEnv(t, "REDIS_PROTOCOL", "resp", "SESSION_TTL", "forever", "TOKEN_ENCRYPTION_KEY", "change-this-to-a-random-32-byte-key")
	code, rep := doctorRun(t, env)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	fs := rep.get("configuration")
	var text string
	for _, f := range fs {
		wantStatus(t, f, checkFail)
		text += f.Detail + " | " + f.Fix + "\n"
	}
	for _, v := range []string{"REDIS_PROTOCOL", "SESSION_TTL", "TOKEN_ENCRYPTION_KEY"} {
		if !strings.Contains(text, "correct "+v) {
			t.Errorf("no fix naming %s:\n%s", v, text)
		}
	}
	wantStatus(t, rep.one(t, "other checks"), checkSkip)

	// A flag that does not parse is a usage error, as for serve.
	var out, errb bytes.Buffer
	if code := run([]string{"doctor", "--port"}, func(string) (string, bool) { return "", false }, &out, &errb); code != 2 {
		t.Errorf("doctor --port: exit %d, want 2", code)
	}
}

func TestDoctorDataDirPermissions(t *testing.T) {
	env := docEnv(t)
	dir := env["AGENTAPI_DATA_DIR"]
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, rep := doctorRun(t, env)
	wantStatus(t, rep.one(t, "data directory"), checkOK, "mode 0700", "free")

	os.Chmod(dir, 0o777)
	code, rep := doctorRun(t, env)
	if code != 1 {
		t.Errorf("world-writable: exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "data directory"), checkFail, "mode 0777", "anyone", "chmod 700 "+dir)

	os.Chmod(dir, 0o770)
	code, rep = doctorRun(t, env)
	if code != 0 {
		t.Errorf("group-writable: exit %d, want 0", code)
	}
	wantStatus(t, rep.one(t, "data directory"), checkWarn, "group can write", "chmod 700")

	os.Chmod(dir, 0o700)
	key := filepath.Join(dir, "token_encryption_key")
	os.WriteFile(key, []byte(strings.Repeat("cd", 32)+"\n"), 0o644)
	os.Chmod(key, 0o644)
	code, rep = doctorRun(t, env)
	if code != 1 {
		t.Errorf("readable key file: exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "data directory"), checkFail, "others can read the token key", "chmod 600 "+key)

	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	env["AGENTAPI_DATA_DIR"] = notDir
	_, rep = doctorRun(t, env)
	wantStatus(t, rep.one(t, "data directory"), checkFail, "not a directory", "AGENTAPI_DATA_DIR")
}

func TestDoctorTokenKeyFile(t *testing.T) {
	env := docEnv(t)
	delete(env, "TOKEN_ENCRYPTION_KEY")
	dir := env["AGENTAPI_DATA_DIR"]

	code, rep := doctorRun(t, env)
	if code != 0 {
		t.Errorf("no key yet: exit %d, want 0", code)
	}
	wantStatus(t, rep.one(t, "token key"), checkWarn, "will generate", "TOKEN_ENCRYPTION_KEY", "agentapi keygen")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("doctor created the data directory (%v): it must change nothing", err)
	}

	os.MkdirAll(dir, 0o700)
	key := filepath.Join(dir, "token_encryption_key")
	os.WriteFile(key, []byte(strings.Repeat("cd", 32)+"\n"), 0o600)
	_, rep = doctorRun(t, env)
	wantStatus(t, rep.one(t, "token key"), checkWarn, "generated in "+key, "same key", "back the file up")

	os.WriteFile(key, []byte("garbage\n"), 0o600)
	code, rep = doctorRun(t, env)
	if code != 1 {
		t.Errorf("bad key file: exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "token key"), checkFail, "unusable", "TOKEN_ENCRYPTION_KEY")
}

func TestDoctorSQLite(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		_, rep := doctorRun(t, docEnv(t))
		wantStatus(t, rep.one(t, "database"), checkOK, "does not exist yet")
		wantStatus(t, rep.one(t, "migrations"), checkSkip)
	})
	t.Run("changes nothing", func(t *testing.T) {
		env := docEnv(t)
		path := migratedSQLite(t, env)
		before := listDir(t, filepath.Dir(path))
		_, rep := doctorRun(t, env)
		wantStatus(t, rep.one(t, "database"), checkOK, "connected")
		wantStatus(t, rep.one(t, "migrations"), checkOK, "up to date")
		if after := listDir(t, filepath.Dir(path)); after != before {
			t.Errorf("the data directory changed:\nbefore: %s\nafter:  %s", before, after)
		}
	})
	t.Run("pending and unknown migrations", func(t *testing.T) {
		env := docEnv(t)
		path := migratedSQLite(t, env)
		db, err := dbsql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var latest string
		db.QueryRow("SELECT name FROM schema_migrations ORDER BY version DESC LIMIT 1").Scan(&latest)
		if _, err := db.Exec("DELETE FROM schema_migrations WHERE name = ?", latest); err != nil {
			t.Fatal(err)
		}
		code, rep := doctorRun(t, env)
		if code != 0 {
			t.Errorf("pending: exit %d, want 0", code)
		}
		wantStatus(t, rep.one(t, "migrations"), checkWarn, "1 pending ("+latest+")", "serve applies them", "back up")

		db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)")
		_, rep = doctorRun(t, env)
		wantStatus(t, rep.one(t, "migrations"), checkWarn, "9999_future.sql", "newer agentapi")
	})
	t.Run("not a database", func(t *testing.T) {
		env := docEnv(t)
		os.MkdirAll(env["AGENTAPI_DATA_DIR"], 0o700)
		os.WriteFile(filepath.Join(env["AGENTAPI_DATA_DIR"], "agentapi.db"), bytes.Repeat([]byte("not sqlite "), 100), 0o600)
		code, rep := doctorRun(t, env)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "database"), checkFail, "not a database", "backup")
	})
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		fi, _ := e.Info()
		names = append(names, fmt.Sprintf("%s:%d:%d", e.Name(), fi.Size(), fi.ModTime().UnixNano()))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func TestDoctorPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	good := pg.CreateDatabase(t)
	db, err := sql.Open(context.Background(), good, "")
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	code, rep := doctorRun(t, docEnv(t, "DATABASE_URL", good))
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, rep)
	}
	wantStatus(t, rep.one(t, "database"), checkOK, "PostgreSQL 127.0.0.1:", "connected (server ")
	wantStatus(t, rep.one(t, "migrations"), checkOK, "up to date")

	empty := pg.CreateDatabase(t)
	_, rep = doctorRun(t, docEnv(t, "DATABASE_URL", empty))
	wantStatus(t, rep.one(t, "migrations"), checkOK, "empty database")

	u, _ := url.Parse(good)
	u.Path = "/no_such_database"
	code, rep = doctorRun(t, docEnv(t, "DATABASE_URL", u.String()))
	if code != 1 {
		t.Errorf("missing database: exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "database"), checkFail, "no_such_database", "does not exist", "DATABASE_URL")

	pg.Stop(t)
	code, rep = doctorRun(t, docEnv(t, "DATABASE_URL", good))
	if code != 1 {
		t.Errorf("stopped: exit %d, want 1", code)
	}
	wantStatus(t, rep.one(t, "database"), checkFail, "not reachable", "connection refused", fmt.Sprint(pg.Port()))
}

func TestDoctorPort(t *testing.T) {
	// Another program: it accepts connections and closes them.
	other, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := fmt.Sprint(other.Addr().(*net.TCPAddr).Port)
	code, rep := doctorRun(t, docEnv(t, "PORT", port))
	if code != 0 {
		t.Errorf("port in use: exit %d, want 0 (only a warning)", code)
	}
	wantStatus(t, rep.one(t, "port"), checkWarn, port+" is in use by another program", "PORT")

	// A running agentapi on the port is the normal case, not a warning.
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	port = fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"degraded","version":"v9","checks":{"database":{"status":"ok"},"redis":{"status":"down"}}}`)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, rep = doctorRun(t, docEnv(t, "PORT", port))
	wantStatus(t, rep.one(t, "port"), checkOK, "running agentapi (version v9)", "degraded", "redis down")
}

func TestDoctorRedisDisabled(t *testing.T) {
	_, rep := doctorRun(t, docEnv(t))
	wantStatus(t, rep.one(t, "redis"), checkSkip, "REDIS_ENABLE is not true")

	code, rep := doctorRun(t, docEnv(t, "REDIS_URL", "redis://127.0.0.1:6379"))
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	wantStatus(t, rep.one(t, "redis"), checkWarn, "REDIS_URL is ignored", "REDIS_ENABLE=true")

	// The compose stack passes REDIS_URL's default even with REDIS_ENABLE=false.
	_, rep = doctorRun(t, docEnv(t, "REDIS_ENABLE", "false", "REDIS_URL", "redis://redis:6379"))
	wantStatus(t, rep.one(t, "redis"), checkSkip)
}

func TestDoctorNotRedis(t *testing.T) {
	t.Run("HTTP on the port", func(t *testing.T) {
		ts := httptest.NewServer(http.NotFoundHandler())
		defer ts.Close()
		addr := strings.TrimPrefix(ts.URL, "http://")
		code, rep := doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", "redis://"+addr))
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "redis native"), checkFail, addr, "not in the Redis protocol", "port in REDIS_URL")
	})
	t.Run("silent server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { <-done; c.Close() }()
			}
		}()
		code, rep := doctorRun(t, docEnv(t, "REDIS_ENABLE", "true", "REDIS_URL", "redis://"+ln.Addr().String(), "REDIS_CONNECTION_TIMEOUT", "500ms"))
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		wantStatus(t, rep.one(t, "redis native"), checkFail, "accepted the connection but gave no Redis reply within 500ms", "REDIS_CONNECTION_TIMEOUT")
	})
}
