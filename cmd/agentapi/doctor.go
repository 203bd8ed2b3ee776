package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	dbsql "database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/agentapi-mt/agentapi/config"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/connect"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/runner"
	"github.com/agentapi-mt/agentapi/sql"
)

// Statuses of a doctor check, as printed.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "FAIL"
	checkSkip = "skip"
)

const doctorUsage = `Usage: agentapi doctor [flags] [--json]

Checks what "agentapi serve" would use, with the same environment and flags:
the configuration, the token key, the data directory, every Redis path
(native and REST), the database and its migrations, and the port. It prints
one line per check (ok, warn, FAIL, skip) with a fix for each problem and
exits 1 when a check FAILs. It changes nothing: no migration, no key
generation, no Redis write.

Flags: --port, --data-dir, --database-url, --log-level, --log-format (as for
serve), and --json for machine-readable output.
`

// finding is one line of the checklist.
type finding struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

type doctor struct {
	env      config.Env
	cfg      *config.Config
	findings []finding
}

func (d *doctor) add(check, status, detail, fix string) {
	d.findings = append(d.findings, finding{Check: check, Status: status, Detail: detail, Fix: fix})
}

// runDoctor is `agentapi doctor`. It loads the configuration exactly as
// serve does and then looks at each dependency without changing it.
func runDoctor(args []string, env config.Env, stdout, stderr io.Writer) int {
	if env == nil {
		env = os.LookupEnv
	}
	asJSON := false
	var rest []string
	for _, a := range args {
		switch a {
		case "--json", "-json":
			asJSON = true
		case "-h", "--help", "-help":
			fmt.Fprint(stdout, doctorUsage)
			return 0
		default:
			rest = append(rest, a)
		}
	}
	d := &doctor{env: env}
	cfg, err := config.Load(rest, env)
	var problems config.Problems
	switch {
	case errors.As(err, &problems):
		for _, p := range problems {
			d.add("configuration", checkFail, p, configFix(p))
		}
		d.add("other checks", checkSkip, "not run: they need a valid configuration", "")
	case err != nil:
		fmt.Fprintf(stderr, "agentapi doctor: %v\n\n%s", err, doctorUsage)
		return 2
	default:
		d.cfg = cfg
		ctx := context.Background()
		d.checkConfig()
		d.checkTokenKey()
		d.checkDataDir()
		d.checkRedis(ctx)
		d.checkDatabase(ctx)
		d.checkPort(ctx)
	}
	if asJSON {
		d.renderJSON(stdout)
	} else {
		d.render(stdout)
	}
	if d.count(checkFail) > 0 {
		return 1
	}
	return 0
}

func (d *doctor) count(status string) int {
	n := 0
	for _, f := range d.findings {
		if f.Status == status {
			n++
		}
	}
	return n
}

func (d *doctor) render(w io.Writer) {
	fmt.Fprintf(w, "agentapi doctor (%s): checking what `agentapi serve` would use\n\n", versionString())
	for _, f := range d.findings {
		fmt.Fprintf(w, "%-4s  %-17s  %s\n", f.Status, f.Check, f.Detail)
		if f.Fix != "" {
			fmt.Fprintf(w, "%-4s  %-17s  fix: %s\n", "", "", f.Fix)
		}
	}
	fails, warns := d.count(checkFail), d.count(checkWarn)
	fmt.Fprintf(w, "\n%d ok, %d %s, %d failed, %d skipped. ", d.count(checkOK), warns, plural(warns, "warning", "warnings"), fails, d.count(checkSkip))
	switch {
	case fails > 0:
		fmt.Fprintln(w, "Fix the FAIL lines above.")
	case warns > 0:
		fmt.Fprintln(w, "Nothing failed; the warnings are worth a look.")
	default:
		fmt.Fprintln(w, "Everything checked is ok.")
	}
}

