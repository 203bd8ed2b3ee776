package usage

// Abandon stops r's background loops -- letting a push in progress finish,
// so that what was pushed is known -- without pushing what is left or
// flushing, and closes its journal as it is: the Recorder of a process
// killed with SIGKILL. Close does nothing afterwards.
func (r *Recorder) Abandon() {
	r.stopLoops()
	r.closed.Store(true)
	r.closeOnce.Do(func() {})
	if r.js != nil {
		r.js.mu.Lock()
		r.js.j.close()
		r.js.mu.Unlock()
	}
}

// SetJournalMaxSize sets the size past which r's pushes rewrite its
// journal.
func SetJournalMaxSize(r *Recorder, n int64) {
	r.js.mu.Lock()
	r.js.maxSize = n
	r.js.mu.Unlock()
}

// BreakJournal closes r's journal file under it: its next writes fail,
// as on a full disk.
func BreakJournal(r *Recorder) {
	r.js.mu.Lock()
	r.js.j.f.Close()
	r.js.mu.Unlock()
}
