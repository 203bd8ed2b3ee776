package usage_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/agentapi-mt/agentapi/usage"
)

// A killed process with a journal loses nothing: the instance restarted
// on the same journal pushes what the first had not, under the same
// instance name, and nothing twice.
func testJournalKillLosesNothing(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	path := filepath.Join(t.TempDir(), "usage.journal")
	killed := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	killed.Add("acme", "u", usage.Requests, 7)
	killed.Add("globex", "v", usage.Messages, 3)
	if err := killed.Push(ctx); err != nil {
		t.Fatal(err)
	}
	odd := "ü \"quoted\" <&>\n\\" // escaped in the journal's JSON
	killed.Add("globex", odd, usage.Messages, 2)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 125 {
				killed.Add("acme", "u", usage.Requests, 1)
			}
		})
	}
	wg.Wait()
	killed.Abandon()

	// While the journal's holder lives nobody else may use it: shown at
	// the end. The restarted instance takes it over.
	restarted := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	if restarted.Instance() != killed.Instance() {
		t.Fatalf("the restarted Recorder pushes as %q, the killed one as %q", restarted.Instance(), killed.Instance())
	}
	if _, err := usage.New(usage.Options{Store: b.instance(t), DB: db, Journal: path, PushInterval: -1, FlushInterval: -1}); err == nil {
		t.Fatal("a second Recorder opened a journal in use")
	}
	if err := restarted.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after the kill and restart", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 1007), row("globex", "v", usage.Messages, 3), row("globex", odd, usage.Messages, 2)})
	// A clean stop leaves nothing to replay.
	again := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	if st := again.Stats(); st.Unpushed != 0 {
		t.Fatalf("a journal closed cleanly replayed %d units", st.Unpushed)
	}
}

// A batch in flight when the process died is pushed again as the same
// batch: counted once whether the Store had applied it or not.
func testJournalInflightCountedOnce(t *testing.T, b backend) {
	for _, applied := range []bool{false, true} {
		ctx := testCtx(t)
		db := openSQLite(t)
		path := filepath.Join(t.TempDir(), "usage.journal")
		flaky := &flakyStore{Store: b.instance(t)}
		killed := newRecorder(t, flaky, db, usage.Options{Journal: path})
		killed.Add("acme", "u", usage.Requests, 5)
		if applied {
			flaky.failAfter.Store(1) // applied, but the answer was lost
		} else {
			flaky.failBefore.Store(1)
		}
		if err := killed.Push(ctx); err == nil {
			t.Fatal("the flaky push succeeded")
		}
		killed.Add("acme", "u", usage.Requests, 2) // after the batch: the next one
		killed.Abandon()
		restarted := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
		if err := restarted.Close(ctx); err != nil {
			t.Fatal(err)
		}
		wantRows(t, "SQL (batch applied before the kill: "+map[bool]string{true: "yes", false: "no"}[applied]+")",
			sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 7)})
	}
}

// The journal is rewritten once it grows past its bound, and keeps only
// what is not pushed; a torn last line is ignored and a corrupt one is an
// error naming the file.
func testJournalRewriteAndDamage(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	path := filepath.Join(t.TempDir(), "usage.journal")
	r := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	usage.SetJournalMaxSize(r, 2048)
	for i := range 200 {
		r.Add("acme", "u", usage.Requests, 1)
		if i%50 == 49 {
			if err := r.Push(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.Add("acme", "u", usage.Messages, 4) // not pushed
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > 4096 {
		t.Fatalf("journal of %v bytes after 200 counts with a 2 KiB bound: %v", fi.Size(), err)
	}
	r.Abandon()
	// A write cut short by a crash of the machine: the last line has no
	// newline.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"a":["acme","u","2030-01-01","requests",9`)
	f.Close()
	restarted := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	if err := restarted.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after rewrite and restart", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Messages, 4), row("acme", "u", usage.Requests, 200)})

	// A journal that cannot be read is moved aside, and a new one works.
	bad := filepath.Join(t.TempDir(), "bad.journal")
	os.WriteFile(bad, []byte("{\"a\":[\"acme\",\"u\",\"2030-01-01\",\"requests\",-3]}\n"), 0o600)
	db2 := openSQLite(t)
	fresh := newRecorder(t, b.instance(t), db2, usage.Options{Journal: bad})
	if moved, _ := filepath.Glob(bad + ".bad-*"); len(moved) != 1 {
		t.Fatalf("the unreadable journal was not moved aside: %v", moved)
	}
	fresh.Add("acme", "u", usage.Requests, 2)
	if err := fresh.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after a fresh journal", sqlRows(t, db2), []usage.Row{row("acme", "u", usage.Requests, 2)})
}

// A failed journal write leaves no torn line and marks the journal for a
// rewrite at the next push; while the Store is away the journal is kept
// to its bound by rewriting it summed. Either way a restart counts each
// count once.
func testJournalWriteFailureAndOutage(t *testing.T, b backend) {
	ctx := testCtx(t)
	db := openSQLite(t)
	path := filepath.Join(t.TempDir(), "usage.journal")
	flaky := &flakyStore{Store: b.instance(t)}
	r := newRecorder(t, flaky, db, usage.Options{Journal: path})
	usage.SetJournalMaxSize(r, 1024)
	r.Add("acme", "u", usage.Requests, 5)
	usage.BreakJournal(r) // its next writes fail
	r.Add("acme", "u", usage.Requests, 7)
	if err := r.Push(ctx); err != nil {
		t.Fatal(err)
	}
	r.Add("acme", "u", usage.Requests, 3) // the rewritten journal takes it
	// The Store goes away: 500 counts, a push failing every 50.
	flaky.failBefore.Store(1 << 20)
	for i := range 500 {
		r.Add("acme", "v", usage.Messages, 1)
		if i%50 == 49 {
			if err := r.Push(ctx); err == nil {
				t.Fatal("a push succeeded with the Store away")
			}
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() > 4096 {
		t.Fatalf("journal of %d bytes after 500 counts with the Store away and a 1 KiB bound: %v", fi.Size(), err)
	}
	r.Abandon()
	restarted := newRecorder(t, b.instance(t), db, usage.Options{Journal: path})
	if err := restarted.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantRows(t, "SQL after a failed write, an outage and a restart", sqlRows(t, db), []usage.Row{row("acme", "u", usage.Requests, 15), row("acme", "v", usage.Messages, 500)})
}