func (d *doctor) renderJSON(w io.Writer) {
	out := struct {
		Version  string    `json:"version"`
		OK       bool      `json:"ok"`
		Failed   int       `json:"failed"`
		Warnings int       `json:"warnings"`
		Checks   []finding `json:"checks"`
	}{versionString(), d.count(checkFail) == 0, d.count(checkFail), d.count(checkWarn), d.findings}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// configFix names the setting a configuration problem is about. Problems
// start with the variable (or --flag) they concern.
func configFix(problem string) string {
	name := problem
	if i := strings.IndexAny(name, "=: "); i > 0 {
		name = name[:i]
	}
	if strings.HasPrefix(name, "--") {
		return "correct the " + name + " flag"
	}
	if name == "" || strings.ToUpper(name) != name {
		return "see docs/configuration.md"
	}
	return "correct " + name + " in .env or the environment (docs/configuration.md describes it)"
}

// checkConfig reports the configuration that loaded, and the settings
// that serve checks only when it starts.
func (d *doctor) checkConfig() {
	c := d.cfg
	redis := "disabled"
	if c.Redis.Enable {
		var paths []string
		for i, e := range connect.Endpoints(c.Redis) {
			if i == 0 {
				paths = append(paths, e.Name+" preferred")
			} else {
				paths = append(paths, e.Name+" fallback")
			}
		}
		redis = strings.Join(paths, ", ")
	}
	d.add("configuration", checkOK, fmt.Sprintf("valid; redis: %s; database: %s; session storage: %s", redis, describeDatabase(c), c.Session.Storage), "")

	if c.Tenancy.AgentsFile != "" {
		cat, err := runner.LoadCatalog(c.Tenancy.AgentsFile)
		if err != nil {
			d.add("agent catalog", checkFail, err.Error(), "correct the file or AGENTAPI_AGENTS_FILE; serve refuses to start without it")
		} else {
			d.add("agent catalog", checkOK, fmt.Sprintf("%s: agents %s", c.Tenancy.AgentsFile, strings.Join(cat.Names(), ", ")), "")
		}
	}
	if c.Tenancy.AgentUIDBase > 0 && os.Geteuid() != 0 {
		d.add("agent users", checkFail, fmt.Sprintf("AGENTAPI_AGENT_UID_BASE=%d needs serve to run as root; doctor runs as uid %d", c.Tenancy.AgentUIDBase, os.Geteuid()),
			"run serve (and doctor) as root, or set AGENTAPI_AGENT_UID_BASE=0")
	}
}

func describeDatabase(c *config.Config) string {
	if c.DatabaseURL == "" {
		return "SQLite " + sqlitePath(c)
	}
	u, err := url.Parse(c.DatabaseURL)
	if err != nil {
		return "PostgreSQL"
	}
	return "PostgreSQL " + pgAddr(u)
}

func sqlitePath(c *config.Config) string { return filepath.Join(c.DataDir, "agentapi.db") }

// pgAddr names a PostgreSQL database as sql.(*DB).Describe does: host and
// database, never the user or password.
func pgAddr(u *url.URL) string {
	host := u.Host
	if host == "" {
		host = u.Query().Get("host")
	}
	if host == "" {
		host = "localhost"
	}
	return host + u.Path
}

// checkTokenKey mirrors config.ResolveTokenKey without generating a key.
func (d *doctor) checkTokenKey() {
	c := d.cfg
	const name = "token key"
	if c.TokenKey != nil {
		detail := "TOKEN_ENCRYPTION_KEY is set"
		if n := len(c.PreviousTokenKeys); n > 0 {
			detail += fmt.Sprintf(", with %d previous key(s) still accepted (TOKEN_ENCRYPTION_KEY_PREVIOUS)", n)
		}
		d.add(name, checkOK, detail, "")
		return
	}
	path := c.TokenKeyPath()
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		if _, perr := config.ParseTokenKey(string(raw)); perr != nil {
			d.add(name, checkFail, fmt.Sprintf("TOKEN_ENCRYPTION_KEY is unset and the generated key in %s is unusable: it %v", path, perr),
				"restore the file from a backup, or set TOKEN_ENCRYPTION_KEY to the key in use; login sessions and tenant secrets sealed with a lost key cannot be opened")
			return
		}
		d.add(name, checkWarn, fmt.Sprintf("TOKEN_ENCRYPTION_KEY is unset; serve uses the key it generated in %s", path),
			"every instance that shares Redis or the database needs this same key: set TOKEN_ENCRYPTION_KEY to the file's contents on all of them, and back the file up (tenant secrets are sealed with it)")
	case errors.Is(err, fs.ErrNotExist):
		d.add(name, checkWarn, fmt.Sprintf("TOKEN_ENCRYPTION_KEY is unset; serve will generate a key in %s at its first start", path),
			"set TOKEN_ENCRYPTION_KEY (`agentapi keygen` or `openssl rand -hex 32`), the same on every instance")
	default:
		d.add(name, checkFail, fmt.Sprintf("TOKEN_ENCRYPTION_KEY is unset and %s cannot be read: %v", path, err),
			"run doctor as the user that runs serve, or give that user the file back (chown, chmod 600)")
	}
}

