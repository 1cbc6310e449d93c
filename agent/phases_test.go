package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// dead reports whether pid no longer runs (a zombie only waits to be reaped).
func dead(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

func requireDead(t *testing.T, pid int, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return dead(pid) }, patience, 10*time.Millisecond, "%s (pid %d) still runs", what, pid)
}

func TestPlanRunsWithTheTaskInItsEnvironmentAndThePayloadOnStdin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, nil, hooks{})
	r.waitReady(t)
	sub := e.submit(t, "p1", slots.Plan, `echo "payload arrived on stdin"; env`)
	require.Equal(t, slots.StateRunning, sub.State)

	tk := e.waitTask(t, "p1", slots.StateSucceeded)
	assert.Equal(t, 0, tk.ExitCode)
	assert.Equal(t, 1, tk.Attempt)
	out := tk.Output
	assert.Contains(t, out, "payload arrived on stdin\n")
	for _, kv := range []string{"TASK_ID=p1", "TASK_TYPE=plan", "TASK_PHASE=plan", "TASK_ATTEMPT=1",
		"TASK_EPOCH=" + sub.Epoch, "SLOT=" + strconv.Itoa(sub.Slot), "POOL=team-a/pool-a", "POD_NAME=agent-1"} {
		assert.Contains(t, out, "\n"+kv+"\n", "the executor sees %s", kv)
	}
	assert.Equal(t, []string{"p1 plan slot=1 attempt=1"}, e.starts(t), "a plan takes a plan-only slot first")
}

func TestFailedPhaseKeepsItsExitCodeAndTheTailOfItsOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, nil, hooks{})
	// ~120 KiB of output, then the words that matter, on stderr.
	e.submit(t, "f1", slots.Plan, `i=0; while [ $i -lt 3000 ]; do echo "noise line $i ........................"; i=$((i+1)); done; echo "Error: the last words" >&2; exit 3`)

	tk := e.waitTask(t, "f1", slots.StateFailed)
	assert.Equal(t, slots.ReasonExitCode, tk.Reason)
	assert.Equal(t, 3, tk.ExitCode)
	assert.LessOrEqual(t, len(tk.Output), slots.DefaultMaxOutput)
	assert.Greater(t, len(tk.Output), slots.DefaultMaxOutput-200, "the tail fills the budget")
	assert.True(t, strings.HasSuffix(tk.Output, "noise line 2999 ........................\nError: the last words\n"), "ends with the last words")
	assert.True(t, strings.HasPrefix(tk.Output, "[slotscaler: "), "says the head was dropped")
}

func TestTimeoutTermsThenKillsTheExecutorsGroupChildrenIncluded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, map[string]string{"PLAN_TIMEOUT": "5s", "KILL_GRACE": "300ms"}, hooks{})
	// trap '' ignores TERM, and the background sleep inherits that: only
	// SIGKILL ends either.
	e.submit(t, "t1", slots.Plan, `trap '' TERM
echo $$ > "$D/leader.pid"
sleep 1000 &
echo $! > "$D/child.pid"
echo "working"
while :; do sleep 1; done`)

	tk := e.waitTask(t, "t1", slots.StateFailed)
	assert.Equal(t, slots.ReasonTimeout, tk.Reason)
	assert.Equal(t, 137, tk.ExitCode, "KILL ended it")
	assert.Contains(t, tk.Output, "working\n")
	assert.Contains(t, tk.Output, "[slotscaler: timed out after 5s: sent SIGTERM to the process group, then SIGKILL after 300ms]")
	requireDead(t, e.pid(t, "leader.pid"), "executor")
	requireDead(t, e.pid(t, "child.pid"), "executor's child")
}

