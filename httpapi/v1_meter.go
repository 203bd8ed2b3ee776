package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi-mt/agentapi"
	"github.com/agentapi-mt/agentapi/usage"
)

// maxPeek bounds how much of a message body is read to learn its type;
// larger bodies go on to the agent API, which refuses them.
const maxPeek = 1 << 20

// sessionCall is a call to a running session's agent API, as the platform
// sees it: which feature it uses and what it costs.
type sessionCall struct {
	message bool   // POST /message
	kind    string // its "type": "user" or "raw"
	upload  *countingBody
}

// countingBody counts the bytes a handler reads from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

func classify(r *http.Request, rest string) sessionCall {
	var c sessionCall
	if r.Method != http.MethodPost {
		return c
	}
	switch rest {
	case "/upload":
		c.upload = &countingBody{ReadCloser: r.Body}
		r.Body = c.upload
	case "/message":
		c.message = true
		body, err := io.ReadAll(io.LimitReader(r.Body, maxPeek+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		if err != nil || len(body) > maxPeek {
			return c
		}
		var m struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(body, &m) == nil {
			c.kind = m.Type
		}
	}
	return c
}

var (
	errRawInputOff   = agentapi.E("sessions", agentapi.KindForbidden, errors.New("raw input is turned off for your tenant (feature flag raw_input)"))
	errFileUploadOff = agentapi.E("sessions", agentapi.KindForbidden, errors.New("file upload is turned off for your tenant (feature flag file_upload)"))
)

// admitSessionCall applies the feature flags and the monthly message quota
// to a call to a session's agent API, and counts its usage. It answers
// refusals itself and returns false; otherwise it returns a function to
// call with the response's status once the call is served.
//
// A user message is counted (against the quota too) when it is admitted,
// before the agent takes it: the quota check and the count are one atomic
// step on every instance, so a quota is never exceeded.
func (v *V1) admitSessionCall(w http.ResponseWriter, r *http.Request, p *Principal, c sessionCall) (served func(status int), ok bool) {
	served = func(int) {}
	ctx := r.Context()
	switch {
	case c.message && c.kind == "raw":
		if v.Config != nil && !v.Config.FlagOn(ctx, p.TenantID, p.UserID, agentapi.FlagRawInput) {
			WriteError(w, errRawInputOff)
			return nil, false
		}
	case c.message && c.kind == "user":
		if v.Usage == nil {
			break
		}
		var quota int64
		if v.Config != nil {
			cfg, err := v.Config.Config(ctx, p.TenantID)
			if err != nil {
				WriteError(w, err)
				return nil, false
			}
			quota = cfg.MonthlyMessageQuota
		}
		d, err := v.Usage.Consume(ctx, p.TenantID, p.UserID, usage.Messages, 1, quota)
		if err != nil {
			// The shared quota counter is unreachable: serve, and count
			// the message (the count is kept and pushed later); the quota
			// is enforced again once the counter is back.
			v.Log.Warn("message quota unavailable; the message is served and counted", "tenant", p.TenantID, "error", err)
			v.Usage.Add(p.TenantID, p.UserID, usage.Messages, 1)
			break
		}
		if !d.Allowed {
			retry := max(int(time.Until(d.ResetAt).Seconds()), 1)
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			WriteError(w, agentapi.E("quota", agentapi.KindRateLimited, fmt.Errorf("%w: your tenant sent its %d messages of this month (monthly_message_quota); it resets at %s",
				agentapi.ErrQuotaExceeded, d.Limit, d.ResetAt.UTC().Format(time.RFC3339))))
			return nil, false
		}
	case c.upload != nil:
		if v.Config != nil && !v.Config.FlagOn(ctx, p.TenantID, p.UserID, agentapi.FlagFileUpload) {
			WriteError(w, errFileUploadOff)
			return nil, false
		}
		if v.Usage != nil {
			served = func(status int) {
				if status/100 == 2 {
					v.Usage.Add(p.TenantID, p.UserID, usage.UploadBytes, c.upload.n)
				}
			}
		}
	}
	return served, true
}

// Meter is the middleware that counts each authenticated API request for
// its tenant and user. It runs after authentication and the rate limits
// (refused requests are counted as rate_limited instead).
func (v *V1) Meter(next http.Handler) http.Handler {
	if v.Usage == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := principalFrom(r.Context()); p != nil && !p.Forwarded && !exempt[r.URL.Path] {
			v.Usage.Add(p.TenantID, p.UserID, usage.Requests, 1)
		}
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
