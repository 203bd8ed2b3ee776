package demo

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseScript(t *testing.T) {
	data := "\nFirst reply\nline two\n\n[[pause]]\n\nmore\r\n---\nSecond\n  ---  \n\n---\nFourth\n---\n"
	want := [][]string{
		{"First reply\nline two", "more"},
		{"Second"},
		{""},
		{"Fourth"},
	}
	if got := parseScript(data); !reflect.DeepEqual(got, want) {
		t.Fatalf("parseScript = %q, want %q", got, want)
	}
	if got := parseScript("only"); !reflect.DeepEqual(got, [][]string{{"only"}}) {
		t.Fatalf("parseScript(only) = %q", got)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, _, ok := parseFlags(nil, io.Discard)
	if !ok || cfg.think != 400*time.Millisecond || cfg.greeting != "Demo agent ready. Type a message." || cfg.noPrompt || cfg.exitAfter != 0 || cfg.script != nil {
		t.Fatalf("defaults wrong: %+v", cfg)
	}
	cfg, _, ok = parseFlags([]string{"--think", "2s", "--greeting", "Hi", "--no-prompt", "--exit-after", "3"}, io.Discard)
	if !ok || cfg.think != 2*time.Second || cfg.greeting != "Hi" || !cfg.noPrompt || cfg.exitAfter != 3 {
		t.Fatalf("flags wrong: %+v", cfg)
	}
	for _, args := range [][]string{{"--think", "soon"}, {"--exit-after", "-1"}, {"--script", "/nonexistent/script"}, {"extra"}} {
		if _, code, ok := parseFlags(args, io.Discard); ok || code != 2 {
			t.Errorf("parseFlags(%q) = %d, %v; want 2, false", args, code, ok)
		}
	}
	if _, code, ok := parseFlags([]string{"-h"}, io.Discard); ok || code != 0 {
		t.Errorf("-h = %d, %v; want 0, false", code, ok)
	}
}

func TestPrefixedWrap(t *testing.T) {
	got := prefixed("abcdefgh\n\nxy", "> ", "  ", 6)
	want := []string{"> abcd", "  efgh", "", "  xy"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("prefixed = %q, want %q", got, want)
	}
	// Wide runes take two columns and are never split.
	got = prefixed("世界世", "", "", 5)
	if want := []string{"世界", "世"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("wide wrap = %q, want %q", got, want)
	}
}

func TestCleanRemovesBoxCharacters(t *testing.T) {
	got := clean("╭─│x│─╮\n╰╯\ttab\x1b[31m")
	want := "+-|x|-+\n++    tab?[31m"
	if got != want {
		t.Fatalf("clean = %q, want %q", got, want)
	}
}

// TestLayoutNeverLeaksBoxCharacters types box-drawing characters everywhere
// and checks that only box lines start with them, at several widths.
func TestLayoutNeverLeaksBoxCharacters(t *testing.T) {
	for _, width := range []int{5, 20, 33, 80} {
		a := &agent{
			cfg:  config{greeting: "╭── greeting ──╮"},
			now:  time.Now,
			cols: width,
			history: []exchange{
				{msg: "│ msg ╰─╯", reply: []string{"╭ reply ╮\n│"}},
			},
			input: []rune("│ input ─ with a fairly long line to wrap\nsecond"),
		}
		for _, m := range []mode{modeIdle, modeThinking, modeConfirm} {
			a.mode = m
			a.cur = exchange{msg: "─cur─", reply: []string{"│part│"}}
			lines := a.frameLines()
			bw := max(width, minBoxWidth)
			inBox := false
			for _, l := range lines {
				switch {
				case strings.HasPrefix(l, "╭"):
					inBox = true
				case strings.HasPrefix(l, "╰"):
					inBox = false
				case strings.HasPrefix(l, "│"):
					if !inBox || !strings.HasSuffix(l, "│") || textWidth(l) != bw {
						t.Errorf("width %d mode %d: bad box row %q", width, m, l)
					}
					inner := strings.TrimSuffix(strings.TrimPrefix(l, "│"), "│")
					if strings.ContainsAny(inner, "╭╮╰╯│─") {
						t.Errorf("width %d mode %d: box characters inside a box row %q", width, m, l)
					}
				default:
					if inBox || strings.ContainsAny(l, "╭╮╰╯│─") {
						t.Errorf("width %d mode %d: box characters in text line %q", width, m, l)
					}
					if textWidth(l) > width {
						t.Errorf("width %d mode %d: line wider than the terminal: %q", width, m, l)
					}
				}
			}
		}
	}
}
