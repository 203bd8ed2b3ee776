package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentapi-mt/agentapi/auth"
)

// Variables the fuzzer sets, by kind; sel picks which ones get its values.
var (
	fuzzDurationVars = []string{
		"REDIS_CONNECTION_TIMEOUT", "CIRCUIT_BREAKER_TIMEOUT", "SESSION_TTL",
		"SESSION_CLEANUP_INTERVAL", "AGENTAPI_SESSION_IDLE_TIMEOUT", "AGENTAPI_SESSION_MAX_LIFETIME",
		"AGENTAPI_INSTANCE_TTL",
	}
	fuzzIntVars = []string{
		"PORT", "REDIS_MAX_POOL_SIZE", "RATE_LIMIT_REQUESTS_PER_MINUTE", "RATE_LIMIT_BURST_SIZE",
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE", "RATE_LIMIT_IP_BURST_SIZE",
		"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE", "RATE_LIMIT_LOGIN_BURST_SIZE",
		"CIRCUIT_BREAKER_FAILURE_THRESHOLD", "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
		"AGENTAPI_MAX_SESSIONS_PER_TENANT", "AGENTAPI_MAX_SESSIONS_PER_USER", "AGENTAPI_AGENT_UID_BASE",
	}
	fuzzBoolVars = []string{"REDIS_ENABLE", "RATE_LIMIT_ENABLED", "CIRCUIT_BREAKER_ENABLED", "AGENTAPI_SECURE_COOKIES"}
	fuzzWordVars = []string{"REDIS_PROTOCOL", "SESSION_STORAGE", "RATE_LIMIT_FAILURE_POLICY", "LOG_LEVEL", "LOG_FORMAT"}
	fuzzURLVars  = []string{"REDIS_URL", "UPSTASH_REDIS_URL", "DATABASE_URL", "AGENTAPI_DATA_DIR", "AGENTAPI_ADVERTISE_URL"}
	fuzzKeyVars  = []string{"TOKEN_ENCRYPTION_KEY", "TOKEN_ENCRYPTION_KEY_PREVIOUS"}
)

// secretMark starts every secret the fuzzer sets, so that finding one in
// an error message cannot be a coincidence with the message's own text.
const secretMark = "S3CR3T"

