//go:build unix && !linux

package fakekubelet

import "syscall"

// sysProcAttr puts an agent in its own process group. Without a
// parent-death signal outside Linux, agents outlive a caller killed with
// SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitExit returns at once: without waitid's WNOWAIT the process is marked
// ended only when cmd.Wait has reaped it, so a signal sent in between could
// reach a process that took its pid.
func waitExit(int) {}
