// Package httpapi is AgentAPI's HTTP surface for `agentapi serve`: routes,
// the middleware chain, health endpoints, and the one place where errors
// become HTTP statuses and problem+json bodies (RFC 9457).
package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/breaker"
)

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// StatusOf maps an error's kind to its HTTP status. It is the only such
// mapping in the code base.
func StatusOf(err error) int {
	switch agentapi.KindOf(err) {
	case agentapi.KindInvalid:
		return http.StatusBadRequest
	case agentapi.KindNotFound:
		return http.StatusNotFound
	case agentapi.KindConflict:
		return http.StatusConflict
	case agentapi.KindUnauthenticated:
		return http.StatusUnauthorized
	case agentapi.KindForbidden:
		return http.StatusForbidden
	case agentapi.KindRateLimited:
		return http.StatusTooManyRequests
	case agentapi.KindUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError answers with the problem for err. Internal errors get a
// generic detail so that nothing internal (or secret) reaches the client.
func WriteError(w http.ResponseWriter, err error) {
	status := StatusOf(err)
	detail := err.Error()
	var e *agentapi.Error
	if status == http.StatusInternalServerError || !errors.As(err, &e) {
		detail = "internal error"
	} else if e.Err != nil {
		detail = e.Err.Error()
	}
	if d := breaker.RetryAfter(err); d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
	if errors.Is(err, agentapi.ErrQuotaExceeded) {
		writeProblem(w, Problem{Type: agentapi.ProblemQuotaExceeded, Title: "Quota Exceeded", Status: status, Detail: detail})
		return
	}
	WriteProblem(w, status, detail)
}

// WriteProblem answers with a problem+json body for status.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	writeProblem(w, Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
