// Package config reads, defaults and validates every setting of agentapi.
//
// Settings come from the environment (the names operators' .env files
// already use) and from command-line flags, which override the environment.
// An empty variable counts as unset, so a compose file's `${VAR:-}` behaves
// like leaving VAR out. Load reports every problem at once, each naming the
// variable, and a configuration with problems is never used.
package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
)

// Defaults fixed by existing deployments.
const (
	DefaultPort                    = 3284
	DefaultRedisURL                = "redis://redis:6379"
	DefaultRedisMaxPoolSize        = 10
	DefaultRedisConnectionTimeout  = 5 * time.Second
	DefaultRateLimitPerMinute      = 60
	DefaultRateLimitBurst          = 10
	DefaultBreakerFailureThreshold = 5
	DefaultBreakerSuccessThreshold = 2
	DefaultBreakerTimeout          = 30 * time.Second
	DefaultSessionTTL              = 3600 * time.Second
	DefaultSessionCleanupInterval  = 300 * time.Second
	DefaultMaxSessionsTenant       = 20
	DefaultMaxSessionsUser         = 5
	DefaultAgentIdleTimeout        = 30 * time.Minute
	DefaultLoginMaxLifetime        = 24 * time.Hour
	DefaultInstanceTTL             = 10 * time.Second
	DefaultLoginPerMinute          = 10
	DefaultLoginBurst              = 5

	// PlaceholderTokenKey is the value shipped in example .env files; it
	// is rejected so that nobody runs with a published key.
	PlaceholderTokenKey = "change-this-to-a-random-32-byte-key"
	// TokenKeyFile is the file in the data directory that holds a
	// generated TOKEN_ENCRYPTION_KEY.
	TokenKeyFile = "token_encryption_key"
)

// Protocols for REDIS_PROTOCOL.
const (
	ProtocolNative = "native"
	ProtocolREST   = "rest"
)

// Session storage backends for SESSION_STORAGE.
const (
	StorageRedis  = "redis"
	StorageMemory = "memory"
)

// Config is the effective configuration.
type Config struct {
	Port        int
	DataDir     string
	DatabaseURL string // empty: SQLite file in DataDir
	LogLevel    slog.Level
	LogFormat   string // "json", "text" or "auto" (text on a terminal)

	Redis          Redis
	RateLimit      RateLimit
	CircuitBreaker CircuitBreaker
	Session        Session

	// TokenKey is the 32-byte key from TOKEN_ENCRYPTION_KEY; nil when the
	// variable is unset, in which case ResolveTokenKey loads or generates
	// one in DataDir.
	TokenKey []byte
	// PreviousTokenKeys still open sessions sealed before a key rotation
	// (TOKEN_ENCRYPTION_KEY_PREVIOUS, comma-separated).
	PreviousTokenKeys [][]byte

	Tenancy Tenancy
}

// Tenancy holds the settings of the multi-tenant control plane.
type Tenancy struct {
	AgentsFile        string        // AGENTAPI_AGENTS_FILE: the operator's agent catalog
	AdminAPIKey       string        // AGENTAPI_ADMIN_API_KEY: the bootstrap key, instead of a generated one
	MaxSessionsTenant int           // AGENTAPI_MAX_SESSIONS_PER_TENANT
	MaxSessionsUser   int           // AGENTAPI_MAX_SESSIONS_PER_USER
	IdleTimeout       time.Duration // AGENTAPI_SESSION_IDLE_TIMEOUT: stops unused agents
	LoginMaxLifetime  time.Duration // AGENTAPI_SESSION_MAX_LIFETIME: absolute cap of a login session
	SecureCookies     bool          // AGENTAPI_SECURE_COOKIES
	MetricsTenants    bool          // METRICS_TENANT_LABELS: tenant ids as metric label values
	InstanceID        string        // AGENTAPI_INSTANCE_ID
	AdvertiseURL      string        // AGENTAPI_ADVERTISE_URL: how other instances reach this one
	InstanceTTL       time.Duration // AGENTAPI_INSTANCE_TTL: an instance silent this long is dead
	AgentUIDBase      int           // AGENTAPI_AGENT_UID_BASE: 0 runs agents as the server's user
}