func TestCancelStopsTheRunningExecutorAndFreesTheSlot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) {
		c.Policy = slots.SlotPolicy{Slots: [][]slots.TaskType{{slots.Plan, slots.PlanAndApply}}} // one slot
	})
	e.start(t, nil, hooks{})
	e.submit(t, "c1", slots.Plan, `trap 'echo "got TERM, cleaning up"; exit 143' TERM
mark ready-c1
while :; do sleep 0.02; done`)
	e.await(t, "ready-c1")
	e.submit(t, "c2", slots.Plan, `echo second`) // queued behind c1

	st, err := e.store.Cancel(context.Background(), e.pool, "c1", "alice")
	require.NoError(t, err)
	assert.Equal(t, slots.StateRunning, st, "a running task is cancelled by its agent")

	tk := e.waitTask(t, "c1", slots.StateCancelled)
	assert.Equal(t, "alice", tk.By)
	assert.Equal(t, 143, tk.ExitCode)
	assert.Contains(t, tk.Output, "got TERM, cleaning up\n[slotscaler: cancelled: sent SIGTERM to the process group]\n")
	e.waitTask(t, "c2", slots.StateSucceeded) // the freed slot took the queued task
}

func TestHeartbeatStopEndsACancelledPhaseWhileTheReaderIsBusy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	p := newPauser()
	e.start(t, nil, hooks{beforeTake: p.hook})
	e.submit(t, "h1", slots.Plan, `mark ready-h1; while :; do sleep 0.02; done`)
	e.await(t, "ready-h1")
	p.pause(t) // the cancel message stays in the inbox: only the heartbeat can tell

	_, err := e.store.Cancel(context.Background(), e.pool, "h1", "bob")
	require.NoError(t, err)
	tk := e.waitTask(t, "h1", slots.StateCancelled)
	assert.Contains(t, tk.Output, "[slotscaler: cancelled: sent SIGTERM to the process group]")
	p.unpause()
}

func TestExecutorKilledWithSignal9IsRecordedAsAFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, nil, hooks{})
	e.submit(t, "k1", slots.Plan, `echo "about to be killed"; kill -9 $$`)

	tk := e.waitTask(t, "k1", slots.StateFailed)
	assert.Equal(t, "signal", tk.Reason)
	assert.Equal(t, 137, tk.ExitCode)
	assert.Contains(t, tk.Output, "about to be killed\n[slotscaler: executor died of signal 9 (killed)]\n")
}

func TestThreePlansRunAtOnceInTheThreeSlotsOfOnePod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, nil, hooks{})
	// Each plan finishes only once all three have started: they must overlap.
	const body = `mark started-$TASK_ID; await started-p1; await started-p2; await started-p3`
	for _, id := range []string{"p1", "p2", "p3"} {
		e.submit(t, id, slots.Plan, body)
	}
	slotsUsed := map[int]bool{}
	for _, id := range []string{"p1", "p2", "p3"} {
		tk := e.waitTask(t, id, slots.StateSucceeded)
		slotsUsed[tk.Slot] = true
	}
	assert.Equal(t, map[int]bool{0: true, 1: true, 2: true}, slotsUsed)
	assert.Len(t, e.starts(t), 3)
}

func TestBuiltinSleepRunsTasksWithNoToolInstalled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	e.start(t, map[string]string{"EXECUTOR": "builtin:sleep?min=1ms&max=20ms"}, hooks{})
	for i := range 5 {
		e.submit(t, "s"+strconv.Itoa(i), slots.Plan, "")
	}
	for i := range 5 {
		tk := e.waitTask(t, "s"+strconv.Itoa(i), slots.StateSucceeded)
		assert.Contains(t, tk.Output, "builtin:sleep: slept ")
	}

	e2 := newEnv(t, redistest.Standalone(t))
	e2.start(t, map[string]string{"EXECUTOR": "builtin:sleep?min=1h", "PLAN_TIMEOUT": "50ms"}, hooks{})
	e2.submit(t, "slow", slots.Plan, "")
	tk := e2.waitTask(t, "slow", slots.StateFailed)
	assert.Equal(t, slots.ReasonTimeout, tk.Reason, "the built-in honours the timeout")
	e2.submit(t, "slow2", slots.Plan, "")
	require.Eventually(t, func() bool { return e2.task(t, "slow2").Started }, patience, 10*time.Millisecond)
	_, err := e2.store.Cancel(context.Background(), e2.pool, "slow2", "carol")
	require.NoError(t, err)
	e2.waitTask(t, "slow2", slots.StateCancelled)
}
