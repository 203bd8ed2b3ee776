//go:build !linux

package redistest

import "syscall"

// sysProcAttr: parent-death signals are Linux only; elsewhere we rely on the
// test cleanup alone.
func sysProcAttr() *syscall.SysProcAttr { return nil }
