package msgfmt

import (
	"errors"
	"strings"
	"testing"
)

func TestAgentTypes(t *testing.T) {
	types := AgentTypes()
	if len(types) != 13 {
		t.Fatalf("AgentTypes() has %d types, want 13: %v", len(types), types)
	}
	seen := map[AgentType]bool{}
	for _, typ := range types {
		if seen[typ] {
			t.Errorf("duplicate type %q", typ)
		}
		seen[typ] = true
		if !typ.Valid() {
			t.Errorf("%q is not Valid", typ)
		}
	}
	types[0] = "changed"
	if AgentTypes()[0] != AgentClaude {
		t.Error("AgentTypes returned its internal slice")
	}
	if AgentType("nope").Valid() {
		t.Error(`"nope" is Valid`)
	}
}

func TestParseAgentType(t *testing.T) {
	for _, typ := range AgentTypes() {
		for _, s := range []string{string(typ), strings.ToUpper(string(typ)), " " + string(typ) + "\n"} {
			got, err := ParseAgentType(s)
			if err != nil || got != typ {
				t.Errorf("ParseAgentType(%q) = %q, %v; want %q", s, got, err, typ)
			}
		}
	}
	aliases := map[string]AgentType{
		"cursor-agent": AgentCursor,
		"Cursor-Agent": AgentCursor,
		"q":            AgentAmazonQ,
		"Q":            AgentAmazonQ,
		"claude-code":  AgentClaude,
		"CLAUDE-CODE":  AgentClaude,
	}
	for s, want := range aliases {
		if got, err := ParseAgentType(s); err != nil || got != want {
			t.Errorf("ParseAgentType(%q) = %q, %v; want %q", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "claud", "kiro", "claude code", "q-chat", "echo2"} {
		got, err := ParseAgentType(bad)
		if err == nil {
			t.Errorf("ParseAgentType(%q) = %q, want an error", bad, got)
			continue
		}
		if !errors.Is(err, ErrUnknownAgentType) {
			t.Errorf("ParseAgentType(%q) error %v does not wrap ErrUnknownAgentType", bad, err)
		}
		for _, typ := range AgentTypes() {
			if !strings.Contains(err.Error(), string(typ)) {
				t.Errorf("ParseAgentType(%q) error %q does not list %q", bad, err, typ)
			}
		}
	}
}

func TestGuessAgentType(t *testing.T) {
	cases := map[string]AgentType{
		"claude":                          AgentClaude,
		"/usr/local/bin/claude":           AgentClaude,
		"/home/dev/.npm-global/bin/codex": AgentCodex,
		"goose":                           AgentGoose,
		"aider":                           AgentAider,
		"gemini":                          AgentGemini,
		"gemini-cli":                      AgentGemini,
		"copilot":                         AgentCopilot,
		"amp":                             AgentAmp,
		"cursor-agent":                    AgentCursor,
		"/opt/cursor/cursor-agent":        AgentCursor,
		"auggie":                          AgentAuggie,
		"q":                               AgentAmazonQ,
		"/usr/bin/q":                      AgentAmazonQ,
		"amazonq":                         AgentAmazonQ,
		"opencode":                        AgentOpencode,
		`C:\Tools\claude.exe`:             AgentClaude,
		"CLAUDE":                          AgentClaude,
		"claude-code":                     AgentClaude,
		// The demo agent is chosen elsewhere; /bin/echo is not it.
		"echo":      AgentCustom,
		"/bin/echo": AgentCustom,
		"custom":    AgentCustom,
		"bash":      AgentCustom,
		"python3":   AgentCustom,
		"":          AgentCustom,
		"/":         AgentCustom,
		"claude2":   AgentCustom,
	}
	for argv0, want := range cases {
		if got := GuessAgentType(argv0); got != want {
			t.Errorf("GuessAgentType(%q) = %q, want %q", argv0, got, want)
		}
	}
}

func TestTrimPadding(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"   \n  \n", ""},
		{"hello   ", "hello"},
		{"\n\n  hello  \n\n", "  hello"},
		{"a  \n\t\n\nb\t \n   ", "a\n\n\nb"},
		{"a\r\nb  \r\n", "a\nb"},
		{"  indented\n    more  ", "  indented\n    more"},
	}
	for _, c := range cases {
		if got := TrimPadding(c.in); got != c.want {
			t.Errorf("TrimPadding(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// pad pads every line of s with spaces to w columns, as the VT emulator
// does.
func pad(s string, w int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if n := len([]rune(l)); n < w {
			lines[i] = l + strings.Repeat(" ", w-n)
		}
	}
	return strings.Join(lines, "\n")
}

func TestEchoNotOverRemoved(t *testing.T) {
	cases := []struct {
		name        string
		typ         AgentType
		user        string
		screen      string
		want        string
		description string
	}{
		{
			name:   "reply repeats the whole input",
			typ:    AgentClaude,
			user:   "deploy the app",
			screen: "> deploy the app\n\n● deploy the app\n  is done.\n",
			want:   "● deploy the app\n  is done.",
		},
		{
			name:   "reply starts with a word of the input, no echo shown",
			typ:    AgentClaude,
			user:   "deploy",
			screen: "● deploy\n\n  Which environment?\n",
			want:   "● deploy\n\n  Which environment?",
		},
		{
			name:   "bare word without the prompt is not an echo",
			typ:    AgentAider,
			user:   "yes",
			screen: "yes\nThe change is applied.\n",
			want:   "yes\nThe change is applied.",
		},
		{
			name:   "partial echo is left alone",
			typ:    AgentClaude,
			user:   "run the tests and report failures",
			screen: "> run the tests\n\n● All tests pass.\n",
			want:   "> run the tests\n\n● All tests pass.",
		},
		{
			name:   "echo only near the top",
			typ:    AgentEcho,
			user:   "yes",
			screen: "● Echo: something\n\n\n\n> yes\n",
			want:   "Echo: something\n\n\n\n> yes",
		},
		{
			name:   "short scrolled suffix is not enough",
			typ:    AgentClaude,
			user:   "please fix the flaky test",
			screen: "flaky test\n\n● Which one?\n",
			want:   "flaky test\n\n● Which one?",
		},
		{
			name:   "agent text equal to a later input line stays",
			typ:    AgentCodex,
			user:   "first\nsecond",
			screen: "› first\n  second\n\n• second\n",
			want:   "• second",
		},
		{
			name:   "empty input removes nothing",
			typ:    AgentClaude,
			user:   "  \n ",
			screen: "> \n\n● Hello.\n",
			want:   ">\n\n● Hello.",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := FormatMessage(c.typ, pad(c.screen, 80), c.user); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// hardWrap splits s into rows of w runes, as a terminal wraps a line that
// is longer than its width.
func hardWrap(s string, w int) []string {
	var rows []string
	r := []rune(s)
	for len(r) > w {
		rows = append(rows, string(r[:w]))
		r = r[w:]
	}
	return append(rows, string(r))
}

const longInput = "Refactor the session store so that expired sessions are evicted lazily on " +
	"read instead of by the background sweeper goroutine, keep the public API of " +
	"store.Get and store.Put unchanged, add a benchmark for Get under contention, and " +
	"make sure the existing tests in internal/session still pass with -race enabled."

func TestWrappedEchoAtWidth80(t *testing.T) {
	if len(longInput) < 240 {
		t.Fatal("input too short to wrap several times")
	}
	// A terminal wraps "> " + input every 80 columns, cutting words.
	hard := strings.Join(hardWrap("> "+longInput, 80), "\n")
	for _, typ := range []AgentType{AgentClaude, AgentEcho, AgentAider, AgentGemini, AgentCustom} {
		screen := hard + "\n\n● Done: the sweeper is gone and the benchmark is in.\n"
		got := FormatMessage(typ, pad(screen, 80), longInput)
		want := "● Done: the sweeper is gone and the benchmark is in."
		if typ == AgentEcho {
			want = strings.TrimPrefix(want, "● ")
		}
		if got != want {
			t.Errorf("%s, hard-wrapped echo: got\n%s\nwant\n%s", typ, got, want)
		}
	}

	// The agent word-wraps itself, indenting continuation lines.
	var soft []string
	line := "> "
	for _, w := range strings.Fields(longInput) {
		if len(line)+1+len(w) > 80 {
			soft = append(soft, line)
			line = "  " + w
			continue
		}
		if line == "> " {
			line += w
		} else {
			line += " " + w
		}
	}
	soft = append(soft, line)
	screen := strings.Join(soft, "\n") + "\n\n● On it.\n\n" +
		"╭" + strings.Repeat("─", 78) + "╮\n│ >" + strings.Repeat(" ", 76) + "│\n╰" + strings.Repeat("─", 78) + "╯\n"
	if got := FormatMessage(AgentClaude, pad(screen, 80), longInput); got != "● On it." {
		t.Errorf("soft-wrapped echo: got\n%s", got)
	}

	// Cursor shows the input in a box, wrapped inside the frame.
	var boxed []string
	boxed = append(boxed, "┌"+strings.Repeat("─", 78)+"┐")
	for _, r := range hardWrap(longInput, 76) {
		boxed = append(boxed, "│ "+r+strings.Repeat(" ", 76-len([]rune(r)))+" │")
	}
	boxed = append(boxed, "└"+strings.Repeat("─", 78)+"┘", "", "  Done.")
	if got := FormatMessage(AgentCursor, strings.Join(boxed, "\n"), longInput); got != "Done." {
		t.Errorf("boxed echo: got\n%s", got)
	}

	// The start of the echo scrolled off the top of the screen.
	rows := hardWrap("> "+longInput, 80)
	screen = strings.Join(rows[2:], "\n") + "\n\n● Done.\n"
	if got := FormatMessage(AgentClaude, screen, longInput); got != "● Done." {
		t.Errorf("scrolled echo: got\n%s", got)
	}
}

func TestFormatMessageNoPadding(t *testing.T) {
	screen := pad("\n\n> hi\n\n   reply line one\n\n   reply line two\n\n\n", 80)
	for _, typ := range AgentTypes() {
		got := FormatMessage(typ, screen, "hi")
		checkClean(t, got, screen)
		if !strings.Contains(got, "reply line one") || !strings.Contains(got, "reply line two") {
			t.Errorf("%s: reply lost: %q", typ, got)
		}
	}
}

func TestFormatMessageUnknownTypeIsCustom(t *testing.T) {
	screen := "$ ls\nREADME.md  go.mod\n$ \n"
	if got, want := FormatMessage("nope", screen, "ls"), FormatMessage(AgentCustom, screen, "ls"); got != want {
		t.Errorf("unknown type: %q, custom: %q", got, want)
	}
	if got := FormatMessage(AgentCustom, screen, "ls"); got != "README.md  go.mod" {
		t.Errorf("custom: %q", got)
	}
}

func TestIsReadyEmptyScreen(t *testing.T) {
	for _, typ := range AgentTypes() {
		for _, s := range []string{"", "\n\n", pad("\n\n\n", 80)} {
			if IsReady(typ, s) {
				t.Errorf("IsReady(%s, %q) = true", typ, s)
			}
		}
	}
	if !IsReady(AgentCustom, "anything") || !IsReady("unknown", "anything") {
		t.Error("custom: a non-empty screen is ready")
	}
}

func TestRemoveToolCallsOtherAgents(t *testing.T) {
	msg := "● Bash(ls)\n  ⎿  a\n\n• Ran ls\n  └ a\n\n✓ Read go.mod\n\nDone."
	for _, typ := range AgentTypes() {
		switch typ {
		case AgentClaude, AgentCodex, AgentCopilot, AgentAmp:
			continue
		}
		got, calls := RemoveToolCalls(typ, msg)
		if got != msg || calls != nil {
			t.Errorf("%s: RemoveToolCalls changed the message: %q, %q", typ, got, calls)
		}
	}
}

func TestRemoveToolCalls(t *testing.T) {
	cases := []struct {
		typ   AgentType
		in    string
		want  string
		calls []string
	}{
		{
			typ:  AgentClaude,
			in:   "● Done.\n\n● Fixed it (see the diff).",
			want: "● Done.\n\n● Fixed it (see the diff).",
		},
		{
			typ:   AgentClaude,
			in:    "● Bash(ls)\n  ⎿  a\n\n     b\n● Two files.",
			want:  "● Two files.",
			calls: []string{"● Bash(ls)\n  ⎿  a\n\n     b"},
		},
		{
			typ:   AgentClaude,
			in:    "● Looking.\n\n● Update Todos\n  ⎿  ☒ Read the code\n     ☐ Fix the bug\n\n● Found it.",
			want:  "● Looking.\n\n● Found it.",
			calls: []string{"● Update Todos\n  ⎿  ☒ Read the code\n     ☐ Fix the bug"},
		},
		{
			typ:   AgentClaude,
			in:    "● Checking.\n\n⏺ github - search_code (MCP)(query: \"ErrNoRows\")\n  ⎿  3 results",
			want:  "● Checking.",
			calls: []string{"⏺ github - search_code (MCP)(query: \"ErrNoRows\")\n  ⎿  3 results"},
		},
		{
			typ:  AgentCodex,
			in:   "• Running the tests now.\n\n• Ran go test ./...\n  └ ok  example.com/app  0.01s\n\n• All green.",
			want: "• Running the tests now.\n\n• All green.",
			calls: []string{
				"• Ran go test ./...\n  └ ok  example.com/app  0.01s",
			},
		},
		{
			typ:   AgentCopilot,
			in:    "● Checking.\n\n● List directory src\n  └ 12 files found\n\n● Done.",
			want:  "● Checking.\n\n● Done.",
			calls: []string{"● List directory src\n  └ 12 files found"},
		},
		{
			typ:   AgentAmp,
			in:    "⋯ Bash make lint",
			want:  "",
			calls: []string{"⋯ Bash make lint"},
		},
	}
	for _, c := range cases {
		got, calls := RemoveToolCalls(c.typ, c.in)
		if got != c.want {
			t.Errorf("%s %q: message %q, want %q", c.typ, c.in, got, c.want)
		}
		if strings.Join(calls, "|") != strings.Join(c.calls, "|") || (calls == nil) != (c.calls == nil) {
			t.Errorf("%s %q: calls %q, want %q", c.typ, c.in, calls, c.calls)
		}
	}
}

func TestUnboxKeepsTables(t *testing.T) {
	table := "┌────┬────┐\n│ a  │ b  │\n└────┴────┘"
	if got := FormatMessage(AgentGemini, "> x\n\n"+table+"\n", "x"); got != table {
		t.Errorf("table changed:\n%s", got)
	}
}
