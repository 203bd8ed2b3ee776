package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// KeyFunc names the cache entry of a request: the tenant it is served to,
// the scope that invalidates it, and a key that covers everything the
// response depends on within the tenant (path, query, and e.g. the user or
// the Accept header when the response varies with them). ok false: the
// request is not cached.
type KeyFunc func(r *http.Request) (tenant, scope, key string, ok bool)

// Response headers set by Handler.
const (
	// HeaderXCache is "HIT" (served from the cache), "MISS" (computed by
	// the wrapped handler, for this request or for a concurrent one) or
	// "BYPASS" (the client asked for no-cache or no-store).
	HeaderXCache = "X-Cache"
	// cacheControl makes clients and shared caches revalidate every time:
	// the response belongs to a tenant and may change with any Bump.
	cacheControl = "private, no-cache"
)

// Handler serves GET and HEAD requests through the cache, computing misses
// with next. For each request:
//
//   - Other methods, requests for which keyOf says ok false (or gives no
//     tenant), and requests with a Range header go to next untouched.
//   - On a hit, the stored body is served with status 200, its
//     Content-Type, Content-Length, ETag, "Cache-Control: private,
//     no-cache" and "X-Cache: HIT". If-None-Match matching the ETag (or
//     "*") gets 304 Not Modified with the same headers and no body.
//   - On a miss, next serves a GET copy of the request (also for HEAD; its
//     conditional headers removed) into a buffer, once for all concurrent
//     requests of the key (see Loader.GetOrLoad; it runs without the
//     request's cancellation, bounded by LoadTimeout). A 200 response is
//     stored for ttl with a strong ETag (a SHA-256 of the body) and
//     answered as a hit is, with "X-Cache: MISS", 304 included. Any other
//     status, and a 200 that sets cookies, has a Content-Encoding or says
//     "Cache-Control: no-store", is passed on as next wrote it (with
//     "X-Cache: MISS") and not stored.
//   - "Cache-Control: no-cache" or "Pragma: no-cache" on the request skips
//     the lookup: next computes the response (see Loader.Reload), which is
//     stored and served with "X-Cache: BYPASS". "Cache-Control: no-store"
//     goes to next untouched except for "X-Cache: BYPASS", and nothing is
//     stored.
//
// Only the body and its Content-Type are kept: other headers next sets on
// a cacheable response (its own ETag included) are lost. A body longer
// than the Loader's MaxEntryBytes is served but not stored. Responses are buffered whole, so a
// streaming handler (server-sent events) must not be wrapped. If the cache
// fails, responses are computed by next, as if every request missed.
func (l *Loader) Handler(keyOf KeyFunc, ttl time.Duration, next http.Handler) http.Handler {
	if ttl <= 0 {
		panic("cache.Handler: ttl must be positive")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead || r.Header.Get("Range") != "" {
			next.ServeHTTP(w, r)
			return
		}
		tenant, scope, key, ok := keyOf(r)
		if !ok || tenant == "" {
			next.ServeHTTP(w, r)
			return
		}
		noCache, noStore := requestNoCache(r.Header)
		if noStore {
			w.Header().Set(HeaderXCache, "BYPASS")
			next.ServeHTTP(w, r)
			return
		}
		load := func(ctx context.Context) (Entry, error) { return render(next, r.Clone(ctx)) }
		var (
			e    Entry
			err  error
			hit  bool
			mark = "MISS"
		)
		if noCache {
			mark = "BYPASS"
			e, err = l.Reload(r.Context(), tenant, scope, key, ttl, load)
		} else {
			e, hit, err = l.GetOrLoad(r.Context(), tenant, scope, key, ttl, load)
			if hit {
				mark = "HIT"
			}
		}
		if err != nil {
			writeLoadError(w, r, err, mark)
			return
		}
		serveEntry(w, r, e, mark)
	})
}

// requestNoCache reports the request's no-cache and no-store directives.
func requestNoCache(h http.Header) (noCache, noStore bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if name, _, _ := strings.Cut(d, "="); name == "no-cache" {
				noCache = true
			} else if name == "no-store" {
				noStore = true
			}
		}
	}
	if !noCache && len(h.Values("Cache-Control")) == 0 {
		for _, v := range h.Values("Pragma") {
			if strings.Contains(strings.ToLower(v), "no-cache") {
				noCache = true
			}
		}
	}
	return noCache, noStore
}

