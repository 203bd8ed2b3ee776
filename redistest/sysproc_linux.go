package redistest

import "syscall"

// sysProcAttr makes the kernel SIGKILL redis-server when the test binary
// (more precisely, the OS thread that started it) dies, so servers never
// outlive a crashed or timed-out test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
