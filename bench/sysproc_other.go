//go:build !linux

package bench

import "syscall"

func killWithParent() *syscall.SysProcAttr { return nil }
