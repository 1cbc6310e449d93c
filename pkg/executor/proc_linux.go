package executor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/slotscaler/slotscaler/internal/childproc"
	"github.com/slotscaler/slotscaler/pkg/executor/supervise"
)

// launch starts the supervisor (package supervise): the dedicated binary
// c.Supervisor, or this binary again when it is empty. It runs the
// executor and ends its whole process tree with it. The supervisor gets
// the executor's environment, working directory, stdin and output, and
// reports on fd 3.
func (c *Command) launch(job Job, stdin, stdout *os.File) (launched, error) {
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// /proc/self/exe is this very binary, even if its file was replaced
	// since the agent started.
	path := "/proc/self/exe"
	if c.Supervisor != "" {
		path = c.Supervisor
	}
	cmd := exec.Command(path)
	cmd.Args = append([]string{supervise.Arg0, strconv.Itoa(os.Getpid()), c.Path}, c.Args...)
	cmd.Env = job.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would inherit the agent's environment
	}
	cmd.Dir = job.Dir
	cmd.Stdin = stdin
	cmd.Stdout = stdout // the same *os.File for both: one ordered stream, no copying goroutines
	cmd.Stderr = stdout
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // not in the agent's group: a terminal's ^C is the agent's to handle
		// The agent died: the supervisor kills the whole tree, then exits.
		Pdeathsig: supervise.AgentGone,
	}
	err = childproc.Start(cmd) // Pdeathsig tied to a thread that lives as long as the agent
	statusW.Close()
	if err != nil {
		statusR.Close()
		return nil, err
	}
	return &supervised{cmd: cmd, statusR: statusR}, nil
}

// supervised is a run under its supervisor.
type supervised struct {
	cmd     *exec.Cmd
	statusR *os.File
	report  map[string]string // the supervisor's lines, by first word
}

// wait returns once the supervisor reported how the executor ended (its
// tree is gone by then) or exited without a report. What the supervisor
// still does after its report is exit: it is reaped in the background
// (a race-detector build sleeps a second at exit).
func (s *supervised) wait() error {
	s.report = map[string]string{}
	sc := bufio.NewScanner(s.statusR)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		s.report[k] = v
		if k == "exit" || k == "signal" || k == "error" {
			s.statusR.Close()
			go func() { _ = s.cmd.Wait() }()
			return nil
		}
	}
	// End of file without a report: the supervisor died (the executor
	// never had the pipe: close-on-exec).
	s.statusR.Close()
	return s.cmd.Wait()
}

// signal goes through the process's pidfd: once the supervisor is reaped
// it fails, and never reaches a process that reused its pid.
func (s *supervised) signal(sig syscall.Signal) { _ = s.cmd.Process.Signal(sig) }

// terminate asks the supervisor to send SIGTERM to the executor's group.
func (s *supervised) terminate() { s.signal(supervise.Term) }

// kill asks the supervisor to SIGKILL the whole tree now.
func (s *supervised) kill() { s.signal(supervise.Kill) }

// groupAlive: the supervisor exits only once the executor's group is gone
// (after a stop it waits for it, until kill).
func (s *supervised) groupAlive() bool { return false }

func (s *supervised) status(waitErr error) (exitStatus, bool) {
	if msg, ok := s.report["error"]; ok {
		return exitStatus{code: -1, err: fmt.Errorf("%s", msg)}, false
	}
	if v, ok := s.report["exit"]; ok {
		n, err := strconv.Atoi(v)
		if err == nil {
			return exitStatus{code: n}, true
		}
	}
	if v, ok := s.report["signal"]; ok {
		n, err := strconv.Atoi(v)
		if err == nil {
			return exitStatus{code: 128 + n, signal: syscall.Signal(n)}, true
		}
	}
	// No report: the supervisor itself was killed (by the executor, which
	// runs as the same user, or the OOM killer): its status is the run's,
	// and the tree it watched over is no longer watched.
	st, ok := processStatus(s.cmd, waitErr)
	st.unsupervised = ok
	return st, ok
}
