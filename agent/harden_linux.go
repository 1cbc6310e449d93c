package main

import "syscall"

// harden makes the agent's process non-dumpable: another process of the
// same user (an executor) can then neither read /proc/<agent>/environ,
// where the Redis URL and its password live, nor ptrace the agent. Root
// (CAP_SYS_PTRACE) still can; the chart runs agents as non-root.
func harden() {
	const prSetDumpable = 4
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
}
