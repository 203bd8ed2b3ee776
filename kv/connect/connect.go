// Package connect turns the Redis settings into a kv.Switch: the preferred
// protocol first, the other one as a fallback when it is configured.
package connect

import (
	"context"
	"log/slog"
	"net/url"
	"strconv"

	"github.com/agentapi-mt/agentapi/config"
	"github.com/agentapi-mt/agentapi/kv"
	"github.com/agentapi-mt/agentapi/kv/native"
	"github.com/agentapi-mt/agentapi/kv/rest"
)

// Endpoints lists the ways to reach Redis that cfg configures, preferred
// first: REDIS_PROTOCOL names the preferred one; the other is added when
// its settings are present (REST: URL and token; native: an explicit
// REDIS_URL or UPSTASH_REDIS_URL).
func Endpoints(cfg config.Redis) []kv.Endpoint {
	nat := kv.Endpoint{
		Name: config.ProtocolNative,
		Addr: redact(cfg.NativeURL()),
		Dial: func(ctx context.Context) (kv.Client, error) {
			// REDIS_PASSWORD is already in REDIS_URL (config applies it);
			// it is not for UPSTASH_REDIS_URL, which carries its own.
			return native.Dial(ctx, native.Options{
				URL:            cfg.NativeURL(),
				PoolSize:       cfg.MaxPoolSize,
				ConnectTimeout: cfg.ConnectTimeout,
			})
		},
		Describe: func(c kv.Client) map[string]string {
			n, ok := c.(*native.Client)
			if !ok {
				return nil
			}
			return map[string]string{"tls": strconv.FormatBool(n.TLS()), "client_cache": strconv.FormatBool(n.Caching())}
		},
	}
	rst := kv.Endpoint{
		Name: config.ProtocolREST,
		Addr: cfg.RESTURL,
		Dial: func(ctx context.Context) (kv.Client, error) {
			return rest.New(rest.Options{
				URL:      cfg.RESTURL,
				Token:    cfg.RESTToken,
				Timeout:  cfg.ConnectTimeout,
				PoolSize: cfg.MaxPoolSize,
			})
		},
	}
	var eps []kv.Endpoint
	if cfg.Protocol == config.ProtocolREST {
		eps = append(eps, rst)
		if cfg.NativeConfigured() {
			eps = append(eps, nat)
		}
	} else {
		eps = append(eps, nat)
		if cfg.RESTConfigured() {
			eps = append(eps, rst)
		}
	}
	return eps
}

// Open returns a Switch over cfg's endpoints, or nil when Redis is
// disabled. It does not fail when Redis is unreachable: the Switch starts
// with its endpoints down and recovers by itself.
func Open(ctx context.Context, cfg config.Redis, log *slog.Logger) *kv.Switch {
	if !cfg.Enable {
		return nil
	}
	return kv.NewSwitch(ctx, Endpoints(cfg), kv.SwitchOptions{Logger: log, ProbeTimeout: cfg.ConnectTimeout})
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