// FuzzLoad runs Load over environments in which several variables at once
// hold fuzzed values: durations, integers, booleans, enumerations, URLs,
// token keys, trusted proxies, secrets, and the --port flag. Load must not
// panic; every problem it reports names a variable that was set; no secret
// (password, REST token, admin key, URL password) appears in a problem; an
// accepted configuration satisfies every invariant the rest of the program
// relies on (positive pool size, timeouts and limits, consistent Redis and
// session settings, 32-byte keys) and holds the values that were given.
func FuzzLoad(f *testing.F) {
	const all = 0xffff
	// sel picks the variables, one byte each: d1, d2, n1, n2, b, word, u1,
	// then key (bit 0), secret (bits 1-2) and the --port, REDIS_ENABLE and
	// UPSTASH_REDIS_REST_TOKEN switches (bits 3-5). apply says which
	// values are set at all (bit i for the i-th string).
	f.Add(uint64(0), uint16(all), "5s", "300", "10", "3", "true", "native", "redis://localhost:6379/0", "https://x.upstash.io", hexKey, "10.0.0.0/8, 127.0.0.1", "pw")
	f.Add(uint64(0x0001010101010101), uint16(all), "1m30s", "0", "0", "-1", "yes", "rest", "rediss://:pass@h:6380", "", "", "", "")
	f.Add(uint64(0x0202020202020202), uint16(all), "-5s", "9223372037", "65536", "x", "maybe", "redis", "postgres://u:p@db/x", "ftp://x", "change-this-to-a-random-32-byte-key", "::1, fe80::/10", "tok")
	f.Add(uint64(0x3803030303030303), uint16(all), "-9223372037", "1e3s", "9223372036854775807", "", "0", "closed", "redis://:hunter2hunter2@/", "https://user:hunter2hunter2@", "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=", "1.2.3.4/33", "")
	f.Add(uint64(0x0404040404040404), uint16(all), "2562047h", "9223372036s", "2147418112", "2147418111", "off", "DEBUG", "relative/dir", "http://h", "ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8", "garbage", "x")
	f.Add(uint64(0x0505050505050505), uint16(all), "1h", "1s", "-0", "+5", "T", "json", "redis://h:0", "https://h:99999", hexKey+","+hexKey, ",,", "agk_")
	// Regressions: a huge uid base overflowed base+65536 and was accepted;
	// a large negative number of seconds overflowed into a positive
	// duration and was accepted.
	f.Add(uint64(12<<16), uint16(1<<2), "", "", "9223372036854775807", "", "", "", "", "", "", "", "")
	f.Add(uint64(1), uint16(1<<0), "-9223372037", "", "", "", "", "", "", "", "", "", "")
	f.Add(uint64(2<<8), uint16(1<<1), "", "-18446744073", "", "", "", "", "", "", "", "", "")
	// Regression: a malformed UPSTASH_REDIS_REST_URL was shown whole in
	// the problem, password included.
	f.Add(uint64(0), uint16(1<<7), "", "", "", "", "", "", "", "https://user:hunter2hunter2@", "", "", "")
	f.Fuzz(func(t *testing.T, sel uint64, apply uint16, d1, d2, n1, n2, b, word, u1, u2, key, proxies, secret string) {
		env := map[string]string{"HOME": "/home/fuzz", "AGENTAPI_INSTANCE_ID": "fuzz"}
		set := func(i int, vars []string, v string) {
			if apply&(1<<i) != 0 {
				env[vars[int(sel>>(8*i)&0xff)%len(vars)]] = v
			}
		}
		set(0, fuzzDurationVars, d1)
		set(1, fuzzDurationVars, d2) // may overwrite d1's variable
		set(2, fuzzIntVars, n1)
		set(3, fuzzIntVars, n2)
		set(4, fuzzBoolVars, b)
		set(5, fuzzWordVars, word)
		set(6, fuzzURLVars, u1)
		flags := sel >> 56
		if apply&(1<<7) != 0 {
			env["UPSTASH_REDIS_REST_URL"] = u2
		}
		if apply&(1<<8) != 0 {
			env[fuzzKeyVars[flags&1]] = key
		}
		if apply&(1<<9) != 0 {
			env["TRUSTED_PROXIES"] = proxies
		}
		var secrets []string
		if apply&(1<<10) != 0 && secret != "" {
			s := secretMark + secret
			secrets = append(secrets, s)
			switch flags >> 1 & 3 {
			case 0, 3:
				env["REDIS_PASSWORD"] = s
			case 1:
				env["UPSTASH_REDIS_REST_TOKEN"] = s
			case 2:
				env["AGENTAPI_ADMIN_API_KEY"] = s
			}
		}
		var args []string
		if flags&(1<<3) != 0 {
			args = append(args, "--port="+n2)
		}
		if flags&(1<<4) != 0 {
			env["REDIS_ENABLE"] = "true"
		}
		if flags&(1<<5) != 0 {
			env["UPSTASH_REDIS_REST_TOKEN"] = "token"
		}
		for _, v := range env {
			if strings.Contains(v, secretMark) && !strings.HasPrefix(v, secretMark) {
				return // a secret copied into another value would show legitimately
			}
		}

		c, err := Load(args, envOf(env))
		if err != nil {
			checkProblems(t, err, env, args, secrets)
			return
		}
		checkConfig(t, c, env, args)
	})
}

