package executor

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// The supervisor is the binary that links this package (the agent, or a
// test binary) run again with argv[0] superviseArg0, one per phase:
//
//	slotscaler-executor-supervisor <agent pid> <program> <args>...
//
// It makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): every
// process the executor starts that loses its parent, a setsid or
// double-forked daemon included, is reparented to the supervisor instead
// of init, so the supervisor can always find and end it. It runs the
// executor as the leader of its own process group, and:
//
//   - when the executor exits on its own, SIGKILLs every descendant still
//     alive and reaps them all, then reports and exits;
//   - on superviseTerm (a timeout or cancel), sends SIGTERM to the
//     executor's group, waits for the executor to exit and its group to
//     empty, then does the same;
//   - on superviseKill (the grace ran out) or superviseAgentGone (its
//     parent-death signal: the agent died), SIGKILLs everything at once.
//
// It reports on fd 3, one line each: "pid <executor pid>", then
// "exit <code>", "signal <n>" or "error <why it could not start>".
//
// Why a subreaper rather than a cgroup (cgroup.kill): a pod's agent can
// rarely create cgroups (cgroupfs is read-only in most containers, and
// delegation needs the runtime's cooperation), while a subreaper needs no
// privilege anywhere. A process group alone is not enough: setsid leaves
// it. What remains out of reach: a process of the same user that is not a
// descendant (another slot's executor) and the supervisor itself, which an
// executor can kill (same user); the supervisor is non-dumpable so it
// cannot be ptraced.
const superviseArg0 = "slotscaler-executor-supervisor"

const (
	superviseTerm      = syscall.SIGTERM
	superviseKill      = syscall.SIGUSR1
	superviseAgentGone = syscall.SIGUSR2
)

func init() {
	if len(os.Args) > 0 && os.Args[0] == superviseArg0 {
		os.Exit(supervise(os.Args[1:]))
	}
}

const (
	prSetDumpable       = 4
	prSetChildSubreaper = 36
)

// reaped is a child the supervisor waited for.
type reaped struct {
	pid int
	ws  syscall.WaitStatus
}

func supervise(args []string) int {
	// Pdeathsig of the executor is tied to the thread that forks it:
	// this one, for good (init runs on the main thread, and the process
	// exits from it).
	runtime.LockOSThread()
	report := os.NewFile(3, "status")
	if report == nil {
		fmt.Fprintln(os.Stderr, superviseArg0+": no status pipe: this mode is for the agent only")
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
	signal.Notify(sigs, superviseTerm, superviseKill, superviseAgentGone, syscall.SIGINT, syscall.SIGHUP)
	if os.Getppid() != agentPid {
		// The agent died before the signal handler was in place.
		say("error the agent is gone")
		return 2
	}

	path, argv := args[1], args[1:]
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,            // its own group: SIGTERM reaches its children too
			Pdeathsig: syscall.SIGKILL, // dies with the supervisor
		},
	})
	if err != nil {
		say("error %v", err)
		return 0
	}
	execPid := p.Pid
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
			if s == superviseTerm && !stopped {
				stopped = true
				_ = syscall.Kill(-execPid, syscall.SIGTERM)
				continue
			}
			if s == superviseTerm {
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
		timer := time.NewTimer(10 * time.Millisecond)
	drain:
		for {
			select {
			case r, ok := <-reapc:
				if !ok {
					timer.Stop()
					return
				}
				if r.pid == execPid && *execStatus == nil {
					ws := r.ws
					*execStatus = &ws
				}
			case <-timer.C:
				break drain
			}
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
