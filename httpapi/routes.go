package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// NewRouter returns the handler for `agentapi serve` with middleware
// applied, in order, to every route. Features mount their routes on it;
// unknown routes and methods answer problem+json.
func NewRouter(h *Health, middleware ...func(http.Handler) http.Handler) chi.Router {
	r := chi.NewRouter()
	r.Use(middleware...)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		WriteProblem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
	})
	r.Get("/status", h.ServeStatus)
	r.Get("/healthz", h.ServeLive)
	r.Get("/readyz", h.ServeReady)
	return r
}

// DatabaseCheck reports a database reachable through ping. The database is
// the system of record, so it is critical: down means the service is down.
func DatabaseCheck(driver, addr string, ping func(context.Context) error) Check {
	return Check{Name: "database", Critical: true, Run: func(ctx context.Context) CheckResult {
		detail := map[string]string{"driver": driver, "addr": addr}
		if err := ping(ctx); err != nil {
			detail["last_error"] = err.Error()
			return CheckResult{Status: StatusDown, Detail: detail}
		}
		return CheckResult{Status: StatusOK, Detail: detail}
	}}
}
