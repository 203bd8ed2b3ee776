package agenthttp

import (
	_ "embed"
	"net/http"
	"path"

	"github.com/agentapi-mt/agentapi/web"
)

//go:embed chat/index.html
var chatPage []byte

// chat serves the embedded chat page and the chat view it shares with the
// multi-tenant UI (package web). The page talks to the API with URLs
// relative to itself, so it works behind any path prefix.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch name := path.Base(r.URL.Path); name {
	case "chat.js", "chat.css", "chat-page.js":
		body, ctype, _ := web.Asset(name)
		w.Header().Set("Content-Type", ctype)
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(chatPage)
}
