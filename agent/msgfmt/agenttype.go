package msgfmt

import (
	"errors"
	"fmt"
	"strings"
)

// AgentType names a terminal agent whose screen layout msgfmt knows.
type AgentType string

// The supported agent types. The string values are the names accepted by
// `agentapi server --type`.
const (
	AgentClaude   AgentType = "claude"
	AgentGoose    AgentType = "goose"
	AgentAider    AgentType = "aider"
	AgentCodex    AgentType = "codex"
	AgentGemini   AgentType = "gemini"
	AgentCopilot  AgentType = "copilot"
	AgentAmp      AgentType = "amp"
	AgentCursor   AgentType = "cursor"
	AgentAuggie   AgentType = "auggie"
	AgentAmazonQ  AgentType = "amazonq"
	AgentOpencode AgentType = "opencode"
	// AgentCustom is any other program: msgfmt assumes nothing about its
	// screen beyond trimming it and removing the echoed input.
	AgentCustom AgentType = "custom"
	// AgentEcho is the built-in demo agent.
	AgentEcho AgentType = "echo"
)

// ErrUnknownAgentType is wrapped by the error ParseAgentType returns for a
// name it does not know.
var ErrUnknownAgentType = errors.New("unknown agent type")

var allAgentTypes = []AgentType{
	AgentClaude, AgentGoose, AgentAider, AgentCodex, AgentGemini,
	AgentCopilot, AgentAmp, AgentCursor, AgentAuggie, AgentAmazonQ,
	AgentOpencode, AgentCustom, AgentEcho,
}

// agentAliases maps alternative names (lower case) to their agent type.
var agentAliases = map[string]AgentType{
	"claude-code":  AgentClaude,
	"cursor-agent": AgentCursor,
	"q":            AgentAmazonQ,
}

// AgentTypes returns every agent type, in a stable order, for
// documentation and enumerations. The caller may modify the slice.
func AgentTypes() []AgentType {
	out := make([]AgentType, len(allAgentTypes))
	copy(out, allAgentTypes)
	return out
}

// Valid reports whether t is one of AgentTypes.
func (t AgentType) Valid() bool {
	for _, a := range allAgentTypes {
		if a == t {
			return true
		}
	}
	return false
}

// ParseAgentType returns the agent type named s, ignoring case and
// surrounding spaces. Besides the type names it accepts the aliases
// "claude-code" (claude), "cursor-agent" (cursor) and "q" (amazonq). An
// unknown name yields an error wrapping ErrUnknownAgentType that lists the
// valid names.
func ParseAgentType(s string) (AgentType, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	if t := AgentType(name); t.Valid() {
		return t, nil
	}
	if t, ok := agentAliases[name]; ok {
		return t, nil
	}
	names := make([]string, len(allAgentTypes))
	for i, t := range allAgentTypes {
		names[i] = string(t)
	}
	return "", fmt.Errorf("%w %q: valid types are %s (aliases: claude-code, cursor-agent, q)",
		ErrUnknownAgentType, s, strings.Join(names, ", "))
}

// GuessAgentType picks the agent type from the base name of the agent's
// command (argv[0]): "/usr/local/bin/claude" is claude, "cursor-agent" is
// cursor, "q" is amazonq. A ".exe"/".cmd" suffix or a "-cli" suffix is
// ignored. Anything it does not recognise, including "echo" (the demo agent
// is chosen elsewhere, /bin/echo is not it), is AgentCustom.
func GuessAgentType(argv0 string) AgentType {
	base := strings.TrimSpace(argv0)
	base = base[strings.LastIndexAny(base, `/\`)+1:]
	base = strings.ToLower(base)
	for _, ext := range []string{".exe", ".cmd", ".bat", ".js", ".mjs"} {
		base = strings.TrimSuffix(base, ext)
	}
	for _, cand := range []string{base, strings.TrimSuffix(base, "-cli")} {
		switch t := AgentType(cand); {
		case t == AgentEcho || t == AgentCustom:
			return AgentCustom
		case t.Valid():
			return t
		}
		if t, ok := agentAliases[cand]; ok {
			return t
		}
	}
	return AgentCustom
}
