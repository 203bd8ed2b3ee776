package usage

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The journal keeps a process's counts through a crash of the process
// (SIGKILL, OOM kill, panic): see Options.Journal.
//
// It is a file of JSON lines, each written with one write(2) before the
// call that made it returns, so that the kernel has it even if the
// process dies the next instant:
//
//	{"i":"<instance>","s":<seq>}    header: the Recorder's batch instance and last Seq
//	{"a":[tenant,user,day,metric,n]} a count Add accepted
//	{"b":<seq>}                      the counts since the previous "b" (or the
//	                                 header) make up batch Seq, about to be pushed
//	{"p":<seq>}                      the Store has batch Seq
//
// A Recorder that starts on a journal left by a crashed one takes over
// its instance name: it pushes the batch that was in flight again with the
// same Instance and Seq (the Store ignores it if it had applied it), and
// re-adds the counts after the last "b". Batch numbering goes on from the
// journal's. After a push the file is rewritten, when it has grown, to
// its header and the counts not pushed yet. A final line without its
// newline (a write cut short by a crash of the machine) is ignored.
type journal struct {
	path  string
	f     *os.File
	size  int64
	dirty bool         // a write failed: rewrite at the next push
	buf   bytes.Buffer // for lines made by encoding/json
	line  []byte       // for counts (add)
}

// journalMaxSize is how large the file may grow before a push rewrites it.
const journalMaxSize = 1 << 20

type journalLine struct {
	Instance string `json:"i,omitempty"`
	Seq      *int64 `json:"s,omitempty"`
	Add      []any  `json:"a,omitempty"`
	Batch    *int64 `json:"b,omitempty"`
	Pushed   *int64 `json:"p,omitempty"`
}

// replayed is what a journal held.
type replayed struct {
	instance string
	seq      int64
	inflight *Batch // a batch started but not known to be pushed
	pending  []Row  // counts after the last batch
}

// openJournal opens (creating) the journal at path, locks it against
// other processes, and reads what a previous Recorder left in it. A
// journal it cannot read is moved aside (to path.bad-<unix seconds>, whose
// name it returns, with why) and a new one is started, so that journaling
// goes on; the counts in the old one are not pushed.
func openJournal(path string) (j *journal, rp replayed, movedTo string, why error, err error) {
	j, rp, err = openJournalOnce(path)
	var bad *badJournal
	if !errors.As(err, &bad) {
		return j, rp, "", nil, err
	}
	movedTo = fmt.Sprintf("%s.bad-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, movedTo); rerr != nil {
		return nil, rp, "", nil, fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
	}
	j, rp, err = openJournalOnce(path)
	return j, rp, movedTo, bad.err, err
}

// badJournal is a journal whose content cannot be read.
type badJournal struct{ err error }

func (b *badJournal) Error() string { return b.err.Error() }

func openJournalOnce(path string) (*journal, replayed, error) {
	var rp replayed
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, rp, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, rp, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, rp, fmt.Errorf("%s is in use by another process: %w", path, err)
	}
	rp, err = replay(f)
	if err != nil {
		f.Close()
		return nil, rp, &badJournal{fmt.Errorf("reading %s: %w", path, err)}
	}
	return &journal{path: path, f: f}, rp, nil
}

func replay(r io.Reader) (replayed, error) {
	var rp replayed
	batches := map[int64]map[key]int64{}
	current := map[key]int64{}
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break // a last line without its newline was cut short: ignored
		}
		if err != nil {
			return rp, err
		}
		var l journalLine
		if err := json.Unmarshal(line, &l); err != nil {
			return rp, fmt.Errorf("line %d: %w", n, err)
		}
		switch {
		case l.Instance != "":
			rp.instance = l.Instance
			if l.Seq != nil {
				rp.seq = max(rp.seq, *l.Seq)
			}
		case l.Add != nil:
			row, err := rowOfJournal(l.Add)
			if err != nil {
				return rp, fmt.Errorf("line %d: %w", n, err)
			}
			current[row.key()] += row.Count
		case l.Batch != nil:
			batches[*l.Batch] = current
			current = map[key]int64{}
			rp.seq = max(rp.seq, *l.Batch)
		case l.Pushed != nil:
			delete(batches, *l.Pushed)
			rp.seq = max(rp.seq, *l.Pushed)
		}
	}
	if len(batches) > 1 {
		return rp, fmt.Errorf("%d batches in flight; a Recorder has at most one", len(batches))
	}
	for seq, sums := range batches {
		rp.inflight = &Batch{Instance: rp.instance, Seq: seq, Rows: rowsOf(sums)}
	}
	rp.pending = rowsOf(current)
	return rp, nil
}

