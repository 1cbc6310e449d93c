package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command runs a program per phase, in its own process group.
type Command struct {
	Path      string   // resolved program
	Args      []string // argv[1:]
	KillGrace time.Duration
	MaxOutput int
	// Supervisor is the dedicated supervisor binary; empty: this binary
	// run again (see Options.Supervisor).
	Supervisor string
}

// NewCommand resolves argv[0] in PATH (or checks it when it names a file)
// and returns a runner for it.
func NewCommand(argv []string, opts Options) (*Command, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	if opts.KillGrace <= 0 {
		opts.KillGrace = DefaultKillGrace
	}
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = DefaultMaxOutput
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	return &Command{Path: path, Args: argv[1:], KillGrace: opts.KillGrace, MaxOutput: opts.MaxOutput, Supervisor: opts.Supervisor}, nil
}

func (c *Command) String() string {
	return strings.Join(append([]string{c.Path}, c.Args...), " ")
}

// drainWait bounds how long Run waits for the output pipe to close after
// the run is over: only a process that escaped it (outside Linux: one that
// left the group with setsid) can still hold it.
const drainWait = 2 * time.Second

// Run starts the program and waits for it; see the package comment.
func (c *Command) Run(ctx context.Context, job Job) Result {
	out := NewTail(c.MaxOutput)
	fail := func(err error) Result {
		return Result{Outcome: Failure, ExitCode: -1, Err: err,
			Output: out.Bytes(fmt.Sprintf("[slotscaler: could not start %s: %v]\n", c.Path, err))}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer outR.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return fail(err)
	}
	var closeIn sync.Once
	defer closeIn.Do(func() { inW.Close() })

	l, err := c.launch(job, inR, outW)
	inR.Close()
	outW.Close()
	if err != nil {
		return fail(err)
	}
	res := Result{Started: time.Now()}
	if job.Started != nil {
		job.Started(res.Started)
	}

	go func() {
		_, _ = inW.Write(job.Stdin) // fails with EPIPE when the program does not read it
		closeIn.Do(func() { inW.Close() })
	}()
	drained := make(chan struct{})
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := outR.Read(buf)
			_, _ = out.Write(buf[:n])
			if err != nil {
				close(drained)
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- l.wait() }()

	var timeout <-chan time.Time
	if job.Timeout > 0 {
		t := time.NewTimer(job.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var (
		waitErr error
		stopped Outcome // Timeout or Cancelled once we sent SIGTERM
		killed  bool
		note    string
	)
	select {
	case waitErr = <-exited:
	case <-timeout:
		stopped = Timeout
	case <-ctx.Done():
		stopped = Cancelled
	}
	if stopped != 0 {
		l.terminate()
		deadline := time.Now().Add(c.KillGrace)
		grace := time.NewTimer(c.KillGrace)
		select {
		case waitErr = <-exited:
			// The leader is gone; the rest of its group gets what is left
			// of the grace to finish too.
			for l.groupAlive() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			killed = l.groupAlive()
		case <-grace.C:
			killed = true
			l.kill()
			waitErr = <-exited
		}
		grace.Stop()
	}
	res.Exited = time.Now()
	// Whatever the leader left behind goes with it.
	l.kill()
	closeIn.Do(func() { inW.Close() })
	select {
	case <-drained:
	case <-time.After(drainWait):
		outR.Close() // a process that escaped holds the pipe: stop reading
		<-drained
	}

	res.ExitCode, res.Signal, res.Err = -1, 0, nil
	st, ok := l.status(waitErr)
	if ok {
		res.ExitCode, res.Signal = st.code, st.signal
	} else if st.err != nil {
		res.Err = st.err
		res.Output = out.Bytes(fmt.Sprintf("[slotscaler: could not start %s: %v]\n", c.Path, st.err))
		res.Outcome = Failure
		return res
	}
	switch {
	case stopped != 0:
		res.Outcome = stopped
		what := "timed out after " + job.Timeout.String()
		if stopped == Cancelled {
			what = "cancelled"
		}
		note = fmt.Sprintf("[slotscaler: %s: sent SIGTERM to the process group", what)
		if killed {
			note += fmt.Sprintf(", then SIGKILL after %v", c.KillGrace)
		}
		note += "]\n"
	case res.ExitCode == 0:
		res.Outcome = Success
	default:
		res.Outcome = Failure
		if res.Signal != 0 {
			note = fmt.Sprintf("[slotscaler: executor died of signal %d (%v)]\n", int(res.Signal), res.Signal)
		}
	}
	if st.unsupervised {
		note += "[slotscaler: the executor's supervisor was killed: processes the executor started may still run]\n"
	}
	res.Output = out.Bytes(note)
	return res
}

// launched is a started run: on Linux the supervisor that runs the
// executor (package supervise), elsewhere the executor itself.
type launched interface {
	// wait waits for the started process.
	wait() error
	// terminate sends SIGTERM to the executor's process group.
	terminate()
	// kill ends at once (SIGKILL) whatever of the run is left.
	kill()
	// groupAlive reports whether anything of the executor's process group
	// still runs (after a stop: the rest of the grace is waited for it).
	groupAlive() bool
	// status is the executor's exit status; false when it has none (it
	// could not be started: err says why).
	status(waitErr error) (exitStatus, bool)
}

// exitStatus is how the executor ended: its exit code (128+n after signal
// n), or err when it could not be started.
type exitStatus struct {
	code   int
	signal syscall.Signal
	err    error
	// unsupervised: the supervisor was killed before it reported (by the
	// executor itself: same user); what the executor started may still run.
	unsupervised bool
}

// statusOf reads an exit status from a wait status.
func statusOf(ws syscall.WaitStatus) exitStatus {
	if ws.Signaled() {
		return exitStatus{code: 128 + int(ws.Signal()), signal: ws.Signal()}
	}
	return exitStatus{code: ws.ExitStatus()}
}

// processStatus is the exit status of a process Run started itself.
func processStatus(cmd *exec.Cmd, waitErr error) (exitStatus, bool) {
	if cmd.ProcessState == nil {
		if waitErr == nil {
			waitErr = errors.New("no exit status")
		}
		return exitStatus{code: -1, err: waitErr}, false
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		return statusOf(ws), true
	}
	return exitStatus{code: cmd.ProcessState.ExitCode()}, true
}
