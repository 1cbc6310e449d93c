package fakekubelet

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts an agent in its own process group (a signal to the
// group reaches the agent and nothing of its caller's) and kills it when
// its caller dies without stopping it; childproc.Start keeps that
// parent-death signal from firing earlier.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExit waits for the process to exit but leaves the zombie (WNOWAIT),
// which keeps its pid taken until the caller reaps it.
func waitExit(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return // an error other than EINTR: cmd.Wait reports it
		}
	}
}
