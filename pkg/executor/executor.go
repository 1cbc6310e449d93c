// Package executor runs one task phase: a configured command in its own
// process group with a scrubbed environment and the payload on stdin, or a
// built-in stand-in (builtin:sleep) for systems with no real tool installed.
//
// A run ends when the process exits (exit 0 is success), when its timeout
// passes, or when its context ends (a cancel): the last two send SIGTERM to
// the whole process group, then SIGKILL after a grace. On Linux the command
// runs under a supervisor, a child subreaper (package supervise): whatever
// the command started, daemons that left its group or session included, is
// killed and reaped when the run ends, so a phase never outlives its
// result. Elsewhere only the process group is. The tail of the combined
// stdout and stderr is kept.
package executor

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// Outcome is how a run ended.
type Outcome int

const (
	Success   Outcome = iota + 1 // exited 0
	Failure                      // exited non-zero, died of a signal it was not sent, or never started
	Timeout                      // stopped because its timeout passed
	Cancelled                    // stopped because its context ended
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Timeout:
		return "timeout"
	case Cancelled:
		return "cancelled"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// DefaultMaxOutput is how much of the output a run keeps (its tail): what
// the slot store keeps with a task.
const DefaultMaxOutput = 64 << 10

// DefaultKillGrace is how long a stopped run gets between SIGTERM and SIGKILL.
const DefaultKillGrace = 10 * time.Second

// Job is one run.
type Job struct {
	// Env is the complete environment, "NAME=value"; nothing is inherited.
	Env []string
	// Dir is the working directory ("" for the runner's own).
	Dir string
	// Stdin is written to the process's standard input, which is then closed.
	Stdin []byte
	// Timeout stops the run when it passes (0: no limit).
	Timeout time.Duration
	// Started, when not nil, is called once the process runs.
	Started func(at time.Time)
}

// Result is how one run ended.
type Result struct {
	Outcome Outcome
	// ExitCode is the exit status; 128+n when the process died of signal n;
	// -1 when it never started.
	ExitCode int
	// Signal is the signal the process died of (0 when it exited).
	Signal syscall.Signal
	// Output is the tail of the combined stdout and stderr, at most the
	// runner's MaxOutput, ending with a note when the runner stopped the
	// process or could not start it.
	Output []byte
	// Err is set when the process could not be started.
	Err error
	// Started and Exited bound the process's life (zero when it never started).
	Started, Exited time.Time
}

// Runner runs task phases. Run blocks until the run is over, including
// the kill of anything left in its process group.
type Runner interface {
	Run(ctx context.Context, job Job) Result
	// String describes the runner for logs.
	String() string
}

// Options tune the runners New builds.
type Options struct {
	KillGrace time.Duration // DefaultKillGrace when 0
	MaxOutput int           // DefaultMaxOutput when 0
	// Supervisor is the dedicated supervisor binary (FindSupervisor);
	// empty: this binary, run again. Linux only.
	Supervisor string
}

// New builds a runner from a spec: "builtin:sleep?min=1s&max=5s&fail=0.1",
// or a command line split without a shell (Split) whose program is looked
// up in PATH now, so a missing or non-executable program fails at start-up.
func New(spec string, opts Options) (Runner, error) {
	if opts.KillGrace <= 0 {
		opts.KillGrace = DefaultKillGrace
	}
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = DefaultMaxOutput
	}
	if rest, ok := strings.CutPrefix(spec, "builtin:"); ok {
		return newBuiltin(rest)
	}
	argv, err := Split(spec)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	return NewCommand(argv, opts)
}
