package msgfmt

import (
	"regexp"
	"strings"
)

// toolCallStart reports whether lines[i] starts a tool-call block.
type toolCallStart func(lines []string, i int) bool

var (
	// Claude Code: "● Bash(ls -la)", "● Read(main.go)", "● Update Todos"
	// followed by "  ⎿  …" output lines.
	claudeToolLine = regexp.MustCompile(`^[●⏺] [A-Za-z][\w.:-]*(?: [\w.:-]+)*(?: \(MCP\))?\(.*\)$`)
	claudeBullet   = regexp.MustCompile(`^[●⏺] \S`)
	claudeResult   = regexp.MustCompile(`^\s+⎿`)

	// Codex: "• Ran go test ./...", "• Explored", "• Edited main.go (+3 -1)"
	// followed by "  └ …" lines.
	codexToolLine = regexp.MustCompile(`^[•●] (?:Ran|Running|Explored|Exploring|Read|Reading|Edited|Editing|Added|Deleted|Updated Plan|Called|Calling|Searched|Searching|Listed|Listing|Waited|Waiting for background|Applied patch|Applying patch|Proposed Change|Change Approved|Wrote|Writing)\b`)

	codexResult = regexp.MustCompile(`^\s+└|^ {3,}\S`)

	// Copilot CLI: "✓ Read go.mod (15 lines)", "✗ $ make lint", or a
	// "● …"/"$ …" line followed by "  └ …"/"  ↪ …" result lines.
	copilotDone   = regexp.MustCompile(`^[✓✗✔✘] \S`)
	copilotHead   = regexp.MustCompile(`^(?:[●○] |\$ )\S`)
	copilotResult = regexp.MustCompile(`^\s+[└↪]`)

	// Amp: "✓ Bash go test ./...", "✗ Edit main.go", "⋯ Read README.md".
	ampToolLine = regexp.MustCompile(`^[✓✗✔✘⋯] [A-Z]\w*\b`)
)

var toolCallStarts = map[AgentType]toolCallStart{
	AgentClaude: func(lines []string, i int) bool {
		l := lines[i]
		if claudeToolLine.MatchString(l) {
			return true
		}
		return claudeBullet.MatchString(l) && i+1 < len(lines) && claudeResult.MatchString(lines[i+1])
	},
	AgentCodex: func(lines []string, i int) bool {
		if !codexToolLine.MatchString(lines[i]) {
			return false
		}
		// "• Running the tests now." is text: a tool line has its result
		// ("  └ …" or a diff indented further than text) below it, or
		// no sentence punctuation.
		if i+1 < len(lines) && codexResult.MatchString(lines[i+1]) {
			return true
		}
		return !strings.ContainsAny(lines[i][len(lines[i])-1:], ".:!?")
	},
	AgentCopilot: func(lines []string, i int) bool {
		l := lines[i]
		if copilotDone.MatchString(l) {
			return true
		}
		return copilotHead.MatchString(l) && i+1 < len(lines) && copilotResult.MatchString(lines[i+1])
	},
	AgentAmp: func(lines []string, i int) bool {
		return ampToolLine.MatchString(lines[i])
	},
}

// RemoveToolCalls removes the tool-call blocks from message (a reply as
// FormatMessage returns it) for the agents that print them: claude
// ("● Bash(ls)" and its "⎿" output), codex ("• Ran ls" and its "└"
// lines), copilot ("✓ Read go.mod", "$ ls" and its "↪" lines) and amp
// ("✓ Bash ls"). A block is its first line and the indented lines after
// it, blank lines inside included. It returns the message without the
// blocks and the removed blocks, in order. For other agent types, or when
// there are none, message is returned unchanged with nil.
func RemoveToolCalls(t AgentType, message string) (string, []string) {
	start, ok := toolCallStarts[t]
	if !ok {
		return message, nil
	}
	lines := splitLines(message)
	var kept []string
	var calls []string
	for i := 0; i < len(lines); {
		if !start(lines, i) {
			kept = append(kept, lines[i])
			i++
			continue
		}
		end := blockEnd(lines, i)
		calls = append(calls, joinLines(lines[i:end]))
		// Drop the blank lines separating the block from what follows, so
		// that removing it leaves a single blank line.
		for end < len(lines) && isBlank(lines[end]) {
			end++
		}
		if end == len(lines) {
			kept = trimBlankEnds(kept)
		}
		i = end
	}
	if len(calls) == 0 {
		return message, nil
	}
	return joinLines(kept), calls
}

// blockEnd returns the index after the block starting at lines[i]: the
// following lines that are indented, and blank lines followed by an
// indented line.
func blockEnd(lines []string, i int) int {
	end := i + 1
	for j := i + 1; j < len(lines); j++ {
		l := lines[j]
		if isBlank(l) {
			continue
		}
		if !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			break
		}
		end = j + 1
	}
	return end
}
