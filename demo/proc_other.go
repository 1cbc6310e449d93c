//go:build unix && !linux

package main

import "syscall"

// sysProcAttr puts a child in its own process group. Without a parent-death
// signal outside Linux, children outlive a demo killed with SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
