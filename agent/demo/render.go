package demo

import (
	"strconv"
	"strings"
)

const (
	minBoxWidth = 20
	footer      = "  ? for shortcuts · /confirm · /exit"
	question    = "Run `rm -rf build`?"
)

// spinnerFrames cycle every spinnerInterval while the agent is thinking.
var spinnerFrames = []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

// boxReplacer maps the box-drawing characters the boxes use to ASCII, so that
// text outside a box can never be mistaken for a box line; control characters
// other than \n are made visible or expanded here too.
var boxReplacer = strings.NewReplacer(
	"╭", "+", "╮", "+", "╰", "+", "╯", "+", "│", "|", "─", "-",
	"\t", "    ",
)

// clean prepares free text (greeting, messages, replies, input) for display.
func clean(s string) string {
	s = boxReplacer.Replace(s)
	return strings.Map(func(r rune) rune {
		if r == '\n' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return '?'
		}
		return r
	}, s)
}

// runeWidth is the number of terminal columns r occupies. East Asian wide and
// emoji runes count 2; everything else counts 1 (combining marks included, so
// a row never comes out wider than the terminal in any emulator).
func runeWidth(r rune) int {
	switch {
	case r >= 0x1100 && r <= 0x115f,
		r >= 0x2e80 && r <= 0x303e,
		r >= 0x3041 && r <= 0x33ff,
		r >= 0x3400 && r <= 0x4dbf,
		r >= 0x4e00 && r <= 0x9fff,
		r >= 0xa000 && r <= 0xa4cf,
		r >= 0xac00 && r <= 0xd7a3,
		r >= 0xf900 && r <= 0xfaff,
		r >= 0xfe30 && r <= 0xfe4f,
		r >= 0xff00 && r <= 0xff60,
		r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f,
		r >= 0x1f900 && r <= 0x1f9ff,
		r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}

// textWidth is the display width of s.
func textWidth(s string) int {
	w := 0
	for _, r := range s {
		w += runeWidth(r)
	}
	return w
}

// wrapLine hard-wraps one line (no \n) into rows at most width columns wide.
// It always returns at least one row.
func wrapLine(s string, width int) []string {
	if width < 1 {
		width = 1
	}
	var rows []string
	var cur strings.Builder
	w := 0
	for _, r := range s {
		rw := runeWidth(r)
		if w+rw > width && w > 0 {
			rows = append(rows, cur.String())
			cur.Reset()
			w = 0
		}
		cur.WriteRune(r)
		w += rw
	}
	return append(rows, cur.String())
}

// prefixed lays out multi-line text: the first row is prefixed with first,
// every other row (wrapped or after a \n) with cont, which must be as wide as
// first. Rows never exceed width columns; trailing spaces are dropped.
func prefixed(text, first, cont string, width int) []string {
	avail := width - textWidth(first)
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, row := range wrapLine(line, avail) {
			p := cont
			if len(out) == 0 {
				p = first
			}
			out = append(out, strings.TrimRight(p+row, " "))
		}
	}
	return out
}

// pad right-pads s with spaces to width columns.
func pad(s string, width int) string {
	if n := width - textWidth(s); n > 0 {
		return s + strings.Repeat(" ", n)
	}
	return s
}

// boxRow is one content row of a box bw columns wide; content must fit in
// bw-4 columns.
func boxRow(content string, bw int) string {
	return "│ " + pad(content, bw-4) + " │"
}

// inputBox draws the prompt box holding the current input, and its footer.
func inputBox(input string, bw, width int) []string {
	lines := []string{"╭" + strings.Repeat("─", bw-2) + "╮"}
	for _, row := range prefixed(clean(input), "> ", "  ", bw-4) {
		lines = append(lines, boxRow(row, bw))
	}
	lines = append(lines, "╰"+strings.Repeat("─", bw-2)+"╯")
	return append(lines, prefixed(footer, "", "", width)...)
}

// confirmBox draws the permission prompt with the marker on option sel
// (0 = Yes, 1 = No).
func confirmBox(sel, bw int) []string {
	title := "─ Permission "
	lines := []string{"╭" + title + strings.Repeat("─", bw-2-textWidth(title)) + "╮"}
	for _, row := range prefixed(question, "", "", bw-4) {
		lines = append(lines, boxRow(row, bw))
	}
	options := []string{"1. Yes", "2. No"}
	for i, o := range options {
		marker := "  "
		if i == sel {
			marker = "❯ "
		}
		for _, row := range prefixed(o, marker, "  ", bw-4) {
			lines = append(lines, boxRow(row, bw))
		}
	}
	return append(lines, "╰"+strings.Repeat("─", bw-2)+"╯")
}

// spinnerLine is the "thinking" status line.
func spinnerLine(frame int, seconds int) string {
	f := spinnerFrames[frame%len(spinnerFrames)]
	return string(f) + " Thinking… (" + strconv.Itoa(seconds) + "s · esc to interrupt)"
}

// exchangeLines lays out one exchange of the transcript, each part followed
// by a blank line; the reply part is left out while there is no reply yet.
func exchangeLines(msg string, reply []string, width int) []string {
	lines := prefixed(clean(msg), "> ", "  ", width)
	lines = append(lines, "")
	if reply != nil {
		lines = append(lines, prefixed(clean(strings.Join(reply, "\n")), "● ", "  ", width)...)
		lines = append(lines, "")
	}
	return lines
}

// frameLines lays out the whole screen for the agent's current state.
func (a *agent) frameLines() []string {
	width := a.cols
	bw := max(width, minBoxWidth)
	lines := prefixed(clean(a.cfg.greeting), "", "", width)
	lines = append(lines, "")
	for _, ex := range a.history {
		lines = append(lines, exchangeLines(ex.msg, ex.reply, width)...)
	}
	switch a.mode {
	case modeThinking:
		lines = append(lines, exchangeLines(a.cur.msg, a.cur.reply, width)...)
		secs := int(a.now().Sub(a.thinkStart).Seconds())
		lines = append(lines, prefixed(spinnerLine(a.frame, secs), "", "", width)...)
	case modeConfirm:
		lines = append(lines, exchangeLines(a.cur.msg, a.cur.reply, width)...)
		lines = append(lines, confirmBox(a.sel, bw)...)
	default:
		if !a.cfg.noPrompt {
			lines = append(lines, inputBox(string(a.input), bw, width)...)
		}
	}
	return lines
}

// frame renders the complete redraw sequence for the current state. When the
// terminal height is known, only the lines that would remain visible are
// written, so a redraw never scrolls the terminal.
func (a *agent) render() string {
	lines := a.frameLines()
	if a.rows > 1 && len(lines) > a.rows-1 {
		lines = lines[len(lines)-(a.rows-1):]
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	return b.String()
}
