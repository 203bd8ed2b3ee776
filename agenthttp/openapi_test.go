package agenthttp

import (
	"flag"
	"os"
	"testing"

	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

var update = flag.Bool("update", false, "rewrite openapi.json from the code")

// TestOpenAPIIsCheckedIn fails when the routes or shapes change without the
// checked-in document being regenerated (go test ./agenthttp -update).
func TestOpenAPIIsCheckedIn(t *testing.T) {
	s, err := New(Config{AgentType: msgfmt.AgentCustom, Version: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("openapi.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("agenthttp/openapi.json is out of date with the code: run `go test ./agenthttp -update` and commit it")
	}
}
