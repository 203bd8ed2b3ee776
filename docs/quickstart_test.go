package docs

// The quickstart is tested by running it. quickstart.md marks the blocks
// this file relies on with an HTML comment on the line just before the
// opening fence (invisible when the page is rendered):
//
//   - <!-- test: serve --> marks the ```sh block that starts the server. It
//     holds one command, which must be the first command of README.md, and
//     it must be the first ```sh block of the page: the quickstart starts
//     where the README does. The test builds the package it names
//     (`go run ./cmd/agentapi serve` builds ./cmd/agentapi) and runs the
//     binary with the same arguments.
//   - <!-- test: local --> marks a ```sh block of the local section. All of
//     them run in order in one bash process under `set -euo pipefail`, so
//     shell variables and functions carry over from block to block, and the
//     first failing command fails the test, naming its block.
//     <!-- test: local, expect: TEXT --> also requires the block's standard
//     output to contain TEXT.
//   - Blocks without a marker (placeholders such as ADMIN_KEY=agk_..., the
//     Redis, Compose and Upstash sections) are not run. The Compose files
//     the docs name are checked to exist (TestDocsNameExistingFiles).
//
// The blocks address the server as localhost:3284, so that they can be
// pasted as they are. The test starts the server with PORT=0 (a free port,
// which it reads from the start-up log) and rewrites localhost:3284 to that
// port. The shell gets ADMIN_KEY, the key the server printed at its first
// start, as the reader does by hand. Every curl in a marked block must use
// -f (--fail), so that an error status fails its step.
//
// The server runs with HOME set to a fresh directory and an otherwise
// empty environment, so it uses the embedded defaults the section
// describes: no Redis, SQLite in ~/.local/share/agentapi. bash and curl are
// needed; without them the test skips, except with CI set, where it fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	line   int    // 1-based line of the opening fence
	lang   string // info string of the fence ("sh", "json", ...)
	marker string // "serve", "local", or "" when unmarked
	expect string // with marker "local": text its output must contain
	body   string
}

var testMarker = regexp.MustCompile(`^<!--\s*test:\s*([a-z]+)(?:\s*,\s*expect:\s*(.*?))?\s*-->$`)

