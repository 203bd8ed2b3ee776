package msgfmt

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// fuzzType maps a fuzzed byte to an agent type; the values past the known
// types are names msgfmt does not know (treated as custom).
func fuzzType(b uint8) AgentType {
	all := AgentTypes()
	if int(b)%(len(all)+1) == len(all) {
		return "unknown-agent"
	}
	return all[int(b)%(len(all)+1)]
}

func typeIndex(t AgentType) uint8 {
	return uint8(slices.Index(AgentTypes(), t))
}

// addGoldenScreens adds every golden screen of testdata/ as a seed: the
// format cases with their user input, the ready and not-ready screens
// with an empty one.
func addGoldenScreens(f *testing.F) {
	f.Helper()
	formats, _ := filepath.Glob(filepath.Join("testdata", "format", "*", "*", "screen.txt"))
	readies, _ := filepath.Glob(filepath.Join("testdata", "ready", "*", "*", "*.txt"))
	if len(formats) == 0 || len(readies) == 0 {
		f.Fatal("no golden screens in testdata/")
	}
	for _, path := range append(formats, readies...) {
		rel, _ := filepath.Rel("testdata", path)
		typ, err := ParseAgentType(strings.Split(rel, string(filepath.Separator))[1])
		if err != nil {
			f.Fatal(err)
		}
		screen, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		user, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "user.txt"))
		f.Add(typeIndex(typ), string(screen), strings.TrimSuffix(string(user), "\n"))
	}
}

// nonSpaceRunes counts the runes of s that are not white space.
func nonSpaceRunes(s string) map[rune]int {
	m := map[rune]int{}
	for _, r := range s {
		if !unicode.IsSpace(r) {
			m[r]++
		}
	}
	return m
}

// checkOnlyRemoves checks what every function here promises of its
// result: no line with trailing spaces, tabs or carriage returns, no blank
// first or last line, valid UTF-8 when the input is, and nothing that was
// not in the input: no character occurs more often than in it, and every
// line, trimmed, is a substring of it. Unless exact, a line may instead
// be the words of one input line, in order, with what separated them
// dropped: a box title ("╭─ Edit ─ main.go ─╮" is "Edit main.go").
func checkOnlyRemoves(t *testing.T, what, got, input string, exact bool) {
	t.Helper()
	if got == "" {
		return
	}
	lines := strings.Split(got, "\n")
	if isBlank(lines[0]) || isBlank(lines[len(lines)-1]) {
		t.Fatalf("%s: leading or trailing blank line in %q", what, got)
	}
	for i, l := range lines {
		if strings.TrimRight(l, " \t\r") != l {
			t.Fatalf("%s: line %d has trailing white space: %q", what, i+1, l)
		}
		if tl := strings.TrimSpace(l); !strings.Contains(input, tl) && (exact || !wordsOfOneLine(tl, input)) {
			t.Fatalf("%s: line %d %q is not in the input %q", what, i+1, tl, input)
		}
	}
	if utf8.ValidString(input) && !utf8.ValidString(got) {
		t.Fatalf("%s: invalid UTF-8 %q from valid input", what, got)
	}
	in := nonSpaceRunes(input)
	for r, n := range nonSpaceRunes(got) {
		if n > in[r] {
			t.Fatalf("%s: %q occurs %d times in the result, %d in the input", what, r, n, in[r])
		}
	}
}

// wordsOfOneLine reports whether the words of l occur, in order and
// without overlapping, in one line of input.
func wordsOfOneLine(l, input string) bool {
	words := strings.Fields(l)
	for _, in := range strings.Split(input, "\n") {
		rest, ok := in, true
		for _, w := range words {
			i := strings.Index(rest, w)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(w):]
		}
		if ok {
			return true
		}
	}
	return false
}

// FuzzFormatMessage formats arbitrary screens as each agent type's reply
// to an arbitrary user message. It must never panic, and only removes:
// the result is clean (no padding, no blank ends) and holds no text that
// was not on the screen. Padding the screen's lines (what the terminal
// does) changes nothing.
func FuzzFormatMessage(f *testing.F) {
	addGoldenScreens(f)
	f.Add(uint8(0), "> hi\n\n● Hello\n\n╭─ Title ─╮\n│ > │\n╰─────────╯", "hi")
	f.Add(uint8(0), "╭─ A  B ─ C ─╮\n│ 1. Yes      │\n╰─────────────╯", "")
	f.Add(uint8(1), "( O)> x\n◆ Question\n│ ● yes\n└ done", "x")
	f.Add(uint8(3), "› q\n• Ran ls\n  └ a\n\n› ", "q")
	f.Add(uint8(11), "$ abc\nout\n$", "abc")
	f.Add(uint8(12), "> hi\n● hi back\n  more\n╭──────────╮\n│ >        │\n╰──────────╯", "hi")
	f.Fuzz(func(t *testing.T, typ uint8, changed, user string) {
		at := fuzzType(typ)
		got := FormatMessage(at, changed, user)
		checkOnlyRemoves(t, "FormatMessage("+string(at)+")", got, changed, false)
		padded := strings.ReplaceAll(changed, "\n", "   \n") + "\t "
		if again := FormatMessage(at, padded, user); again != got {
			t.Fatalf("FormatMessage(%s) differs with padded lines:\n%q\n%q", at, got, again)
		}
	})
}

