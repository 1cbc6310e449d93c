//go:build linux

package supervise

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Signals the agent sends a supervisor.
const (
	Term      = syscall.SIGTERM // SIGTERM to the executor's group, then wait for it
	Kill      = syscall.SIGUSR1 // the grace ran out: SIGKILL the whole tree now
	AgentGone = syscall.SIGUSR2 // the agent's parent-death signal: the same
)

const (
	prSetDumpable       = 4
	prSetChildSubreaper = 36
)

// reaped is a child the supervisor waited for.
type reaped struct {
	pid int
	ws  syscall.WaitStatus
}

// Main is the whole supervisor; args are its arguments after argv[0].
// It returns the supervisor's exit code. It must run on the main
// goroutine's thread, early (a package init or main), and the process must
// exit right after it.
func Main(args []string) int {
	// Pdeathsig of the executor is tied to the thread that forks it:
	// this one, for good (init and main run on the main thread, and the
	// process exits from it).
	runtime.LockOSThread()
	report := os.NewFile(3, "status")
	if report == nil {
		fmt.Fprintln(os.Stderr, Arg0+": no status pipe: this mode is for the agent only")
		return 2
	}
	syscall.CloseOnExec(3) // the executor must not hold it
	say := func(format string, a ...any) { _, _ = fmt.Fprintf(report, format+"\n", a...) }
	if len(args) < 2 {
		say("error supervisor: want <agent pid> <program> [args]")
		return 2
	}
	agentPid, _ := strconv.Atoi(args[0])
	// The executor and its children must not ptrace it (same user).
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		say("error becoming a child subreaper: %v", e)
		return 2
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, Term, Kill, AgentGone, syscall.SIGINT, syscall.SIGHUP)
	if os.Getppid() != agentPid {
		// The agent died before the signal handler was in place.
		say("error the agent is gone")
		return 2
	}

	// syscall.ForkExec rather than os.StartProcess: the os package probes
	// pidfd support with an extra fork first, a cost on every phase.
	path, argv := args[1], args[1:]
	execPid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,            // its own group: SIGTERM reaches its children too
			Pdeathsig: syscall.SIGKILL, // dies with the supervisor
		},
	})
	if err != nil {
		say("error fork/exec %s: %v", path, err)
		return 0
	}
	say("pid %d", execPid)
	os.Stdin.Close()
	os.Stdout.Close()
	os.Stderr.Close()

	reapc := make(chan reaped, 64)
	go reapAll(reapc)

	var (
		execStatus *syscall.WaitStatus
		stopped    bool
		tick       = time.NewTicker(20 * time.Millisecond)
	)
	defer tick.Stop()
loop:
	for {
		select {
		case r, ok := <-reapc:
			if !ok {
				break loop // no child left at all
			}
			if r.pid == execPid {
				ws := r.ws
				execStatus = &ws
				if !stopped {
					break loop
				}
			}
		case s := <-sigs:
			if s == Term && !stopped {
				stopped = true
				_ = syscall.Kill(-execPid, syscall.SIGTERM)
				continue
			}
			if s == Term {
				continue
			}
			break loop // kill now, or the agent is gone
		case <-tick.C:
			// After a stop the executor's group gets the grace to finish;
			// once it is empty the rest goes.
			if stopped && execStatus != nil && !groupAlive(execPid) {
				break loop
			}
		}
	}
	killTree(reapc, execPid, &execStatus)
	switch {
	case execStatus == nil:
		say("signal %d", int(syscall.SIGKILL))
	case execStatus.Signaled():
		say("signal %d", int(execStatus.Signal()))
	default:
		say("exit %d", execStatus.ExitStatus())
	}
	return 0
}

// reapAll waits for every child (the executor and each orphan handed to
// the subreaper) and closes out once none is left.
func reapAll(out chan<- reaped) {
	defer close(out)
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil: // ECHILD: no child, so no descendant either
			return
		}
		out <- reaped{pid, ws}
	}
}

// killTree SIGKILLs every live descendant until none is left, and reaps
// them all. A process that forks meanwhile loses its parent to the kill,
// and its child is reparented here and found by the next pass.
func killTree(reapc <-chan reaped, execPid int, execStatus **syscall.WaitStatus) {
	// Most executors leave nothing behind: the reaper then finds no child
	// at once, and no child means no descendant (orphans are reparented
	// here), so the scan of /proc is skipped.
	if drainReaped(reapc, execPid, execStatus, 2*time.Millisecond) {
		return
	}
	self := os.Getpid()
	for {
		procs, err := listProcs()
		if err != nil {
			procs = nil
		}
		victims := descendants(self, procs)
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// Reap what is there; the reaper closes the channel when no child
		// is left.
		if drainReaped(reapc, execPid, execStatus, 10*time.Millisecond) {
			return
		}
	}
}

// drainReaped takes what the reaper reports for up to wait, and reports
// whether it closed: no child left.
func drainReaped(reapc <-chan reaped, execPid int, execStatus **syscall.WaitStatus, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-reapc:
			if !ok {
				return true
			}
			if r.pid == execPid && *execStatus == nil {
				ws := r.ws
				*execStatus = &ws
			}
		case <-timer.C:
			return false
		}
	}
}

// descendants lists the live processes below root.
func descendants(root int, procs []proc) []int {
	children := map[int][]proc{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, c := range children[n] {
			if c.live {
				out = append(out, c.pid)
			}
			queue = append(queue, c.pid)
		}
	}
	return out
}

// groupAlive reports whether a live process is left in the group. Zombies
// do not count: an orphan that died waits for its reaper, and waiting for
// that would spend the whole grace for nothing.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	procs, err := listProcs()
	if err != nil {
		return true
	}
	for _, p := range procs {
		if p.pgrp == pgid && p.live {
			return true
		}
	}
	return false
}

// proc is one line of /proc/<pid>/stat, the parts that matter here.
type proc struct {
	pid, ppid, pgrp int
	live            bool // not a zombie
}

func listProcs() ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make([]proc, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// "pid (comm) state ppid pgrp ..."; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		pgrp, _ := strconv.Atoi(string(f[2]))
		out = append(out, proc{pid: pid, ppid: ppid, pgrp: pgrp, live: f[0][0] != 'Z' && f[0][0] != 'X'})
	}
	return out, nil
}