// render runs next for r as a GET without conditions and returns a
// cacheable response as an Entry, or any other one as an uncached error.
func render(next http.Handler, r *http.Request) (Entry, error) {
	r.Method = http.MethodGet
	r.Body = http.NoBody
	r.ContentLength = 0
	for _, h := range []string{"If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		r.Header.Del(h)
	}
	rec := NewRecorder()
	next.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status != http.StatusOK || !cacheableHeader(rec.header) {
		return Entry{}, &uncachedResponse{status: rec.status, header: rec.header, body: rec.body.Bytes()}
	}
	body := rec.body.Bytes()
	ct := rec.header.Get("Content-Type")
	if ct == "" {
		ct = http.DetectContentType(body)
	}
	return Entry{Value: body, ContentType: ct, ETag: strongETag(body)}, nil
}

// cacheableHeader reports whether a 200 response may be stored, given the
// headers next set.
func cacheableHeader(h http.Header) bool {
	if len(h.Values("Set-Cookie")) > 0 || h.Get("Content-Encoding") != "" {
		return false
	}
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-store") {
				return false
			}
		}
	}
	return true
}

// strongETag is a strong entity tag for body: the first 128 bits of its
// SHA-256, base64url, quoted.
func strongETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// serveEntry writes e (status 200 or 304) for r.
func serveEntry(w http.ResponseWriter, r *http.Request, e Entry, mark string) {
	h := w.Header()
	etag := e.ETag
	if etag == "" {
		etag = strongETag(e.Value)
	}
	h.Set("ETag", etag)
	h.Set("Cache-Control", cacheControl)
	h.Set(HeaderXCache, mark)
	if noneMatch(r.Header, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if e.ContentType != "" {
		h.Set("Content-Type", e.ContentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(e.Value)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(e.Value)
	}
}

// noneMatch reports whether If-None-Match matches etag: "*", or a listed
// tag equal to it by the weak comparison RFC 9110 prescribes for
// If-None-Match (W/ prefixes ignored).
func noneMatch(h http.Header, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for _, v := range h.Values("If-None-Match") {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.TrimPrefix(t, "W/") == want {
				return true
			}
		}
	}
	return false
}

// writeLoadError answers a request whose load did not give an entry.
func writeLoadError(w http.ResponseWriter, r *http.Request, err error, mark string) {
	var u *uncachedResponse
	if errors.As(err, &u) {
		h := w.Header()
		for k, vs := range u.header {
			h[k] = append([]string(nil), vs...)
		}
		h.Set(HeaderXCache, mark)
		w.WriteHeader(u.status)
		if r.Method != http.MethodHead && bodyAllowed(u.status) {
			w.Write(u.body)
		}
		return
	}
	var p *panicError
	if errors.As(err, &p) && p.val == http.ErrAbortHandler {
		panic(http.ErrAbortHandler) // next aborted: abort this response too
	}
	w.Header().Set(HeaderXCache, mark)
	if r.Context().Err() != nil {
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return
	}
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// uncachedResponse carries a response that must not be cached from the
// load function to every request waiting for it.
type uncachedResponse struct {
	status int
	header http.Header
	body   []byte
}

func (u *uncachedResponse) Error() string {
	return "cache: response with status " + strconv.Itoa(u.status) + " is not cached"
}

func (u *uncachedResponse) passThrough() {}

// Recorder is an http.ResponseWriter that holds a whole response in
// memory: the cache records a miss into it, and other handlers use it to
// decide what to answer once the response is complete.
type Recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{header: make(http.Header)} }

// Status is the response's status (200 if the handler wrote a body
// without one; 0 if it wrote nothing).
func (r *Recorder) Status() int { return r.status }

// Send writes the held response to w.
func (r *Recorder) Send(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(max(r.status, http.StatusOK))
	w.Write(r.body.Bytes())
}

func (r *Recorder) Header() http.Header { return r.header }

func (r *Recorder) WriteHeader(status int) {
	if r.status != 0 {
		return
	}
	if status >= 100 && status < 200 { // informational: not the response
		return
	}
	r.status = status
}

func (r *Recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

// Flush does nothing: the response is sent when complete. It exists so
// that handlers asserting http.Flusher still run.
func (r *Recorder) Flush() {}
