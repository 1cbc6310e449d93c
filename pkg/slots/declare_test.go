package slots

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A slot-policy change refused because the pool has pods keeps the old
// policy but applies every other setting of the same declaration, and says
// the change is pending; declared again once the pool has no pods, the
// policy is applied. Before, the whole declaration was refused: the other
// settings were dropped with it.
func TestAPolicyChangeWaitsForZeroPodsWhileTheRestAppliesAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		before, gen, err := e.s.Pool(e.ctx, e.pool)
		require.NoError(t, err)

		want := e.cfg
		want.Policy = SlotPolicy{Slots: [][]TaskType{{Plan, PlanAndApply}, {Plan}}}
		want.MaxAttempts = e.cfg.MaxAttempts + 2
		want.HeartbeatTimeout = e.cfg.HeartbeatTimeout + time.Second
		want.QueueLimit = 7
		d, err := e.s.DeclarePool(e.ctx, e.pool, want)
		require.ErrorIs(t, err, ErrPolicyChange)
		assert.Contains(t, err.Error(), "every other setting was applied")
		assert.True(t, d.PolicyPending)
		assert.Equal(t, "pool has 1 pods", d.PendingReason)
		assert.Equal(t, gen, d.Generation)

		got, gen2, err := e.s.Pool(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Equal(t, gen, gen2)
		assert.Equal(t, before.Policy, got.Policy, "the old policy stays while the pool has pods")
		applied := want
		applied.Policy = before.Policy
		assert.Equal(t, applied, got, "every other setting applies at once")
		// The pool keeps working on its old policy: three slots.
		e.submit("t1", Plan)
		e.submit("t2", Plan)
		e.submit("t3", PlanAndApply)
		snap, err := e.s.Snapshot(e.ctx, e.pool)
		require.NoError(t, err)
		require.Len(t, snap.Pods, 1)
		assert.Len(t, snap.Pods[0].Slots, 3)
		e.consistent()

		// Declaring again while pods remain stays pending, and is harmless.
		d, err = e.s.DeclarePool(e.ctx, e.pool, want)
		require.ErrorIs(t, err, ErrPolicyChange)
		assert.True(t, d.PolicyPending)

		// Once the pool has no pods the same declaration lands (its work
		// went back to the queue).
		require.NoError(t, e.s.RemovePod(e.ctx, e.pool, "agent-0", uid, "test"))
		d, err = e.s.DeclarePool(e.ctx, e.pool, want)
		require.NoError(t, err)
		assert.False(t, d.PolicyPending)
		assert.Empty(t, d.PendingReason)
		assert.Equal(t, gen, d.Generation, "a policy change keeps the generation")
		got, _, err = e.s.Pool(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Equal(t, want, got)
		e.pod("agent-1")
		snap, err = e.s.Snapshot(e.ctx, e.pool)
		require.NoError(t, err)
		require.Len(t, snap.Pods, 1)
		assert.Len(t, snap.Pods[0].Slots, 2, "new pods get the new policy")
		e.consistent()
	})
}

// The same policy with other settings, or a new pool, is never pending.
func TestDeclarePoolWithoutAPolicyChangeIsNeverPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.pod("agent-0")
		cfg := e.cfg
		cfg.QueueLimit = 3
		d, err := e.s.DeclarePool(e.ctx, e.pool, cfg)
		require.NoError(t, err)
		assert.False(t, d.PolicyPending)
		assert.NotEmpty(t, d.Generation)

		other := PoolID{Namespace: "team-a", Name: "new-pool"}
		cfg.Policy = SlotPolicy{Slots: [][]TaskType{{Plan}}}
		d, err = e.s.DeclarePool(e.ctx, other, cfg)
		require.NoError(t, err)
		assert.False(t, d.PolicyPending)
		got, gen, err := e.s.Pool(e.ctx, other)
		require.NoError(t, err)
		assert.Equal(t, d.Generation, gen)
		assert.Equal(t, cfg, got)
	})
}
