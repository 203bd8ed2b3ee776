package main

import "syscall"

// sysProcAttr makes the kernel kill redis-server if kvbench dies without
// running its cleanup.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
