package slots

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSubmitTakeCompleteCycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		r := e.submit("t1", Plan)
		require.True(t, r.Created)
		assert.Equal(t, StateRunning, r.State)
		assert.Equal(t, "agent-0", r.Pod)
		a := e.take("agent-0", uid)
		assert.Equal(t, "t1", a.Task)
		assert.Equal(t, PhasePlan, a.Phase)
		assert.Equal(t, 1, a.Attempt)
		assert.Equal(t, []byte("payload-t1"), a.Payload)
		assert.Equal(t, r.Epoch, a.Epoch)
		assert.Equal(t, StateSucceeded, e.complete(a, OutcomeSuccess))
		tk := e.task("t1")
		assert.Equal(t, StateSucceeded, tk.State)
		assert.Equal(t, "out", tk.Output)
		var states []string
		for _, h := range tk.History {
			states = append(states, h.State)
		}
		assert.Equal(t, []string{"submitted", "assigned", "started", "succeeded"}, states)
		st := e.stats()
		assert.Equal(t, 0, st.BusyPods)
		assert.Equal(t, 1, st.IdlePods)
		assert.Equal(t, []int{1, 2}, st.IdleSlots)
		e.consistent()
	})
}

func TestPlanTakesPlanOnlySlotBeforeSlotZero(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.pod("agent-0")
		for i, want := range []int{1, 2, 0} {
			r := e.submit("t"+string(rune('a'+i)), Plan)
			assert.Equal(t, want, r.Slot, "plan %d", i)
		}
		r := e.submit("pa", PlanAndApply)
		assert.Equal(t, StateQueued, r.State, "slot 0 is taken by a plan: the plan_and_apply waits")
		e.consistent()
	})
}

func TestOldestPodGetsWorkFirst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.pod("agent-old")
		e.pod("agent-new")
		// Plan-only slots first (oldest pod first within the class), slot 0s last.
		want := []string{"agent-old#1", "agent-old#2", "agent-new#1", "agent-new#2", "agent-old#0", "agent-new#0"}
		for i, w := range want {
			r := e.submit("t"+string(rune('a'+i)), Plan)
			assert.Equal(t, w, fmt.Sprintf("%s#%d", r.Pod, r.Slot))
		}
	})
}

func TestSubmitIsIdempotentByID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.submit("t1", Plan)
		r := e.submit("t1", Plan)
		assert.False(t, r.Created)
		assert.Equal(t, StateQueued, r.State)
		_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "t1", Type: PlanAndApply})
		assert.ErrorIs(t, err, ErrTaskConflict)
		assert.Equal(t, 1, e.stats().Queued[Plan])
	})
}

func TestQueueFullRefusesAndWritesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, func(c *PoolConfig) { c.QueueLimit = 2 })
		e.submit("t1", Plan)
		e.submit("t2", PlanAndApply)
		_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "t3", Type: Plan})
		require.ErrorIs(t, err, ErrQueueFull)
		_, err = e.s.Task(e.ctx, e.pool, "t3")
		assert.ErrorIs(t, err, ErrTaskNotFound)
	})
}

func TestCompleteFreesSlotAndDispatchesQueuedWork(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		for _, id := range []string{"t1", "t2", "t3", "t4"} {
			e.submit(id, Plan)
		}
		assert.Equal(t, StateQueued, e.task("t4").State)
		a := e.take("agent-0", uid)
		e.complete(a, OutcomeFailure)
		t4 := e.task("t4")
		assert.Equal(t, StateRunning, t4.State, "the freed slot takes the queued task in the same script")
		assert.Equal(t, a.Slot, t4.Slot)
		assert.Equal(t, ReasonExitCode, e.task(a.Task).Reason)
		e.consistent()
	})
}

