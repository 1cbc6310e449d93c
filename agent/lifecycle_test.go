package main

import (
	"context"
	"flag"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestSIGTERMFinishesTheRunningPhaseAndHandsBackUnstartedOnes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	p := newPauser()
	r := e.start(t, nil, hooks{beforeTake: p.hook})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark started-a; await release-a; echo "a finished"`)
	e.await(t, "started-a")

	// With the reader parked, b and c are assigned to the two free slots
	// but not started; d finds no slot and queues.
	p.pause(t)
	for _, id := range []string{"b", "c", "d"} {
		e.submit(t, id, slots.Plan, `echo "must not run"`)
	}
	for _, id := range []string{"b", "c"} {
		tk := e.task(t, id)
		require.Equal(t, slots.StateRunning, tk.State, id)
		require.False(t, tk.Started, id)
		require.Equal(t, 0, tk.Attempt, id)
	}
	require.Equal(t, slots.StateQueued, e.task(t, "d").State)

	r.stop() // SIGTERM
	require.Eventually(t, func() bool { return e.podState(t, "agent-1") == slots.PodCordoned }, patience, 10*time.Millisecond, "cordoned at once")
	code, body := r.get(t, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "stopping\n", body)
	p.unpause()

	for _, id := range []string{"b", "c"} {
		tk := e.waitTask(t, id, slots.StateQueued)
		assert.Equal(t, 0, tk.Attempt, "%s was handed back without spending an attempt", id)
	}
	assert.Equal(t, slots.StateRunning, e.task(t, "a").State, "a still runs")
	e.mark(t, "release-a")
	require.NoError(t, r.wait(t), "a clean stop exits 0")

	tk := e.task(t, "a")
	assert.Equal(t, slots.StateSucceeded, tk.State)
	assert.Contains(t, tk.Output, "a finished")
	assert.Equal(t, []string{"a plan slot=1 attempt=1"}, e.starts(t), "no new task started after SIGTERM")
	snap, err := e.store.Snapshot(context.Background(), e.pool)
	require.NoError(t, err)
	assert.Empty(t, snap.Pods, "a static pool's agent removes its pod record when done")
	var queue []string
	for _, q := range snap.Queue {
		queue = append(queue, q.ID)
	}
	assert.Equal(t, []string{"b", "c", "d"}, queue, "handed-back tasks keep their place in the queue")
}

func TestSIGTERMReleasesUnapprovedReservationsAndRunsApprovedApplies(t *testing.T) {
	t.Parallel()
	t.Run("held when the signal comes", func(t *testing.T) {
		e := newEnv(t, redistest.Standalone(t))
		r := e.start(t, nil, hooks{})
		e.submit(t, "pa", slots.PlanAndApply, `echo "$TASK_PHASE done"`)
		e.waitTask(t, "pa", slots.StateReserved)
		require.Eventually(t, func() bool { v, _ := r.metric(t, "slotscaler_agent_reserved_slots"); return v == 1 }, patience, 10*time.Millisecond)

		r.stop()
		require.NoError(t, r.wait(t))
		tk := e.task(t, "pa")
		assert.Equal(t, slots.StateFailed, tk.State)
		assert.Equal(t, "agent-shutdown", tk.Reason)
		_, err := e.store.Approve(context.Background(), e.pool, "pa", "late-approver")
		require.ErrorIs(t, err, slots.ErrReservationLost)
	})
	t.Run("made by a plan that finishes after the signal", func(t *testing.T) {
		e := newEnv(t, redistest.Standalone(t))
		r := e.start(t, nil, hooks{})
		e.submit(t, "pa", slots.PlanAndApply, `mark started-pa; await release-pa`)
		e.await(t, "started-pa")
		r.stop()
		require.Eventually(t, func() bool { return e.podState(t, "agent-1") == slots.PodCordoned }, patience, 10*time.Millisecond)
		e.mark(t, "release-pa")
		require.NoError(t, r.wait(t))
		tk := e.task(t, "pa")
		assert.Equal(t, slots.StateFailed, tk.State)
		assert.Equal(t, "agent-shutdown", tk.Reason)
		assert.Contains(t, r.logs.String(), "released reservation")
	})
	t.Run("approved just before the signal: the apply runs", func(t *testing.T) {
		e := newEnv(t, redistest.Standalone(t))
		p := newPauser()
		r := e.start(t, nil, hooks{beforeTake: p.hook})
		e.submit(t, "pa", slots.PlanAndApply, `echo "$TASK_PHASE ran"`)
		e.waitTask(t, "pa", slots.StateReserved)
		require.Eventually(t, func() bool { v, _ := r.metric(t, "slotscaler_agent_reserved_slots"); return v == 1 }, patience, 10*time.Millisecond)
		p.pause(t)
		_, err := e.store.Approve(context.Background(), e.pool, "pa", "alice") // the apply waits in the inbox
		require.NoError(t, err)
		r.stop()
		require.Eventually(t, func() bool { return e.podState(t, "agent-1") == slots.PodCordoned }, patience, 10*time.Millisecond)
		p.unpause()
		require.NoError(t, r.wait(t))
		tk := e.task(t, "pa")
		assert.Equal(t, slots.StateSucceeded, tk.State)
		assert.Contains(t, tk.Output, "apply ran")
	})
}

func TestPlanAndApplyRunsTheApplyInSlot0OfTheSamePodAfterApprovalEvenWhenCordoned(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, nil, hooks{})
	r.waitReady(t)
	payload := `echo "phase=$TASK_PHASE slot=$SLOT pod=$POD_NAME attempt=$TASK_ATTEMPT"`
	sub := e.submit(t, "pa", slots.PlanAndApply, payload)
	require.Equal(t, 0, sub.Slot)
	tk := e.waitTask(t, "pa", slots.StateReserved)
	assert.Contains(t, tk.Output, "phase=plan slot=0 pod=agent-1")

	// The janitor cordons the pod (surplus): the approval still reaches it.
	require.NoError(t, e.store.Cordon(context.Background(), e.pool, "agent-1", ""))
	require.Eventually(t, func() bool { c, _ := r.get(t, "/readyz"); return c == http.StatusServiceUnavailable }, patience, 10*time.Millisecond, "a cordoned pod is not ready")
	_, err := e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)

	tk = e.waitTask(t, "pa", slots.StateSucceeded)
	assert.Contains(t, tk.Output, "phase=apply slot=0 pod=agent-1 attempt=1")
	assert.Equal(t, []string{"pa plan slot=0 attempt=1", "pa apply slot=0 attempt=1"}, e.starts(t))
	require.Eventually(t, func() bool { v, _ := r.metric(t, "slotscaler_agent_reserved_slots"); return v == 0 }, patience, 10*time.Millisecond)
}

func TestRejectedOrExpiredReservationFreesSlot0ForTheNextTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.ReservationTTL = time.Second })
	e.start(t, nil, hooks{})
	payload := `echo "$TASK_PHASE"`

	e.submit(t, "rejected", slots.PlanAndApply, payload)
	e.waitTask(t, "rejected", slots.StateReserved)
	e.submit(t, "expires", slots.PlanAndApply, payload)
	require.Equal(t, slots.StateQueued, e.task(t, "expires").State, "slot 0 is held for the reservation")

	require.NoError(t, e.store.Reject(context.Background(), e.pool, "rejected", "bob"))
	assert.Equal(t, slots.StateRejected, e.task(t, "rejected").State)
	e.waitTask(t, "expires", slots.StateReserved) // its plan ran in the freed slot 0
	e.submit(t, "next", slots.PlanAndApply, payload)

	// The reaper (the janitor's job) expires the reservation.
	require.Eventually(t, func() bool {
		res, err := e.store.Reap(context.Background(), e.pool, slots.ReapOptions{})
		require.NoError(t, err)
		return res.Reservations == 1
	}, patience, 50*time.Millisecond)
	tk := e.task(t, "expires")
	assert.Equal(t, slots.StateExpired, tk.State)
	assert.Equal(t, slots.ReasonReservationTTL, tk.Reason)
	e.waitTask(t, "next", slots.StateReserved)
	assert.NotContains(t, strings.Join(e.starts(t), "\n"), "apply", "no apply ran")
}

func TestRedisRestartMidTaskLosesNothingAndRunsNothingTwice(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.WithAppendOnly())
	e := newEnv(t, srv.URL())
	r := e.start(t, map[string]string{"REDIS_TIMEOUT": "1s"}, hooks{})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark started-a; await release-a; echo "a finished on attempt $TASK_ATTEMPT"`)
	e.await(t, "started-a")

	srv.Stop(t)
	e.mark(t, "release-a") // the executor ends while Redis is down
	require.Eventually(t, func() bool {
		pending, _ := r.metric(t, "slotscaler_agent_pending_results")
		failed, _ := r.metric(t, `slotscaler_agent_redis_errors_total{op="complete"}`)
		return pending == 1 && failed >= 1
	}, patience, 20*time.Millisecond, "the result waits in memory")
	srv.Restart(t)

	tk := e.waitTask(t, "a", slots.StateSucceeded)
	assert.Contains(t, tk.Output, "a finished on attempt 1")
	assert.Equal(t, 1, tk.Attempt)
	e.submit(t, "b", slots.Plan, `echo "b ran"`)
	e.waitTask(t, "b", slots.StateSucceeded)
	assert.Equal(t, []string{"a plan slot=1 attempt=1", "b plan slot=1 attempt=1"}, e.starts(t), "nothing ran twice")
	assert.Equal(t, slots.PodActive, e.podState(t, "agent-1"))
	r.waitReady(t)
}

