package msgfmt

import (
	"regexp"
	"strings"
)

// What each agent's screen looks like. The layouts below are the ones the
// golden screens in testdata/ describe; they are recognised loosely (by
// glyphs and phrases, not exact positions) so that small UI changes in an
// agent do not break the formatting.
//
//	agent     echo of the input        input area                        busy line
//	claude    "> text" / "❯ text"      box "│ > │" or rules around "> "   "✻ Thinking… (… esc to interrupt)"
//	goose     "( O)> text"             last line "( O)> "                "◐  message..."
//	aider     "> text", "ask> text"    rule, file list, bare "> " last   "░█  Waiting for model"
//	codex     "› text"                 composer "› …" + footer           "• Working (5s • esc to interrupt)"
//	gemini    "> text"                 box "│ >   Type your message"      "⠏ Thinking... (esc to cancel, 3s)"
//	copilot   "> text"                 box "│ > Enter @ to mention…"      "◎ Thinking (Esc to cancel)"
//	amp       "┃ text"                 last box, not a dialog            "⠼ Thinking… (esc to cancel)"
//	cursor    boxed "│ text │"         box "│ → Add a follow-up"          "ctrl+c to stop", "⬡ Generating."
//	auggie    "› text"                 box "│ › Try …"                    "⠹ Thinking... (esc to interrupt)"
//	amazonq   "> text"                 last line bare "> " or "!> "      "⠋ Thinking..."
//	opencode  "┃ text"                 box "│ > │"                        "esc interrupt", braille spinner
//	echo      "> text"                 box "│ > │"                        "⠋ Thinking… (1s · esc to interrupt)"
//	custom    any short prompt or none —                                 —
//
// A confirmation dialog replaces the input area (so the screen is not
// ready; amazonq, whose "!> " prompt takes the answer, is) and stays in the
// reply as text: boxes left in the reply lose their frame but keep their
// title, text and choices, goose's prompts lose their "◆ │ └" bars. Agent
// glyphs ("● ", "✦ ", "• ") are kept, except the echo agent's "● " and the
// "> " amazonq puts before its reply, so that RemoveToolCalls can still see
// tool-call blocks. Everything except custom is dedented.
var (
	reBraille   = regexp.MustCompile(`^\s*[⠁-⣿]\s+\S`)
	reEscToStop = regexp.MustCompile(`(?i)(?:[(·•]\s*esc to (?:interrupt|cancel)|esc to (?:interrupt|cancel)\s*[),])`)

	reAngleMarker = regexp.MustCompile(`^[>❯](?:\s|$)`)
)

