package slots

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The plan's workspace digest is kept with the task and handed to the
// apply's claim: the agent checks the workspace against the store's copy,
// not against its own memory.
func TestPlanWorkspaceDigestIsKeptAndHandedToTheApply(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		plan := e.take("agent-0", uid)
		assert.Empty(t, plan.WorkspaceDigest, "a plan has no digest to check")
		st, err := e.s.Complete(e.ctx, e.pool, Result{Task: "pa", Epoch: plan.Epoch, Outcome: OutcomeSuccess, WorkspaceDigest: "sha256:abc"})
		require.NoError(t, err)
		require.Equal(t, StateReserved, st)
		assert.Equal(t, "sha256:abc", e.task("pa").WorkspaceDigest)
		_, err = e.s.Approve(e.ctx, e.pool, "pa", "alice")
		require.NoError(t, err)
		apply := e.take("agent-0", uid)
		assert.Equal(t, PhaseApply, apply.Phase)
		assert.Equal(t, "sha256:abc", apply.WorkspaceDigest)
		// The apply's own result does not replace the plan's digest.
		st, err = e.s.Complete(e.ctx, e.pool, Result{Task: "pa", Epoch: apply.Epoch, Outcome: OutcomeSuccess, WorkspaceDigest: "sha256:other"})
		require.NoError(t, err)
		require.Equal(t, StateSucceeded, st)
		assert.Equal(t, "sha256:abc", e.task("pa").WorkspaceDigest)
		e.consistent()
	})
}

func TestOversizedWorkspaceDigestIsRefused(t *testing.T) {
	e := newEnv(t, backends[0])
	uid := e.pod("agent-0")
	e.submit("pa", PlanAndApply)
	plan := e.take("agent-0", uid)
	_, err := e.s.Complete(e.ctx, e.pool, Result{Task: "pa", Epoch: plan.Epoch, Outcome: OutcomeSuccess,
		WorkspaceDigest: strings.Repeat("x", MaxWorkspaceDigest+1)})
	require.ErrorIs(t, err, ErrInvalidTask)
	assert.Equal(t, StateRunning, e.task("pa").State)
}

func TestPlacementSaysWhereATaskStands(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		plan := e.take("agent-0", uid)
		require.Equal(t, StateReserved, e.complete(plan, OutcomeSuccess))
		p, err := e.s.Placement(e.ctx, e.pool, "pa")
		require.NoError(t, err)
		assert.Equal(t, TaskPlacement{State: StateReserved, Phase: PhasePlan, Pod: "agent-0"}, p)
		require.NoError(t, e.s.Reject(e.ctx, e.pool, "pa", "bob"))
		p, err = e.s.Placement(e.ctx, e.pool, "pa")
		require.NoError(t, err)
		assert.Equal(t, StateRejected, p.State)
		_, err = e.s.Placement(e.ctx, e.pool, "nope")
		require.ErrorIs(t, err, ErrTaskNotFound)
		_, err = e.s.Placement(e.ctx, e.pool, "../x")
		require.Error(t, err)
	})
}
