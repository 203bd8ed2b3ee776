package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"
)

// Headers of a request forwarded by another instance.
const (
	HeaderPrincipal = "X-Agentapi-Forwarded-Principal" // base64url of the principal's JSON
	HeaderAt        = "X-Agentapi-Forwarded-At"        // Unix ms when it was signed
	HeaderSignature = "X-Agentapi-Forwarded-Signature" // hex HMAC-SHA256
)

// maxSkew bounds how old (or how far in the future) a signature may be.
const maxSkew = time.Minute

// Signer signs and checks requests between instances. Its key is derived
// from TOKEN_ENCRYPTION_KEY, which every instance of a deployment shares,
// so no other secret has to be distributed.
type Signer struct{ key []byte }

// NewSigner derives the forwarding key from the token key.
func NewSigner(tokenKey []byte) *Signer {
	m := hmac.New(sha256.New, tokenKey)
	m.Write([]byte("agentapi cluster forwarding v1"))
	return &Signer{key: m.Sum(nil)}
}

func (s *Signer) mac(at, method, target string, principal []byte) string {
	m := hmac.New(sha256.New, s.key)
	for _, part := range [][]byte{[]byte(at), []byte(method), []byte(target), principal} {
		m.Write([]byte(strconv.Itoa(len(part))))
		m.Write([]byte{':'})
		m.Write(part)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Sign sets the forwarding headers on h for a request of method to target
// (path and query) acting as principal (opaque bytes, e.g. JSON).
func (s *Signer) Sign(h http.Header, method, target string, principal []byte, now time.Time) {
	at := strconv.FormatInt(now.UnixMilli(), 10)
	h.Set(HeaderPrincipal, base64.RawURLEncoding.EncodeToString(principal))
	h.Set(HeaderAt, at)
	h.Set(HeaderSignature, s.mac(at, method, target, principal))
}

// Forwarded reports whether r carries forwarding headers at all.
func Forwarded(r *http.Request) bool { return r.Header.Get(HeaderSignature) != "" }

// Verify returns the principal of a request another instance forwarded,
// and false when r is not one or its signature is wrong or stale.
func (s *Signer) Verify(r *http.Request, now time.Time) ([]byte, bool) {
	sig, at := r.Header.Get(HeaderSignature), r.Header.Get(HeaderAt)
	if s == nil || sig == "" {
		return nil, false
	}
	ms, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return nil, false
	}
	if d := now.Sub(time.UnixMilli(ms)); d > maxSkew || d < -maxSkew {
		return nil, false
	}
	principal, err := base64.RawURLEncoding.DecodeString(r.Header.Get(HeaderPrincipal))
	if err != nil {
		return nil, false
	}
	if !hmac.Equal([]byte(sig), []byte(s.mac(at, r.Method, r.URL.RequestURI(), principal))) {
		return nil, false
	}
	return principal, true
}
