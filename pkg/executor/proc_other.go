//go:build unix && !linux

package executor

import (
	"os"
	"os/exec"
	"syscall"

	"github.com/slotscaler/slotscaler/internal/childproc"
)

// launch starts the executor itself as the leader of its own process
// group. There is no child subreaper outside Linux: a process that leaves
// the group (setsid) outlives the run, and with no parent-death signal an
// executor outlives an agent killed with SIGKILL.
func (c *Command) launch(job Job, stdin, stdout *os.File) (launched, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = job.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // nil would inherit the agent's environment
	}
	cmd.Dir = job.Dir
	cmd.Stdin = stdin
	cmd.Stdout = stdout // the same *os.File for both: one ordered stream, no copying goroutines
	cmd.Stderr = stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := childproc.Start(cmd); err != nil {
		return nil, err
	}
	return &direct{cmd: cmd, pgid: cmd.Process.Pid}, nil
}

type direct struct {
	cmd  *exec.Cmd
	pgid int
}

func (d *direct) wait() error      { return d.cmd.Wait() }
func (d *direct) terminate()       { _ = syscall.Kill(-d.pgid, syscall.SIGTERM) }
func (d *direct) kill()            { _ = syscall.Kill(-d.pgid, syscall.SIGKILL) }
func (d *direct) groupAlive() bool { return syscall.Kill(-d.pgid, 0) == nil } // zombies included
func (d *direct) status(waitErr error) (exitStatus, bool) {
	return processStatus(d.cmd, waitErr)
}
