package fakekubelet

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Proc is a pod's agent process. An entry exists from the moment the
// kubelet decides to start it, so a pod's agent is started at most once;
// the process may still be starting, may have failed to start, or may have
// ended: Signal is the only way to reach it.
type Proc struct {
	cmd  *exec.Cmd // nil for a pod deleted before its agent was started
	out  io.WriteCloser
	done chan struct{} // closed once the process is reaped, or never started
	err  error         // cmd.Start's or cmd.Wait's, once done is closed

	// mu is held while signalling and while starting, and taken to mark the
	// process ended before it is reaped. Until it is reaped the agent's pid,
	// which is also its process group's id, cannot be given to another
	// process, so a signal sent under mu never reaches a stranger's group
	// (a later agent's, say) however long the kubelet runs.
	mu      sync.Mutex
	running bool // started and not yet ended

	stopping bool // the kubelet stops it, so its exit is no crash (guarded by Kubelet.mu)
}

// Cmd is the agent's command; its Process is nil until it started, and
// stays nil if it failed to.
func (p *Proc) Cmd() *exec.Cmd { return p.cmd }

// Done is closed once the process is reaped, or never started.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the agent's process group. False when the agent is
// not running: it never started (it failed to, or its pod was deleted
// first) or it has ended. An agent being started is signalled once it is.
func (p *Proc) Signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running && syscall.Kill(-p.cmd.Process.Pid, sig) == nil
}

func (p *Proc) isRunning() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// reap waits for the started agent to exit, marks it ended, then reaps it.
func (p *Proc) reap() {
	waitExit(p.cmd.Process.Pid)
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
	p.err = p.cmd.Wait()
	p.end()
}

func (p *Proc) end() {
	if p.out != nil {
		_ = p.out.Close()
	}
	close(p.done)
}

// stop sends SIGTERM, waits up to grace (or ctx), then SIGKILLs the group
// and waits for the exit. It reports whether the agent needed the SIGKILL.
func (p *Proc) stop(ctx context.Context, grace time.Duration) (killed bool) {
	p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
	case <-ctx.Done():
	}
	p.Signal(syscall.SIGKILL)
	<-p.done
	return true
}

// ExitCode is the agent's exit code once Done is closed: -1 when a signal
// ended it, 128 when it never started (as a container runtime reports a
// start error).
func (p *Proc) ExitCode() int {
	var ee *exec.ExitError
	switch {
	case p.cmd == nil || p.cmd.Process == nil:
		return 128
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	case p.err != nil:
		return -1
	}
	return 0
}