// Redis holds the REDIS_* and UPSTASH_* settings.
type Redis struct {
	Enable         bool
	Protocol       string // native or rest: the preferred path
	URL            string // REDIS_URL with REDIS_PASSWORD applied
	UpstashURL     string // UPSTASH_REDIS_URL (native protocol to Upstash)
	RESTURL        string
	RESTToken      string
	Password       string
	MaxPoolSize    int
	ConnectTimeout time.Duration

	urlSet bool // REDIS_URL was given explicitly
}

// NativeURL is the URL the native protocol uses: UPSTASH_REDIS_URL when
// set, else REDIS_URL.
func (r Redis) NativeURL() string {
	if r.UpstashURL != "" {
		return r.UpstashURL
	}
	return r.URL
}

// NativeConfigured reports whether the native protocol can be used: it is
// the preferred protocol, or a native URL was given explicitly.
func (r Redis) NativeConfigured() bool {
	return r.Protocol == ProtocolNative || r.UpstashURL != "" || r.urlSet
}

// RESTConfigured reports whether the REST URL and token are both set.
func (r Redis) RESTConfigured() bool { return r.RESTURL != "" && r.RESTToken != "" }

// RateLimit holds the RATE_LIMIT_* settings.
type RateLimit struct {
	Enabled           bool
	RequestsPerMinute int // per user
	Burst             int
	IPPerMinute       int // per client IP; defaults to RequestsPerMinute
	IPBurst           int
	LoginPerMinute    int // logins per client IP
	LoginBurst        int
	// FailClosed refuses requests while the shared limiter is unreachable;
	// the default serves them under local limits.
	FailClosed     bool
	TrustedProxies []netip.Prefix
}

// CircuitBreaker holds the CIRCUIT_BREAKER_* settings.
type CircuitBreaker struct {
	Enabled          bool
	FailureThreshold int
	SuccessThreshold int
	Timeout          time.Duration
}

// Session holds the SESSION_* settings.
type Session struct {
	Storage         string
	TTL             time.Duration
	CleanupInterval time.Duration
}

// Problems is every problem found in a configuration.
type Problems []string

