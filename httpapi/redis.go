package httpapi

import (
	"context"

	"github.com/agentapi-mt/agentapi/kv"
)

// RedisDetail is the redis entry of /status.
type RedisDetail struct {
	Enabled bool `json:"enabled"`
	kv.SwitchStatus
	LatencyMS float64 `json:"latency_ms,omitempty"`
	LastError string  `json:"last_error,omitempty"`
}

// RedisCheck reports on sw, or "disabled" when sw is nil (REDIS_ENABLE
// off). It PINGs the endpoint in use and measures the round trip. Redis
// is never critical: every feature has a local fallback, so Redis down
// means degraded, and running on the fallback protocol means degraded.
func RedisCheck(sw *kv.Switch) Check {
	return Check{Name: "redis", Run: func(ctx context.Context) CheckResult {
		if sw == nil {
			return CheckResult{Status: StatusDisabled, Detail: RedisDetail{Enabled: false}}
		}
		d := RedisDetail{Enabled: true}
		rtt, err := sw.Ping(ctx)
		d.SwitchStatus = sw.Status()
		status := StatusOK
		switch {
		case err != nil:
			status, d.LastError = StatusDown, err.Error()
		case d.FallenBack:
			status = StatusDegraded
		}
		if err == nil {
			d.LatencyMS = float64(rtt.Microseconds()) / 1000
		}
		for _, e := range d.Endpoints {
			if e.Name == d.Protocol {
				continue
			}
			if d.LastError == "" && e.LastError != "" && !e.Up {
				d.LastError = e.LastError
			}
		}
		return CheckResult{Status: status, Detail: d}
	}}
}
