package msgfmt

import (
	"regexp"
	"strings"
)

// busyWindow is how many lines above the input area are searched for a
// spinner or "esc to interrupt" line.
const busyWindow = 20

// profile is what msgfmt knows about one agent's screen.
type profile struct {
	// echoPrefix matches the prompt in front of the first line of the
	// echoed user input (anchored at the start of the line, after any
	// frame), e.g. "> " for Claude Code.
	echoPrefix *regexp.Regexp
	// bareEcho allows the first echoed line to carry no prefix or frame.
	bareEcho bool
	// pasted matches a line that stands for a whole multi-line paste
	// (Claude Code collapses long pastes to "[Pasted text #1 +12 lines]").
	pasted *regexp.Regexp
	// input returns the index of the first line of the input area (the
	// input box or prompt, with everything below it belonging to the UI),
	// or -1 when the input area is not shown. nil: no knowledge.
	input func(lines []string) int
	// busy matches spinner and "working" lines.
	busy []*regexp.Regexp
	// status matches UI lines (token counts, context meters, footers left
	// below a dialog) that are dropped wherever they are in the reply.
	status []*regexp.Regexp
	// dropPrompt drops a last line that is the bare prompt the echo was
	// shown with (for agents whose input area is unknown).
	dropPrompt bool
	// dedent removes the indentation common to all lines of the reply.
	dedent bool
	// post rewrites the reply lines (after echo, input area, spinner and
	// status lines are gone, before boxes are unframed).
	post func(lines []string) []string
	// unbox replaces boxes left in the reply (dialogs, tool boxes) by
	// their text.
	unbox bool
}

// FormatMessage returns the agent's reply shown in changed, the part of the
// screen that changed since userInput was sent: without the echo of
// userInput, without t's input box (and the hints and status lines below
// it), spinners and status lines, and without terminal padding. It only
// removes text; every line it returns was in changed (possibly without its
// frame, its common indentation or, for the echo agent, its "● " prefix).
func FormatMessage(t AgentType, changed string, userInput string) string {
	p := profileFor(t)
	lines := splitLines(changed)
	lines, prompt := removeEcho(lines, userInput, p)
	if p.input != nil {
		if i := p.input(lines); i >= 0 {
			lines = lines[:i]
		}
	}
	lines = trimBlankEnds(lines)
	if i := findBusy(lines, len(lines)-busyWindow, p.busy); i >= 0 {
		lines = lines[:i]
	}
	lines = dropStatus(lines, p.status)
	if p.dropPrompt && prompt != "" {
		// An agent msgfmt knows nothing about: when the last line is the
		// bare prompt the echo was shown with, it is the next input prompt.
		lines = trimBlankEnds(lines)
		if n := len(lines); n > 0 && strings.TrimSpace(lines[n-1]) == prompt {
			lines = lines[:n-1]
		}
	}
	if p.post != nil {
		lines = p.post(lines)
	}
	if p.unbox {
		if p.dedent {
			lines = dedentOutsideBoxes(lines)
		}
		lines = unboxAll(lines)
	}
	lines = trimBlankEnds(splitLines(strings.Join(lines, "\n")))
	if p.dedent {
		lines = dedent(lines)
	}
	return strings.Join(lines, "\n")
}

// IsReady reports whether screen shows t's input prompt with the agent
// idle, so that a message typed now would be accepted: the input box or
// prompt is visible at the bottom (not replaced by a confirmation dialog)
// and no spinner or "esc to interrupt" line is shown. For AgentCustom, of
// which nothing is known, any non-blank screen is ready.
func IsReady(t AgentType, screen string) bool {
	lines := trimBlankEnds(splitLines(screen))
	if len(lines) == 0 {
		return false
	}
	p := profileFor(t)
	if p.input == nil {
		return true
	}
	in := p.input(lines)
	if in < 0 {
		return false
	}
	return findBusy(lines, in-busyWindow, p.busy) < 0
}

// findBusy returns the index of the first line at or after from that
// matches one of res, or -1.
func findBusy(lines []string, from int, res []*regexp.Regexp) int {
	if from < 0 {
		from = 0
	}
	for i := from; i < len(lines); i++ {
		for _, re := range res {
			if re.MatchString(lines[i]) {
				return i
			}
		}
	}
	return -1
}

// dropStatus removes the lines matching one of res. When a removed line
// stood between blank lines, one of them goes too.
func dropStatus(lines []string, res []*regexp.Regexp) []string {
	if len(res) == 0 {
		return lines
	}
	out := lines[:0:0]
	skipBlank := false
	for _, l := range lines {
		switch {
		case matchesAny(l, res):
			skipBlank = len(out) == 0 || isBlank(out[len(out)-1])
		case skipBlank && isBlank(l):
			skipBlank = false
		default:
			skipBlank = false
			out = append(out, l)
		}
	}
	return out
}

func matchesAny(l string, res []*regexp.Regexp) bool {
	for _, re := range res {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// profileFor returns t's profile; unknown types are treated as custom.
func profileFor(t AgentType) *profile {
	if p, ok := profiles[t]; ok {
		return p
	}
	return profiles[AgentCustom]
}

// boxInput returns a function finding the input box: the last box that ends
// within the last few lines and is not a dialog, whose first inner line
// starts with a prompt matching marker (nil: any content).
func boxInput(marker *regexp.Regexp) func([]string) int {
	return func(lines []string) int {
		boxes := findBoxes(lines)
		if len(boxes) == 0 {
			return -1
		}
		b := boxes[len(boxes)-1]
		if nonBlankAfter(lines, b.bottom) > maxFooterLines {
			return -1
		}
		if marker != nil {
			if !marker.MatchString(b.firstInner(lines)) {
				return -1
			}
		} else if b.isDialog(lines) {
			return -1
		}
		return b.top
	}
}

// maxFooterLines is how many non-blank hint and status lines may follow an
// input box or prompt.
const maxFooterLines = 4

// ruleInput returns a function finding an input prompt drawn between
// horizontal rules: a rule directly above a line matching marker, near the
// bottom.
func ruleInput(marker *regexp.Regexp) func([]string) int {
	return func(lines []string) int {
		for _, i := range lastNonBlank(lines, maxFooterLines+2) {
			if i > 0 && marker.MatchString(lines[i]) && isRule(lines[i-1]) {
				return i - 1
			}
		}
		return -1
	}
}

// promptLine returns a function finding a prompt line matching marker among
// the last n non-blank lines.
func promptLine(marker *regexp.Regexp, n int) func([]string) int {
	return func(lines []string) int {
		for _, i := range lastNonBlank(lines, n) {
			if marker.MatchString(lines[i]) {
				return i
			}
		}
		return -1
	}
}

// firstOf returns a function trying finders in order.
func firstOf(finders ...func([]string) int) func([]string) int {
	return func(lines []string) int {
		for _, f := range finders {
			if i := f(lines); i >= 0 {
				return i
			}
		}
		return -1
	}
}