func (p Problems) Error() string {
	if len(p) == 1 {
		return "configuration: " + p[0]
	}
	return fmt.Sprintf("configuration has %d problems:\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// Env looks a variable up, like os.LookupEnv.
type Env func(name string) (string, bool)

// Load builds the configuration from env and the flags in args (the
// arguments after the subcommand). Flags: --port, --data-dir,
// --database-url, --log-level, --log-format. On error the Config is nil and
// the error is Problems (or a flag parse error).
func Load(args []string, env Env) (*Config, error) {
	if env == nil {
		env = os.LookupEnv
	}
	fs := flag.NewFlagSet("agentapi", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.String("port", "", "port to listen on (PORT, default 3284)")
	fs.String("data-dir", "", "data directory (AGENTAPI_DATA_DIR)")
	fs.String("database-url", "", "PostgreSQL URL (DATABASE_URL); empty: SQLite in the data directory")
	fs.String("log-level", "", "debug, info, warn or error (LOG_LEVEL)")
	fs.String("log-format", "", "json, text or auto (LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("flags: unexpected argument %q", fs.Arg(0))
	}
	flags := map[string]string{}
	fs.Visit(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })

	r := reader{env: env}
	// pick prefers a flag over the variable.
	pick := func(flagName, envName string) (string, string) {
		if v, ok := flags[flagName]; ok {
			return v, "--" + flagName
		}
		v, _ := r.get(envName)
		return v, envName
	}

	c := &Config{}
	if v, name := pick("port", "PORT"); v == "" {
		c.Port = DefaultPort
	} else if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 65535 {
		r.bad(name, v, "want a port number from 1 to 65535 (0 picks a free port)")
	} else {
		c.Port = n
	}
	if v, name := pick("data-dir", "AGENTAPI_DATA_DIR"); v != "" {
		if !filepath.IsAbs(v) {
			abs, err := filepath.Abs(v)
			if err != nil {
				r.bad(name, v, err.Error())
			}
			v = abs
		}
		c.DataDir = v
	} else {
		c.DataDir = defaultDataDir(env)
	}
	if v, name := pick("database-url", "DATABASE_URL"); v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			r.bad(name, redactURL(v), "want postgres://user:password@host:port/database")
		} else {
			c.DatabaseURL = v
		}
	}
	v, name := pick("log-level", "LOG_LEVEL")
	switch strings.ToLower(v) {
	case "", "info":
		c.LogLevel = slog.LevelInfo
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		r.bad(name, v, "want debug, info, warn or error")
	}
	v, name = pick("log-format", "LOG_FORMAT")
	switch strings.ToLower(v) {
	case "":
		c.LogFormat = "auto"
	case "json", "text", "auto":
		c.LogFormat = strings.ToLower(v)
	default:
		r.bad(name, v, "want json, text or auto")
	}

	// Redis
	rd := &c.Redis
	rd.Enable = r.boolean("REDIS_ENABLE", false)
	rd.Protocol = strings.ToLower(r.str("REDIS_PROTOCOL", ProtocolNative))
	if rd.Protocol != ProtocolNative && rd.Protocol != ProtocolREST {
		r.bad("REDIS_PROTOCOL", rd.Protocol, "want native or rest")
	}
	rd.Password, _ = r.get("REDIS_PASSWORD")
	if raw, ok := r.get("REDIS_URL"); ok {
		rd.urlSet = true
		rd.URL = raw
	} else {
		rd.URL = DefaultRedisURL
	}
	if u, err := checkRedisURL(rd.URL); err != nil {
		r.bad("REDIS_URL", redactURL(rd.URL), err.Error())
	} else if rd.Password != "" && u.User == nil {
		u.User = url.UserPassword("", rd.Password)
		rd.URL = u.String()
	} else if rd.Password != "" {
		if _, has := u.User.Password(); !has {
			u.User = url.UserPassword(u.User.Username(), rd.Password)
			rd.URL = u.String()
		}
	}
	if raw, ok := r.get("UPSTASH_REDIS_URL"); ok {
		if _, err := checkRedisURL(raw); err != nil {
			r.bad("UPSTASH_REDIS_URL", redactURL(raw), err.Error())
		} else {
			rd.UpstashURL = raw
		}
	}
	if raw, ok := r.get("UPSTASH_REDIS_REST_URL"); ok {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			r.bad("UPSTASH_REDIS_REST_URL", redactURL(raw), "want https://<your-instance>.upstash.io")
		} else {
			rd.RESTURL = raw
		}
	}
	rd.RESTToken, _ = r.get("UPSTASH_REDIS_REST_TOKEN")
	rd.MaxPoolSize = r.positive("REDIS_MAX_POOL_SIZE", DefaultRedisMaxPoolSize)
	rd.ConnectTimeout = r.duration("REDIS_CONNECTION_TIMEOUT", DefaultRedisConnectionTimeout)
	if rd.Enable && rd.Protocol == ProtocolREST {
		if rd.RESTURL == "" && !r.failed("UPSTASH_REDIS_REST_URL") {
			r.problem("REDIS_PROTOCOL=rest needs UPSTASH_REDIS_REST_URL")
		}
		if rd.RESTToken == "" {
			r.problem("REDIS_PROTOCOL=rest needs UPSTASH_REDIS_REST_TOKEN")
		}
	}
	if (rd.RESTURL == "") != (rd.RESTToken == "") && rd.Protocol == ProtocolNative && rd.Enable {
		r.problem("UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN go together: set both to use REST as a fallback, or neither")
	}

	// Rate limiting
	c.RateLimit.Enabled = r.boolean("RATE_LIMIT_ENABLED", true)
	c.RateLimit.RequestsPerMinute = r.positive("RATE_LIMIT_REQUESTS_PER_MINUTE", DefaultRateLimitPerMinute)
	c.RateLimit.Burst = r.nonNegative("RATE_LIMIT_BURST_SIZE", DefaultRateLimitBurst)
	c.RateLimit.IPPerMinute = r.positive("RATE_LIMIT_IP_REQUESTS_PER_MINUTE", c.RateLimit.RequestsPerMinute)
	c.RateLimit.IPBurst = r.nonNegative("RATE_LIMIT_IP_BURST_SIZE", c.RateLimit.Burst)
	c.RateLimit.LoginPerMinute = r.positive("RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE", DefaultLoginPerMinute)
	c.RateLimit.LoginBurst = r.nonNegative("RATE_LIMIT_LOGIN_BURST_SIZE", DefaultLoginBurst)
	switch v := strings.ToLower(r.str("RATE_LIMIT_FAILURE_POLICY", "open")); v {
	case "open":
	case "closed":
		c.RateLimit.FailClosed = true
	default:
		r.bad("RATE_LIMIT_FAILURE_POLICY", v, "want open (local limits while Redis is down) or closed (refuse)")
	}
	if raw, ok := r.get("TRUSTED_PROXIES"); ok {
		for _, part := range strings.Split(raw, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if p, err := netip.ParsePrefix(part); err == nil {
				c.RateLimit.TrustedProxies = append(c.RateLimit.TrustedProxies, p.Masked())
			} else if a, err := netip.ParseAddr(part); err == nil {
				c.RateLimit.TrustedProxies = append(c.RateLimit.TrustedProxies, netip.PrefixFrom(a, a.BitLen()))
			} else {
				r.bad("TRUSTED_PROXIES", part, "want IP addresses or CIDRs, comma-separated")
			}
		}
	}

	// Circuit breaker
	c.CircuitBreaker.Enabled = r.boolean("CIRCUIT_BREAKER_ENABLED", true)
	c.CircuitBreaker.FailureThreshold = r.positive("CIRCUIT_BREAKER_FAILURE_THRESHOLD", DefaultBreakerFailureThreshold)
	c.CircuitBreaker.SuccessThreshold = r.positive("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", DefaultBreakerSuccessThreshold)
	c.CircuitBreaker.Timeout = r.duration("CIRCUIT_BREAKER_TIMEOUT", DefaultBreakerTimeout)

	// Sessions
	defStorage := StorageMemory
	if rd.Enable {
		defStorage = StorageRedis
	}
	c.Session.Storage = strings.ToLower(r.str("SESSION_STORAGE", defStorage))
	switch c.Session.Storage {
	case StorageMemory:
	case StorageRedis:
		if !rd.Enable {
			r.problem("SESSION_STORAGE=redis needs REDIS_ENABLE=true (or set SESSION_STORAGE=memory)")
		}
	default:
		r.bad("SESSION_STORAGE", c.Session.Storage, "want redis or memory")
	}
	c.Session.TTL = r.duration("SESSION_TTL", DefaultSessionTTL)
	c.Session.CleanupInterval = r.duration("SESSION_CLEANUP_INTERVAL", DefaultSessionCleanupInterval)

	if raw, ok := r.get("TOKEN_ENCRYPTION_KEY"); ok {
		key, err := ParseTokenKey(raw)
		if err != nil {
			r.problem("TOKEN_ENCRYPTION_KEY: " + err.Error())
		}
		c.TokenKey = key
	}
	if raw, ok := r.get("TOKEN_ENCRYPTION_KEY_PREVIOUS"); ok {
		for i, part := range strings.Split(raw, ",") {
			key, err := ParseTokenKey(part)
			if err != nil {
				r.problem(fmt.Sprintf("TOKEN_ENCRYPTION_KEY_PREVIOUS (key %d): %v", i+1, err))
				continue
			}
			c.PreviousTokenKeys = append(c.PreviousTokenKeys, key)
		}
	}

	tn := &c.Tenancy
	tn.AgentsFile, _ = r.get("AGENTAPI_AGENTS_FILE")
	tn.AdminAPIKey, _ = r.get("AGENTAPI_ADMIN_API_KEY")
	if tn.AdminAPIKey != "" && !auth.LooksLikeAPIKey(tn.AdminAPIKey) {
		r.problem("AGENTAPI_ADMIN_API_KEY: not an API key; generate one with `agentapi keygen` (or leave it unset to have one generated at first start)")
	}
	tn.MaxSessionsTenant = r.nonNegative("AGENTAPI_MAX_SESSIONS_PER_TENANT", DefaultMaxSessionsTenant)
	tn.MaxSessionsUser = r.nonNegative("AGENTAPI_MAX_SESSIONS_PER_USER", DefaultMaxSessionsUser)
	tn.IdleTimeout = r.duration("AGENTAPI_SESSION_IDLE_TIMEOUT", DefaultAgentIdleTimeout)
	tn.LoginMaxLifetime = r.duration("AGENTAPI_SESSION_MAX_LIFETIME", DefaultLoginMaxLifetime)
	if tn.LoginMaxLifetime < c.Session.TTL && !r.failed("AGENTAPI_SESSION_MAX_LIFETIME") && !r.failed("SESSION_TTL") {
		r.problem(fmt.Sprintf("AGENTAPI_SESSION_MAX_LIFETIME (%s) is shorter than SESSION_TTL (%s): the absolute lifetime caps the idle timeout", tn.LoginMaxLifetime, c.Session.TTL))
	}
	tn.SecureCookies = r.boolean("AGENTAPI_SECURE_COOKIES", false)
	tn.MetricsTenants = r.boolean("METRICS_TENANT_LABELS", false)
	tn.AgentUIDBase = r.nonNegative("AGENTAPI_AGENT_UID_BASE", 0)
	if tn.AgentUIDBase > 1<<31-1-65536 { // not base+65536 > ...: that overflows for huge bases
		r.bad("AGENTAPI_AGENT_UID_BASE", strconv.Itoa(tn.AgentUIDBase), "too large: the 65536 uids from it must be valid")
	}
	tn.InstanceID, _ = r.get("AGENTAPI_INSTANCE_ID")
	if tn.InstanceID == "" {
		host, _ := os.Hostname()
		tn.InstanceID = host
	}
	tn.AdvertiseURL, _ = r.get("AGENTAPI_ADVERTISE_URL")
	if tn.AdvertiseURL == "" {
		host, _ := os.Hostname()
		tn.AdvertiseURL = "http://" + net.JoinHostPort(host, strconv.Itoa(c.Port))
	} else if u, err := url.Parse(tn.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		r.bad("AGENTAPI_ADVERTISE_URL", tn.AdvertiseURL, "an http:// or https:// URL of this instance without a path, e.g. http://10.0.0.5:3284")
	} else {
		tn.AdvertiseURL = strings.TrimSuffix(tn.AdvertiseURL, "/")
	}
	tn.InstanceTTL = r.duration("AGENTAPI_INSTANCE_TTL", DefaultInstanceTTL)
	if tn.InstanceTTL < time.Second && !r.failed("AGENTAPI_INSTANCE_TTL") {
		r.bad("AGENTAPI_INSTANCE_TTL", tn.InstanceTTL.String(), "at least 1s")
	}

	if len(r.problems) > 0 {
		return nil, r.problems
	}
	return c, nil
}

