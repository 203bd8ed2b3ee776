package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TokenKeyPath is where a generated TOKEN_ENCRYPTION_KEY is kept.
func (c *Config) TokenKeyPath() string { return filepath.Join(c.DataDir, TokenKeyFile) }

// ResolveTokenKey makes sure c.TokenKey is set. When TOKEN_ENCRYPTION_KEY
// was unset it reads the key kept in the data directory or, the first time,
// generates one, writes it there with mode 0600 and logs a warning once:
// sessions sealed with it stop opening if the file is lost, and instances
// that share Redis must share the key. It returns where the key came from.
func (c *Config) ResolveTokenKey(log *slog.Logger) (string, error) {
	if c.TokenKey != nil {
		return "TOKEN_ENCRYPTION_KEY", nil
	}
	path := c.TokenKeyPath()
	raw, err := os.ReadFile(path)
	if err == nil {
		key, perr := ParseTokenKey(string(raw))
		if perr != nil {
			return "", fmt.Errorf("%s: %w", path, perr)
		}
		c.TokenKey = key
		return path, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading TOKEN_ENCRYPTION_KEY from %s: %w", path, err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating data directory %s: %w", c.DataDir, err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	// O_EXCL: when two instances start at once on one data directory, one
	// writes and the other reads what it wrote.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return c.ResolveTokenKey(log)
	}
	if err != nil {
		return "", fmt.Errorf("writing TOKEN_ENCRYPTION_KEY to %s: %w", path, err)
	}
	_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return "", fmt.Errorf("writing TOKEN_ENCRYPTION_KEY to %s: %w", path, werr)
	}
	c.TokenKey = key
	log.Warn("TOKEN_ENCRYPTION_KEY is not set; generated one and saved it (mode 0600). Set TOKEN_ENCRYPTION_KEY to the same value on every instance that shares Redis.", "path", path)
	return path, nil
}

const redacted = "[redacted]"

// Effective lists the configuration as name, value pairs for
// `agentapi config`, every secret redacted. Unset secrets say so.
func (c *Config) Effective() [][2]string {
	secret := func(s string) string {
		if s == "" {
			return "(unset)"
		}
		return redacted
	}
	key := redacted
	if c.TokenKey == nil {
		if _, err := os.Stat(c.TokenKeyPath()); err == nil {
			key = "(unset; using the key kept in " + c.TokenKeyPath() + ")"
		} else {
			key = "(unset; one will be generated in " + c.TokenKeyPath() + ")"
		}
	}
	db := "(unset; SQLite at " + filepath.Join(c.DataDir, "agentapi.db") + ")"
	if c.DatabaseURL != "" {
		db = redactURL(c.DatabaseURL)
	}
	orUnset := func(s string) string {
		if s == "" {
			return "(unset)"
		}
		return s
	}
	return [][2]string{
		{"PORT", fmt.Sprint(c.Port)},
		{"AGENTAPI_DATA_DIR", c.DataDir},
		{"DATABASE_URL", db},
		{"LOG_LEVEL", strings.ToLower(c.LogLevel.String())},
		{"LOG_FORMAT", c.LogFormat},
		{"REDIS_ENABLE", fmt.Sprint(c.Redis.Enable)},
		{"REDIS_PROTOCOL", c.Redis.Protocol},
		{"REDIS_URL", redactURL(c.Redis.URL)},
		{"REDIS_PASSWORD", secret(c.Redis.Password)},
		{"UPSTASH_REDIS_URL", orUnset(redactURL(c.Redis.UpstashURL))},
		{"UPSTASH_REDIS_REST_URL", orUnset(c.Redis.RESTURL)},
		{"UPSTASH_REDIS_REST_TOKEN", secret(c.Redis.RESTToken)},
		{"REDIS_MAX_POOL_SIZE", fmt.Sprint(c.Redis.MaxPoolSize)},
		{"REDIS_CONNECTION_TIMEOUT", secs(c.Redis.ConnectTimeout)},
		{"RATE_LIMIT_ENABLED", fmt.Sprint(c.RateLimit.Enabled)},
		{"RATE_LIMIT_REQUESTS_PER_MINUTE", fmt.Sprint(c.RateLimit.RequestsPerMinute)},
		{"RATE_LIMIT_BURST_SIZE", fmt.Sprint(c.RateLimit.Burst)},
		{"RATE_LIMIT_IP_REQUESTS_PER_MINUTE", fmt.Sprint(c.RateLimit.IPPerMinute)},
		{"RATE_LIMIT_IP_BURST_SIZE", fmt.Sprint(c.RateLimit.IPBurst)},
		{"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE", fmt.Sprint(c.RateLimit.LoginPerMinute)},
		{"RATE_LIMIT_LOGIN_BURST_SIZE", fmt.Sprint(c.RateLimit.LoginBurst)},
		{"RATE_LIMIT_FAILURE_POLICY", map[bool]string{false: "open", true: "closed"}[c.RateLimit.FailClosed]},
		{"TRUSTED_PROXIES", orUnset(prefixes(c.RateLimit.TrustedProxies))},
		{"CIRCUIT_BREAKER_ENABLED", fmt.Sprint(c.CircuitBreaker.Enabled)},
		{"CIRCUIT_BREAKER_FAILURE_THRESHOLD", fmt.Sprint(c.CircuitBreaker.FailureThreshold)},
		{"CIRCUIT_BREAKER_SUCCESS_THRESHOLD", fmt.Sprint(c.CircuitBreaker.SuccessThreshold)},
		{"CIRCUIT_BREAKER_TIMEOUT", secs(c.CircuitBreaker.Timeout)},
		{"SESSION_STORAGE", c.Session.Storage},
		{"SESSION_TTL", secs(c.Session.TTL)},
		{"SESSION_CLEANUP_INTERVAL", secs(c.Session.CleanupInterval)},
		{"TOKEN_ENCRYPTION_KEY", key},
		{"TOKEN_ENCRYPTION_KEY_PREVIOUS", fmt.Sprintf("%d key(s)", len(c.PreviousTokenKeys))},
		{"AGENTAPI_AGENTS_FILE", orUnset(c.Tenancy.AgentsFile)},
		{"AGENTAPI_ADMIN_API_KEY", secret(c.Tenancy.AdminAPIKey)},
		{"AGENTAPI_MAX_SESSIONS_PER_TENANT", fmt.Sprint(c.Tenancy.MaxSessionsTenant)},
		{"AGENTAPI_MAX_SESSIONS_PER_USER", fmt.Sprint(c.Tenancy.MaxSessionsUser)},
		{"AGENTAPI_SESSION_IDLE_TIMEOUT", secs(c.Tenancy.IdleTimeout)},
		{"AGENTAPI_SESSION_MAX_LIFETIME", secs(c.Tenancy.LoginMaxLifetime)},
		{"AGENTAPI_SECURE_COOKIES", fmt.Sprint(c.Tenancy.SecureCookies)},
		{"AGENTAPI_INSTANCE_ID", c.Tenancy.InstanceID},
		{"METRICS_TENANT_LABELS", fmt.Sprint(c.Tenancy.MetricsTenants)},
		{"AGENTAPI_ADVERTISE_URL", c.Tenancy.AdvertiseURL},
		{"AGENTAPI_INSTANCE_TTL", c.Tenancy.InstanceTTL.String()},
		{"AGENTAPI_AGENT_UID_BASE", fmt.Sprint(c.Tenancy.AgentUIDBase)},
	}
}

// secs prints a duration the way the variables are usually written: whole
// seconds as "3600s", anything finer in Go's notation.
func secs(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

func prefixes(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return strings.Join(out, ",")
}
