//go:build linux

package main

import "syscall"

// childAttr makes the kernel kill the redis-server we start if we die.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