func TestCompleteWithStaleEpochIsRefusedAndRepeatReturnsFirstOutcome(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("t1", Plan)
		a := e.take("agent-0", uid)
		_, err := e.s.Complete(e.ctx, e.pool, Result{Task: "t1", Epoch: a.Epoch + "x", Outcome: OutcomeSuccess})
		require.ErrorIs(t, err, ErrStaleEpoch)
		assert.Equal(t, StateRunning, e.task("t1").State)
		assert.Equal(t, StateFailed, e.complete(a, OutcomeFailure))
		// A retried report with the same epoch returns the first outcome.
		assert.Equal(t, StateFailed, e.complete(a, OutcomeSuccess))
		assert.Equal(t, StateFailed, e.task("t1").State)
	})
}

func TestStaleEpochAfterRequeueCannotCompleteNewAssignment(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uidA := e.pod("agent-a")
		e.submit("t1", Plan)
		old := e.take("agent-a", uidA)
		require.NoError(t, e.s.RemovePod(e.ctx, e.pool, "agent-a", uidA, "deleted"))
		assert.Equal(t, StateQueued, e.task("t1").State)
		uidB := e.pod("agent-b")
		cur := e.take("agent-b", uidB)
		assert.Equal(t, 2, cur.Attempt)
		_, err := e.s.Complete(e.ctx, e.pool, Result{Task: "t1", Epoch: old.Epoch, Outcome: OutcomeSuccess})
		require.ErrorIs(t, err, ErrStaleEpoch)
		assert.Equal(t, StateRunning, e.task("t1").State)
		e.consistent()
	})
}

func TestPlanAndApplyApproveRunsApplyInSameSlotEvenWhenCordoned(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		plan := e.take("agent-0", uid)
		assert.Equal(t, 0, plan.Slot)
		assert.Equal(t, StateReserved, e.complete(plan, OutcomeSuccess))
		assert.Equal(t, 1, e.stats().Reserved)
		require.NoError(t, e.s.Cordon(e.ctx, e.pool, "agent-0", uid))
		require.ErrorIs(t, e.s.Drain(e.ctx, e.pool, "agent-0", uid), ErrPodBusy)
		_, err := e.s.Approve(e.ctx, e.pool, "pa", "alice")
		require.NoError(t, err)
		apply := e.take("agent-0", uid)
		assert.Equal(t, PhaseApply, apply.Phase)
		assert.Equal(t, 0, apply.Slot)
		assert.Equal(t, StateSucceeded, e.complete(apply, OutcomeSuccess))
		tk := e.task("pa")
		assert.Equal(t, "alice", tk.By)
		// The plan's report retried after the apply finished still answers.
		assert.Equal(t, StateSucceeded, e.complete(apply, OutcomeSuccess))
		require.NoError(t, e.s.Drain(e.ctx, e.pool, "agent-0", uid))
		e.consistent()
	})
}

func TestRejectFreesReservedSlotAndDispatches(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		e.submit("pa2", PlanAndApply)
		assert.Equal(t, StateQueued, e.task("pa2").State)
		require.NoError(t, e.s.Reject(e.ctx, e.pool, "pa", "bob"))
		assert.Equal(t, StateRejected, e.task("pa").State)
		assert.Equal(t, "bob", e.task("pa").By)
		assert.Equal(t, StateRunning, e.task("pa2").State)
		_, err := e.s.Approve(e.ctx, e.pool, "pa", "alice")
		assert.ErrorIs(t, err, ErrNotReserved)
		e.consistent()
	})
}

func TestReservationExpiresAtDeadline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, func(c *PoolConfig) { c.ReservationTTL = 50 * time.Millisecond })
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		_, err := e.s.Reap(e.ctx, e.pool, ReapOptions{})
		require.NoError(t, err)
		assert.Equal(t, StateReserved, e.task("pa").State)
		time.Sleep(80 * time.Millisecond)
		r, err := e.s.Reap(e.ctx, e.pool, ReapOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, r.Reservations)
		tk := e.task("pa")
		assert.Equal(t, StateExpired, tk.State)
		assert.Equal(t, ReasonReservationTTL, tk.Reason)
		_, err = e.s.Approve(e.ctx, e.pool, "pa", "alice")
		assert.ErrorIs(t, err, ErrReservationLost)
		require.NoError(t, e.s.Drain(e.ctx, e.pool, "agent-0", uid))
		e.consistent()
	})
}

