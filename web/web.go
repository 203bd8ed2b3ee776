// Package web is the browser UI of `agentapi serve`: plain HTML, CSS and
// JavaScript modules embedded in the binary, with no build step. It has a
// chat per agent session (messages streamed over server-sent events, raw
// keys, file upload, the terminal screen) and a dashboard for tenant and
// platform admins. The pages call the /v1 API with the session cookie that
// POST /v1/auth/login sets; everything they load or call is addressed
// relative to the page, so the UI works under any path prefix.
//
// The chat view (chat.js, chat.css) is shared with the single-agent
// server's /chat page, which package agenthttp serves through Asset.
//
// Caching: the files name each other with a ?v=<version> query, the
// version being a hash of all of them, so a browser may keep a versioned
// file forever and still never mixes files of two releases; index.html
// itself is revalidated on every load.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// versionToken is replaced in every file by the version of the whole set.
const versionToken = "__V__"

type asset struct {
	body  []byte
	ctype string
	etag  string
}

var (
	assets  = map[string]asset{}
	version string
)

func init() {
	files, err := fs.ReadDir(static, "static")
	if err != nil {
		panic(err)
	}
	names := make([]string, 0, len(files))
	raw := map[string][]byte{}
	for _, f := range files {
		b, err := static.ReadFile("static/" + f.Name())
		if err != nil {
			panic(err)
		}
		names = append(names, f.Name())
		raw[f.Name()] = b
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(raw[n])
	}
	version = hex.EncodeToString(h.Sum(nil))[:12]
	for _, n := range names {
		body := bytes.ReplaceAll(raw[n], []byte(versionToken), []byte(version))
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(n))
		switch path.Ext(n) { // not left to the system's MIME tables
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".html":
			ctype = "text/html; charset=utf-8"
		}
		assets[n] = asset{body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
}

// Version identifies this build's set of files.
func Version() string { return version }

// Asset returns an embedded file by name ("chat.js"), with its content
// type, for servers that embed parts of the UI (the /chat page).
func Asset(name string) (body []byte, contentType string, ok bool) {
	a, ok := assets[name]
	return a.body, a.ctype, ok
}

// contentSecurityPolicy allows the page's own files and requests to its
// own origin only: no inline script, no third party, no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the UI wherever it is mounted: a path ending in "/"
// gets the application page, a file name the file; the mount point
// without its trailing slash redirects to it ("/ui" → "/ui/"). It needs no
// authentication: the pages ask for a sign-in and the API decides.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	name := path.Base(p)
	if strings.HasSuffix(p, "/") || p == "" {
		name = "index.html"
	}
	a, ok := assets[name]
	if !ok {
		if !strings.Contains(name, ".") && name != "/" {
			// A relative redirect keeps any prefix in front of the mount.
			hdr.Set("Location", name+"/")
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		http.Error(w, "no such file", http.StatusNotFound)
		return
	}
	if name != "index.html" && r.URL.Query().Get("v") == version {
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hdr.Set("Cache-Control", "no-cache")
	}
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