// ParseTokenKey decodes a TOKEN_ENCRYPTION_KEY: 64 hex characters (what
// `openssl rand -hex 32` prints) or base64 (standard or URL alphabet, padded
// or not) of exactly 32 bytes.
func ParseTokenKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == PlaceholderTokenKey {
		return nil, errors.New("is still the example placeholder; generate a key with `openssl rand -hex 32`")
	}
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) == 32 {
				return b, nil
			}
			return nil, fmt.Errorf("decodes to %d bytes, want 32; generate a key with `openssl rand -hex 32`", len(b))
		}
	}
	return nil, fmt.Errorf("is neither 64 hex characters nor base64 of 32 bytes (got %d characters); generate a key with `openssl rand -hex 32`", len(s))
}

func defaultDataDir(env Env) string {
	if x, ok := env("XDG_DATA_HOME"); ok && x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "agentapi")
	}
	home, ok := env("HOME")
	if !ok || home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return filepath.Join(os.TempDir(), "agentapi")
		}
		home = h
	}
	return filepath.Join(home, ".local", "share", "agentapi")
}

func checkRedisURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a URL; want redis://[:password@]host:port[/db] or rediss://...")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("scheme %q; want redis:// or rediss:// (TLS)", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("no host; want redis://host:port")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("port %q is not a port number", p)
		}
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return nil, fmt.Errorf("database %q is not a number", db)
		}
	}
	return u, nil
}

