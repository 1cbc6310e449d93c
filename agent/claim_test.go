package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/faultproxy"
	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A claim whose reply is lost (Redis answers after the agent's
// --redis-timeout) may have landed. Regression: the agent used to read the
// task, see it started and run it, and the next Take retried the stored
// claim, got the same assignment back and started a second executor for the
// same epoch: an approved apply ran twice at once. The evidence is the
// executor's own log of starts, written outside Redis.
func TestAnApplyWhoseClaimReplyWasLostRunsOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	proxy := faultproxy.Start(t, srv.Addr())
	e := newEnv(t, srv.URL())
	e.url = proxy.URL() // the agent reaches Redis through the proxy
	r := e.start(t, map[string]string{"REDIS_TIMEOUT": "1s"}, hooks{})
	r.waitReady(t)

	e.submit(t, "pa", slots.PlanAndApply, `mark "$TASK_PHASE-started"; await "$TASK_PHASE-release"`)
	e.await(t, "plan-started")
	e.mark(t, "plan-release")
	e.waitTask(t, "pa", slots.StateReserved)

	// The apply's claim runs in Redis; its reply arrives after the agent
	// gave up waiting (the claim entry is "a|<task>|<epoch>").
	lost := proxy.Add(faultproxy.Rule{Command: "EVALSHA", Match: faultproxy.ArgContains("a|pa|"), Times: 1,
		Action: faultproxy.DelayReply(3 * time.Second)})
	_, err := e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)
	e.await(t, "apply-started")
	require.Eventually(t, func() bool { return lost.Acted() == 1 }, patience, 10*time.Millisecond, "the claim's reply was held")
	// Give a second start every chance to happen: the agent's next takes
	// retry the claim and get the same assignment back.
	require.Eventually(t, func() bool {
		return strings.Contains(r.logs.String(), "refusing to start a phase this agent already runs") ||
			strings.Contains(r.logs.String(), "claim outcome unknown")
	}, patience, 10*time.Millisecond)
	time.Sleep(time.Second) // not a synchronisation: a window for a wrong second start to show
	e.mark(t, "apply-release")
	tk := e.waitTask(t, "pa", slots.StateSucceeded)
	assert.Equal(t, 1, tk.Attempt, "one start of the apply")
	assert.Equal(t, []string{"pa plan slot=0 attempt=1", "pa apply slot=0 attempt=1"}, e.starts(t), "each phase started once")
}

// A phase is started once, whatever hands it to start twice.
func TestStartRefusesAPhaseTheAgentAlreadyRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, nil, hooks{})
	r.waitReady(t)
	e.submit(t, "p", slots.Plan, `mark started; await release`)
	e.await(t, "started")
	tk := e.task(t, "p")
	a := r.agent(t)
	a.start(&slots.Assignment{Task: "p", Type: slots.Plan, Phase: slots.PhasePlan, Slot: tk.Slot, Attempt: tk.Attempt, Epoch: tk.Epoch}, time.Now())
	e.mark(t, "release")
	e.waitTask(t, "p", slots.StateSucceeded)
	assert.Equal(t, []string{"p plan slot=" + strconv.Itoa(tk.Slot) + " attempt=1"}, e.starts(t))
	v, ok := r.metric(t, "slotscaler_agent_duplicate_starts_refused_total")
	require.True(t, ok)
	assert.Equal(t, 1.0, v)
}

// The store keys a heartbeat report by task: a plan whose result is
// recorded but whose reply has not arrived, beside its apply that already
// runs, must be reported as the apply, or the apply would look missing.
func TestHeartbeatReportsOnePhasePerTaskTheRunningOneFirst(t *testing.T) {
	a := newAgent(Config{}, slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler), nil, nil, newMetrics(slots.PoolID{Namespace: "ns", Name: "pool"}), hooks{})
	plan := slots.TaskRef{Task: "pa", Epoch: "g-1"}
	apply := slots.TaskRef{Task: "pa", Epoch: "g-2"}
	other := slots.TaskRef{Task: "p", Epoch: "g-3"}
	a.phases[plan] = &phase{ref: plan, slot: 0, finished: true}
	a.phases[apply] = &phase{ref: apply, slot: 0}
	a.phases[other] = &phase{ref: other, slot: -1}
	for range 20 { // map order varies
		_, report := a.report()
		assert.Equal(t, []slots.RunningPhase{{Slot: -1, Task: "p", Epoch: "g-3"}, {Slot: 0, Task: "pa", Epoch: "g-2"}}, report)
	}
}

