package main

import "syscall"

// sysProcAttr puts a child in its own process group (the terminal's Ctrl-C
// reaches only the demo, which stops its children in order) and kills it
// when the demo dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