// checkProblems checks that each problem names a variable (or flag) that
// was set, and shows no secret.
func checkProblems(t *testing.T, err error, env map[string]string, args []string, secrets []string) {
	t.Helper()
	var probs Problems
	if !errors.As(err, &probs) || len(probs) == 0 {
		t.Fatalf("Load error %T %v, want Problems", err, err)
	}
	for _, p := range probs {
		named := false
		for name, v := range env {
			if strings.TrimSpace(v) != "" && mentions(p, name) {
				named = true
			}
		}
		for _, a := range args {
			if flagName, _, _ := strings.Cut(a, "="); strings.Contains(p, flagName) {
				named = true
			}
		}
		if !named {
			t.Errorf("problem names no variable that was set: %q", p)
		}
		for _, s := range secrets {
			if strings.Contains(p, strings.TrimSpace(s)) {
				t.Errorf("problem shows a secret: %q", p)
			}
		}
		for _, name := range []string{"REDIS_URL", "UPSTASH_REDIS_URL", "DATABASE_URL", "UPSTASH_REDIS_REST_URL"} {
			u, perr := url.Parse(strings.TrimSpace(env[name]))
			if perr != nil || u.User == nil {
				continue
			}
			pw, ok := u.User.Password()
			if !ok || pw == "" || pw == "password" || pw == "xxxxx" {
				continue
			}
			shown := ":" + pw + "@"
			elsewhere := false
			for other, v := range env {
				elsewhere = elsewhere || other != name && strings.Contains(v, shown)
			}
			if strings.Contains(p, shown) && !elsewhere {
				t.Errorf("problem shows the password of %s: %q", name, p)
			}
		}
	}
}

// mentions reports whether text contains name as a whole variable name
// (not as the start of a longer one, as TOKEN_ENCRYPTION_KEY is of
// TOKEN_ENCRYPTION_KEY_PREVIOUS).
func mentions(text, name string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], name)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(name)
		if (end == len(text) || !isNameByte(text[end])) && (start == 0 || !isNameByte(text[start-1])) {
			return true
		}
		i = i + j + 1
	}
}

func isNameByte(b byte) bool { return b == '_' || b >= 'A' && b <= 'Z' }

