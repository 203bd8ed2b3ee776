package msgfmt

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// splitLines splits s into lines ("\n", tolerating "\r\n") with trailing
// spaces, tabs and carriage returns removed from every line.
func splitLines(s string) []string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r")
	}
	return lines
}

// trimBlankEnds drops blank lines at both ends of lines.
func trimBlankEnds(lines []string) []string {
	for len(lines) > 0 && isBlank(lines[0]) {
		lines = lines[1:]
	}
	for len(lines) > 0 && isBlank(lines[len(lines)-1]) {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// joinLines joins lines with "\n" after trimming blank ends.
func joinLines(lines []string) string {
	return strings.Join(trimBlankEnds(lines), "\n")
}

// TrimPadding removes terminal padding from s: trailing spaces and tabs
// from every line, and blank lines at the start and end. Blank lines
// inside the text are kept.
func TrimPadding(s string) string {
	return joinLines(splitLines(s))
}

// isBlank reports whether l has only white space.
func isBlank(l string) bool {
	return strings.TrimSpace(l) == ""
}

// indentOf returns the number of leading spaces of l.
func indentOf(l string) int {
	return len(l) - len(strings.TrimLeft(l, " "))
}

// dedent removes the indentation common to the non-blank lines.
func dedent(lines []string) []string {
	minIndent := -1
	for _, l := range lines {
		if isBlank(l) {
			continue
		}
		if n := indentOf(l); minIndent < 0 || n < minIndent {
			minIndent = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if isBlank(l) {
			out[i] = ""
		} else {
			out[i] = l[minIndent:]
		}
	}
	return out
}

// squash removes every white-space character from s, so that text can be
// compared regardless of wrapping, indentation and padding.
func squash(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if !unicode.IsSpace(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isRule reports whether l is a horizontal rule: at least ten "─" and
// nothing else but spaces.
func isRule(l string) bool {
	t := strings.TrimSpace(l)
	if utf8.RuneCountInString(t) < 10 {
		return false
	}
	for _, r := range t {
		if r != '─' && r != '━' {
			return false
		}
	}
	return true
}

// onlyRunes reports whether the non-space runes of l all belong to set
// and there is at least one.
func onlyRunes(l, set string) bool {
	seen := false
	for _, r := range l {
		if r == ' ' || r == '\t' {
			continue
		}
		if !strings.ContainsRune(set, r) {
			return false
		}
		seen = true
	}
	return seen
}

// Frame characters that may appear around the echoed input.
const (
	frameAny    = "─━│┃▌╭╮╰╯┌┐└┘"
	frameBottom = "─━│┃▌╰╯└┘"
)

// lastNonBlank returns the indices of the last n non-blank lines, the last
// one first.
func lastNonBlank(lines []string, n int) []int {
	var idx []int
	for i := len(lines) - 1; i >= 0 && len(idx) < n; i-- {
		if !isBlank(lines[i]) {
			idx = append(idx, i)
		}
	}
	return idx
}

// nonBlankAfter counts the non-blank lines after index i.
func nonBlankAfter(lines []string, i int) int {
	n := 0
	for _, l := range lines[i+1:] {
		if !isBlank(l) {
			n++
		}
	}
	return n
}