func TestRemovedPodKillsItsExecutorsAndExitsNonZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, map[string]string{"KILL_GRACE": "200ms"}, hooks{})
	e.submit(t, "a", slots.Plan, `trap '' TERM; echo $$ > "$D/a.pid"; while :; do sleep 1; done`)
	pid := e.pid(t, "a.pid")

	// Someone removed this incarnation (in a static pool: its heartbeat
	// expired; in a managed one: the pod object is gone). Its plan goes
	// back to the queue; the agent must stop working at once.
	require.NoError(t, e.store.RemovePod(context.Background(), e.pool, "agent-1", "uid-1", "test"))
	err := r.wait(t)
	require.ErrorIs(t, err, slots.ErrTombstoned)
	requireDead(t, pid, "the fenced executor")
	tk := e.task(t, "a")
	assert.Equal(t, slots.StateQueued, tk.State, "requeued by the removal, not completed by the fenced agent")
	assert.Equal(t, 1, tk.Attempt)
}

func TestManagedPoolAgentWaitsForTheExpectedRecordThenRegisters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.Managed = true })
	r := e.start(t, nil, hooks{})
	require.Eventually(t, func() bool { return strings.Contains(r.logs.String(), "registration refused for now") }, patience, 10*time.Millisecond)
	code, body := r.get(t, "/healthz")
	assert.Equal(t, http.StatusOK, code, "alive while it waits")
	assert.Equal(t, "ok\n", body)
	code, body = r.get(t, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not registered\n", body)

	require.NoError(t, e.store.ExpectPod(context.Background(), e.pool, "agent-1", "uid-1"))
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `echo ok`)
	e.waitTask(t, "a", slots.StateSucceeded)

	r.stop()
	require.NoError(t, r.wait(t))
	assert.Equal(t, slots.PodCordoned, e.podState(t, "agent-1"), "in a managed pool the janitor removes the record, not the agent")
}

