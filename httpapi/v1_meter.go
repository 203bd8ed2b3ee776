package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/agentapi-mt/agentapi"
)

// maxPeek bounds how much of a message body is read to learn its type;
// larger bodies go on to the agent API, which refuses them.
const maxPeek = 1 << 20

// sessionCall is a call to a running session's agent API, as the platform
// sees it: which feature it uses and what it costs.
type sessionCall struct {
	message bool   // POST /message
	kind    string // its "type": "user" or "raw"
	upload  bool   // POST /upload
}

func classify(r *http.Request, rest string) sessionCall {
	var c sessionCall
	if r.Method != http.MethodPost {
		return c
	}
	switch rest {
	case "/upload":
		c.upload = true
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

// admitSessionCall applies the feature flags and the message quota to a
// call to a session's agent API. It answers refusals itself and returns
// false; otherwise it returns a function to call with the response's
// status once the call is served.
func (v *V1) admitSessionCall(w http.ResponseWriter, r *http.Request, p *Principal, c sessionCall) (served func(status int), ok bool) {
	served = func(int) {}
	if v.Config == nil {
		return served, true
	}
	ctx := r.Context()
	switch {
	case c.message && c.kind == "raw":
		if !v.Config.FlagOn(ctx, p.TenantID, p.UserID, agentapi.FlagRawInput) {
			WriteError(w, errRawInputOff)
			return nil, false
		}
	case c.upload:
		if !v.Config.FlagOn(ctx, p.TenantID, p.UserID, agentapi.FlagFileUpload) {
			WriteError(w, errFileUploadOff)
			return nil, false
		}
	}
	return served, true
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

var _ = fmt.Sprint
