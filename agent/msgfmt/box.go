package msgfmt

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// A box is a frame of box-drawing characters spanning lines top..bottom
// (inclusive):
//
//	╭─ Title ───╮      ┌────────┐
//	│ text      │  or  │ text   │
//	╰───────────╯      └────────┘
//
// The top and bottom borders may carry a label between the "─" runs.
// Every line in between starts with "│" (or is a "├───┤" separator) at the
// column of the top-left corner. Tables ("┬", "┼") are not boxes.
type box struct {
	top, bottom int
	indent      int    // column of the left border, in bytes of spaces
	title       string // label in the top border, "" if none
	label       string // label in the bottom border, "" if none
}

var borderLabelSep = regexp.MustCompile(`[─━]+`)

// border parses l as a horizontal border that starts with one of the
// corners in left and ends with one of the corners in right. It returns the
// border's indentation and label.
func border(l, left, right string) (indent int, label string, ok bool) {
	t := strings.TrimLeft(l, " ")
	indent = len(l) - len(t)
	first, size := firstRune(t)
	if size == 0 || !strings.ContainsRune(left, first) {
		return 0, "", false
	}
	last, lsize := lastRune(t)
	if lsize == 0 || len(t) <= size+lsize || !strings.ContainsRune(right, last) {
		return 0, "", false
	}
	mid := t[size : len(t)-lsize]
	if !strings.HasPrefix(mid, "─") && !strings.HasPrefix(mid, "━") {
		return 0, "", false
	}
	if strings.ContainsAny(mid, "┬┴┼│╭╮╰╯┌┐└┘") {
		return 0, "", false
	}
	label = strings.Join(strings.Fields(borderLabelSep.ReplaceAllString(mid, " ")), " ")
	return indent, label, true
}

// findBoxes returns the outermost boxes of lines, top to bottom.
func findBoxes(lines []string) []box {
	var boxes []box
	for i := 0; i < len(lines); i++ {
		indent, title, ok := border(lines[i], "╭┌", "╮┐")
		if !ok {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			l := lines[j]
			if indentOf(l) != indent {
				break
			}
			t := l[indent:]
			if bi, label, ok := border(l, "╰└", "╯┘"); ok && bi == indent {
				boxes = append(boxes, box{top: i, bottom: j, indent: indent, title: title, label: label})
				i = j
				break
			}
			if !strings.HasPrefix(t, "│") && !strings.HasPrefix(t, "├") {
				break
			}
		}
	}
	return boxes
}

// inner returns the text inside b, without the side borders, dedented.
// Separator lines ("├───┤") are dropped.
func (b box) inner(lines []string) []string {
	var out []string
	for _, l := range lines[b.top+1 : b.bottom] {
		t := strings.TrimLeft(l, " ")
		if strings.HasPrefix(t, "├") {
			continue
		}
		t = strings.TrimPrefix(t, "│")
		t = strings.TrimRight(t, " ")
		if strings.HasSuffix(t, "│") {
			t = strings.TrimRight(strings.TrimSuffix(t, "│"), " ")
		}
		out = append(out, t)
	}
	return dedent(out)
}

// firstInner returns the first non-blank line inside b, trimmed.
func (b box) firstInner(lines []string) string {
	for _, l := range b.inner(lines) {
		if !isBlank(l) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// unboxAll replaces every box in lines by its content: the top label (a
// dialog's title), the inner lines and the bottom label, so that a reader
// sees the text without the frame. Nested boxes are unboxed too.
func unboxAll(lines []string) []string {
	for depth := 0; depth < 4; depth++ {
		boxes := findBoxes(lines)
		if len(boxes) == 0 {
			break
		}
		var out []string
		prev := 0
		for _, b := range boxes {
			out = append(out, lines[prev:b.top]...)
			if b.title != "" {
				out = append(out, strings.Repeat(" ", b.indent)+b.title)
			}
			for _, l := range b.inner(lines) {
				if l != "" {
					l = strings.Repeat(" ", b.indent) + l
				}
				out = append(out, l)
			}
			if b.label != "" {
				out = append(out, strings.Repeat(" ", b.indent)+b.label)
			}
			prev = b.bottom + 1
		}
		lines = append(out, lines[prev:]...)
	}
	return lines
}

// dialogOption matches a line of a choice list inside a dialog box.
var dialogOption = regexp.MustCompile(`(?i)^(?:[❯›>●○▸▶→*]\s*)?(?:\d+\.\s|\(?[yn]\)|(?:yes|no|allow|deny|approve|reject|skip|run)\b)`)

// isDialog reports whether b looks like a question the agent asks (a titled
// box, or one listing choices) rather than the input box.
func (b box) isDialog(lines []string) bool {
	if b.title != "" {
		return true
	}
	for _, l := range b.inner(lines) {
		if dialogOption.MatchString(strings.TrimSpace(l)) {
			return true
		}
	}
	return false
}

func firstRune(s string) (rune, int) {
	r, n := utf8.DecodeRuneInString(s)
	return r, n
}

func lastRune(s string) (rune, int) {
	r, n := utf8.DecodeLastRuneInString(s)
	return r, n
}

// dedentOutsideBoxes removes the indentation common to the non-blank lines
// that are not part of a box from those lines, so that text around a box
// lines up with the box's content once it is unboxed.
func dedentOutsideBoxes(lines []string) []string {
	inBox := make([]bool, len(lines))
	for _, b := range findBoxes(lines) {
		for i := b.top; i <= b.bottom; i++ {
			inBox[i] = true
		}
	}
	var outside []string
	for i, l := range lines {
		if !inBox[i] {
			outside = append(outside, l)
		}
	}
	outside = dedent(outside)
	out := make([]string, len(lines))
	k := 0
	for i, l := range lines {
		if inBox[i] {
			out[i] = l
		} else {
			out[i] = outside[k]
			k++
		}
	}
	return out
}