func TestManagedPoolAgentGivesUpWhenNeverExpected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.Managed = true })
	r := e.start(t, map[string]string{"REGISTER_TIMEOUT": "500ms"}, hooks{})
	err := r.wait(t)
	require.ErrorIs(t, err, slots.ErrNotExpected)
	assert.Contains(t, err.Error(), "gave up after --register-timeout 500ms")
}

func TestMetricsCountPhasesByTypeAndOutcome(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, nil, hooks{})
	e.submit(t, "ok", slots.Plan, `mark started-ok; await release-ok`)
	e.await(t, "started-ok")
	busy, _ := r.metric(t, "slotscaler_agent_busy_slots")
	assert.Equal(t, 1.0, busy)
	e.mark(t, "release-ok")
	e.submit(t, "bad", slots.Plan, `exit 2`)
	e.waitTask(t, "ok", slots.StateSucceeded)
	e.waitTask(t, "bad", slots.StateFailed)

	require.Eventually(t, func() bool {
		v, _ := r.metric(t, `slotscaler_agent_task_phases_total{outcome="failure",phase="plan",type="plan"}`)
		return v == 1
	}, patience, 10*time.Millisecond)
	v, _ := r.metric(t, `slotscaler_agent_task_phases_total{outcome="success",phase="plan",type="plan"}`)
	assert.Equal(t, 1.0, v)
	v, _ = r.metric(t, `slotscaler_agent_phase_duration_seconds_count{outcome="success",phase="plan",type="plan"}`)
	assert.Equal(t, 1.0, v)
	v, _ = r.metric(t, "slotscaler_agent_busy_slots")
	assert.Equal(t, 0.0, v)
	_, ok := r.metric(t, "go_goroutines")
	assert.True(t, ok, "runtime metrics on the agent's own registry")
	_, body := r.get(t, "/metrics")
	assert.Contains(t, body, `slotscaler_agent_task_phases_total{outcome="success",phase="plan",pool="`+e.pool.String()+`",type="plan"} 1`,
		"the agent's metrics carry its pool")
}

