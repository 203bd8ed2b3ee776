package pgtest

import "syscall"

// sysProcAttr runs the process as a (when non-nil) and has the kernel send
// SIGQUIT -- PostgreSQL's immediate shutdown -- to it when the test binary
// (more precisely, the OS thread that started it) dies, so servers never
// outlive a crashed or timed-out test run. Go applies the parent-death signal
// after switching credentials, so it survives the user change.
func sysProcAttr(a *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGQUIT}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
	}
	return attr
}