// FuzzIsReady checks IsReady on arbitrary screens: no panic, terminal
// padding is irrelevant, a blank screen is never ready, and for custom
// agents (of which nothing is known) any other screen is.
func FuzzIsReady(f *testing.F) {
	addGoldenScreens(f)
	f.Fuzz(func(t *testing.T, typ uint8, screen, _ string) {
		at := fuzzType(typ)
		got := IsReady(at, screen)
		if trimmed := TrimPadding(screen); IsReady(at, trimmed) != got {
			t.Fatalf("IsReady(%s) changes when the padding is trimmed from %q", at, screen)
		}
		blank := strings.TrimSpace(screen) == ""
		if blank && got {
			t.Fatalf("IsReady(%s) accepts the blank screen %q", at, screen)
		}
		if (at == AgentCustom || !at.Valid()) && got == blank {
			t.Fatalf("IsReady(%s, %q) = %v", at, screen, got)
		}
	})
}

// FuzzTrimPadding: the result is the input's lines, a contiguous run of
// them, each without trailing spaces, tabs and carriage returns, without
// the blank lines at both ends; trimming again changes nothing.
func FuzzTrimPadding(f *testing.F) {
	for _, s := range []string{"", "\n", " a \n\n b\t\r\n  \n", "\r\n\r\nx\r\n", "\u00a0\nx\n\u00a0", "a\rb  "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := TrimPadding(s)
		checkOnlyRemoves(t, "TrimPadding", got, s, true)
		if TrimPadding(got) != got {
			t.Fatalf("TrimPadding is not idempotent on %q", s)
		}
		in := splitLines(s)
		if got == "" {
			for _, l := range in {
				if !isBlank(l) {
					t.Fatalf("TrimPadding(%q) dropped %q", s, l)
				}
			}
			return
		}
		out := strings.Split(got, "\n")
		for i := range in {
			if i+len(out) <= len(in) && slices.Equal(in[i:i+len(out)], out) {
				return
			}
		}
		t.Fatalf("TrimPadding(%q) = %q is not a run of its trimmed lines", s, got)
	})
}

// FuzzRemoveToolCalls: the message and the removed blocks together hold
// exactly the non-blank lines of the input, in order; the result is clean
// and only removes; nothing removed means the input comes back unchanged.
// It is checked on arbitrary text and, as the agent uses it, on what
// FormatMessage returns.
func FuzzRemoveToolCalls(f *testing.F) {
	f.Add(uint8(0), "Sure.\n\n● Bash(ls -la)\n  ⎿  a\n     b\n\nDone.", "")
	f.Add(uint8(0), "● Read(x)\n● Update Todos\n  ⎿  ok", "")
	f.Add(uint8(3), "• Ran go test ./...\n  └ ok\n\n• Running the tests now.", "")
	f.Add(uint8(3), "• Ran", "")
	f.Add(uint8(5), "✓ Read go.mod (15 lines)\n$ ls\n  ↪ a", "")
	f.Add(uint8(6), "✓ Bash go test\n  ok\n\ntext", "")
	addGoldenScreens(f)
	f.Fuzz(func(t *testing.T, typ uint8, text, user string) {
		at := fuzzType(typ)
		for _, msg := range []string{text, FormatMessage(at, text, user)} {
			got, calls := RemoveToolCalls(at, msg)
			if calls == nil {
				if got != msg {
					t.Fatalf("RemoveToolCalls(%s, %q) removed nothing but changed it to %q", at, msg, got)
				}
				continue
			}
			checkOnlyRemoves(t, "RemoveToolCalls("+string(at)+")", got, msg, true)
			var parts []string
			for _, c := range calls {
				if c == "" {
					t.Fatalf("RemoveToolCalls(%s, %q) returned an empty block", at, msg)
				}
				checkOnlyRemoves(t, "RemoveToolCalls("+string(at)+") block", c, msg, true)
				parts = append(parts, nonBlankLines(c)...)
			}
			parts = append(parts, nonBlankLines(got)...)
			want := nonBlankLines(msg)
			slices.Sort(parts)
			slices.Sort(want)
			if !slices.Equal(parts, want) {
				t.Fatalf("RemoveToolCalls(%s, %q) = %q and %q: the lines do not add up", at, msg, got, calls)
			}
		}
	})
}

func nonBlankLines(s string) []string {
	var out []string
	for _, l := range splitLines(s) {
		if !isBlank(l) {
			out = append(out, l)
		}
	}
	return out
}

// FuzzAgentType: ParseAgentType accepts only known types (or aliases) and
// reads their names back; GuessAgentType always returns a known type and
// never the demo agent.
func FuzzAgentType(f *testing.F) {
	for _, s := range []string{"claude", " Claude-Code ", "q", "cursor-agent", "echo", "custom", "", "/usr/local/bin/claude", `C:\bin\codex.exe`, "gemini-cli", "aider.js", "/bin/echo", "x/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if at, err := ParseAgentType(s); err == nil {
			if !at.Valid() {
				t.Fatalf("ParseAgentType(%q) = %q, not a valid type", s, at)
			}
			if again, err := ParseAgentType(string(at)); err != nil || again != at {
				t.Fatalf("ParseAgentType(%q) = %q, which reads back as %q, %v", s, at, again, err)
			}
		} else if at != "" {
			t.Fatalf("ParseAgentType(%q) failed (%v) but returned %q", s, err, at)
		}
		if g := GuessAgentType(s); !g.Valid() || g == AgentEcho {
			t.Fatalf("GuessAgentType(%q) = %q", s, g)
		}
	})
}
