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

	"github.com/slotscaler/slotscaler/internal/childproc"
)

// Command runs a program per phase, in its own process group.
type Command struct {
	Path      string   // resolved program
	Args      []string // argv[1:]
	KillGrace time.Duration
	MaxOutput int
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
	return &Command{Path: path, Args: argv[1:], KillGrace: opts.KillGrace, MaxOutput: opts.MaxOutput}, nil
}

func (c *Command) String() string {
	return strings.Join(append([]string{c.Path}, c.Args...), " ")
}

// drainWait bounds how long Run waits for the output pipe to close after
// the process group is gone: only a process that left the group (setsid)
// can still hold it.
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

	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = job.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would inherit the agent's environment
	}
	cmd.Dir = job.Dir
	cmd.Stdin = inR
	cmd.Stdout = outW // the same *os.File for both: one ordered stream, no copying goroutines
	cmd.Stderr = outW
	cmd.SysProcAttr = sysProcAttr()
	err = childproc.Start(cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		return fail(err)
	}
	res := Result{Started: time.Now()}
	if job.Started != nil {
		job.Started(res.Started)
	}
	pgid := cmd.Process.Pid

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
	go func() { exited <- cmd.Wait() }()

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
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		deadline := time.Now().Add(c.KillGrace)
		grace := time.NewTimer(c.KillGrace)
		select {
		case waitErr = <-exited:
			// The leader is gone; the rest of its group gets what is left
			// of the grace to finish too.
			for groupAlive(pgid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			killed = groupAlive(pgid)
		case <-grace.C:
			killed = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			waitErr = <-exited
		}
		grace.Stop()
	}
	res.Exited = time.Now()
	// Whatever the leader left in its group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	closeIn.Do(func() { inW.Close() })
	select {
	case <-drained:
	case <-time.After(drainWait):
		outR.Close() // a process that left the group holds the pipe: stop reading
		<-drained
	}

	res.ExitCode = -1
	if st := cmd.ProcessState; st != nil {
		res.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = ws.Signal()
			res.ExitCode = 128 + int(res.Signal)
		}
	} else if waitErr != nil {
		res.Err = waitErr
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
	res.Output = out.Bytes(note)
	return res
}