// parseBlocks returns the fenced blocks of md with their markers. A marker
// that is not directly followed by a fence, or that names no known kind, is
// an error: a typo must not silently drop a block from the test.
func parseBlocks(md string) ([]docBlock, error) {
	var (
		blocks  []docBlock
		cur     *docBlock
		body    []string
		pending *docBlock // marker seen on the previous line
	)
	for i, line := range strings.Split(md, "\n") {
		n := i + 1
		trimmed := strings.TrimSpace(line)
		if cur != nil {
			if trimmed == "```" {
				cur.body = strings.Join(body, "\n")
				blocks = append(blocks, *cur)
				cur, body = nil, nil
				continue
			}
			body = append(body, line)
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			b := docBlock{line: n, lang: strings.TrimPrefix(trimmed, "```")}
			if pending != nil {
				b.marker, b.expect = pending.marker, pending.expect
				pending = nil
			}
			cur = &b
			continue
		}
		if pending != nil {
			return nil, fmt.Errorf("line %d: a test marker must be directly followed by a ``` fence", pending.line)
		}
		if m := testMarker.FindStringSubmatch(trimmed); m != nil {
			if m[1] != "serve" && m[1] != "local" {
				return nil, fmt.Errorf("line %d: unknown test marker %q (want serve or local)", n, m[1])
			}
			if m[1] == "serve" && m[2] != "" {
				return nil, fmt.Errorf("line %d: the serve marker takes no expect", n)
			}
			pending = &docBlock{line: n, marker: m[1], expect: m[2]}
		} else if strings.Contains(trimmed, "<!-- test") {
			return nil, fmt.Errorf("line %d: malformed test marker %q", n, trimmed)
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: code block never closed", cur.line)
	}
	if pending != nil {
		return nil, fmt.Errorf("line %d: test marker at the end of the file", pending.line)
	}
	return blocks, nil
}

func readBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseBlocks(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return blocks
}

// firstCommand is the first line of a shell block that is neither blank
// nor a comment.
func firstCommand(body string) string {
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return ""
}

// quickstartServe checks the serve block against README.md and returns its
// command.
func quickstartServe(t *testing.T) string {
	t.Helper()
	var readme string
	for _, b := range readBlocks(t, "../README.md") {
		if b.lang == "sh" {
			readme = firstCommand(b.body)
			break
		}
	}
	if readme == "" {
		t.Fatal("README.md has no ```sh block")
	}
	var first *docBlock
	var serves []docBlock
	for _, b := range readBlocks(t, "quickstart.md") {
		if b.lang == "sh" && first == nil {
			first = &b
		}
		if b.marker == "serve" {
			serves = append(serves, b)
		}
	}
	if len(serves) != 1 {
		t.Fatalf("quickstart.md has %d blocks marked <!-- test: serve -->, want 1", len(serves))
	}
	s := serves[0]
	if s.lang != "sh" || first == nil || first.line != s.line {
		t.Fatalf("quickstart.md: the serve block (line %d) must be the page's first ```sh block", s.line)
	}
	if got := strings.TrimSpace(s.body); got != readme {
		t.Fatalf("quickstart.md starts with %q (line %d); README.md's first command is %q: they must be the same",
			got, s.line, readme)
	}
	return readme
}

func TestQuickstartStartsWithTheREADMECommand(t *testing.T) {
	if cmd := quickstartServe(t); !strings.HasPrefix(cmd, "go run ./cmd/agentapi serve") {
		t.Fatalf("the start command %q does not run `agentapi serve` from this repository", cmd)
	}
}

// curlWord finds a curl invocation in a pipeline segment; failFlag, its
// -f (or --fail) option.
var (
	curlWord = regexp.MustCompile(`(^|[\s$(])curl(\s|$)`)
	failFlag = regexp.MustCompile(`(^|\s)(-[a-zA-Z]*f[a-zA-Z]*|--fail|--fail-with-body)(\s|$)`)
)

// logicalLines joins lines continued with a trailing backslash.
func logicalLines(body string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(body, "\n") {
		if strings.HasSuffix(l, `\`) {
			cur.WriteString(strings.TrimSuffix(l, `\`))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(l)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func localBlocks(t *testing.T) []docBlock {
	t.Helper()
	var local []docBlock
	for _, b := range readBlocks(t, "quickstart.md") {
		if b.marker != "local" {
			continue
		}
		if b.lang != "sh" {
			t.Errorf("quickstart.md line %d: a block marked local must be ```sh, not %q", b.line, b.lang)
		}
		for _, l := range logicalLines(b.body) {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			for _, seg := range strings.Split(l, "|") {
				if curlWord.MatchString(seg) && !failFlag.MatchString(seg) {
					t.Errorf("quickstart.md block at line %d: curl without -f/--fail, so an error status would pass: %s",
						b.line, strings.TrimSpace(seg))
				}
			}
		}
		local = append(local, b)
	}
	if len(local) < 5 {
		t.Fatalf("quickstart.md has %d blocks marked <!-- test: local -->; the local walk-through has more", len(local))
	}
	return local
}

func TestQuickstartLocalBlocksFailOnErrors(t *testing.T) {
	localBlocks(t)
}

// composeFiles returns the files given with -f/--file to `docker compose`
// (or docker-compose) anywhere in text, with the line each is on.
func composeFiles(text string) map[string]int {
	files := map[string]int{}
	clean := func(tok string) string { return strings.Trim(tok, "`'\",;:()") }
	for i, line := range strings.Split(text, "\n") {
		toks := strings.Fields(line)
		for j := 0; j < len(toks); j++ {
			k := j
			switch {
			case clean(toks[j]) == "docker-compose":
				k = j + 1
			case clean(toks[j]) == "docker" && j+1 < len(toks) && clean(toks[j+1]) == "compose":
				k = j + 2
			default:
				continue
			}
			// Global options come before the subcommand; -f after it
			// (`logs -f`) is something else.
			for ; k < len(toks); k++ {
				tok := clean(toks[k])
				switch {
				case tok == `\` || tok == "":
				case tok == "-f" || tok == "--file":
					if k+1 < len(toks) {
						files[clean(toks[k+1])] = i + 1
						k++
					}
				case strings.HasPrefix(tok, "--file="):
					files[strings.TrimPrefix(tok, "--file=")] = i + 1
				case tok == "--profile" || tok == "-p" || tok == "--project-name" || tok == "--env-file" || tok == "--project-directory":
					k++
				case strings.HasPrefix(tok, "-"):
				default:
					k = len(toks) // the subcommand: no more global options
				}
			}
			j = k
		}
	}
	return files
}

// TestDocsNameExistingFiles checks that every Compose file the
// documentation passes to `docker compose -f`, and every file it copies to
// .env, exists at the repository root, where the commands run.
func TestDocsNameExistingFiles(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, "../README.md")
	copyToEnv := regexp.MustCompile(`\bcp\s+(\S+)\s+\.env\b`)
	seen := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		named := composeFiles(string(b))
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range copyToEnv.FindAllStringSubmatch(line, -1) {
				named[m[1]] = i + 1
			}
		}
		for f, line := range named {
			seen++
			if _, err := os.Stat(filepath.Join("..", f)); err != nil {
				t.Errorf("%s line %d names %s, which is not at the repository root: %v", page, line, f, err)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no `docker compose -f` file found in the docs; the parser is broken")
	}
	qs, err := os.ReadFile("quickstart.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"docker-compose.multitenant.yml", "docker-compose.upstash.yml"} {
		if _, ok := composeFiles(string(qs))[f]; !ok {
			t.Errorf("quickstart.md never runs `docker compose -f %s`", f)
		}
	}
}

// needTools skips (or, with CI set, fails) when a program is missing.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the quickstart is for Unix shells")
	}
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed to run the quickstart (apt-get install %s)", name, name)
			}
			t.Skipf("%s not found; install it (apt-get install %s) to run the quickstart", name, name)
		}
	}
}

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is an `agentapi serve` started by startServer.
type server struct {
	port string        // the port it listens on
	key  string        // the admin key it printed
	home string        // its HOME
	log  *lockedBuffer // its output
}

// startServer builds the package the serve command names and runs it with a
// fresh HOME and PORT=0, until it has printed its key and listening address.
func startServer(t *testing.T, serveCmd string) server {
	t.Helper()
	f := strings.Fields(serveCmd)
	if len(f) < 3 || f[0] != "go" || f[1] != "run" {
		t.Fatalf("the serve command %q is not `go run <package> <args>`", serveCmd)
	}
	bin := filepath.Join(t.TempDir(), "agentapi")
	build := exec.Command("go", "build", "-o", bin, f[2])
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", f[2], err, out)
	}

	home := t.TempDir()
	srv := exec.Command(bin, f[3:]...)
	srv.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "PORT=0", "LOG_FORMAT=json"}
	log := &lockedBuffer{}
	srv.Stdout = log
	pr, pw := io.Pipe()
	srv.Stderr = pw
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		err := srv.Wait()
		pw.Close()
		exited <- err
	}()
	t.Cleanup(func() {
		// A clean stop also stops the agents the server started.
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil && !t.Failed() {
				t.Errorf("agentapi serve did not stop cleanly: %v\n%s", err, log)
			}
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-exited
			t.Errorf("agentapi serve did not stop within 30s of SIGTERM\n%s", log)
		}
	})

	type found struct{ port, key string }
	ready := make(chan found, 1)
	go func() {
		var fd found
		out := ready // nil once sent; the select below keeps reading ready
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.Write([]byte(line + "\n"))
			if strings.HasPrefix(line, "agk_") {
				fd.key = strings.TrimSpace(line)
			}
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "agentapi serve listening" {
				if _, p, err := net.SplitHostPort(rec.Addr); err == nil {
					fd.port = p
				}
			}
			if fd.port != "" && fd.key != "" && out != nil {
				out <- fd
				out = nil
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case fd := <-ready:
		return server{port: fd.port, key: fd.key, home: home, log: log}
	case err := <-exited:
		t.Fatalf("agentapi serve exited before it was ready: %v\n%s", err, log)
	case <-time.After(60 * time.Second):
		t.Fatalf("agentapi serve printed no key and no listening address within 60s\n%s", log)
	}
	return server{}
}

// TestQuickstartLocal runs the local section of quickstart.md, as written,
// against a real `agentapi serve`.
func TestQuickstartLocal(t *testing.T) {
	needTools(t, "bash", "curl")
	serveCmd := quickstartServe(t)
	blocks := localBlocks(t)
	if t.Failed() {
		return
	}
	srv := startServer(t, serveCmd)

	// What the section says the first start leaves in the data directory.
	dataDir := filepath.Join(srv.home, ".local", "share", "agentapi")
	if fi, err := os.Stat(dataDir); err != nil {
		t.Errorf("quickstart.md says the data directory is ~/.local/share/agentapi: %v", err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, quickstart.md says 0700", fi.Mode().Perm())
	}
	for _, f := range []string{"agentapi.db", "token_encryption_key"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Errorf("quickstart.md says the data directory holds %s: %v", f, err)
		}
	}

	const mark = "@@quickstart-block"
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for i, b := range blocks {
		fmt.Fprintf(&script, "printf '\\n%s %d@@\\n'; printf '\\n%s %d@@\\n' >&2\n", mark, i, mark, i)
		script.WriteString(strings.ReplaceAll(b.body, "localhost:3284", "localhost:"+srv.port))
		script.WriteString("\n")
	}
	fmt.Fprintf(&script, "printf '\\n%s end@@\\n'\n", mark)
	path := filepath.Join(t.TempDir(), "quickstart-local.sh")
	if err := os.WriteFile(path, []byte(script.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sh := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", path)
	// A HOME of its own keeps a ~/.curlrc from changing what curl does.
	sh.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "ADMIN_KEY=" + srv.key}
	var stdout, stderr bytes.Buffer
	sh.Stdout, sh.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := sh.Run()
	t.Logf("the %d local blocks of quickstart.md ran in %v", len(blocks), time.Since(start).Round(time.Millisecond))

	outs := splitByMark(stdout.String(), mark)
	errs := splitByMark(stderr.String(), mark)
	if runErr != nil || !strings.Contains(stdout.String(), mark+" end@@") {
		last := len(outs) - 1
		if last < 0 {
			t.Fatalf("the quickstart script did not start: %v\n%s", runErr, stderr.String())
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Errorf("timed out after 90s")
		}
		b := blocks[last]
		t.Fatalf("quickstart.md, block at line %d failed (%v):\n%s\n--- stdout:\n%s\n--- stderr:\n%s\n--- server log:\n%s",
			b.line, runErr, b.body, outs[last], errs[last], tail(srv.log.String(), 40))
	}
	for i, b := range blocks {
		if b.expect != "" && !strings.Contains(outs[i], b.expect) {
			t.Errorf("quickstart.md, block at line %d: output does not contain %q:\n%s\n--- stdout:\n%s\n--- stderr:\n%s",
				b.line, b.expect, b.body, outs[i], errs[i])
		}
	}
}

// splitByMark splits a script's output into the parts each block wrote.
func splitByMark(s, mark string) []string {
	re := regexp.MustCompile(`\n` + regexp.QuoteMeta(mark) + ` (\d+|end)@@\n`)
	locs := re.FindAllStringSubmatchIndex(s, -1)
	var out []string
	for i, loc := range locs {
		if s[loc[2]:loc[3]] == "end" {
			break
		}
		end := len(s)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		out = append(out, s[loc[1]:end])
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestPageLinksResolve checks the relative links of the quickstart,
// architecture and security pages, and of the README, which links to them.
func TestPageLinksResolve(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, page := range []string{"quickstart.md", "architecture.md", "security.md", "../README.md"} {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(page), target)); err != nil {
				t.Errorf("%s links to %s: %v", page, target, err)
			}
		}
	}
}
