package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Unmatched is the route label of requests that matched no route.
const Unmatched = "unmatched"

// httpBuckets span a quick health check to a long agent call; event
// streams, which last as long as the client listens, land in +Inf.
var httpBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, chi route pattern and status code.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and chi route pattern.",
			Buckets: httpBuckets,
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "http", Name: "requests_in_flight",
			Help: "HTTP requests being answered now.",
		}),
	}
}

func (h *httpMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(h.requests, h.duration, h.inFlight)
}

// Middleware records the HTTP series. Use it on the chi router, first
// (router.Use, or first in httpapi.NewRouter's middleware) so that it
// times and counts what the middleware after it answer too (a 429 from a
// rate limit, a 401). It also works wrapped around the router.
//
// The route label is the chi route pattern, read after the handler ran,
// never the raw path: "/v1/sessions/{id}/messages" is one series however
// many sessions there are. A request that a middleware answered before
// routing gets the pattern its method and path would have matched; one
// that matches no route is "unmatched".
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	h := m.http
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rctx := chi.RouteContext(r.Context())
		if rctx == nil {
			// Outside a chi router: give the router one to fill in. A
			// chi.Mux uses a routing context it finds in the request.
			rctx = chi.NewRouteContext()
			r = r.WithContext(contextWithRoute(r, rctx))
		}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now()
		h.inFlight.Inc()
		finished := false
		defer func() {
			h.inFlight.Dec()
			status := ww.Status()
			switch {
			case !finished:
				status = http.StatusInternalServerError // the handler panicked
			case status == 0:
				status = http.StatusOK // nothing written: net/http sends 200
			}
			method := methodLabel(r.Method)
			route := routeLabel(rctx, r)
			h.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			h.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(ww, r)
		finished = true
	})
}

// routeLabel is the pattern of the route that served r, or of the route it
// would have reached when a middleware answered before routing.
func routeLabel(rctx *chi.Context, r *http.Request) string {
	if p := rctx.RoutePattern(); p != "" {
		return p
	}
	if rctx.Routes != nil {
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		if p := rctx.Routes.Find(chi.NewRouteContext(), r.Method, path); p != "" {
			return p
		}
	}
	return Unmatched
}

// methodLabel keeps the method label to a known set: a client can send
// any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

func contextWithRoute(r *http.Request, rctx *chi.Context) context.Context {
	return context.WithValue(r.Context(), chi.RouteCtxKey, rctx)
}