// checkDataDir checks what serve needs of AGENTAPI_DATA_DIR: that it can
// create or write it, and that nobody else can.
func (d *doctor) checkDataDir() {
	const name = "data directory"
	dir := d.cfg.DataDir
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		for {
			if _, err := os.Stat(parent); err == nil || parent == filepath.Dir(parent) {
				break
			}
			parent = filepath.Dir(parent)
		}
		if syscall.Access(parent, 0o2|0o1) != nil { // W_OK|X_OK
			d.add(name, checkFail, fmt.Sprintf("%s does not exist and cannot be created: %s is not writable by uid %d", dir, parent, os.Geteuid()),
				fmt.Sprintf("create it for the user that runs serve (mkdir -p %s && chmod 700 %s, chown to that user), or set AGENTAPI_DATA_DIR / --data-dir to a writable place", dir, dir))
			return
		}
		d.add(name, checkOK, fmt.Sprintf("%s does not exist yet; serve creates it (mode 0700)", dir), "")
		return
	}
	if err != nil {
		d.add(name, checkFail, fmt.Sprintf("%s: %v", dir, err), "set AGENTAPI_DATA_DIR / --data-dir to a directory the user running serve can use")
		return
	}
	if !fi.IsDir() {
		d.add(name, checkFail, dir+" is not a directory", "set AGENTAPI_DATA_DIR / --data-dir to a directory")
		return
	}
	perm := fi.Mode().Perm()
	owner := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	euid := os.Geteuid()
	issues := 0
	issue := func(status, detail, fix string) {
		issues++
		d.add(name, status, detail, fix)
	}
	if syscall.Access(dir, 0o2|0o1) != nil {
		issue(checkFail, fmt.Sprintf("%s is not writable by uid %d (owner uid %d, mode %04o)", dir, euid, owner, perm),
			fmt.Sprintf("chown %s to the user that runs serve, or run doctor as that user", dir))
	} else if owner >= 0 && owner != euid {
		issue(checkWarn, fmt.Sprintf("%s is owned by uid %d but doctor runs as uid %d: what doctor sees may differ from what serve sees", dir, owner, euid),
			"run doctor as the user that runs serve (compose: docker compose -f docker-compose.multitenant.yml exec agentapi agentapi doctor)")
	}
	switch {
	case perm&0o002 != 0:
		issue(checkFail, fmt.Sprintf("%s has mode %04o: anyone on this machine can write to it and replace the token key or the database", dir, perm),
			"chmod 700 "+dir)
	case perm&0o020 != 0:
		issue(checkWarn, fmt.Sprintf("%s has mode %04o: its group can write to it", dir, perm), "chmod 700 "+dir)
	}
	if kfi, err := os.Stat(d.cfg.TokenKeyPath()); err == nil && kfi.Mode().Perm()&0o077 != 0 {
		issue(checkFail, fmt.Sprintf("%s has mode %04o: others can read the token key", d.cfg.TokenKeyPath(), kfi.Mode().Perm()),
			"chmod 600 "+d.cfg.TokenKeyPath())
	}
	if d.cfg.DatabaseURL == "" {
		if dfi, err := os.Stat(sqlitePath(d.cfg)); err == nil && dfi.Mode().Perm()&0o077 != 0 {
			issue(checkWarn, fmt.Sprintf("%s has mode %04o: others can read it (it holds API key hashes and sealed secrets)", sqlitePath(d.cfg), dfi.Mode().Perm()),
				"chmod 600 "+sqlitePath(d.cfg))
		}
	}
	free := ""
	var sfs syscall.Statfs_t
	if syscall.Statfs(dir, &sfs) == nil {
		avail := sfs.Bavail * uint64(sfs.Bsize)
		free = fmt.Sprintf(", %s free", humanBytes(avail))
		if avail < 100<<20 {
			issue(checkWarn, fmt.Sprintf("only %s free on the disk holding %s", humanBytes(avail), dir),
				fmt.Sprintf("free space there (df -h %s); SQLite, transcripts and workspaces need room", dir))
		}
	}
	if issues == 0 {
		d.add(name, checkOK, fmt.Sprintf("%s: owner uid %d, mode %04o%s", dir, owner, perm, free), "")
	}
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// checkRedis checks every Redis path serve would use, in its order.
func (d *doctor) checkRedis(ctx context.Context) {
	r := d.cfg.Redis
	if !r.Enable {
		var set []string
		for _, v := range []string{"REDIS_URL", "REDIS_PASSWORD", "UPSTASH_REDIS_URL", "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"} {
			val, _ := d.env(v)
			val = strings.TrimSpace(val)
			// The compose file always passes REDIS_URL, with this default.
			if val != "" && !(v == "REDIS_URL" && val == config.DefaultRedisURL) {
				set = append(set, v)
			}
		}
		if len(set) > 0 {
			d.add("redis", checkWarn, fmt.Sprintf("REDIS_ENABLE is not true, so %s %s ignored: state stays in this instance's memory", strings.Join(set, ", "), plural(len(set), "is", "are")),
				"set REDIS_ENABLE=true to use Redis, or remove the Redis settings")
			return
		}
		d.add("redis", checkSkip, "REDIS_ENABLE is not true: no Redis checks; rate limits, breakers and login sessions stay in this instance's memory",
			"set REDIS_ENABLE=true to share them between instances")
		return
	}
	eps := connect.Endpoints(r)
	up := make([]bool, len(eps))
	for i, e := range eps {
		role := "preferred"
		if i > 0 {
			role = "fallback"
		}
		switch e.Name {
		case config.ProtocolNative:
			up[i] = d.checkNative(ctx, e, role)
		case config.ProtocolREST:
			up[i] = d.checkREST(ctx, e, role)
		}
	}
	const name = "redis fallback"
	switch {
	case len(eps) == 1:
		d.add(name, checkOK, fmt.Sprintf("none configured (optional): while %s is down, features use their local fallbacks (docs/redis.md)", eps[0].Name), "")
	case up[0] && up[1]:
		d.add(name, checkOK, fmt.Sprintf("%s answers too, ready to take over while %s is down", eps[1].Name, eps[0].Name), "")
	case up[0]:
		d.add(name, checkWarn, fmt.Sprintf("the %s fallback does not answer (see above): a %s outage would leave only local state", eps[1].Name, eps[0].Name), "")
	case up[1]:
		d.add(name, checkWarn, fmt.Sprintf("serve would run on the %s fallback (/status: degraded) until %s answers", eps[1].Name, eps[0].Name), "")
	default:
		d.add(name, checkWarn, "no path answers: serve still starts, reports Redis down (/status: degraded) and features use local state", "")
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// checkNative dials the native path as serve does and PINGs it. On
// failure it finds out which layer failed: name resolution, TCP, TLS,
// the protocol or the credentials.
func (d *doctor) checkNative(ctx context.Context, e kv.Endpoint, role string) bool {
	const name = "redis native"
	r := d.cfg.Redis
	urlVar := "REDIS_URL"
	if r.UpstashURL != "" {
		urlVar = "UPSTASH_REDIS_URL"
	}
	u, err := url.Parse(r.NativeURL())
	if err != nil { // config.Load validated it
		d.add(name, checkFail, urlVar+" does not parse", "correct "+urlVar)
		return false
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	useTLS := u.Scheme == "rediss"
	upstash := strings.HasSuffix(strings.ToLower(u.Hostname()), ".upstash.io")
	timeout := r.ConnectTimeout

	// TCP first: it tells DNS, refusal and silence apart.
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		detail, fix := unreachable(addr, u.Hostname(), urlVar, timeout, err)
		if u.Hostname() == "redis" {
			fix += "; the host name redis exists only inside the compose network: run doctor there (docker compose -f docker-compose.multitenant.yml exec agentapi agentapi doctor), or from the host use REDIS_URL=redis://127.0.0.1:6379 (where the compose stack publishes Redis; REDIS_PORT changes the port)"
		}
		d.add(name, checkFail, detail, fix)
		return false
	}
	conn.Close()

	dctx, cancel := context.WithTimeout(ctx, timeout)
	c, err := e.Dial(dctx)
	cancel()
	if err != nil {
		detail, fix := d.nativeFailure(e.Addr, addr, urlVar, useTLS, upstash, timeout, u, err)
		d.add(name, checkFail, detail, fix)
		return false
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	v, err := c.Do(pctx, "PING")
	rtt := time.Since(start)
	if err != nil {
		d.add(name, checkFail, fmt.Sprintf("%s accepted the connection but PING failed: %v", e.Addr, err), "check the server's log (compose: docker compose -f docker-compose.multitenant.yml logs redis)")
		return false
	}
	if txt, _ := v.Text(); txt != "PONG" {
		d.add(name, checkFail, fmt.Sprintf("%s answered PING with %q, not PONG", e.Addr, txt), "check that "+urlVar+" points at Redis")
		return false
	}
	tlsNote, cacheNote := "no TLS", "client-side caching on (CLIENT TRACKING)"
	if nc, ok := c.(*native.Client); ok {
		if nc.TLS() {
			tlsNote = "TLS"
		}
		if !nc.Caching() {
			cacheNote = "client-side caching off (no CLIENT TRACKING on this server; every read goes to Redis)"
		}
	}
	d.add(name, checkOK, fmt.Sprintf("%s (%s): PONG in %s; %s; %s", e.Addr, role, ms(rtt), tlsNote, cacheNote), "")
	if upstash {
		d.add("redis settings", checkSkip, "Upstash manages persistence and memory itself", "")
	} else {
		d.checkRedisSettings(pctx, c)
	}
	return true
}

// unreachable explains a failed TCP (or HTTP) connection.
func unreachable(addr, host, urlVar string, timeout time.Duration, err error) (string, string) {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("%s is not reachable: cannot resolve host %q (%v)", addr, host, dnsErr.Err),
			"check the host in " + urlVar + " and this machine's DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s is not reachable: connection refused (nothing listens there)", addr),
			"is the server running? (compose: docker compose -f docker-compose.multitenant.yml ps; then logs <service>); else correct the host and port in " + urlVar
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		wait := "REDIS_CONNECTION_TIMEOUT sets the wait"
		if urlVar == "DATABASE_URL" {
			wait = "connect_timeout in DATABASE_URL sets the wait"
		}
		return fmt.Sprintf("%s is not reachable: no answer within %s (host down, or a firewall drops the packets)", addr, timeout),
			"check the host and port in " + urlVar + " and that outbound connections to it are allowed; " + wait
	}
	return fmt.Sprintf("%s is not reachable: %v", addr, err), "check the host and port in " + urlVar
}

// nativeFailure explains why the native dial failed after TCP connected.
func (d *doctor) nativeFailure(shown, addr, urlVar string, useTLS, upstash bool, timeout time.Duration, u *url.URL, err error) (string, string) {
	msg := err.Error()
	if errors.Is(err, kv.ErrUnauthorized) {
		pwFix := "set REDIS_PASSWORD (or the password in REDIS_URL) to the server's password (requirepass); in the compose stack both sides take it from REDIS_PASSWORD in .env: after changing it run `docker compose -f docker-compose.multitenant.yml up -d` so both containers are re-created with it"
		if urlVar == "UPSTASH_REDIS_URL" {
			pwFix = "put the database's password from the Upstash console into UPSTASH_REDIS_URL (rediss://default:<password>@<instance>.upstash.io:6379)"
		}
		if strings.Contains(msg, "NOAUTH") {
			return fmt.Sprintf("%s requires a password and none was sent (NOAUTH)", shown), pwFix
		}
		who := ""
		if u.User != nil && u.User.Username() != "" {
			who = fmt.Sprintf(" for user %q", u.User.Username())
		}
		return fmt.Sprintf("%s rejected the password%s (WRONGPASS)", shown, who), pwFix
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("%s: TLS certificate signed by an authority this machine does not trust (%v)", shown, err),
			"add the server's CA certificate to the system trust store (ca-certificates), or point SSL_CERT_FILE at a PEM file that holds it"
	case errors.As(err, &badHost):
		return fmt.Sprintf("%s: the TLS certificate is not valid for %q (%v)", shown, u.Hostname(), err),
			"use in " + urlVar + " a host name the certificate names"
	case errors.As(err, &invalid):
		return fmt.Sprintf("%s: the TLS certificate is not valid (%v)", shown, err),
			"renew the server's certificate, and check this machine's clock"
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return fmt.Sprintf("%s: TLS handshake failed (%v)", shown, err), "check the server's TLS setup and the rediss:// URL in " + urlVar
	}
	probe := min(timeout, 3*time.Second)
	if useTLS && speaksPlainRedis(addr, probe) {
		return fmt.Sprintf("%s: the URL asks for TLS (rediss://) but the server speaks plain Redis without TLS", shown),
			"use redis:// in " + urlVar + ", or enable TLS on the server (tls-port)"
	}
	if !useTLS && speaksTLS(addr, probe) {
		fix := "use rediss:// in " + urlVar
		if upstash {
			fix += " (Upstash accepts TLS connections only)"
		}
		return fmt.Sprintf("%s: the server expects TLS but the URL says redis://", shown), fix
	}
	if strings.Contains(msg, "unknown message type") {
		return fmt.Sprintf("%s answers, but not in the Redis protocol (%v)", addr, err), "check the port in " + urlVar + " (Redis usually listens on 6379)"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("%s accepted the connection but gave no Redis reply within %s", shown, timeout),
			"check that " + urlVar + " points at Redis and that redis:// vs rediss:// matches the server; REDIS_CONNECTION_TIMEOUT sets the wait"
	}
	return fmt.Sprintf("%s: %v", shown, err), "check " + urlVar + " and the server's log"
}

// speaksPlainRedis reports whether addr answers an inline PING as Redis
// does (PONG, or an error such as NOAUTH).
func speaksPlainRedis(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") || strings.HasPrefix(line, "-ERR"))
}

// speaksTLS reports whether addr completes a TLS handshake. The
// certificate is not verified: only the protocol is being identified, and
// nothing is sent over the connection.
func speaksTLS(addr string, timeout time.Duration) bool {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		var alert tls.AlertError // e.g. the server wants a client certificate
		return errors.As(err, &alert)
	}
	c.Close()
	return true
}

