package main

import (
	"context"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// daemonPayload starts a daemon in a session of its own (setsid leaves the
// executor's process group), waits until it wrote its pid to
// $D/<name>.pid, then runs rest.
func daemonPayload(name, rest string) string {
	return `setsid sh -c 'echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; exec sleep 1000' "$D/` + name + `.pid" >/dev/null 2>&1 &
while [ ! -e "$D/` + name + `.pid" ]; do sleep 0.01; done
` + rest
}

// requireGone checks, the moment the phase's result is recorded, that the
// daemon no longer exists: not alive, not a zombie, nothing to wait for.
func requireGone(t *testing.T, pid int, what string) {
	t.Helper()
	assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "%s (pid %d) outlived its phase", what, pid)
	if !dead(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL) // do not leave it running after a failure
	}
}

// Nothing an executor starts outlives its phase: a setsid daemon is gone
// once the phase's result is recorded, whether the executor exited,
// timed out or was cancelled.
func TestASetsidDaemonOfAnExecutorDoesNotOutliveItsPhase(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, map[string]string{"PLAN_TIMEOUT": "5s", "KILL_GRACE": "300ms"}, hooks{}) // 5s: time for the daemon to start on a loaded machine before the timeout

	e.submit(t, "exits", slots.Plan, daemonPayload("exits", `echo done`))
	e.waitTask(t, "exits", slots.StateSucceeded)
	requireGone(t, e.pid(t, "exits.pid"), "the daemon of a plan that exited")

	e.submit(t, "times-out", slots.Plan, daemonPayload("times-out", `while :; do sleep 0.05; done`))
	tk := e.waitTask(t, "times-out", slots.StateFailed)
	assert.Equal(t, slots.ReasonTimeout, tk.Reason)
	requireGone(t, e.pid(t, "times-out.pid"), "the daemon of a plan that timed out")

	e.submit(t, "cancelled", slots.Plan, daemonPayload("cancelled", `mark ready-cancelled; while :; do sleep 0.05; done`))
	e.await(t, "ready-cancelled")
	_, err := e.store.Cancel(context.Background(), e.pool, "cancelled", "alice")
	require.NoError(t, err)
	e.waitTask(t, "cancelled", slots.StateCancelled)
	requireGone(t, e.pid(t, "cancelled.pid"), "the daemon of a cancelled plan")
}

// An agent killed with SIGKILL takes its executors' daemons with it: the
// supervisor's parent-death signal makes it end the whole tree.
func TestKill9OfTheAgentEndsItsExecutorsDaemons(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	self, err := os.Executable()
	require.NoError(t, err)
	p := startProcess(t, self, e.settings(t, nil), false)
	e.waitPodState(t, "agent-1", slots.PodActive)
	e.submit(t, "p", slots.Plan, daemonPayload("p", `while :; do sleep 1; done`))
	pid := e.pid(t, "p.pid")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
	requireDead(t, pid, "the daemon of the killed agent's executor")
}