var profiles = map[AgentType]*profile{
	AgentClaude: {
		echoPrefix: regexp.MustCompile(`^\s*[>❯]\s?`),
		pasted:     regexp.MustCompile(`^\s*[>❯]\s*\[Pasted text #\d+(?: \+\d+ lines)?\]\s*$`),
		input: firstOf(
			boxInput(reAngleMarker),
			ruleInput(regexp.MustCompile(`^\s*[>❯](?:\s|$)`)),
		),
		busy: []*regexp.Regexp{
			reBraille, reEscToStop,
			regexp.MustCompile(`^\s*[·✢✳✶✻✽]\s+\S+…`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentGoose: {
		echoPrefix: regexp.MustCompile(`^\s*\( O\)>\s?`),
		input:      promptLine(regexp.MustCompile(`^\( O\)>\s*(?:Press Enter to send.*)?$`), 2),
		busy: []*regexp.Regexp{
			reBraille,
			regexp.MustCompile(`^\s*[◐◓◑◒]\s+\S`),
		},
		status: []*regexp.Regexp{regexp.MustCompile(`^\s*Context:\s+[●○]+`)},
		post:   unbarPrompts,
		dedent: true,
	},
	AgentAider: {
		echoPrefix: regexp.MustCompile(`^\s*(?:[a-z]+(?: [a-z]+)*)?>\s?`),
		input:      aiderInput,
		busy: []*regexp.Regexp{
			reBraille,
			regexp.MustCompile(`^\s*[░█▒▓]+\s+\S`),
		},
		status: []*regexp.Regexp{
			regexp.MustCompile(`^Tokens: [\d.]+k? sent, [\d.]+k? received\b`),
		},
		dedent: true,
	},
	AgentCodex: {
		echoPrefix: regexp.MustCompile(`^\s*[›▌>]\s?`),
		input:      codexInput,
		busy: []*regexp.Regexp{
			reBraille, reEscToStop,
			regexp.MustCompile(`^\s*•\s+Working\b.*\(`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentGemini: {
		echoPrefix: regexp.MustCompile(`^\s*>\s?`),
		input:      boxInput(regexp.MustCompile(`^>(?:\s|$)`)),
		busy:       []*regexp.Regexp{reBraille, reEscToStop},
		status: []*regexp.Regexp{
			regexp.MustCompile(`^\s*Using:? \d+ (?:GEMINI\.md|MCP|context)`),
			regexp.MustCompile(`(?i)^\s*(?:accepting edits|YOLO mode)`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentCopilot: {
		echoPrefix: regexp.MustCompile(`^\s*[>❯]\s?`),
		input:      boxInput(reAngleMarker),
		busy:       []*regexp.Regexp{reBraille, reEscToStop},
		// The footer stays below a permission dialog.
		status: []*regexp.Regexp{
			regexp.MustCompile(`^\s*\S+ \[⎇ [^\]]*\]`),
			regexp.MustCompile(`^\s*Ctrl\+c Exit\b`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentAmp: {
		echoPrefix: regexp.MustCompile(`^\s*>\s?`),
		input:      boxInput(nil),
		busy:       []*regexp.Regexp{reBraille, reEscToStop},
		unbox:      true,
		dedent:     true,
	},
	AgentCursor: {
		echoPrefix: regexp.MustCompile(`^\s*[>→]\s?`),
		input:      boxInput(regexp.MustCompile(`^[→>](?:\s|$)`)),
		busy: []*regexp.Regexp{
			reBraille, reEscToStop,
			regexp.MustCompile(`(?i)ctrl\+c to stop`),
			regexp.MustCompile(`^\s*[⬡⬢]\s+(?:Generating|Thinking|Planning)\b`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentAuggie: {
		echoPrefix: regexp.MustCompile(`^\s*[›>]\s?`),
		input:      boxInput(regexp.MustCompile(`^[›>](?:\s|$)`)),
		busy:       []*regexp.Regexp{reBraille, reEscToStop},
		unbox:      true,
		dedent:     true,
	},
	AgentAmazonQ: {
		echoPrefix: regexp.MustCompile(`^\s*(?:\[[^\]]+\] )?!?>\s?`),
		input:      promptLine(regexp.MustCompile(`^(?:\[[^\]]+\] )?!?>$`), 1),
		busy:       []*regexp.Regexp{reBraille},
		post:       stripQReplyPrompt,
		dedent:     true,
	},
	AgentOpencode: {
		echoPrefix: regexp.MustCompile(`^\s*>\s?`),
		input:      boxInput(regexp.MustCompile(`^>(?:\s|$)`)),
		busy: []*regexp.Regexp{
			reBraille, reEscToStop,
			regexp.MustCompile(`(?i)\besc interrupt\b`),
		},
		status: []*regexp.Regexp{
			regexp.MustCompile(`^\s*▣\s`),
			// The footer stays below a permission dialog.
			regexp.MustCompile(`ctrl\+p commands\s*$`),
		},
		unbox:  true,
		dedent: true,
	},
	AgentEcho: {
		echoPrefix: regexp.MustCompile(`^\s*>\s?`),
		input:      boxInput(regexp.MustCompile(`^>(?:\s|$)`)),
		busy: []*regexp.Regexp{
			reBraille, reEscToStop,
			regexp.MustCompile(`^[⠁-⣿]\s+Thinking…`),
		},
		post:   stripEchoBullets,
		unbox:  true,
		dedent: true,
	},
	AgentCustom: {
		// Any short prompt ("$ ", "You: ", ">>> ") or none at all.
		echoPrefix: regexp.MustCompile(`^\s*\S{0,32}?[>:$#%»❯›➜]\s*`),
		bareEcho:   true,
		dropPrompt: true,
	},
}

var (
	aiderPrompt   = regexp.MustCompile(`^(?:[a-z]+(?: [a-z]+)*)?>$`)
	codexComposer = regexp.MustCompile(`^\s*[›▌](?:\s|$)`)
	codexOption   = regexp.MustCompile(`^\s*[›▌]\s*\d+\.`)
)

// aiderInput finds aider's prompt: a bare "> " (or "ask> ", "architect> ")
// as the last line, below the rule aider draws above the list of files in
// the chat.
func aiderInput(lines []string) int {
	p := promptLine(aiderPrompt, 1)(lines)
	if p < 0 {
		return -1
	}
	for i := p - 1; i >= 0 && i >= p-6; i-- {
		if isRule(lines[i]) {
			return i
		}
		if isBlank(lines[i]) {
			break
		}
	}
	return p
}

// codexInput finds Codex's composer: a "› " line (not a "› 1." choice of
// an approval dialog) among the last lines, above its footer.
func codexInput(lines []string) int {
	for _, i := range lastNonBlank(lines, maxFooterLines) {
		if codexComposer.MatchString(lines[i]) && !codexOption.MatchString(lines[i]) {
			return i
		}
	}
	return -1
}

// stripEchoBullets removes the echo agent's reply prefixes: "● " on the
// first line of a reply, two spaces on its continuation lines.
func stripEchoBullets(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "● "):
			out[i] = strings.TrimPrefix(l, "● ")
		case strings.HasPrefix(l, "  "):
			out[i] = l[2:]
		default:
			out[i] = l
		}
	}
	return out
}

// unbarPrompts removes the frame goose's interactive prompts draw (a "◆"
// or "◇" before the question, a "│" bar before each choice and a closing
// "└"), keeping the question and the choices.
func unbarPrompts(lines []string) []string {
	var out []string
	inPrompt := false
	for _, l := range lines {
		t := strings.TrimLeft(l, " ")
		switch {
		case strings.HasPrefix(t, "◆") || strings.HasPrefix(t, "◇"):
			inPrompt = true
			t = strings.TrimPrefix(strings.TrimPrefix(t, "◆"), "◇")
			out = append(out, strings.TrimLeft(t, " "))
		case inPrompt && strings.HasPrefix(t, "│"):
			t = strings.TrimPrefix(t, "│")
			for k := 0; k < 2 && strings.HasPrefix(t, " "); k++ {
				t = t[1:]
			}
			out = append(out, t)
		case inPrompt && strings.HasPrefix(t, "└"):
			inPrompt = false
			if rest := strings.TrimSpace(strings.TrimPrefix(t, "└")); rest != "" {
				out = append(out, rest)
			}
		default:
			inPrompt = false
			out = append(out, l)
		}
	}
	return out
}

// stripQReplyPrompt removes the "> " Amazon Q prints in front of the first
// line of its reply.
func stripQReplyPrompt(lines []string) []string {
	out := append([]string(nil), lines...)
	for i, l := range out {
		if isBlank(l) {
			continue
		}
		if strings.HasPrefix(l, "> ") {
			out[i] = strings.TrimPrefix(l, "> ")
		}
		break
	}
	return out
}