// checkRedisSettings reads INFO and warns about settings the deployment
// guide recommends: AOF on, a memory cap, allkeys-lru eviction.
func (d *doctor) checkRedisSettings(ctx context.Context, c kv.Client) {
	info := map[string]string{}
	for _, section := range []string{"persistence", "memory"} {
		v, err := c.Do(ctx, "INFO", section)
		if err != nil {
			d.add("redis settings", checkSkip, fmt.Sprintf("INFO %s is not available (%v): persistence and memory not checked", section, err), "")
			return
		}
		txt, _ := v.Text()
		for _, line := range strings.Split(txt, "\n") {
			if k, val, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				info[k] = val
			}
		}
	}
	save := "unknown"
	if v, err := c.Do(ctx, "CONFIG", "GET", "save"); err == nil {
		if arr, err := v.Array(); err == nil && len(arr) == 2 {
			save, _ = arr[1].Text()
		}
	}

	var warned bool
	warn := func(check, detail, fix string) {
		warned = true
		d.add(check, checkWarn, detail, fix)
	}
	if info["aof_enabled"] != "1" {
		lost := "writes since the last RDB snapshot are lost when Redis restarts"
		if save == "" {
			lost = "with RDB snapshots off too (save \"\"), nothing survives a Redis restart"
		}
		warn("redis persistence", "AOF is off (appendonly no): "+lost+", login sessions included",
			"appendonly yes in redis.conf or on the redis-server command line (the compose stack runs it with --appendonly yes); CONFIG SET appendonly yes applies it until the next restart")
	}
	if info["rdb_last_bgsave_status"] == "err" {
		warn("redis persistence", "the last RDB snapshot failed", "check free space and permissions of Redis's directory (compose: docker compose -f docker-compose.multitenant.yml exec redis df -h /data; logs redis)")
	}
	if info["aof_last_write_status"] == "err" || info["aof_last_bgrewrite_status"] == "err" {
		warn("redis persistence", "the last append-only file write failed", "check free space and permissions of Redis's directory (compose: docker compose -f docker-compose.multitenant.yml exec redis df -h /data; logs redis)")
	}
	if !warned {
		rdb := "RDB snapshots " + save
		if save == "" {
			rdb = "RDB snapshots off"
		}
		d.add("redis persistence", checkOK, fmt.Sprintf("AOF on; %s", rdb), "")
	}

	warned = false
	maxmem, _ := strconv.ParseUint(info["maxmemory"], 10, 64)
	used, _ := strconv.ParseUint(info["used_memory"], 10, 64)
	policy := info["maxmemory_policy"]
	if maxmem == 0 {
		warn("redis memory", "maxmemory is 0 (no limit): Redis grows until the host or the container's memory limit stops it",
			"compose: REDIS_MAX_MEMORY in .env (default 256mb, below the container's 512M limit); elsewhere maxmemory in redis.conf")
	} else if used > maxmem/10*9 {
		warn("redis memory", fmt.Sprintf("using %s of maxmemory %s: keys are being evicted (%s)", humanBytes(used), humanBytes(maxmem), policy),
			"raise REDIS_MAX_MEMORY (compose; keep the container's memory limit above it) or maxmemory")
	}
	if policy != "" && policy != "allkeys-lru" {
		why := "the deployment guide and the compose stack use allkeys-lru"
		switch {
		case policy == "noeviction":
			why = "at maxmemory, writes fail with OOM errors instead of evicting old keys"
		case strings.HasPrefix(policy, "volatile-"):
			why = "only keys with a TTL are evicted"
		}
		warn("redis memory", fmt.Sprintf("maxmemory-policy is %s: %s", policy, why),
			"maxmemory-policy allkeys-lru in redis.conf or on the command line (as the compose stack does); CONFIG SET maxmemory-policy allkeys-lru applies it until the next restart")
	}
	if !warned {
		d.add("redis memory", checkOK, fmt.Sprintf("maxmemory %s, policy %s, %s used", humanBytes(maxmem), policy, humanBytes(used)), "")
	}
}

