package config

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
)

func envOf(kv map[string]string) Env {
	return func(name string) (string, bool) {
		v, ok := kv[name]
		return v, ok
	}
}

var goodAPIKey, _, _ = auth.NewAPIKey()

const hexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestDefaults(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"HOME": "/home/op"}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Port":                   3284,
		"DataDir":                "/home/op/.local/share/agentapi",
		"Redis.Enable":           false,
		"Redis.Protocol":         "native",
		"Redis.URL":              "redis://redis:6379",
		"Redis.MaxPoolSize":      10,
		"Redis.ConnectTimeout":   5 * time.Second,
		"RateLimit.Enabled":      true,
		"RateLimit.RPM":          60,
		"RateLimit.Burst":        10,
		"Breaker.Enabled":        true,
		"Breaker.Failure":        5,
		"Breaker.Success":        2,
		"Breaker.Timeout":        30 * time.Second,
		"Session.Storage":        "memory",
		"Session.TTL":            3600 * time.Second,
		"Session.Cleanup":        300 * time.Second,
		"TokenKey":               0,
		"LogLevel":               slog.LevelInfo,
		"LogFormat":              "auto",
		"Redis.NativeConfigured": true,
		"Redis.RESTConfigured":   false,
	}
	got := map[string]any{
		"Port":                   c.Port,
		"DataDir":                c.DataDir,
		"Redis.Enable":           c.Redis.Enable,
		"Redis.Protocol":         c.Redis.Protocol,
		"Redis.URL":              c.Redis.URL,
		"Redis.MaxPoolSize":      c.Redis.MaxPoolSize,
		"Redis.ConnectTimeout":   c.Redis.ConnectTimeout,
		"RateLimit.Enabled":      c.RateLimit.Enabled,
		"RateLimit.RPM":          c.RateLimit.RequestsPerMinute,
		"RateLimit.Burst":        c.RateLimit.Burst,
		"Breaker.Enabled":        c.CircuitBreaker.Enabled,
		"Breaker.Failure":        c.CircuitBreaker.FailureThreshold,
		"Breaker.Success":        c.CircuitBreaker.SuccessThreshold,
		"Breaker.Timeout":        c.CircuitBreaker.Timeout,
		"Session.Storage":        c.Session.Storage,
		"Session.TTL":            c.Session.TTL,
		"Session.Cleanup":        c.Session.CleanupInterval,
		"TokenKey":               len(c.TokenKey),
		"LogLevel":               c.LogLevel,
		"LogFormat":              c.LogFormat,
		"Redis.NativeConfigured": c.Redis.NativeConfigured(),
		"Redis.RESTConfigured":   c.Redis.RESTConfigured(),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
}