// redactURL hides a URL's password, in the user part and in the query
// parameters that carry secrets; a URL that does not parse is hidden whole.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable URL, redacted]"
	}
	q := u.Query()
	changed := false
	for k := range q {
		switch strings.ToLower(k) {
		case "password", "pass", "sslpassword", "sslkey", "token", "secret":
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// reader collects problems while reading variables.
type reader struct {
	env      Env
	problems Problems
	failedOn map[string]bool
}

func (r *reader) get(name string) (string, bool) {
	v, ok := r.env(name)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return "", false
	}
	return v, true
}

func (r *reader) problem(msg string) { r.problems = append(r.problems, msg) }

func (r *reader) bad(name, value, want string) {
	if r.failedOn == nil {
		r.failedOn = map[string]bool{}
	}
	r.failedOn[name] = true
	r.problem(fmt.Sprintf("%s=%q: %s", name, value, want))
}

func (r *reader) failed(name string) bool { return r.failedOn[name] }

func (r *reader) str(name, def string) string {
	if v, ok := r.get(name); ok {
		return v
	}
	return def
}

func (r *reader) boolean(name string, def bool) bool {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		return true
	case "0", "f", "false", "no", "n", "off":
		return false
	}
	r.bad(name, v, "want true or false")
	return def
}

func (r *reader) integer(name string, def, min int, want string) int {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		r.bad(name, v, want)
		return def
	}
	return n
}