// checkREST PINGs the Upstash REST path with the configured token.
func (d *doctor) checkREST(ctx context.Context, e kv.Endpoint, role string) bool {
	const name = "redis rest"
	timeout := d.cfg.Redis.ConnectTimeout
	c, err := e.Dial(ctx) // validates the settings; no request yet
	if err != nil {
		d.add(name, checkFail, fmt.Sprintf("%s: %v", e.Addr, err), "correct UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN")
		return false
	}
	defer c.Close()
	// The client retries network errors; leave room for one retry.
	pctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	start := time.Now()
	v, err := c.Do(pctx, "PING")
	rtt := time.Since(start)
	if err == nil {
		if txt, _ := v.Text(); txt != "PONG" {
			d.add(name, checkFail, fmt.Sprintf("%s answered PING with %q, not PONG: not an Upstash REST endpoint", e.Addr, txt),
				"UPSTASH_REDIS_REST_URL must be the database's REST URL, https://<instance>.upstash.io")
			return false
		}
		d.add(name, checkOK, fmt.Sprintf("%s (%s): PONG in %s with the token", e.Addr, role, ms(rtt)), "")
		return true
	}
	msg := err.Error()
	host := e.Addr
	if u, perr := url.Parse(e.Addr); perr == nil {
		host = u.Host
	}
	var unknownCA x509.UnknownAuthorityError
	var detail, fix string
	switch {
	case errors.Is(err, kv.ErrUnauthorized):
		status := "HTTP 401"
		if i := strings.Index(msg, "HTTP 4"); i >= 0 {
			status = msg[i:min(i+8, len(msg))]
		}
		detail = fmt.Sprintf("%s rejected the token (%s)", e.Addr, status)
		fix = "set UPSTASH_REDIS_REST_TOKEN to this database's REST token (Upstash console, the database's REST API section), without quotes"
	case kv.IsServerError(err):
		detail = fmt.Sprintf("%s answered PING with an error (%v): the URL has a path, or this is not an Upstash REST endpoint", e.Addr, err)
		fix = "UPSTASH_REDIS_REST_URL must be https://<instance>.upstash.io, with no path"
	case errors.As(err, &unknownCA):
		detail = fmt.Sprintf("%s: TLS certificate signed by an authority this machine does not trust", e.Addr)
		fix = "install the CA certificates (ca-certificates), or point SSL_CERT_FILE at a PEM file holding the CA"
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:"):
		detail = fmt.Sprintf("%s: TLS failed (%v)", e.Addr, err)
		fix = "check UPSTASH_REDIS_REST_URL (https://<instance>.upstash.io)"
	case strings.Contains(msg, "HTTP response to HTTPS client"):
		detail = fmt.Sprintf("%s speaks plain HTTP, not HTTPS", e.Addr)
		fix = "use http:// in UPSTASH_REDIS_REST_URL for this server (Upstash itself is https://)"
	case strings.Contains(msg, "undecodable reply") || strings.Contains(msg, "kv.rest.decode"):
		detail = fmt.Sprintf("%s answers, but not in Upstash's REST format (%v)", e.Addr, err)
		fix = "UPSTASH_REDIS_REST_URL must be the REST URL (https://<instance>.upstash.io), not the console page or the rediss:// URL"
	case strings.Contains(msg, "HTTP 5"):
		detail = fmt.Sprintf("%s fails with a server error after retries (%v)", e.Addr, err)
		fix = "check Upstash's status page and the database in the console; serve retries by itself"
	default:
		detail, fix = unreachable(host, hostOnly(host), "UPSTASH_REDIS_REST_URL", timeout, err)
		fix += " (outbound HTTPS, port 443, for Upstash)"
	}
	d.add(name, checkFail, detail, fix)
	return false
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// checkDatabase connects to the database serve would use and reads its
// migration state. It does not go through sql.Open, which would migrate.
func (d *doctor) checkDatabase(ctx context.Context) {
	const name = "database"
	c := d.cfg
	var (
		db   *dbsql.DB
		desc string
		pgc  *pgx.ConnConfig
	)
	if c.DatabaseURL != "" {
		u, _ := url.Parse(c.DatabaseURL)
		desc = "PostgreSQL " + pgAddr(u)
		cfg, err := pgx.ParseConfig(c.DatabaseURL)
		if err != nil {
			d.add(name, checkFail, redactPassword(fmt.Sprintf("DATABASE_URL cannot be used: %v", err), u), "correct DATABASE_URL (postgres://user:password@host:5432/database)")
			d.add("migrations", checkSkip, "no database connection", "")
			return
		}
		if cfg.ConnectTimeout == 0 {
			cfg.ConnectTimeout = 5 * time.Second
		}
		pgc = cfg
		db = stdlib.OpenDB(*cfg)
	} else {
		path := sqlitePath(c)
		desc = "SQLite " + path
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			d.add(name, checkOK, desc+" does not exist yet; serve creates it at its first start", "")
			d.add("migrations", checkSkip, "no database yet: serve creates the schema at its first start", "")
			return
		}
		if err != nil {
			d.add(name, checkFail, fmt.Sprintf("%s: %v", desc, err), "run doctor as the user that runs serve, or fix the file's owner and mode (600)")
			return
		}
		desc += " (" + humanBytes(uint64(fi.Size())) + ")"
		// Read-only. Without a -wal file (no server has it open) the file
		// is also opened immutable, so that not even the -shm and -wal
		// files are created, possibly owned by the wrong user.
		dsn := "file:" + path + "?mode=ro&_pragma=busy_timeout(5000)"
		if _, err := os.Stat(path + "-wal"); err != nil {
			dsn += "&immutable=1"
		}
		db, err = dbsql.Open("sqlite", dsn)
		if err != nil {
			d.add(name, checkFail, fmt.Sprintf("%s: %v", desc, err), "")
			return
		}
	}
	defer db.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	version := ""
	var err error
	if pgc != nil {
		err = db.QueryRowContext(qctx, "SHOW server_version").Scan(&version)
		version = "server " + version
	} else {
		err = db.QueryRowContext(qctx, "SELECT sqlite_version()").Scan(&version)
		if err == nil {
			var n int
			err = db.QueryRowContext(qctx, "SELECT count(*) FROM sqlite_master").Scan(&n)
		}
		version = "SQLite " + version
	}
	if err != nil {
		detail, fix := databaseFailure(desc, pgc, err)
		d.add(name, checkFail, detail, fix)
		d.add("migrations", checkSkip, "no database connection", "")
		return
	}
	d.add(name, checkOK, fmt.Sprintf("%s: connected (%s)", desc, version), "")
	d.checkMigrations(qctx, db)
}