func TestCancel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("run", Plan)
		e.submit("unstarted", Plan)
		e.submit("a", Plan)
		e.submit("queued", Plan)
		a := e.take("agent-0", uid)
		require.Equal(t, "run", a.Task)

		st, err := e.s.Cancel(e.ctx, e.pool, "queued", "carol")
		require.NoError(t, err)
		assert.Equal(t, StateCancelled, st)
		assert.Equal(t, 0, e.stats().QueuedTotal())

		st, err = e.s.Cancel(e.ctx, e.pool, "unstarted", "carol")
		require.NoError(t, err)
		assert.Equal(t, StateCancelled, st, "an assignment not yet started ends at once")

		st, err = e.s.Cancel(e.ctx, e.pool, "run", "carol")
		require.NoError(t, err)
		assert.Equal(t, StateRunning, st, "a started phase is signalled, not ended")
		// The stale assignment of "unstarted" is dropped; the cancel message arrives.
		var got *Message
		for i := 0; i < 5 && (got == nil || got.Kind != MsgCancel); i++ {
			got, err = e.s.Take(e.ctx, e.pool, "agent-0", uid, 100*time.Millisecond, nil)
			require.NoError(t, err)
			if got != nil && got.Kind == MsgAssignment {
				require.Equal(t, "a", got.Task)
			}
		}
		require.NotNil(t, got)
		assert.Equal(t, MsgCancel, got.Kind)
		assert.Equal(t, "run", got.Task)
		hb, err := e.s.Heartbeat(e.ctx, e.pool, "agent-0", uid, []RunningPhase{{Slot: a.Slot, Task: "run", Epoch: a.Epoch}})
		require.NoError(t, err)
		assert.Contains(t, hb.Stop, TaskRef{Task: "run", Epoch: a.Epoch}, "heartbeat repeats the cancel")
		assert.Equal(t, StateCancelled, e.complete(a, OutcomeCancelled))
		assert.Equal(t, "carol", e.task("run").By)
		st, err = e.s.Cancel(e.ctx, e.pool, "run", "carol")
		require.NoError(t, err, "the same cancel again (a retry after a lost reply) is answered like the first")
		assert.Equal(t, StateCancelled, st)
		_, err = e.s.Cancel(e.ctx, e.pool, "run", "dave")
		assert.ErrorIs(t, err, ErrTaskFinished)
	})
}

