package bench

import "syscall"

// killWithParent makes the kernel kill a child (redis-server) when the
// benchmark dies without running its cleanup.
func killWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