func redactPassword(s string, u *url.URL) string {
	if u != nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

func databaseFailure(desc string, pgc *pgx.ConnConfig, err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "28P01":
			return fmt.Sprintf("%s rejected the password for user %q", desc, pgc.User),
				"correct the password in DATABASE_URL; in the compose stack it is POSTGRES_PASSWORD, which the postgres container applies only when it creates its volume (later: ALTER USER ... PASSWORD in psql)"
		case "28000":
			return fmt.Sprintf("%s refused user %q: %s", desc, pgc.User, pe.Message), "check the user in DATABASE_URL and the server's pg_hba.conf"
		case "3D000":
			return fmt.Sprintf("%s: %s", desc, pe.Message), "create the database (createdb), or correct its name in DATABASE_URL (compose: POSTGRES_DB)"
		case "57P03":
			return fmt.Sprintf("%s is starting up or shutting down: %s", desc, pe.Message), "wait and run doctor again"
		case "53300":
			return fmt.Sprintf("%s has no free connection slot: %s", desc, pe.Message), "raise max_connections or stop idle clients"
		}
		return fmt.Sprintf("%s: %s (SQLSTATE %s)", desc, pe.Message, pe.Code), "check DATABASE_URL and the server's log"
	}
	if pgc == nil {
		return fmt.Sprintf("%s cannot be read: %v", desc, err), "restore it from a backup, or move it away so serve creates a new one (docs/operations.md)"
	}
	msg := err.Error()
	if strings.Contains(msg, "refused TLS") || strings.Contains(msg, "SSL") {
		return fmt.Sprintf("%s: %v", desc, err), "add ?sslmode=disable to DATABASE_URL when the server has no TLS (the compose stack does), or enable TLS on it"
	}
	addr := net.JoinHostPort(pgc.Host, strconv.Itoa(int(pgc.Port)))
	detail, fix := unreachable(addr, pgc.Host, "DATABASE_URL", pgc.ConnectTimeout, err)
	if pgc.Host == "postgres" {
		fix += "; the host name postgres exists only inside the compose network: run doctor there (docker compose -f docker-compose.multitenant.yml exec agentapi agentapi doctor)"
	}
	return "PostgreSQL " + detail, fix
}