func rowOfJournal(a []any) (Row, error) {
	if len(a) != 5 {
		return Row{}, errors.New("a count needs 5 fields")
	}
	var s [4]string
	for i := range s {
		v, ok := a[i].(string)
		if !ok {
			return Row{}, errors.New("a count's first 4 fields are strings")
		}
		s[i] = v
	}
	n, ok := a[4].(float64)
	if !ok || n <= 0 || n != float64(int64(n)) {
		return Row{}, errors.New("a count's 5th field is a positive integer")
	}
	return Row{TenantID: s[0], UserID: s[1], Day: s[2], Metric: Metric(s[3]), Count: int64(n)}, nil
}

// write appends one line with one write(2). Caller serializes.
func (j *journal) write(l journalLine) error {
	j.buf.Reset()
	if err := json.NewEncoder(&j.buf).Encode(l); err != nil {
		return err
	}
	return j.append(j.buf.Bytes())
}

// append writes line at the end of the file. A write that fails (a full
// disk) is cut back off, so that no torn line is left for later lines to
// follow, and the journal is marked dirty: it no longer holds all it
// should, and the next push rewrites it from the Recorder's state.
func (j *journal) append(line []byte) error {
	n, err := j.f.Write(line)
	if err == nil {
		j.size += int64(n)
		return nil
	}
	j.dirty = true
	if n > 0 {
		if terr := j.f.Truncate(j.size); terr == nil {
			_, _ = j.f.Seek(j.size, io.SeekStart)
		}
	}
	return err
}

// add appends a count. It is on the request path, so the line is built
// by hand (the same JSON write would give, at a tenth of the cost).
func (j *journal) add(k key, n int64) error {
	return j.append(j.countLine(k, n))
}

// countLine builds the line of a count in j.line and returns it.
func (j *journal) countLine(k key, n int64) []byte {
	b := append(j.line[:0], `{"a":[`...)
	for _, f := range [...]string{k.tenant, k.user, k.day, string(k.metric)} {
		b = appendJSONString(b, f)
		b = append(b, ',')
	}
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "]}\n"...)
	j.line = b
	return b
}

// appendJSONString appends s as a JSON string: plain printable ASCII as
// it is, anything else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func (j *journal) batch(seq int64) error  { return j.write(journalLine{Batch: &seq}) }
func (j *journal) pushed(seq int64) error { return j.write(journalLine{Pushed: &seq}) }

// rewrite replaces the file with the header and the given counts (those
// not pushed yet), and an in-flight batch if there is one.
func (j *journal) rewrite(instance string, seq int64, inflight *Batch, pending []Row) error {
	// The whole content is built first and written at once: the new file
	// needs no per-line atomicity, only the rename does.
	var content bytes.Buffer
	enc := json.NewEncoder(&content)
	if err := enc.Encode(journalLine{Instance: instance, Seq: &seq}); err != nil {
		return err
	}
	addLine := func(r Row) { content.Write(j.countLine(r.key(), r.Count)) }
	if inflight != nil {
		for _, r := range inflight.Rows {
			addLine(r)
		}
		if err := enc.Encode(journalLine{Batch: &inflight.Seq}); err != nil {
			return err
		}
	}
	for _, r := range pending {
		addLine(r)
	}
	tmp := j.path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(err)
	}
	if _, err := f.Write(content.Bytes()); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fail(err)
	}
	j.f.Close()
	j.f, j.size, j.dirty = f, int64(content.Len()), false
	return nil
}

func (j *journal) close() error { return j.f.Close() }

// journalState guards the journal of a Recorder: Add's append and its
// count, and Push's drain and batch mark, happen under mu, so that the
// lines between two batch marks are exactly that batch.
type journalState struct {
	mu      sync.Mutex
	j       *journal
	failed  bool  // a write failed: logged once
	maxSize int64 // rewrite past this size (journalMaxSize)
}
