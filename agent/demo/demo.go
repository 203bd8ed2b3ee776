package demo

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

const (
	defaultThink    = 400 * time.Millisecond
	defaultGreeting = "Demo agent ready. Type a message."
)

// config holds the parsed command line.
type config struct {
	think     time.Duration
	greeting  string
	script    [][]string // reply -> segments separated by [[pause]]
	noPrompt  bool
	exitAfter int
}

// Main runs the demo agent on the terminal in/out (normally os.Stdin/os.Stdout,
// a pty). args are the flags after `demo-agent`. Returns the exit code.
//
// Flags:
//
//	--think DURATION  how long the spinner shows before replying (default 400ms)
//	--greeting TEXT   first line of the screen
//	--script FILE     replies separated by lines containing only ---; the Nth
//	                  message gets the Nth reply, then messages are echoed. A
//	                  line [[pause]] inside a reply shows the part before it and
//	                  keeps thinking for --think before showing the rest.
//	--no-prompt       never draw the input box (an agent that never gets ready)
//	--exit-after N    exit 0 after N replies (0 = never)
//
// Exit codes: 0 for /exit, Ctrl-D, --exit-after and end of input; 130 for
// Ctrl-C on empty input (or SIGINT); 128+n for signal n (SIGTERM, SIGHUP);
// 2 for bad flags or an unreadable script.
func Main(args []string, in *os.File, out *os.File) int {
	cfg, code, ok := parseFlags(args, os.Stderr)
	if !ok {
		return code
	}
	return run(cfg, in, out)
}

// parseFlags parses the command line; when it returns !ok, Main exits with code.
func parseFlags(args []string, stderr io.Writer) (config, int, bool) {
	fs := flag.NewFlagSet("demo-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	think := fs.Duration("think", defaultThink, "how long the spinner shows before replying")
	greeting := fs.String("greeting", defaultGreeting, "text of the first line")
	script := fs.String("script", "", "file of replies separated by lines containing only ---")
	noPrompt := fs.Bool("no-prompt", false, "never draw the input box")
	exitAfter := fs.Int("exit-after", 0, "exit 0 after `N` replies (0 = never)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, 0, false
		}
		return config{}, 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo-agent: unexpected argument %q\n", fs.Arg(0))
		return config{}, 2, false
	}
	if *think < 0 || *exitAfter < 0 {
		fmt.Fprintln(stderr, "demo-agent: --think and --exit-after must not be negative")
		return config{}, 2, false
	}
	cfg := config{think: *think, greeting: *greeting, noPrompt: *noPrompt, exitAfter: *exitAfter}
	if *script != "" {
		data, err := os.ReadFile(*script)
		if err != nil {
			fmt.Fprintf(stderr, "demo-agent: %v\n", err)
			return config{}, 2, false
		}
		cfg.script = parseScript(string(data))
	}
	return cfg, 0, true
}

// parseScript splits a script into replies (separated by lines containing
// only ---) and each reply into segments (separated by lines containing only
// [[pause]]). Blank lines around replies and segments are dropped, and so is
// an empty last reply (a script ending with ---).
func parseScript(data string) [][]string {
	var replies [][]string
	var segs []string
	var cur []string
	endSeg := func() {
		segs = append(segs, trimBlankLines(cur))
		cur = nil
	}
	endReply := func() {
		endSeg()
		replies = append(replies, segs)
		segs = nil
	}
	for _, line := range strings.Split(normalizeNewlines(data), "\n") {
		switch strings.TrimSpace(line) {
		case "---":
			endReply()
		case "[[pause]]":
			endSeg()
		default:
			cur = append(cur, line)
		}
	}
	endReply()
	if last := replies[len(replies)-1]; len(last) == 1 && last[0] == "" {
		replies = replies[:len(replies)-1]
	}
	return replies
}

// trimBlankLines joins lines after dropping blank ones at both ends.
func trimBlankLines(lines []string) string {
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}
