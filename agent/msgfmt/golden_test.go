package msgfmt

import (
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Golden screens, all written for this project:
//
//	testdata/format/<agent>/<case>/screen.txt   the changed region handed to FormatMessage
//	testdata/format/<agent>/<case>/user.txt     the user's message (one trailing newline dropped)
//	testdata/format/<agent>/<case>/expected.txt FormatMessage's result (plus one newline)
//	testdata/format/<agent>/<case>/no_tools.txt optional: RemoveToolCalls's message
//	testdata/format/<agent>/<case>/tools.txt    optional: the removed blocks, "---" between them
//	testdata/ready/<agent>/ready/*.txt          screens IsReady must accept
//	testdata/ready/<agent>/not_ready/*.txt      screens IsReady must refuse
//
// `go test ./agent/msgfmt -run Golden -update` rewrites expected.txt,
// no_tools.txt and tools.txt from the current output; the committed files
// were checked by hand.
//
// What a reader sees of a confirmation dialog: the question and its
// choices, without the frame. The API client must be able to tell what the
// agent asks and which answers it offers, so for every agent the dialog's
// title, text and options stay in the reply while box-drawing borders,
// goose's "◆ │ └" bars and footers under the dialog go.
var update = flag.Bool("update", false, "rewrite the golden expected files from the current output")

// requiredCases are the cases every agent type must have (custom has no
// spinner or dialog, so only the first two).
var requiredCases = []string{"first_reply", "multi_line_input", "thinking", "confirmation"}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func subdirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func TestFormatGolden(t *testing.T) {
	root := filepath.Join("testdata", "format")
	for _, agent := range subdirs(t, root) {
		typ, err := ParseAgentType(agent)
		if err != nil {
			t.Fatalf("testdata/format/%s: %v", agent, err)
		}
		for _, name := range subdirs(t, filepath.Join(root, agent)) {
			dir := filepath.Join(root, agent, name)
			t.Run(agent+"/"+name, func(t *testing.T) {
				screen := readFile(t, filepath.Join(dir, "screen.txt"))
				user := strings.TrimSuffix(readFile(t, filepath.Join(dir, "user.txt")), "\n")
				got := FormatMessage(typ, screen, user)
				checkClean(t, got, screen)

				expPath := filepath.Join(dir, "expected.txt")
				if *update {
					writeFile(t, expPath, got+"\n")
				} else if want := strings.TrimSuffix(readFile(t, expPath), "\n"); got != want {
					t.Errorf("FormatMessage mismatch\n--- got ---\n%s\n--- want ---\n%s", got, want)
				}

				noToolsPath := filepath.Join(dir, "no_tools.txt")
				if _, err := os.Stat(noToolsPath); err != nil {
					return
				}
				msg, calls := RemoveToolCalls(typ, got)
				checkClean(t, msg, screen)
				toolsPath := filepath.Join(dir, "tools.txt")
				gotTools := strings.Join(calls, "\n---\n")
				if *update {
					writeFile(t, noToolsPath, msg+"\n")
					writeFile(t, toolsPath, gotTools+"\n")
					return
				}
				if want := strings.TrimSuffix(readFile(t, noToolsPath), "\n"); msg != want {
					t.Errorf("RemoveToolCalls message mismatch\n--- got ---\n%s\n--- want ---\n%s", msg, want)
				}
				if want := strings.TrimSuffix(readFile(t, toolsPath), "\n"); gotTools != want {
					t.Errorf("RemoveToolCalls calls mismatch\n--- got ---\n%s\n--- want ---\n%s", gotTools, want)
				}
			})
		}
	}
}

// checkClean checks the properties every formatted message has: no
// trailing white space, no blank first or last line, and every line's text
// present in the screen it came from.
func checkClean(t *testing.T, got, screen string) {
	t.Helper()
	if got == "" {
		return
	}
	lines := strings.Split(got, "\n")
	if isBlank(lines[0]) || isBlank(lines[len(lines)-1]) {
		t.Errorf("leading or trailing blank line in %q", got)
	}
	for i, l := range lines {
		if strings.TrimRight(l, " \t") != l {
			t.Errorf("line %d has trailing white space: %q", i+1, l)
		}
		if !strings.Contains(screen, strings.TrimSpace(l)) {
			t.Errorf("line %d is not on the screen: %q", i+1, l)
		}
	}
}

func TestReadyGolden(t *testing.T) {
	root := filepath.Join("testdata", "ready")
	for _, agent := range subdirs(t, root) {
		typ, err := ParseAgentType(agent)
		if err != nil {
			t.Fatalf("testdata/ready/%s: %v", agent, err)
		}
		for _, state := range []string{"ready", "not_ready"} {
			dir := filepath.Join(root, agent, state)
			files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				t.Run(agent+"/"+state+"/"+filepath.Base(f), func(t *testing.T) {
					if got, want := IsReady(typ, readFile(t, f)), state == "ready"; got != want {
						t.Errorf("IsReady(%s, %s) = %v, want %v", typ, f, got, want)
					}
				})
			}
		}
	}
}

// TestGoldenCoverage makes sure every agent type has its golden cases.
func TestGoldenCoverage(t *testing.T) {
	for _, typ := range AgentTypes() {
		cases := requiredCases
		if typ == AgentCustom {
			cases = cases[:2]
		}
		for _, c := range cases {
			if _, err := os.Stat(filepath.Join("testdata", "format", string(typ), c, "expected.txt")); err != nil {
				t.Errorf("%s: missing format case %s: %v", typ, c, err)
			}
		}
		for _, state := range []string{"ready", "not_ready"} {
			if _, err := os.Stat(filepath.Join("testdata", "ready", string(typ), state, "screen.txt")); err != nil {
				t.Errorf("%s: missing ready screen %s: %v", typ, state, err)
			}
		}
	}
	// At least some screens carry the VT's padding to 80 columns.
	padded := 0
	for _, typ := range AgentTypes() {
		b, err := os.ReadFile(filepath.Join("testdata", "format", string(typ), "first_reply", "screen.txt"))
		if err == nil && strings.Contains(string(b), "                    \n") {
			padded++
		}
	}
	if padded < len(AgentTypes())/2 {
		t.Errorf("only %d first_reply screens are padded", padded)
	}
}