// The store may hand out a second apply of a task (a failover lost the
// first one's approval or claim, and someone approved again). The apply
// runs only on the pod that ran its plan, so the agent itself refuses a
// second apply of a task: it is recorded as failed, never run.
func TestASecondApplyOfATaskIsNeverRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	r := e.start(t, nil, hooks{})
	r.waitReady(t)
	e.submit(t, "pa", slots.PlanAndApply, `mark "$TASK_PHASE-ran"`)
	e.waitTask(t, "pa", slots.StateReserved)
	_, err := e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)
	e.waitTask(t, "pa", slots.StateSucceeded)

	a := r.agent(t)
	a.start(&slots.Assignment{Task: "pa", Type: slots.PlanAndApply, Phase: slots.PhaseApply, Slot: 0, Attempt: 1, Epoch: "g-999"}, time.Now())
	require.Eventually(t, func() bool {
		v, _ := r.metric(t, "slotscaler_agent_duplicate_starts_refused_total")
		return v == 1
	}, patience, 10*time.Millisecond)
	require.Eventually(t, func() bool { idle, _ := a.quiet(); return idle }, patience, 10*time.Millisecond)
	assert.Equal(t, []string{"pa plan slot=0 attempt=1", "pa apply slot=0 attempt=1"}, e.starts(t), "the apply ran once")
}

// After the store lost what runs in a slot (a failover that lost writes) it
// may give the slot to another phase while the first still runs. Found by
// the fault-injection run (seed 20261203): two executors ran in one slot.
// The new phase waits until the slot's executor has ended.
func TestSeed20261203TwoExecutorsNeverShareASlotWhateverTheStoreSays(t *testing.T) {
	t.Parallel()
	// The phase started by hand has an epoch the store never issued: a
	// heartbeat would have the agent stop it (rightly) before the slot frees.
	// One heartbeat, at registration, keeps this about the agent's own locks.
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.HeartbeatTimeout = time.Hour })
	r := e.start(t, map[string]string{"HEARTBEAT_INTERVAL": "10m"}, hooks{})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark started-a; await release-a; mark ended-a`)
	e.await(t, "started-a")
	tk := e.task(t, "a")
	a := r.agent(t)
	a.start(&slots.Assignment{Task: "x", Type: slots.Plan, Phase: slots.PhasePlan, Slot: tk.Slot, Attempt: 1, Epoch: "g-999",
		Payload: []byte(`test -e "` + e.dir + `/ended-a" && mark x-after-a; mark started-x`)}, time.Now())
	require.Eventually(t, func() bool {
		return strings.Contains(r.logs.String(), "starting this one when it ends")
	}, patience, 10*time.Millisecond)
	assert.Equal(t, []string{"a plan slot=" + strconv.Itoa(tk.Slot) + " attempt=1"}, e.starts(t), "x waits for the slot")
	e.mark(t, "release-a")
	e.await(t, "started-x")
	e.await(t, "x-after-a")
}

// Found by the 30-minute soak (seed 20261203): after data loss the store
// gave a plan that still ran here to another slot of the same pod, and the
// task's plan ran twice at once. A phase of a task that still runs here
// waits for it.
func TestSeed20261203APlanNeverRunsTwiceAtOnceInOneAgent(t *testing.T) {
	t.Parallel()
	// The phase started by hand has an epoch the store never issued: a
	// heartbeat would have the agent stop it (rightly) before the slot frees.
	// One heartbeat, at registration, keeps this about the agent's own locks.
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.HeartbeatTimeout = time.Hour })
	r := e.start(t, map[string]string{"HEARTBEAT_INTERVAL": "10m"}, hooks{})
	r.waitReady(t)
	e.submit(t, "a", slots.Plan, `mark "started-$TASK_EPOCH"; await release-a; mark "ended-$TASK_EPOCH"`)
	tk := e.task(t, "a")
	e.await(t, "started-"+tk.Epoch)
	other := (tk.Slot + 1) % 3
	a := r.agent(t)
	a.start(&slots.Assignment{Task: "a", Type: slots.Plan, Phase: slots.PhasePlan, Slot: other, Attempt: 1, Epoch: "g-999",
		Payload: []byte(`test -e "` + e.dir + `/ended-` + tk.Epoch + `" && mark again-after-first`)}, time.Now())
	require.Eventually(t, func() bool {
		return strings.Contains(r.logs.String(), "the task still runs another phase here")
	}, patience, 10*time.Millisecond)
	assert.Len(t, e.starts(t), 1, "the second run of a waits")
	e.mark(t, "release-a")
	e.await(t, "again-after-first")
}
