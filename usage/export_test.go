package usage

// Abandon stops r's background loops -- letting a push in progress finish,
// so that what was pushed is known -- without pushing what is left or
// flushing: the Recorder of a process killed with SIGKILL.
func (r *Recorder) Abandon() {
	r.stopLoops()
	r.closed.Store(true)
}
