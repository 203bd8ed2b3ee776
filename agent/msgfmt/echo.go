package msgfmt

import (
	"strings"
)

const (
	// maxEchoLead is how many blank or frame-only lines may precede the
	// echoed input at the top of the changed region.
	maxEchoLead = 3
	// minScrolledEcho is how many non-space characters of the end of the
	// input must be visible for the echo to be recognised when its start
	// scrolled off the top of the screen.
	minScrolledEcho = 24
	// maxScrolledEchoLines bounds the lines compared while looking for an
	// echo whose start scrolled off: every place the first visible line
	// occurs in the input is tried, so a long repetitive input (a pasted
	// log) under a tall screen made the search take minutes, and
	// FormatMessage runs on every screen sample. Past the bound the echo
	// is left in the reply.
	maxScrolledEchoLines = 20000
)

// removeEcho removes the agent's re-display of userInput from the top of
// lines. The echo is recognised by comparing the text with all white space
// removed, so wrapping at the terminal width, indentation of continuation
// lines and padding do not matter; the first echoed line must carry p's
// prompt prefix or sit in a frame ("│ text │", "┃ text"), unless p allows a
// bare echo. Lines are only removed when the whole input (or, when its start
// scrolled off the screen, a long enough end of it) matched, so agent text
// that merely resembles part of the input stays.
//
// It also returns the prompt in front of the echo ("> ", "You: "), or ""
// when there was none or no echo was found.
func removeEcho(lines []string, userInput string, p *profile) ([]string, string) {
	want := squash(userInput)
	if want == "" {
		return lines, ""
	}
	start := 0
	for start < len(lines) && start < maxEchoLead &&
		(isBlank(lines[start]) || onlyRunes(lines[start], frameAny)) {
		start++
	}
	if start >= len(lines) {
		return lines, ""
	}
	if p.pasted != nil && strings.Contains(strings.TrimSpace(userInput), "\n") &&
		p.pasted.MatchString(lines[start]) {
		return afterEcho(lines, start+1), ""
	}
	if end, ok := matchEcho(lines, start, want, p, true, nil); ok {
		return afterEcho(lines, end), echoPrompt(lines[start], p)
	}
	// The top of a long echo may have scrolled off: the changed region then
	// starts in the middle of the input.
	if start == 0 {
		// The echo ends where the input does, so it cannot start earlier
		// than the most the lines can match before that end.
		room := 0
		for _, l := range lines {
			most := 0
			for _, c := range echoCandidates(l, p, false) {
				most = max(most, len(squash(c)))
			}
			room += most
		}
		budget := maxScrolledEchoLines
		for _, c := range echoCandidates(lines[0], p, false) {
			sq := squash(c)
			if sq == "" {
				continue
			}
			off := strings.Index(want, sq)
			if from := len(want) - room; off > 0 && off < from {
				i := strings.Index(want[from:], sq)
				if i < 0 {
					continue
				}
				off = from + i
			}
			for off > 0 && budget > 0 {
				if len(want)-off >= minScrolledEcho {
					if end, ok := matchEcho(lines, 0, want[off:], p, false, &budget); ok {
						return afterEcho(lines, end), ""
					}
				}
				next := strings.Index(want[off+1:], sq)
				if next < 0 {
					break
				}
				off += 1 + next
			}
		}
	}
	return lines, ""
}

// echoPrompt returns the prompt p.echoPrefix matches in front of the first
// echoed line, trimmed.
func echoPrompt(line string, p *profile) string {
	if p.echoPrefix == nil {
		return ""
	}
	framed, _ := stripFrame(line)
	return strings.TrimSpace(p.echoPrefix.FindString(framed))
}

// matchEcho matches want against lines from start on and returns the index
// after the last echoed line. Blank lines are allowed inside the echo (a
// multi-line input with empty lines). budget, when not nil, is decremented
// for every line looked at; at zero the match fails.
func matchEcho(lines []string, start int, want string, p *profile, first bool, budget *int) (int, bool) {
	pos := 0
	j := start
	for j < len(lines) && pos < len(want) {
		if budget != nil {
			if *budget <= 0 {
				return 0, false
			}
			*budget--
		}
		l := lines[j]
		if isBlank(l) || onlyRunes(l, "│┃▌") {
			if pos == 0 {
				return 0, false
			}
			j++
			continue
		}
		matched := false
		for _, c := range echoCandidates(l, p, first && pos == 0) {
			sq := squash(c)
			if sq != "" && strings.HasPrefix(want[pos:], sq) {
				pos += len(sq)
				matched = true
				break
			}
		}
		if !matched {
			return 0, false
		}
		j++
	}
	return j, pos == len(want)
}

// echoCandidates returns the texts line may stand for in an echo: without a
// frame and without the prompt prefix, or (except for the first line of an
// echo, unless p.bareEcho) the framed text as is.
func echoCandidates(line string, p *profile, first bool) []string {
	framed, hadFrame := stripFrame(line)
	var out []string
	if p.echoPrefix != nil {
		if loc := p.echoPrefix.FindStringIndex(framed); loc != nil && loc[1] > 0 {
			out = append(out, framed[loc[1]:])
		}
	}
	if !first || hadFrame || p.bareEcho {
		out = append(out, framed)
	}
	return out
}

// stripFrame removes a left border ("│", "┃", "▌") and a matching right
// border from line.
func stripFrame(line string) (string, bool) {
	t := strings.TrimLeft(line, " ")
	for _, b := range []string{"│", "┃", "▌"} {
		if strings.HasPrefix(t, b) {
			t = strings.TrimPrefix(t, b)
			t = strings.TrimRight(t, " ")
			t = strings.TrimSuffix(t, b)
			return t, true
		}
	}
	return line, false
}

// afterEcho returns lines[end:] without the frame lines (a box's bottom
// border, an empty bar) directly after the echo.
func afterEcho(lines []string, end int) []string {
	for end < len(lines) && (isBlank(lines[end]) || onlyRunes(lines[end], frameBottom)) {
		end++
	}
	return lines[end:]
}