func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	e := newEnv(t, "miniredis")
	before, err := e.rdb.Keys(e.ctx, "*").Result()
	require.NoError(t, err)
	cases := map[string]struct {
		call func() error
		want error
	}{
		"empty id": {func() error { _, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "", Type: Plan}); return err }, ErrInvalidTask},
		"id too long": {func() error {
			_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: string(make([]byte, 129)), Type: Plan})
			return err
		}, ErrInvalidTask},
		"id with braces": {func() error { _, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "a{b}", Type: Plan}); return err }, ErrInvalidTask},
		"unknown type":   {func() error { _, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "x", Type: "destroy"}); return err }, ErrInvalidTask},
		"payload too big": {func() error {
			_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "x", Type: Plan, Payload: make([]byte, DefaultMaxPayload+1)})
			return err
		}, ErrPayloadTooLarge},
		"bad pool name": {func() error {
			_, err := e.s.Submit(e.ctx, PoolID{Namespace: "A_B", Name: "x"}, TaskSpec{ID: "x", Type: Plan})
			return err
		}, ErrInvalidPool},
		"unknown pool": {func() error {
			_, err := e.s.Submit(e.ctx, PoolID{Namespace: "nope", Name: "x"}, TaskSpec{ID: "x", Type: Plan})
			return err
		}, ErrPoolNotFound},
		"submitter name too long": {func() error {
			_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "x", Type: Plan, SubmittedBy: strings.Repeat("a", MaxActorLen+1)})
			return err
		}, ErrInvalidTask},
		"note too long": {func() error {
			_, err := e.s.CancelWith(e.ctx, e.pool, "x", Decision{By: "a", Note: strings.Repeat("x", MaxNoteLen+1)})
			return err
		}, ErrInvalidTask},
		"note with control characters": {func() error {
			return e.s.RejectWith(e.ctx, e.pool, "x", Decision{By: "a", Note: "fine\x1b[31mred"})
		}, ErrInvalidTask},
		"note not UTF-8": {func() error {
			_, err := e.s.ApproveWith(e.ctx, e.pool, "x", Decision{By: "a", Note: "\xff"})
			return err
		}, ErrInvalidTask},
		"bad pod name": {func() error { _, err := e.s.RegisterPod(e.ctx, e.pool, "Pod_1", "u"); return err }, ErrInvalidPod},
		"missing uid":  {func() error { _, err := e.s.RegisterPod(e.ctx, e.pool, "pod-1", ""); return err }, ErrInvalidPod},
		"bad outcome": {func() error {
			_, err := e.s.Complete(e.ctx, e.pool, Result{Task: "x", Epoch: "e", Outcome: "meh"})
			return err
		}, ErrInvalidTask},
		"empty policy": {func() error {
			_, err := e.s.DeclarePool(e.ctx, PoolID{Namespace: "a", Name: "b"}, PoolConfig{})
			return err
		}, ErrInvalidConfig},
		"unknown type in policy": {func() error {
			c := DefaultPoolConfig()
			c.Policy.Slots = [][]TaskType{{"destroy"}}
			_, err := e.s.DeclarePool(e.ctx, PoolID{Namespace: "a", Name: "b"}, c)
			return err
		}, ErrInvalidConfig},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, tc.call(), tc.want)
		})
	}
	after, err := e.rdb.Keys(e.ctx, "*").Result()
	require.NoError(t, err)
	assert.ElementsMatch(t, before, after, "refused calls wrote nothing")
}

func TestPolicyWithoutSlotForTypeRefusesSubmit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, func(c *PoolConfig) { c.Policy.Slots = [][]TaskType{{Plan}, {Plan}} })
		_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "pa", Type: PlanAndApply})
		require.ErrorIs(t, err, ErrNoSlotForType)
		_, err = e.s.Task(e.ctx, e.pool, "pa")
		assert.ErrorIs(t, err, ErrTaskNotFound)
	})
}

func TestCancelledPlanOfPlanAndApplyDoesNotReserve(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		a := e.take("agent-0", uid)
		st, err := e.s.Cancel(e.ctx, e.pool, "pa", "carol")
		require.NoError(t, err)
		require.Equal(t, StateRunning, st)
		// The plan finished before the executor got the signal.
		assert.Equal(t, StateCancelled, e.complete(a, OutcomeSuccess), "a cancelled task does not pin slot 0")
		require.NoError(t, e.s.Drain(e.ctx, e.pool, "agent-0", uid))
	})
}

func TestCancelledTaskIsNotRequeuedWhenItsPodGoes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("t1", Plan)
		e.take("agent-0", uid)
		_, err := e.s.Cancel(e.ctx, e.pool, "t1", "carol")
		require.NoError(t, err)
		require.NoError(t, e.s.RemovePod(e.ctx, e.pool, "agent-0", uid, "deleted"))
		assert.Equal(t, StateCancelled, e.task("t1").State)
		e.consistent()
	})
}

func TestApproveAnswersByHowTheTaskEnded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, func(c *PoolConfig) { c.MaxQueueAge = 30 * time.Millisecond })
		e.submit("never-reserved", PlanAndApply)
		time.Sleep(50 * time.Millisecond)
		_, err := e.s.Reap(e.ctx, e.pool, ReapOptions{})
		require.NoError(t, err)
		require.Equal(t, StateExpired, e.task("never-reserved").State)
		_, err = e.s.Approve(e.ctx, e.pool, "never-reserved", "alice")
		assert.ErrorIs(t, err, ErrNotReserved, "expired in the queue: it never held a reservation")

		uid := e.pod("agent-0")
		e.submit("released", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		require.NoError(t, e.s.ReleaseReservation(e.ctx, e.pool, "released", "agent-shutdown"))
		_, err = e.s.Approve(e.ctx, e.pool, "released", "alice")
		assert.ErrorIs(t, err, ErrReservationLost)
	})
}

