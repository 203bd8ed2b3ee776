package agenthttp

import (
	_ "embed"
	"net/http"
)

//go:embed chat/index.html
var chatPage []byte

// chat serves the embedded chat page. It talks to the API with URLs
// relative to itself, so it works behind any path prefix.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(chatPage)
}
