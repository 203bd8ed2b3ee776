// Package fuzzci runs every fuzz target of the module briefly, as part of
// `go test ./...`, so that CI fuzzes each one on every run (go test -fuzz
// takes one target of one package at a time, so this test starts one
// `go test -fuzz` after another).
//
// AGENTAPI_FUZZTIME sets each target's -fuzztime: a duration ("10s") or a
// number of executions ("1000x", the default: a count rather than a time,
// so that a slow start -- the PostgreSQL targets start a server -- cannot
// eat the fuzzing). .ci/fuzz runs this test with a longer one. A failure leaves the minimised input in
// <package>/testdata/fuzz/FuzzXxx/: commit it with the fix, and it runs as
// a regression case with the committed seeds, which plain `go test` runs.
package fuzzci

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var fuzzFunc = regexp.MustCompile(`^func (Fuzz[A-Za-z0-9_]*)\(f \*testing\.F\)`)

// target is one fuzz function and the package directory it is in.
type target struct{ dir, name string }

// targets finds every FuzzXxx in the module's test files.
func targets(t *testing.T, root string) []target {
	t.Helper()
	var out []target
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if m := fuzzFunc.FindStringSubmatch(sc.Text()); m != nil {
				rel, _ := filepath.Rel(root, filepath.Dir(path))
				out = append(out, target{dir: "./" + filepath.ToSlash(rel), name: m[1]})
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].dir != out[j].dir {
			return out[i].dir < out[j].dir
		}
		return out[i].name < out[j].name
	})
	return out
}

// TestFuzzTargets fuzzes each target for AGENTAPI_FUZZTIME.
func TestFuzzTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("fuzzing runs go test -fuzz once per target")
	}
	fuzztime := os.Getenv("AGENTAPI_FUZZTIME")
	if fuzztime == "" {
		fuzztime = "1000x"
	}
	if _, err := time.ParseDuration(fuzztime); err != nil && !regexp.MustCompile(`^[1-9][0-9]*x$`).MatchString(fuzztime) {
		t.Fatalf("AGENTAPI_FUZZTIME=%q: want a duration such as 10s or a count such as 500x", fuzztime)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ts := targets(t, root)
	if len(ts) < 20 {
		t.Fatalf("found %d fuzz targets; the module has at least 20: %v", len(ts), ts)
	}
	// One fuzzing worker while the rest of the suite runs alongside; a
	// dedicated run (.ci/fuzz, which sets AGENTAPI_FUZZTIME) uses them all.
	workers := "1"
	if os.Getenv("AGENTAPI_FUZZTIME") != "" {
		workers = strconv.Itoa(runtime.GOMAXPROCS(0))
	}
	for _, tg := range ts {
		start := time.Now()
		cmd := exec.Command("go", "test", "-run", "^$", "-fuzz", "^"+tg.name+"$", "-fuzztime", fuzztime,
			"-fuzzminimizetime", "5s", "-parallel", workers, tg.dir)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("%s %s: %v\n%s", tg.dir, tg.name, err, verdict(out.String()))
			continue
		}
		t.Logf("%s %s: %s (%v)", tg.dir, tg.name, lastProgress(out.String()), time.Since(start).Round(100*time.Millisecond))
	}
}

var progress = regexp.MustCompile(`^fuzz: elapsed: .*, (execs: |gathering baseline)`)

// lastProgress is the last "fuzz: elapsed: ..., execs: ..." line.
func lastProgress(out string) string {
	last := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fuzz: elapsed: ") && strings.Contains(l, "execs: ") {
			last = strings.TrimPrefix(l, "fuzz: ")
		}
	}
	return last
}

// verdict drops the progress lines, keeping go test's verdict and the
// failing input.
func verdict(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !progress.MatchString(l) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
