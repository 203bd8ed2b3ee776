// Package docs holds the operator documentation; its test checks that the
// documentation names every setting the code reads.
package docs

import (
	"os"
	"strings"
	"testing"

	"github.com/agentapi-mt/agentapi/config"
)

func TestEveryVariableIsDocumented(t *testing.T) {
	b, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, v := range config.Variables() {
		if !strings.Contains(doc, "| `"+v+"` |") {
			t.Errorf("docs/configuration.md has no table row for %s", v)
		}
	}
}
