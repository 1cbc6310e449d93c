package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A claim whose reply is lost may have landed: the task is started and
// only this agent can run it. Dropping it would lose the phase (a plan
// requeued with an attempt spent, an apply failed) on a healthy pod.
func TestAClaimWhoseReplyWasLostIsRunWhenItLandedAndDroppedOtherwise(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	ctx := context.Background()
	_, err := e.store.RegisterPod(ctx, e.pool, "agent-1", "uid-1")
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newAgent(Config{Pool: e.pool, PodName: "agent-1", RedisTimeout: 5 * time.Second}, log, log, nil, nil, newMetrics(), hooks{})
	a.store, a.uid = e.store, "uid-1"
	lost := errors.New("reply lost")
	claiming := func(id, epoch string) slots.TaskRef {
		ref := slots.TaskRef{Task: id, Epoch: epoch}
		a.phases[ref] = &phase{ref: ref, slot: -1}
		return ref
	}

	landed := e.submit(t, "landed", slots.Plan, "the payload")
	m, err := e.store.Take(ctx, e.pool, "agent-1", "uid-1", time.Second, nil) // the claim lands; pretend its reply did not
	require.NoError(t, err)
	require.NotNil(t, m)
	got := a.resolveClaim(claiming("landed", landed.Epoch), lost)
	require.NotNil(t, got, "the claim landed: run it")
	assert.Equal(t, &slots.Assignment{Task: "landed", Type: slots.Plan, Phase: slots.PhasePlan, Slot: landed.Slot,
		Attempt: 1, Epoch: landed.Epoch, Payload: []byte("the payload")}, got.Assignment)

	unclaimed := e.submit(t, "unclaimed", slots.Plan, "")
	ref := claiming("unclaimed", unclaimed.Epoch)
	assert.Nil(t, a.resolveClaim(ref, lost), "not claimed: the next Take claims it")
	assert.NotContains(t, a.phases, ref, "and it is no longer reported meanwhile")

	_, err = e.store.Cancel(ctx, e.pool, "unclaimed", "dave")
	require.NoError(t, err)
	ref = claiming("unclaimed", unclaimed.Epoch)
	assert.Nil(t, a.resolveClaim(ref, lost), "no longer this pod's")
}

// The store keys a heartbeat report by task: a plan whose result is
// recorded but whose reply has not arrived, beside its apply that already
// runs, must be reported as the apply, or the apply would look missing.
func TestHeartbeatReportsOnePhasePerTaskTheRunningOneFirst(t *testing.T) {
	a := newAgent(Config{}, slog.New(slog.DiscardHandler), slog.New(slog.DiscardHandler), nil, nil, newMetrics(), hooks{})
	plan := slots.TaskRef{Task: "pa", Epoch: "g-1"}
	apply := slots.TaskRef{Task: "pa", Epoch: "g-2"}
	other := slots.TaskRef{Task: "p", Epoch: "g-3"}
	a.phases[plan] = &phase{ref: plan, slot: 0, finished: true}
	a.phases[apply] = &phase{ref: apply, slot: 0}
	a.phases[other] = &phase{ref: other, slot: -1}
	for range 20 { // map order varies
		assert.Equal(t, []slots.RunningPhase{{Slot: -1, Task: "p", Epoch: "g-3"}, {Slot: 0, Task: "pa", Epoch: "g-2"}}, a.report())
	}
}
