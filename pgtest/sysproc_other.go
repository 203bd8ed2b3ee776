//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr runs the process as a (when non-nil). Parent-death signals are
// Linux only; elsewhere we rely on the test cleanup alone.
func sysProcAttr(a *account) *syscall.SysProcAttr {
	if a == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid}}
}