func (r *reader) positive(name string, def int) int {
	return r.integer(name, def, 1, "want a whole number of at least 1")
}

func (r *reader) nonNegative(name string, def int) int {
	return r.integer(name, def, 0, "want a whole number of at least 0")
}

// duration accepts Go durations ("5s", "1m30s") and bare seconds ("300").
// It must be positive.
func (r *reader) duration(name string, def time.Duration) time.Duration {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	d, err := ParseDuration(v)
	if err != nil {
		r.bad(name, v, err.Error())
		return def
	}
	return d
}

// ParseDuration reads "5s", "3600s", "1m30s" or bare seconds ("300"). Zero
// and negative durations are rejected.
func ParseDuration(v string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		// Checked before multiplying: a large negative count of seconds
		// would overflow into a positive duration.
		if n <= 0 {
			return 0, errors.New("must be greater than zero")
		}
		if n > int64(1<<62/time.Second) {
			return 0, errors.New("too large")
		}
		d = time.Duration(n) * time.Second
	} else {
		pd, err := time.ParseDuration(v)
		if err != nil {
			return 0, errors.New(`want a duration such as "5s", "1m30s" or a number of seconds`)
		}
		d = pd
	}
	if d <= 0 {
		return 0, errors.New("must be greater than zero")
	}
	return d, nil
}

// Variables lists every environment variable Load reads, sorted. It is
// derived by running Load and recording its look-ups, so it cannot drift
// from the code; tests use it to prove each one is documented.
func Variables() []string {
	seen := map[string]bool{}
	Load(nil, func(name string) (string, bool) {
		seen[name] = true
		return "", false
	})
	delete(seen, "HOME")
	delete(seen, "XDG_DATA_HOME")
	vs := make([]string, 0, len(seen))
	for v := range seen {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return vs
}