// TestVariables covers every variable with good and bad values. Each case
// sets the variables in env on top of a valid base, then checks either a
// field of the result or that Load fails with a message naming want.
func TestVariables(t *testing.T) {
	type check func(*Config) any
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		field check
		want  any    // expected field value when err is ""
		err   string // substring of the error, naming the variable
	}{
		{name: "PORT good", env: map[string]string{"PORT": "8080"}, field: func(c *Config) any { return c.Port }, want: 8080},
		{name: "PORT zero picks free", env: map[string]string{"PORT": "0"}, field: func(c *Config) any { return c.Port }, want: 0},
		{name: "PORT bad", env: map[string]string{"PORT": "http"}, err: `PORT="http"`},
		{name: "PORT out of range", env: map[string]string{"PORT": "70000"}, err: `PORT="70000"`},
		{name: "--port overrides PORT", env: map[string]string{"PORT": "8080"}, args: []string{"--port", "9090"}, field: func(c *Config) any { return c.Port }, want: 9090},
		{name: "--port bad names the flag", args: []string{"--port=-1"}, err: `--port="-1"`},
		{name: "AGENTAPI_DATA_DIR", env: map[string]string{"AGENTAPI_DATA_DIR": "/srv/agentapi"}, field: func(c *Config) any { return c.DataDir }, want: "/srv/agentapi"},
		{name: "--data-dir overrides", env: map[string]string{"AGENTAPI_DATA_DIR": "/srv/a"}, args: []string{"--data-dir", "/srv/b"}, field: func(c *Config) any { return c.DataDir }, want: "/srv/b"},
		{name: "XDG_DATA_HOME", env: map[string]string{"XDG_DATA_HOME": "/xdg"}, field: func(c *Config) any { return c.DataDir }, want: "/xdg/agentapi"},
		{name: "DATABASE_URL good", env: map[string]string{"DATABASE_URL": "postgres://u:p@db:5432/agentapi"}, field: func(c *Config) any { return c.DatabaseURL }, want: "postgres://u:p@db:5432/agentapi"},
		{name: "DATABASE_URL bad hides password", env: map[string]string{"DATABASE_URL": "mysql://u:hunter2@db/x"}, err: `DATABASE_URL="mysql://u:xxxxx@db/x"`},
		{name: "LOG_LEVEL", env: map[string]string{"LOG_LEVEL": "DEBUG"}, field: func(c *Config) any { return c.LogLevel }, want: slog.LevelDebug},
		{name: "LOG_LEVEL bad", env: map[string]string{"LOG_LEVEL": "loud"}, err: `LOG_LEVEL="loud"`},
		{name: "LOG_FORMAT", env: map[string]string{"LOG_FORMAT": "text"}, field: func(c *Config) any { return c.LogFormat }, want: "text"},
		{name: "LOG_FORMAT bad", env: map[string]string{"LOG_FORMAT": "xml"}, err: `LOG_FORMAT="xml"`},

		{name: "REDIS_ENABLE true", env: map[string]string{"REDIS_ENABLE": "true"}, field: func(c *Config) any { return c.Redis.Enable }, want: true},
		{name: "REDIS_ENABLE 1", env: map[string]string{"REDIS_ENABLE": "1"}, field: func(c *Config) any { return c.Redis.Enable }, want: true},
		{name: "REDIS_ENABLE empty is unset", env: map[string]string{"REDIS_ENABLE": ""}, field: func(c *Config) any { return c.Redis.Enable }, want: false},
		{name: "REDIS_ENABLE bad", env: map[string]string{"REDIS_ENABLE": "maybe"}, err: `REDIS_ENABLE="maybe"`},
		{name: "REDIS_PROTOCOL rest", env: map[string]string{"REDIS_ENABLE": "true", "REDIS_PROTOCOL": "rest", "UPSTASH_REDIS_REST_URL": "https://x.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "tok"}, field: func(c *Config) any { return c.Redis.Protocol }, want: "rest"},
		{name: "REDIS_PROTOCOL bad", env: map[string]string{"REDIS_PROTOCOL": "grpc"}, err: `REDIS_PROTOCOL="grpc": want native or rest`},
		{name: "REDIS_PROTOCOL rest needs url", env: map[string]string{"REDIS_ENABLE": "true", "REDIS_PROTOCOL": "rest", "UPSTASH_REDIS_REST_TOKEN": "tok"}, err: "needs UPSTASH_REDIS_REST_URL"},
		{name: "REDIS_PROTOCOL rest needs token", env: map[string]string{"REDIS_ENABLE": "true", "REDIS_PROTOCOL": "rest", "UPSTASH_REDIS_REST_URL": "https://x.upstash.io"}, err: "needs UPSTASH_REDIS_REST_TOKEN"},
		{name: "UPSTASH_REDIS_REST_URL bad", env: map[string]string{"UPSTASH_REDIS_REST_URL": "x.upstash.io"}, err: `UPSTASH_REDIS_REST_URL="x.upstash.io"`},
		{name: "REST url without token", env: map[string]string{"REDIS_ENABLE": "true", "UPSTASH_REDIS_REST_URL": "https://x.upstash.io"}, err: "go together"},
		{name: "UPSTASH_REDIS_REST_TOKEN", env: map[string]string{"UPSTASH_REDIS_REST_URL": "https://x.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "AYse"}, field: func(c *Config) any { return c.Redis.RESTConfigured() }, want: true},
		{name: "UPSTASH_REDIS_URL preferred for native", env: map[string]string{"UPSTASH_REDIS_URL": "rediss://default:pw@x.upstash.io:6379"}, field: func(c *Config) any { return c.Redis.NativeURL() }, want: "rediss://default:pw@x.upstash.io:6379"},
		{name: "UPSTASH_REDIS_URL bad", env: map[string]string{"UPSTASH_REDIS_URL": "https://x.upstash.io"}, err: `UPSTASH_REDIS_URL="https://x.upstash.io"`},
		{name: "REDIS_URL", env: map[string]string{"REDIS_URL": "redis://127.0.0.1:6380/2"}, field: func(c *Config) any { return c.Redis.URL }, want: "redis://127.0.0.1:6380/2"},
		{name: "REDIS_URL bad scheme", env: map[string]string{"REDIS_URL": "http://redis:6379"}, err: `REDIS_URL="http://redis:6379"`},
		{name: "REDIS_URL bad db", env: map[string]string{"REDIS_URL": "redis://redis:6379/x"}, err: `database "x"`},
		{name: "REDIS_URL bad port", env: map[string]string{"REDIS_URL": "redis://redis:99999"}, err: `REDIS_URL="redis://redis:99999"`},
		{name: "REDIS_PASSWORD applies to REDIS_URL", env: map[string]string{"REDIS_PASSWORD": "s3cret"}, field: func(c *Config) any { return c.Redis.URL }, want: "redis://:s3cret@redis:6379"},
		{name: "REDIS_PASSWORD keeps user", env: map[string]string{"REDIS_PASSWORD": "s3cret", "REDIS_URL": "redis://app@redis:6379"}, field: func(c *Config) any { return c.Redis.URL }, want: "redis://app:s3cret@redis:6379"},
		{name: "REDIS_PASSWORD not over URL password", env: map[string]string{"REDIS_PASSWORD": "other", "REDIS_URL": "redis://:inurl@redis:6379"}, field: func(c *Config) any { return c.Redis.URL }, want: "redis://:inurl@redis:6379"},
		{name: "REDIS_MAX_POOL_SIZE", env: map[string]string{"REDIS_MAX_POOL_SIZE": "32"}, field: func(c *Config) any { return c.Redis.MaxPoolSize }, want: 32},
		{name: "REDIS_MAX_POOL_SIZE negative", env: map[string]string{"REDIS_MAX_POOL_SIZE": "-1"}, err: `REDIS_MAX_POOL_SIZE="-1"`},
		{name: "REDIS_MAX_POOL_SIZE zero", env: map[string]string{"REDIS_MAX_POOL_SIZE": "0"}, err: `REDIS_MAX_POOL_SIZE="0"`},
		{name: "REDIS_CONNECTION_TIMEOUT 5s", env: map[string]string{"REDIS_CONNECTION_TIMEOUT": "2s"}, field: func(c *Config) any { return c.Redis.ConnectTimeout }, want: 2 * time.Second},
		{name: "REDIS_CONNECTION_TIMEOUT bare seconds", env: map[string]string{"REDIS_CONNECTION_TIMEOUT": "7"}, field: func(c *Config) any { return c.Redis.ConnectTimeout }, want: 7 * time.Second},
		{name: "REDIS_CONNECTION_TIMEOUT 500ms", env: map[string]string{"REDIS_CONNECTION_TIMEOUT": "500ms"}, field: func(c *Config) any { return c.Redis.ConnectTimeout }, want: 500 * time.Millisecond},
		{name: "REDIS_CONNECTION_TIMEOUT zero", env: map[string]string{"REDIS_CONNECTION_TIMEOUT": "0s"}, err: `REDIS_CONNECTION_TIMEOUT="0s": must be greater than zero`},
		{name: "REDIS_CONNECTION_TIMEOUT garbage", env: map[string]string{"REDIS_CONNECTION_TIMEOUT": "soon"}, err: `REDIS_CONNECTION_TIMEOUT="soon"`},

		{name: "RATE_LIMIT_ENABLED false", env: map[string]string{"RATE_LIMIT_ENABLED": "false"}, field: func(c *Config) any { return c.RateLimit.Enabled }, want: false},
		{name: "RATE_LIMIT_ENABLED bad", env: map[string]string{"RATE_LIMIT_ENABLED": "sometimes"}, err: `RATE_LIMIT_ENABLED="sometimes"`},
		{name: "RATE_LIMIT_REQUESTS_PER_MINUTE", env: map[string]string{"RATE_LIMIT_REQUESTS_PER_MINUTE": "600"}, field: func(c *Config) any { return c.RateLimit.RequestsPerMinute }, want: 600},
		{name: "RATE_LIMIT_REQUESTS_PER_MINUTE zero", env: map[string]string{"RATE_LIMIT_REQUESTS_PER_MINUTE": "0"}, err: `RATE_LIMIT_REQUESTS_PER_MINUTE="0"`},
		{name: "RATE_LIMIT_REQUESTS_PER_MINUTE float", env: map[string]string{"RATE_LIMIT_REQUESTS_PER_MINUTE": "1.5"}, err: `RATE_LIMIT_REQUESTS_PER_MINUTE="1.5"`},
		{name: "RATE_LIMIT_BURST_SIZE zero ok", env: map[string]string{"RATE_LIMIT_BURST_SIZE": "0"}, field: func(c *Config) any { return c.RateLimit.Burst }, want: 0},
		{name: "RATE_LIMIT_BURST_SIZE negative", env: map[string]string{"RATE_LIMIT_BURST_SIZE": "-5"}, err: `RATE_LIMIT_BURST_SIZE="-5"`},

		{name: "RATE_LIMIT_IP_* default to RATE_LIMIT_*", env: map[string]string{"RATE_LIMIT_REQUESTS_PER_MINUTE": "120", "RATE_LIMIT_BURST_SIZE": "20"}, field: func(c *Config) any { return fmt.Sprint(c.RateLimit.IPPerMinute, "/", c.RateLimit.IPBurst) }, want: "120/20"},
		{name: "RATE_LIMIT_IP_REQUESTS_PER_MINUTE", env: map[string]string{"RATE_LIMIT_IP_REQUESTS_PER_MINUTE": "300"}, field: func(c *Config) any { return c.RateLimit.IPPerMinute }, want: 300},
		{name: "RATE_LIMIT_IP_REQUESTS_PER_MINUTE bad", env: map[string]string{"RATE_LIMIT_IP_REQUESTS_PER_MINUTE": "0"}, err: "RATE_LIMIT_IP_REQUESTS_PER_MINUTE"},
		{name: "RATE_LIMIT_IP_BURST_SIZE", env: map[string]string{"RATE_LIMIT_IP_BURST_SIZE": "3"}, field: func(c *Config) any { return c.RateLimit.IPBurst }, want: 3},
		{name: "RATE_LIMIT_IP_BURST_SIZE bad", env: map[string]string{"RATE_LIMIT_IP_BURST_SIZE": "-3"}, err: "RATE_LIMIT_IP_BURST_SIZE"},
		{name: "RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE default", field: func(c *Config) any { return fmt.Sprint(c.RateLimit.LoginPerMinute, "/", c.RateLimit.LoginBurst) }, want: "10/5"},
		{name: "RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE bad", env: map[string]string{"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE": "lots"}, err: "RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE"},
		{name: "RATE_LIMIT_LOGIN_BURST_SIZE", env: map[string]string{"RATE_LIMIT_LOGIN_BURST_SIZE": "1"}, field: func(c *Config) any { return c.RateLimit.LoginBurst }, want: 1},
		{name: "RATE_LIMIT_FAILURE_POLICY closed", env: map[string]string{"RATE_LIMIT_FAILURE_POLICY": "closed"}, field: func(c *Config) any { return c.RateLimit.FailClosed }, want: true},
		{name: "RATE_LIMIT_FAILURE_POLICY bad", env: map[string]string{"RATE_LIMIT_FAILURE_POLICY": "maybe"}, err: "RATE_LIMIT_FAILURE_POLICY"},
		{name: "TRUSTED_PROXIES", env: map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7"}, field: func(c *Config) any { return prefixes(c.RateLimit.TrustedProxies) }, want: "10.0.0.0/8,192.168.1.7/32"},
		{name: "TRUSTED_PROXIES bad", env: map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, err: `TRUSTED_PROXIES="proxy.local"`},
		{name: "CIRCUIT_BREAKER_ENABLED off", env: map[string]string{"CIRCUIT_BREAKER_ENABLED": "off"}, field: func(c *Config) any { return c.CircuitBreaker.Enabled }, want: false},
		{name: "CIRCUIT_BREAKER_ENABLED bad", env: map[string]string{"CIRCUIT_BREAKER_ENABLED": "2"}, err: `CIRCUIT_BREAKER_ENABLED="2"`},
		{name: "CIRCUIT_BREAKER_FAILURE_THRESHOLD", env: map[string]string{"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3"}, field: func(c *Config) any { return c.CircuitBreaker.FailureThreshold }, want: 3},
		{name: "CIRCUIT_BREAKER_FAILURE_THRESHOLD zero", env: map[string]string{"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "0"}, err: `CIRCUIT_BREAKER_FAILURE_THRESHOLD="0"`},
		{name: "CIRCUIT_BREAKER_SUCCESS_THRESHOLD", env: map[string]string{"CIRCUIT_BREAKER_SUCCESS_THRESHOLD": "4"}, field: func(c *Config) any { return c.CircuitBreaker.SuccessThreshold }, want: 4},
		{name: "CIRCUIT_BREAKER_SUCCESS_THRESHOLD negative", env: map[string]string{"CIRCUIT_BREAKER_SUCCESS_THRESHOLD": "-2"}, err: `CIRCUIT_BREAKER_SUCCESS_THRESHOLD="-2"`},
		{name: "CIRCUIT_BREAKER_TIMEOUT", env: map[string]string{"CIRCUIT_BREAKER_TIMEOUT": "1m"}, field: func(c *Config) any { return c.CircuitBreaker.Timeout }, want: time.Minute},
		{name: "CIRCUIT_BREAKER_TIMEOUT negative", env: map[string]string{"CIRCUIT_BREAKER_TIMEOUT": "-30s"}, err: `CIRCUIT_BREAKER_TIMEOUT="-30s"`},

		{name: "SESSION_STORAGE redis default with redis", env: map[string]string{"REDIS_ENABLE": "true"}, field: func(c *Config) any { return c.Session.Storage }, want: "redis"},
		{name: "SESSION_STORAGE memory with redis", env: map[string]string{"REDIS_ENABLE": "true", "SESSION_STORAGE": "memory"}, field: func(c *Config) any { return c.Session.Storage }, want: "memory"},
		{name: "SESSION_STORAGE redis without redis", env: map[string]string{"SESSION_STORAGE": "redis"}, err: "SESSION_STORAGE=redis needs REDIS_ENABLE=true"},
		{name: "SESSION_STORAGE bad", env: map[string]string{"SESSION_STORAGE": "disk"}, err: `SESSION_STORAGE="disk"`},
		{name: "SESSION_TTL 3600s", env: map[string]string{"SESSION_TTL": "7200s"}, field: func(c *Config) any { return c.Session.TTL }, want: 2 * time.Hour},
		{name: "SESSION_TTL bare", env: map[string]string{"SESSION_TTL": "60"}, field: func(c *Config) any { return c.Session.TTL }, want: time.Minute},
		{name: "SESSION_TTL zero", env: map[string]string{"SESSION_TTL": "0"}, err: `SESSION_TTL="0"`},
		{name: "SESSION_CLEANUP_INTERVAL", env: map[string]string{"SESSION_CLEANUP_INTERVAL": "30s"}, field: func(c *Config) any { return c.Session.CleanupInterval }, want: 30 * time.Second},
		{name: "SESSION_CLEANUP_INTERVAL bad", env: map[string]string{"SESSION_CLEANUP_INTERVAL": "often"}, err: `SESSION_CLEANUP_INTERVAL="often"`},

		{name: "TOKEN_ENCRYPTION_KEY hex", env: map[string]string{"TOKEN_ENCRYPTION_KEY": hexKey}, field: func(c *Config) any { return c.TokenKey[31] }, want: byte(0xff)},
		{name: "TOKEN_ENCRYPTION_KEY base64", env: map[string]string{"TOKEN_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32))}, field: func(c *Config) any { return len(c.TokenKey) }, want: 32},
		{name: "TOKEN_ENCRYPTION_KEY placeholder", env: map[string]string{"TOKEN_ENCRYPTION_KEY": PlaceholderTokenKey}, err: "TOKEN_ENCRYPTION_KEY: is still the example placeholder"},
		{name: "TOKEN_ENCRYPTION_KEY short hex", env: map[string]string{"TOKEN_ENCRYPTION_KEY": hexKey[:32]}, err: "TOKEN_ENCRYPTION_KEY: decodes to 24 bytes"},
		{name: "TOKEN_ENCRYPTION_KEY_PREVIOUS two keys", env: map[string]string{"TOKEN_ENCRYPTION_KEY_PREVIOUS": hexKey + "," + base64.StdEncoding.EncodeToString(make([]byte, 32))}, field: func(c *Config) any { return len(c.PreviousTokenKeys) }, want: 2},
		{name: "TOKEN_ENCRYPTION_KEY_PREVIOUS bad", env: map[string]string{"TOKEN_ENCRYPTION_KEY_PREVIOUS": hexKey + ",short"}, err: "TOKEN_ENCRYPTION_KEY_PREVIOUS (key 2)"},
		{name: "AGENTAPI_AGENTS_FILE", env: map[string]string{"AGENTAPI_AGENTS_FILE": "/etc/agentapi/agents.json"}, field: func(c *Config) any { return c.Tenancy.AgentsFile }, want: "/etc/agentapi/agents.json"},
		{name: "AGENTAPI_ADMIN_API_KEY good", env: map[string]string{"AGENTAPI_ADMIN_API_KEY": goodAPIKey}, field: func(c *Config) any { return c.Tenancy.AdminAPIKey }, want: goodAPIKey},
		{name: "AGENTAPI_ADMIN_API_KEY weak", env: map[string]string{"AGENTAPI_ADMIN_API_KEY": "admin"}, err: "AGENTAPI_ADMIN_API_KEY"},
		{name: "AGENTAPI_MAX_SESSIONS_PER_TENANT", env: map[string]string{"AGENTAPI_MAX_SESSIONS_PER_TENANT": "0"}, field: func(c *Config) any { return c.Tenancy.MaxSessionsTenant }, want: 0},
		{name: "AGENTAPI_MAX_SESSIONS_PER_TENANT bad", env: map[string]string{"AGENTAPI_MAX_SESSIONS_PER_TENANT": "-1"}, err: "AGENTAPI_MAX_SESSIONS_PER_TENANT"},
		{name: "AGENTAPI_MAX_SESSIONS_PER_USER", env: map[string]string{"AGENTAPI_MAX_SESSIONS_PER_USER": "2"}, field: func(c *Config) any { return c.Tenancy.MaxSessionsUser }, want: 2},
		{name: "AGENTAPI_MAX_SESSIONS_PER_USER bad", env: map[string]string{"AGENTAPI_MAX_SESSIONS_PER_USER": "x"}, err: "AGENTAPI_MAX_SESSIONS_PER_USER"},
		{name: "AGENTAPI_SESSION_IDLE_TIMEOUT", env: map[string]string{"AGENTAPI_SESSION_IDLE_TIMEOUT": "5m"}, field: func(c *Config) any { return c.Tenancy.IdleTimeout }, want: 5 * time.Minute},
		{name: "AGENTAPI_SESSION_IDLE_TIMEOUT zero", env: map[string]string{"AGENTAPI_SESSION_IDLE_TIMEOUT": "0"}, err: "AGENTAPI_SESSION_IDLE_TIMEOUT"},
		{name: "AGENTAPI_SESSION_MAX_LIFETIME", env: map[string]string{"AGENTAPI_SESSION_MAX_LIFETIME": "48h"}, field: func(c *Config) any { return c.Tenancy.LoginMaxLifetime }, want: 48 * time.Hour},
		{name: "AGENTAPI_SESSION_MAX_LIFETIME below SESSION_TTL", env: map[string]string{"AGENTAPI_SESSION_MAX_LIFETIME": "10m"}, err: "shorter than SESSION_TTL"},
		{name: "AGENTAPI_SECURE_COOKIES", env: map[string]string{"AGENTAPI_SECURE_COOKIES": "true"}, field: func(c *Config) any { return c.Tenancy.SecureCookies }, want: true},
		{name: "AGENTAPI_SECURE_COOKIES bad", env: map[string]string{"AGENTAPI_SECURE_COOKIES": "sure"}, err: "AGENTAPI_SECURE_COOKIES"},
		{name: "AGENTAPI_AGENT_UID_BASE", env: map[string]string{"AGENTAPI_AGENT_UID_BASE": "200000"}, field: func(c *Config) any { return c.Tenancy.AgentUIDBase }, want: 200000},
		{name: "AGENTAPI_AGENT_UID_BASE bad", env: map[string]string{"AGENTAPI_AGENT_UID_BASE": "-1"}, err: "AGENTAPI_AGENT_UID_BASE"},
		{name: "AGENTAPI_INSTANCE_ID", env: map[string]string{"AGENTAPI_INSTANCE_ID": "api-1"}, field: func(c *Config) any { return c.Tenancy.InstanceID }, want: "api-1"},
		{name: "AGENTAPI_ADVERTISE_URL", env: map[string]string{"AGENTAPI_ADVERTISE_URL": "http://10.0.0.5:3284/"}, field: func(c *Config) any { return c.Tenancy.AdvertiseURL }, want: "http://10.0.0.5:3284"},
		{name: "AGENTAPI_ADVERTISE_URL default", env: map[string]string{"PORT": "4000"}, field: func(c *Config) any {
			return strings.HasSuffix(c.Tenancy.AdvertiseURL, ":4000") && strings.HasPrefix(c.Tenancy.AdvertiseURL, "http://")
		}, want: true},
		{name: "AGENTAPI_ADVERTISE_URL with a path", env: map[string]string{"AGENTAPI_ADVERTISE_URL": "http://h:1/api"}, err: "AGENTAPI_ADVERTISE_URL"},
		{name: "AGENTAPI_ADVERTISE_URL not http", env: map[string]string{"AGENTAPI_ADVERTISE_URL": "10.0.0.5:3284"}, err: "AGENTAPI_ADVERTISE_URL"},
		{name: "METRICS_TENANT_LABELS", env: map[string]string{"METRICS_TENANT_LABELS": "true"}, field: func(c *Config) any { return c.Tenancy.MetricsTenants }, want: true},
		{name: "METRICS_TENANT_LABELS bad", env: map[string]string{"METRICS_TENANT_LABELS": "per-tenant"}, err: "METRICS_TENANT_LABELS"},
		{name: "AGENTAPI_INSTANCE_TTL", env: map[string]string{"AGENTAPI_INSTANCE_TTL": "3s"}, field: func(c *Config) any { return c.Tenancy.InstanceTTL }, want: 3 * time.Second},
		{name: "AGENTAPI_INSTANCE_TTL too short", env: map[string]string{"AGENTAPI_INSTANCE_TTL": "100ms"}, err: "AGENTAPI_INSTANCE_TTL"},
		{name: "TOKEN_ENCRYPTION_KEY garbage", env: map[string]string{"TOKEN_ENCRYPTION_KEY": "not a key!"}, err: "TOKEN_ENCRYPTION_KEY: is neither 64 hex characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"HOME": "/home/op"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Load(tc.args, envOf(env))
			if tc.err != "" {
				if err == nil {
					t.Fatalf("Load succeeded, want error containing %q", tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %q does not contain %q", err, tc.err)
				}
				if c != nil {
					t.Fatal("a bad configuration must not be returned")
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := tc.field(c); got != tc.want {
				t.Fatalf("got %v (%T), want %v (%T)", got, got, tc.want, tc.want)
			}
		})
	}
}

func TestAllProblemsListed(t *testing.T) {
	_, err := Load(nil, envOf(map[string]string{"PORT": "x", "REDIS_PROTOCOL": "y", "SESSION_TTL": "-1", "TOKEN_ENCRYPTION_KEY": PlaceholderTokenKey}))
	p, ok := err.(Problems)
	if !ok {
		t.Fatalf("error %T, want Problems", err)
	}
	if len(p) != 4 {
		t.Fatalf("got %d problems, want 4: %v", len(p), p)
	}
	for _, name := range []string{"PORT", "REDIS_PROTOCOL", "SESSION_TTL", "TOKEN_ENCRYPTION_KEY"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestEffectiveRedactsSecrets(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{
		"HOME": t.TempDir(), "REDIS_ENABLE": "true", "REDIS_PASSWORD": "pw-one",
		"UPSTASH_REDIS_URL": "rediss://default:pw-two@x.upstash.io:6379", "UPSTASH_REDIS_REST_URL": "https://x.upstash.io",
		"UPSTASH_REDIS_REST_TOKEN": "tok-three", "TOKEN_ENCRYPTION_KEY": hexKey, "DATABASE_URL": "postgres://u:pw-four@db/x",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, kv := range c.Effective() {
		out.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	for _, secret := range []string{"pw-one", "pw-two", "tok-three", "pw-four", hexKey} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("effective configuration shows secret %q:\n%s", secret, out.String())
		}
	}
	if len(c.Effective()) != len(Variables()) {
		t.Errorf("Effective lists %d settings, Load reads %d variables", len(c.Effective()), len(Variables()))
	}
}

func TestResolveTokenKeyGeneratesOnceWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, err := Load(nil, envOf(map[string]string{"AGENTAPI_DATA_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src, err := c.ResolveTokenKey(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.TokenKey) != 32 || src != c.TokenKeyPath() {
		t.Fatalf("key %d bytes from %q", len(c.TokenKey), src)
	}
	fi, err := os.Stat(c.TokenKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Count(logs.String(), "TOKEN_ENCRYPTION_KEY is not set") != 1 {
		t.Fatalf("want one warning, logs:\n%s", logs.String())
	}
	// A second start reads the same key and does not warn again.
	c2, _ := Load(nil, envOf(map[string]string{"AGENTAPI_DATA_DIR": dir}))
	logs.Reset()
	if _, err := c2.ResolveTokenKey(log); err != nil {
		t.Fatal(err)
	}
	if string(c2.TokenKey) != string(c.TokenKey) {
		t.Fatal("second start got a different key")
	}
	if logs.Len() != 0 {
		t.Fatalf("second start warned again: %s", logs.String())
	}
	// A corrupt key file is an error naming the file, not a silent new key.
	os.WriteFile(c.TokenKeyPath(), []byte("garbage"), 0o600)
	c3, _ := Load(nil, envOf(map[string]string{"AGENTAPI_DATA_DIR": dir}))
	if _, err := c3.ResolveTokenKey(log); err == nil || !strings.Contains(err.Error(), c.TokenKeyPath()) {
		t.Fatalf("corrupt key file: err %v", err)
	}
}

func TestVariablesMatchDevelopersList(t *testing.T) {
	// The variables operators' deployments already set (DEVELOPERS.md).
	required := []string{"REDIS_ENABLE", "REDIS_PROTOCOL", "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN",
		"UPSTASH_REDIS_URL", "REDIS_URL", "REDIS_MAX_POOL_SIZE", "REDIS_CONNECTION_TIMEOUT", "REDIS_PASSWORD",
		"RATE_LIMIT_ENABLED", "RATE_LIMIT_REQUESTS_PER_MINUTE", "RATE_LIMIT_BURST_SIZE", "CIRCUIT_BREAKER_ENABLED",
		"CIRCUIT_BREAKER_FAILURE_THRESHOLD", "CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "CIRCUIT_BREAKER_TIMEOUT",
		"SESSION_STORAGE", "SESSION_TTL", "SESSION_CLEANUP_INTERVAL", "TOKEN_ENCRYPTION_KEY",
		"PORT", "DATABASE_URL", "AGENTAPI_DATA_DIR", "LOG_LEVEL", "LOG_FORMAT",
		"TOKEN_ENCRYPTION_KEY_PREVIOUS", "AGENTAPI_AGENTS_FILE", "AGENTAPI_ADMIN_API_KEY", "AGENTAPI_MAX_SESSIONS_PER_TENANT",
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE", "RATE_LIMIT_IP_BURST_SIZE", "RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE", "RATE_LIMIT_LOGIN_BURST_SIZE", "RATE_LIMIT_FAILURE_POLICY", "TRUSTED_PROXIES",
		"AGENTAPI_MAX_SESSIONS_PER_USER", "AGENTAPI_SESSION_IDLE_TIMEOUT", "AGENTAPI_SESSION_MAX_LIFETIME", "AGENTAPI_SECURE_COOKIES", "AGENTAPI_INSTANCE_ID", "AGENTAPI_AGENT_UID_BASE"}
	read := map[string]bool{}
	for _, v := range Variables() {
		read[v] = true
	}
	for _, v := range required {
		if !read[v] {
			t.Errorf("Load does not read %s", v)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"5s": 5 * time.Second, "3600s": time.Hour, "300": 5 * time.Minute, "1m30s": 90 * time.Second} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "0s", "5 s", "5x", "99999999999999999999"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:hunter2@db/app":                   "postgres://app:xxxxx@db/app",
		"postgres://db/app?user=app&password=hunter2":     "postgres://db/app?password=xxxxx&user=app",
		"postgres://app:p%ss#w@db/app":                    "[unparsable URL, redacted]",
		"redis://redis:6379":                              "redis://redis:6379",
		"rediss://default:pw@x.upstash.io:6379?token=abc": "rediss://default:xxxxx@x.upstash.io:6379?token=xxxxx",
	} {
		if got := redactURL(in); got != want || strings.Contains(got, "hunter2") {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