// checkConfig checks the invariants of an accepted configuration.
func checkConfig(t *testing.T, c *Config, env map[string]string, args []string) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("accepted config: "+format, a...)
	}
	if c.Port < 0 || c.Port > 65535 {
		fail("Port %d", c.Port)
	}
	if !filepath.IsAbs(c.DataDir) {
		fail("DataDir %q is not absolute", c.DataDir)
	}
	switch c.LogFormat {
	case "json", "text", "auto":
	default:
		fail("LogFormat %q", c.LogFormat)
	}
	rd := c.Redis
	if rd.Protocol != ProtocolNative && rd.Protocol != ProtocolREST {
		fail("Redis.Protocol %q", rd.Protocol)
	}
	if rd.MaxPoolSize < 1 || rd.ConnectTimeout <= 0 {
		fail("Redis pool %d, timeout %v", rd.MaxPoolSize, rd.ConnectTimeout)
	}
	if _, err := checkRedisURL(rd.URL); err != nil {
		fail("Redis.URL %q: %v", rd.URL, err)
	}
	if rd.UpstashURL != "" {
		if _, err := checkRedisURL(rd.UpstashURL); err != nil {
			fail("Redis.UpstashURL %q: %v", rd.UpstashURL, err)
		}
	}
	if rd.RESTURL != "" {
		u, err := url.Parse(rd.RESTURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			fail("Redis.RESTURL %q", rd.RESTURL)
		}
	}
	if rd.Enable && rd.Protocol == ProtocolREST && !rd.RESTConfigured() {
		fail("REST protocol without URL and token")
	}
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			fail("DatabaseURL %q", c.DatabaseURL)
		}
	}
	rl := c.RateLimit
	if rl.RequestsPerMinute < 1 || rl.IPPerMinute < 1 || rl.LoginPerMinute < 1 || rl.Burst < 0 || rl.IPBurst < 0 || rl.LoginBurst < 0 {
		fail("rate limits %+v", rl)
	}
	for _, p := range rl.TrustedProxies {
		if !p.IsValid() || p != p.Masked() {
			fail("trusted proxy %v", p)
		}
	}
	cb := c.CircuitBreaker
	if cb.FailureThreshold < 1 || cb.SuccessThreshold < 1 || cb.Timeout <= 0 {
		fail("breaker %+v", cb)
	}
	switch c.Session.Storage {
	case StorageMemory:
	case StorageRedis:
		if !rd.Enable {
			fail("Redis session storage with Redis disabled")
		}
	default:
		fail("Session.Storage %q", c.Session.Storage)
	}
	if c.Session.TTL <= 0 || c.Session.CleanupInterval <= 0 {
		fail("session TTL %v, cleanup %v", c.Session.TTL, c.Session.CleanupInterval)
	}
	if c.TokenKey != nil && len(c.TokenKey) != auth.KeySize {
		fail("TokenKey of %d bytes", len(c.TokenKey))
	}
	for i, k := range c.PreviousTokenKeys {
		if len(k) != auth.KeySize {
			fail("previous key %d of %d bytes", i, len(k))
		}
	}
	tn := c.Tenancy
	if tn.MaxSessionsTenant < 0 || tn.MaxSessionsUser < 0 || tn.IdleTimeout <= 0 || tn.LoginMaxLifetime < c.Session.TTL {
		fail("tenancy %+v (session TTL %v)", tn, c.Session.TTL)
	}
	if tn.AgentUIDBase < 0 || tn.AgentUIDBase > math.MaxInt32-65536 {
		fail("AgentUIDBase %d: its 65536 uids are not all valid", tn.AgentUIDBase)
	}
	if tn.InstanceTTL < time.Second {
		fail("InstanceTTL %v below 1s", tn.InstanceTTL)
	}
	if u, err := url.Parse(tn.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.HasSuffix(tn.AdvertiseURL, "/") {
		fail("AdvertiseURL %q", tn.AdvertiseURL)
	}
	if tn.AdminAPIKey != "" && !auth.LooksLikeAPIKey(tn.AdminAPIKey) {
		fail("AdminAPIKey %q", tn.AdminAPIKey)
	}

	// The values given are the values used.
	got := map[string]any{
		"REDIS_CONNECTION_TIMEOUT":             rd.ConnectTimeout,
		"CIRCUIT_BREAKER_TIMEOUT":              cb.Timeout,
		"SESSION_TTL":                          c.Session.TTL,
		"SESSION_CLEANUP_INTERVAL":             c.Session.CleanupInterval,
		"AGENTAPI_SESSION_IDLE_TIMEOUT":        tn.IdleTimeout,
		"AGENTAPI_SESSION_MAX_LIFETIME":        tn.LoginMaxLifetime,
		"AGENTAPI_INSTANCE_TTL":                tn.InstanceTTL,
		"PORT":                                 c.Port,
		"REDIS_MAX_POOL_SIZE":                  rd.MaxPoolSize,
		"RATE_LIMIT_REQUESTS_PER_MINUTE":       rl.RequestsPerMinute,
		"RATE_LIMIT_BURST_SIZE":                rl.Burst,
		"RATE_LIMIT_IP_REQUESTS_PER_MINUTE":    rl.IPPerMinute,
		"RATE_LIMIT_IP_BURST_SIZE":             rl.IPBurst,
		"RATE_LIMIT_LOGIN_REQUESTS_PER_MINUTE": rl.LoginPerMinute,
		"RATE_LIMIT_LOGIN_BURST_SIZE":          rl.LoginBurst,
		"CIRCUIT_BREAKER_FAILURE_THRESHOLD":    cb.FailureThreshold,
		"CIRCUIT_BREAKER_SUCCESS_THRESHOLD":    cb.SuccessThreshold,
		"AGENTAPI_MAX_SESSIONS_PER_TENANT":     tn.MaxSessionsTenant,
		"AGENTAPI_MAX_SESSIONS_PER_USER":       tn.MaxSessionsUser,
		"AGENTAPI_AGENT_UID_BASE":              tn.AgentUIDBase,
	}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--port="); ok {
			env = cloneWith(env, "PORT", v)
		}
	}
	for name, field := range got {
		raw := strings.TrimSpace(env[name])
		if raw == "" {
			continue
		}
		switch field := field.(type) {
		case time.Duration:
			if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
				if n <= 0 || field != time.Duration(n)*time.Second || field/time.Second != time.Duration(n) {
					fail("%s=%q (seconds) became %v", name, raw, field)
				}
			} else if d, err := time.ParseDuration(raw); err != nil || d != field || d <= 0 {
				fail("%s=%q became %v", name, raw, field)
			}
		case int:
			if n, err := strconv.Atoi(raw); err != nil || n != field {
				fail("%s=%q became %d", name, raw, field)
			}
		}
	}
	if raw := strings.TrimSpace(env["TRUSTED_PROXIES"]); raw != "" {
		n := 0
		for _, part := range strings.Split(raw, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			p, err := netip.ParsePrefix(part)
			if err != nil {
				a, _ := netip.ParseAddr(part)
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if n >= len(rl.TrustedProxies) || !rl.TrustedProxies[n].Contains(p.Addr()) {
				fail("TRUSTED_PROXIES=%q: entry %q missing from %v", raw, part, rl.TrustedProxies)
			}
			n++
		}
		if n != len(rl.TrustedProxies) {
			fail("TRUSTED_PROXIES=%q became %v", raw, rl.TrustedProxies)
		}
	}
}

