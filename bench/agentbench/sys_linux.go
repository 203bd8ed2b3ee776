package main

import (
	"os"
	"os/exec"
	"syscall"
)

// execWithParentDeath replaces this process by argv[0] after asking the
// kernel to SIGKILL it when its parent (the agentbench process that started
// the terminal) dies, so that no demo agent outlives a killed agentbench.
// ppid is the parent agentbench expects: if it died before the request
// took effect, there is nothing to wait for. It returns only on failure.
func execWithParentDeath(ppid int, argv []string) error {
	const prSetPdeathsig = 1
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(syscall.SIGKILL), 0); errno != 0 {
		return errno
	}
	if os.Getppid() != ppid {
		os.Exit(1)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

// serverProcAttr makes the kernel send SIGTERM to the agentapi server when
// agentbench dies without cleaning up; the server then stops its own agent.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
