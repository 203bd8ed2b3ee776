package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Health states, worst last.
const (
	StatusOK       = "ok"
	StatusDegraded = "degraded"
	StatusDown     = "down"
	StatusDisabled = "disabled"
)

// Check is one dependency's health check. Run must return within ctx's
// deadline. A Critical dependency that is down makes the whole service
// down (503); any other dependency that is down or degraded makes it
// degraded (still 200: it serves, with less).
type Check struct {
	Name     string
	Critical bool
	Run      func(ctx context.Context) CheckResult
}

// CheckResult is what a Check found. Detail is rendered as JSON beside the
// status and must hold no secret.
type CheckResult struct {
	Status string `json:"status"`
	Detail any    `json:"detail,omitempty"`
}

// Health serves /status, /healthz and /readyz.
type Health struct {
	Version string
	Checks  []Check
	// Timeout bounds all checks of one /status request. Default 2s.
	Timeout time.Duration

	started  time.Time
	draining atomic.Bool
}

// NewHealth returns a Health for checks.
func NewHealth(version string, checks ...Check) *Health {
	return &Health{Version: version, Checks: checks, started: time.Now()}
}

// Drain makes the service report itself down (and not ready) so that load
// balancers stop sending traffic while in-flight requests finish.
func (h *Health) Drain() { h.draining.Store(true) }

// Report is the /status body.
type Report struct {
	Status        string                 `json:"status"`
	Version       string                 `json:"version"`
	UptimeSeconds int64                  `json:"uptime_seconds"`
	Draining      bool                   `json:"draining,omitempty"`
	Checks        map[string]CheckResult `json:"checks"`
}

// Run runs every check concurrently and combines them.
func (h *Health) Run(ctx context.Context) Report {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	results := make([]CheckResult, len(h.Checks))
	var wg sync.WaitGroup
	for i, c := range h.Checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.Run(ctx)
		}()
	}
	wg.Wait()
	rep := Report{Status: StatusOK, Version: h.Version, UptimeSeconds: int64(time.Since(h.started).Seconds()), Checks: map[string]CheckResult{}}
	for i, c := range h.Checks {
		r := results[i]
		rep.Checks[c.Name] = r
		switch {
		case r.Status == StatusDown && c.Critical:
			rep.Status = StatusDown
		case (r.Status == StatusDown || r.Status == StatusDegraded) && rep.Status == StatusOK:
			rep.Status = StatusDegraded
		}
	}
	if h.draining.Load() {
		rep.Status, rep.Draining = StatusDown, true
	}
	return rep
}

// ServeStatus answers GET /status: 200 while the service can serve (ok or
// degraded), 503 when it cannot.
func (h *Health) ServeStatus(w http.ResponseWriter, r *http.Request) {
	rep := h.Run(r.Context())
	code := http.StatusOK
	if rep.Status == StatusDown {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rep)
}

// ServeLive answers GET /healthz: 200 whenever the process answers HTTP.
func (h *Health) ServeLive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

// ServeReady answers GET /readyz: 200 when the service should receive
// traffic (not draining, no critical dependency down), else 503.
func (h *Health) ServeReady(w http.ResponseWriter, r *http.Request) {
	rep := h.Run(r.Context())
	if rep.Status == StatusDown {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
