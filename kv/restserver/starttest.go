package restserver

import (
	"net/http/httptest"
	"testing"
)

// StartTest starts a Server for a test. It connects a rueidis client to
// redisURL with NewRedisClient, serves New(client, token) from a plain-HTTP
// httptest.Server, and registers cleanups that close both. It returns the
// base URL (without a trailing slash) and the Server. Failures to connect
// end the test with t.Fatal.
func StartTest(t testing.TB, redisURL, token string) (baseURL string, s *Server) {
	t.Helper()
	client, err := NewRedisClient(redisURL)
	if err != nil {
		t.Fatalf("restserver.StartTest: %v", err)
	}
	s = New(client, token)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		client.Close()
	})
	return ts.URL, s
}
