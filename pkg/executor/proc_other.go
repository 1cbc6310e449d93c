//go:build unix && !linux

package executor

import "syscall"

// sysProcAttr: no parent-death signal outside Linux; an executor outlives
// an agent killed with SIGKILL there.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether any process is left in the group (zombies
// included).
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }
