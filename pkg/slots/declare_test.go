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

// What the janitor found on the pool's HPA is declared with the pool, read
// back by Pool and returned with every Stats call (the scaler's one read per
// poll); declaring it unknown again clears it, also while the pool has pods
// and a policy change is pending.
func TestHPAToleranceIsDeclaredAndReadWithTheCounters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		assert.Equal(t, HPATolerance{}, e.stats().HPATolerance, "unknown until declared")
		uid := e.pod("agent-0")
		for _, tol := range []HPATolerance{
			{Known: true},                         // no scaleUp.tolerance of its own
			{Known: true, Set: true, Value: 0.05}, // its own band
			{Known: true, Set: true},              // 0: honoured
			{},                                    // no HPA
		} {
			cfg := e.cfg
			cfg.HPATolerance = tol
			_, err := e.s.DeclarePool(e.ctx, e.pool, cfg)
			require.NoError(t, err)
			got, _, err := e.s.Pool(e.ctx, e.pool)
			require.NoError(t, err)
			assert.Equal(t, cfg, got)
			st := e.stats()
			assert.Equal(t, tol, st.HPATolerance, "%s", tol)
			assert.Equal(t, 1, st.IdlePods, "the counters as before")
			assert.Equal(t, tol.Known && !(tol.Set && tol.Value == 0), st.HPATolerance.Nudge())
		}
		cfg := e.cfg
		cfg.Policy = SlotPolicy{Slots: [][]TaskType{{Plan}}}
		cfg.HPATolerance = HPATolerance{Known: true}
		_, err := e.s.DeclarePool(e.ctx, e.pool, cfg)
		require.ErrorIs(t, err, ErrPolicyChange)
		assert.Equal(t, HPATolerance{Known: true}, e.stats().HPATolerance, "applied with the rest while the policy waits")
		require.NoError(t, e.s.RemovePod(e.ctx, e.pool, "agent-0", uid, "test"))

		cfg.HPATolerance = HPATolerance{Known: true, Set: true, Value: -0.1}
		_, err = e.s.DeclarePool(e.ctx, e.pool, cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestHPAToleranceEncodingRoundTrips(t *testing.T) {
	for _, tol := range []HPATolerance{{}, {Known: true}, {Known: true, Set: true}, {Known: true, Set: true, Value: 0.1},
		{Known: true, Set: true, Value: 1.5}} {
		assert.Equal(t, tol, parseHPATolerance(tol.encode()), "%q", tol.encode())
	}
	for _, bad := range []string{"x", "-1", "NaN", "+Inf"} {
		assert.Equal(t, HPATolerance{}, parseHPATolerance(bad), "%q is unknown", bad)
	}
}
