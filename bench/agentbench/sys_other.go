//go:build !linux

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// execWithParentDeath replaces this process by argv[0]. Outside Linux there
// is no parent-death signal: only agentbench's own cleanup stops children.
func execWithParentDeath(ppid int, argv []string) error {
	_ = ppid
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}

func serverProcAttr() *syscall.SysProcAttr { return nil }
