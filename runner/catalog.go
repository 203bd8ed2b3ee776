package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/agentapi-mt/agentapi/agent/msgfmt"
)

// Agent is one entry of the operator's agent catalog: what runs when a
// tenant asks for an agent by name. Tenants choose names; only the operator
// chooses commands.
type Agent struct {
	// Type is the screen format (msgfmt) of the agent; defaults to the name.
	Type msgfmt.AgentType `json:"type"`
	// Command is the program and its arguments. Empty for the built-in
	// demo agent, which runs this binary's demo-agent subcommand.
	Command []string `json:"command"`
	// Env is added to the agent's environment.
	Env map[string]string `json:"env,omitempty"`
}

// Catalog maps agent names to what they run.
type Catalog map[string]Agent

// DefaultCatalog has the built-in demo agent only.
func DefaultCatalog() Catalog {
	return Catalog{"echo": {Type: msgfmt.AgentEcho}}
}

// Names lists the catalog's agent names, sorted.
func (c Catalog) Names() []string {
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadCatalog reads a catalog file (JSON: {"agents": {"name": {"type",
// "command", "env"}}}) and adds it to the default catalog. An entry named
// like a default one replaces it.
func LoadCatalog(path string) (Catalog, error) {
	c := DefaultCatalog()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("AGENTAPI_AGENTS_FILE: %w", err)
	}
	var f struct {
		Agents map[string]Agent `json:"agents"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("AGENTAPI_AGENTS_FILE %s: %w", path, err)
	}
	var problems []string
	for name, a := range f.Agents {
		if name == "" || strings.ContainsAny(name, " /") {
			problems = append(problems, fmt.Sprintf("agent name %q: use letters, digits, - and _", name))
			continue
		}
		if a.Type == "" {
			a.Type = msgfmt.AgentType(name)
		}
		t, err := msgfmt.ParseAgentType(string(a.Type))
		if err != nil {
			problems = append(problems, fmt.Sprintf("agent %q: %v", name, err))
			continue
		}
		a.Type = t
		if len(a.Command) == 0 && t != msgfmt.AgentEcho {
			problems = append(problems, fmt.Sprintf("agent %q: command is empty", name))
			continue
		}
		c[name] = a
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, errors.New("AGENTAPI_AGENTS_FILE " + path + ": " + strings.Join(problems, "; "))
	}
	return c, nil
}