func TestRepeatedPlanCompleteAfterApplyReturnsFirstOutcome(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		plan := e.take("agent-0", uid)
		assert.Equal(t, StateReserved, e.complete(plan, OutcomeSuccess))
		_, err := e.s.Approve(e.ctx, e.pool, "pa", "alice")
		require.NoError(t, err)
		assert.Equal(t, StateSucceeded, e.complete(e.take("agent-0", uid), OutcomeSuccess))
		assert.Equal(t, StateReserved, e.complete(plan, OutcomeSuccess), "the plan's retried report gets the plan's outcome")
	})
}

func TestTaskOfUnknownPoolIsPoolNotFound(t *testing.T) {
	e := newEnv(t, "miniredis")
	_, err := e.s.Task(e.ctx, PoolID{Namespace: "nope", Name: "x"}, "t1")
	require.ErrorIs(t, err, ErrPoolNotFound)
	_, err = e.s.Task(e.ctx, e.pool, "t1")
	require.ErrorIs(t, err, ErrTaskNotFound)
}

// lostReply lets one EVALSHA of a script run in Redis, then reports a
// network error instead of its reply.
type lostReply struct {
	sha  string
	once sync.Once
}

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if len(args) > 1 && strings.EqualFold(fmt.Sprint(args[0]), "evalsha") && args[1] == h.sha {
			h.once.Do(func() {
				err = io.ErrUnexpectedEOF
				cmd.SetErr(err)
			})
		}
		return err
	}
}

func TestClaimWhoseReplyWasLostIsReturnedByTheNextTake(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		if b == "cluster" {
			return // the hook sits on a single-node client
		}
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("t1", Plan)
		e.rdb.(*redis.Client).AddHook(&lostReply{sha: e.s.scripts["claim"].Hash()})
		_, err := e.s.Take(e.ctx, e.pool, "agent-0", uid, time.Second, nil)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the claim ran but its reply was lost")
		tk := e.task("t1")
		require.True(t, tk.Started)
		a := e.take("agent-0", uid)
		assert.Equal(t, "t1", a.Task, "the retried claim returns the same assignment")
		assert.Equal(t, 1, a.Attempt, "and does not start the phase twice")
		snap, err := e.s.Snapshot(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Equal(t, 1, snap.Pods[0].TasksStarted, "nor count the task twice")
		assert.Equal(t, StateSucceeded, e.complete(a, OutcomeSuccess))
		e.consistent()
	})
}

// Tasks reads several tasks in one pipeline, in the order asked, leaving
// out the ones that are gone; it says what Task says of each.
func TestTasksReadsSeveralInOneRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.submit("a", Plan)
		e.submit("b", PlanAndApply)
		other := PoolID{Namespace: e.pool.Namespace, Name: "gone"}
		got, err := e.s.Tasks(e.ctx, []TaskKey{{e.pool, "b"}, {e.pool, "missing"}, {other, "a"}, {e.pool, "a"}})
		require.NoError(t, err)
		require.Len(t, got, 2)
		for i, id := range []string{"b", "a"} {
			one, err := e.s.Task(e.ctx, e.pool, id)
			require.NoError(t, err)
			assert.Equal(t, one, got[i])
		}
		_, err = e.s.Tasks(e.ctx, []TaskKey{{e.pool, "bad id!"}})
		require.ErrorIs(t, err, ErrInvalidTask)
		none, err := e.s.Tasks(e.ctx, nil)
		require.NoError(t, err)
		assert.Empty(t, none)
	})
}