type migrationRow struct {
	version int64
	name    string
}

func readMigrations(ctx context.Context, db *dbsql.DB) ([]migrationRow, error) {
	rows, err := db.QueryContext(ctx, "SELECT version, name FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []migrationRow
	for rows.Next() {
		var m migrationRow
		if err := rows.Scan(&m.version, &m.name); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// embeddedMigrations lists the migrations this binary carries.
func embeddedMigrations(context.Context) ([]migrationRow, error) {
	ms, err := sql.Migrations()
	if err != nil {
		return nil, err
	}
	out := make([]migrationRow, len(ms))
	for i, m := range ms {
		out[i] = migrationRow{version: m.Version, name: m.Name}
	}
	return out, nil
}

func (d *doctor) checkMigrations(ctx context.Context, db *dbsql.DB) {
	const name = "migrations"
	applied, err := readMigrations(ctx, db)
	if err != nil {
		var pe *pgconn.PgError
		if strings.Contains(err.Error(), "no such table") || errors.As(err, &pe) && pe.Code == "42P01" {
			d.add(name, checkOK, "empty database (no schema_migrations table): serve creates the schema at its first start", "")
			return
		}
		d.add(name, checkFail, fmt.Sprintf("cannot read schema_migrations: %v", err), "check that the database user may read it")
		return
	}
	latest := "none"
	if len(applied) > 0 {
		latest = applied[len(applied)-1].name
	}
	known, kerr := embeddedMigrations(ctx)
	if kerr != nil {
		d.add(name, checkOK, fmt.Sprintf("%d applied, latest %s (this binary's own list is unavailable: %v)", len(applied), latest, kerr), "")
		return
	}
	have := map[int64]bool{}
	for _, m := range applied {
		have[m.version] = true
	}
	knows := map[int64]bool{}
	var pending, unknown []string
	for _, m := range known {
		knows[m.version] = true
		if !have[m.version] {
			pending = append(pending, m.name)
		}
	}
	for _, m := range applied {
		if !knows[m.version] {
			unknown = append(unknown, m.name)
		}
	}
	sort.Strings(pending)
	switch {
	case len(unknown) > 0:
		d.add(name, checkWarn, fmt.Sprintf("the database has migrations this binary does not know (%s): a newer agentapi migrated it", strings.Join(unknown, ", ")),
			"run that newer version, or restore the backup taken before the upgrade")
	case len(pending) > 0:
		d.add(name, checkWarn, fmt.Sprintf("%d applied, %d pending (%s): serve applies them at its next start", len(applied), len(pending), strings.Join(pending, ", ")),
			"back up the database before starting the new version (docs/operations.md)")
	default:
		d.add(name, checkOK, fmt.Sprintf("up to date: %d applied, latest %s", len(applied), latest), "")
	}
}

// checkPort tells whether serve could listen on PORT. A port in use is
// normal when serve already runs there, so doctor asks it for /status.
func (d *doctor) checkPort(ctx context.Context) {
	const name = "port"
	p := d.cfg.Port
	if p == 0 {
		d.add(name, checkOK, "PORT=0: serve picks a free port at start", "")
		return
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(p)))
	if err == nil {
		ln.Close()
		d.add(name, checkOK, fmt.Sprintf("%d is free", p), "")
		return
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		d.add(name, checkFail, fmt.Sprintf("cannot listen on %d: %v", p, err), "choose another port with PORT or --port (ports below 1024 need privileges)")
		return
	}
	if st, ok := agentapiStatus(ctx, p); ok {
		detail := fmt.Sprintf("%d is in use by a running agentapi (version %s): /status says %s", p, st.Version, st.Status)
		var names []string
		for n := range st.Checks {
			names = append(names, n)
		}
		sort.Strings(names)
		for i, n := range names {
			sep := ", "
			if i == 0 {
				sep = " ("
			}
			detail += sep + n + " " + st.Checks[n].Status
		}
		if len(names) > 0 {
			detail += ")"
		}
		d.add(name, checkOK, detail, "")
		return
	}
	d.add(name, checkWarn, fmt.Sprintf("%d is in use by another program: serve could not listen there", p),
		fmt.Sprintf("stop that program (ss -ltnp 'sport = :%d' shows it) or choose another port with PORT or --port", p))
}

type statusReport struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Checks  map[string]struct {
		Status string `json:"status"`
	} `json:"checks"`
}

func agentapiStatus(ctx context.Context, port int) (statusReport, bool) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/status", port), nil)
	if err != nil {
		return statusReport{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return statusReport{}, false
	}
	defer resp.Body.Close()
	var st statusReport
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil || st.Status == "" || st.Checks == nil {
		return statusReport{}, false
	}
	return st, true
}