func TestBadSettingsStopStartUpWithOneLineNamingThem(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	managed := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.Managed = true })
	cases := map[string]struct {
		env  *testEnv
		over map[string]string
		want string
	}{
		"no pool name":           {env: e, over: map[string]string{"POOL_NAME": ""}, want: "missing --pool-name (env POOL_NAME)"},
		"bad namespace":          {env: e, over: map[string]string{"POOL_NAMESPACE": "Team_A"}, want: "--pool-namespace/--pool-name"},
		"no redis url":           {env: e, over: map[string]string{"REDIS_URL": ""}, want: "missing --redis-url (env REDIS_URL)"},
		"embedded redis":         {env: e, over: map[string]string{"REDIS_URL": "memory://"}, want: "--redis-url scheme"},
		"no executor":            {env: e, over: map[string]string{"EXECUTOR": ""}, want: "missing --executor (env EXECUTOR)"},
		"missing executor":       {env: e, over: map[string]string{"EXECUTOR": "/nonexistent/run-task"}, want: "--executor"},
		"bad builtin":            {env: e, over: map[string]string{"EXECUTOR": "builtin:sleep?fail=2"}, want: "fail="},
		"bad duration":           {env: e, over: map[string]string{"PLAN_TIMEOUT": "soon"}, want: "plan-timeout (from PLAN_TIMEOUT)"},
		"zero grace":             {env: e, over: map[string]string{"KILL_GRACE": "0s"}, want: "--kill-grace 0s must be positive"},
		"credentials allowed":    {env: e, over: map[string]string{"EXECUTOR_ENV": "AWS_REGION,REDIS_URL"}, want: "--executor-env: REDIS_URL is one of the agent's own settings"},
		"task var allowed":       {env: e, over: map[string]string{"EXECUTOR_ENV": "TASK_ID"}, want: "--executor-env: TASK_ID is set by the agent"},
		"bad pod name":           {env: e, over: map[string]string{"POD_NAME": "Agent_1"}, want: "--pod-name"},
		"bad log format":         {env: e, over: map[string]string{"LOG_FORMAT": "xml"}, want: "log format"},
		"slow heartbeat":         {env: e, over: map[string]string{"HEARTBEAT_INTERVAL": "20s"}, want: "--heartbeat-interval 20s is not well inside pool team-a/pool-a's heartbeat timeout 30s"},
		"managed without uid":    {env: managed, over: map[string]string{"POD_UID": ""}, want: "missing --pod-uid (env POD_UID)"},
		"undeclared pool":        {env: e, over: map[string]string{"POOL_NAME": "nope", "REGISTER_TIMEOUT": "300ms"}, want: "pool not found"},
		"unreachable redis":      {env: e, over: map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0", "REGISTER_TIMEOUT": "300ms"}, want: "gave up after --register-timeout 300ms"},
		"two problems, one line": {env: e, over: map[string]string{"POOL_NAME": "", "EXECUTOR": ""}, want: "missing --pool-name (env POOL_NAME); missing --executor"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := tc.env.settings(t, tc.over)
			logs := &testutil.SyncBuffer{}
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			err := run(ctx, nil, logs, lookupIn(env), &runOptions{listener: listen(t)})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

func TestHelpListsEverySettingWithItsEnvironmentTwin(t *testing.T) {
	t.Parallel()
	out := &testutil.SyncBuffer{}
	err := run(context.Background(), []string{"--help"}, out, lookupIn(nil), nil)
	require.ErrorIs(t, err, flag.ErrHelp)
	for _, s := range []string{"--pool-namespace", "POOL_NAMESPACE", "--executor-env", "EXECUTOR_ENV", "--kill-grace", `(default "10s")`, "--listen-address", `(default ":8082")`} {
		assert.Contains(t, out.String(), s)
	}
	assert.True(t, slices.Contains(taskVars, "TASK_EPOCH"))
}

func TestAfterRedisLosesItsDataTheAgentRegistersAgainWithItsBusySlots(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t) // no AOF: a restart loses everything
	e := newEnv(t, srv.URL())
	r := e.start(t, map[string]string{"REDIS_TIMEOUT": "1s"}, hooks{})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark started-a; await release-a`)
	e.await(t, "started-a")

	srv.Restart(t)
	// The janitor declares the pool again (a new generation).
	_, err := e.store.DeclarePool(context.Background(), e.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		snap, err := e.store.Snapshot(context.Background(), e.pool)
		return err == nil && len(snap.Pods) == 1 && snap.Pods[0].State == slots.PodActive && snap.Pods[0].Slots[1].State == slots.SlotOrphan
	}, patience, 20*time.Millisecond, "registered again, slot 1 busy with work Redis lost")

	e.mark(t, "release-a") // its result has no task to go to any more
	require.Eventually(t, func() bool {
		snap, err := e.store.Snapshot(context.Background(), e.pool)
		return err == nil && len(snap.Pods) == 1 && !snap.Pods[0].Busy()
	}, patience, 20*time.Millisecond, "the orphan slot is freed once no longer reported")
	e.submit(t, "b", slots.Plan, `echo "b ran"`)
	e.waitTask(t, "b", slots.StateSucceeded)
	assert.Contains(t, r.logs.String(), "the slot store refused the result; dropping it")
}

// Regression: an agent finishing work after SIGTERM whose record Redis then
// lost registered again as active, and new work reached it that would die
// at the end of its grace period. It registers into its own cordon.
func TestAStoppingAgentThatLostItsRecordRegistersCordonedAndTakesNoWork(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t) // no AOF: a restart loses everything
	e := newEnv(t, srv.URL())
	r := e.start(t, map[string]string{"REDIS_TIMEOUT": "1s"}, hooks{})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark started-a; await release-a`)
	e.await(t, "started-a")
	r.stop() // SIGTERM: a runs on
	require.Eventually(t, func() bool { return e.podState(t, "agent-1") == slots.PodCordoned }, patience, 10*time.Millisecond)

	srv.Restart(t)
	_, err := e.store.DeclarePool(context.Background(), e.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	e.submit(t, "b", slots.Plan, `echo "b must not run here"`)
	require.Eventually(t, func() bool {
		snap, err := e.store.Snapshot(context.Background(), e.pool)
		return err == nil && len(snap.Pods) == 1 && snap.Pods[0].State == slots.PodCordoned &&
			snap.Pods[0].CordonedBy == slots.CordonedByAgent && snap.Pods[0].Slots[1].State == slots.SlotOrphan
	}, patience, 20*time.Millisecond, "registered again into its own cordon, slot 1 busy with work Redis lost")
	assert.Equal(t, slots.StateQueued, e.task(t, "b").State, "no new work for a stopping agent")
	e.mark(t, "release-a")
	require.NoError(t, r.wait(t), "a clean stop")
	assert.Equal(t, []string{"a plan slot=1 attempt=1"}, e.starts(t))
	assert.Equal(t, slots.StateQueued, e.task(t, "b").State)
}