func cloneWith(env map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(env)+1)
	for kk, vv := range env {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// FuzzParseTokenKey: a TOKEN_ENCRYPTION_KEY is accepted only as exactly 32
// bytes; every encoding of an accepted key (hex, base64 in both alphabets,
// padded or not) reads back as the same key; an error never repeats the
// value (it is a secret).
func FuzzParseTokenKey(f *testing.F) {
	for _, s := range []string{
		hexKey, " " + hexKey + "\n", strings.ToUpper(hexKey), hexKey[:63] + "g",
		"ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=", "ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8",
		"ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8==", "c2hvcnQ=", PlaceholderTokenKey, "", "=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParseTokenKey(s)
		if err != nil {
			if key != nil {
				t.Fatalf("ParseTokenKey(%q) failed (%v) but returned a key", s, err)
			}
			if v := strings.TrimSpace(s); len(v) >= 20 && !strings.ContainsAny(v, " \t") && strings.Contains(err.Error(), v) {
				t.Fatalf("ParseTokenKey(%q): error shows the value: %v", s, err)
			}
			return
		}
		if len(key) != auth.KeySize {
			t.Fatalf("ParseTokenKey(%q) = %d bytes", s, len(key))
		}
		for _, enc := range []string{
			hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), base64.RawStdEncoding.EncodeToString(key),
			base64.URLEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key),
		} {
			again, err := ParseTokenKey(enc)
			if err != nil || string(again) != string(key) {
				t.Fatalf("ParseTokenKey(%q) = %x, but its encoding %q reads back as %x, %v", s, key, enc, again, err)
			}
		}
	})
}

// FuzzParseDuration: an accepted duration is positive; a bare number is
// that many seconds, exactly (no overflow); anything else is what
// time.ParseDuration says.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5s", "300", "0", "-1", "1m30s", "-9223372037", "4611686018", "4611686019", "9223372036854775807", "1e3", "+5", "2562047h47m16.854775807s", "-0s", "1.5h", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) failed (%v) but returned %v", s, err, d)
			}
			return
		}
		if d <= 0 {
			t.Fatalf("ParseDuration(%q) = %v, not positive", s, d)
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			if n <= 0 || d/time.Second != time.Duration(n) || d%time.Second != 0 {
				t.Fatalf("ParseDuration(%q) = %v, want %d seconds", s, d, n)
			}
		} else if want, err := time.ParseDuration(s); err != nil || want != d {
			t.Fatalf("ParseDuration(%q) = %v, time.ParseDuration says %v, %v", s, d, want, err)
		}
	})
}
