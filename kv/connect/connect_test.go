package connect

import (
	"context"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi/config"
	"github.com/agentapi-mt/agentapi/redistest"
)

func load(t *testing.T, env map[string]string) config.Redis {
	t.Helper()
	env["HOME"] = t.TempDir()
	c, err := config.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c.Redis
}

func names(cfg config.Redis) string {
	var out []string
	for _, e := range Endpoints(cfg) {
		out = append(out, e.Name+"="+e.Addr)
	}
	return strings.Join(out, ",")
}

func TestEndpointOrder(t *testing.T) {
	rest := map[string]string{"UPSTASH_REDIS_REST_URL": "https://x.upstash.io", "UPSTASH_REDIS_REST_TOKEN": "tok"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{"REDIS_ENABLE": "true"}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"native only", with(nil), "native=redis://redis:6379"},
		{"native with REST fallback", with(rest), "native=redis://redis:6379,rest=https://x.upstash.io"},
		{"upstash native wins over REDIS_URL, password masked", with(rest, "UPSTASH_REDIS_URL", "rediss://default:pw@x.upstash.io:6379"), "native=rediss://default:xxxxx@x.upstash.io:6379,rest=https://x.upstash.io"},
		{"rest only: default REDIS_URL is not a fallback", with(rest, "REDIS_PROTOCOL", "rest"), "rest=https://x.upstash.io"},
		{"rest with explicit native fallback", with(rest, "REDIS_PROTOCOL", "rest", "REDIS_URL", "redis://10.0.0.5:6379"), "rest=https://x.upstash.io,native=redis://10.0.0.5:6379"},
		{"REDIS_PASSWORD masked", with(nil, "REDIS_PASSWORD", "hunter2"), "native=redis://:xxxxx@redis:6379"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(load(t, tc.env)); got != tc.want {
				t.Fatalf("endpoints %s, want %s", got, tc.want)
			}
		})
	}
}

func TestOpenDisabledIsNil(t *testing.T) {
	if sw := Open(context.Background(), load(t, map[string]string{}), nil); sw != nil {
		t.Fatal("Open with REDIS_ENABLE unset returned a client")
	}
}

func TestOpenAppliesRedisPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret"})
	cfg := load(t, map[string]string{"REDIS_ENABLE": "true", "REDIS_URL": "redis://" + srv.Addr(), "REDIS_PASSWORD": "s3cret"})
	sw := Open(context.Background(), cfg, nil)
	defer sw.Close()
	if st := sw.Status(); st.Protocol != "native" {
		t.Fatalf("status %+v", st)
	}
	if _, err := sw.Do(context.Background(), "PING"); err != nil {
		t.Fatal(err)
	}
}
