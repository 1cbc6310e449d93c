package slots

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A deleting pool refuses submits, fails its queue at once, lets running
// work finish and a reservation be approved, ends what is left on a pod
// with Abandon, and is purged to nothing once it has no pods.
func TestPoolDeletion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		a, b := e.pod("a"), e.pod("b")
		// a: slot 0 reserved; b: slot 0 running an apply's plan, slots 1-2 plans.
		e.submit("held", PlanAndApply)
		e.complete(e.take("a", a), OutcomeSuccess)
		require.Equal(t, StateReserved, e.task("held").State)
		e.submit("run", PlanAndApply)
		run := e.take("b", b)
		for i := range 4 {
			e.submit(fmt.Sprintf("p%d", i), Plan)
		}
		// Plans fill the four free plan slots; the rest waits in the queue.
		for i := 0; i < 5; i++ {
			e.submit(fmt.Sprintf("q%d", i), Plan)
		}
		queued := e.stats().QueuedTotal()
		require.Positive(t, queued)

		d, err := e.s.BeginDeletion(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Equal(t, queued, d.FailedQueued)
		assert.Equal(t, 2, d.Pods)
		assert.Equal(t, 2, d.BusyPods)
		assert.False(t, d.Since.IsZero())
		for i := 0; i < 5; i++ {
			if tk := e.task(fmt.Sprintf("q%d", i)); tk.State != StateRunning {
				assert.Equal(t, StateFailed, tk.State)
				assert.Equal(t, ReasonPoolDeleted, tk.Reason)
			}
		}
		assert.Zero(t, e.stats().QueuedTotal())

		_, err = e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "late", Type: Plan})
		require.ErrorIs(t, err, ErrPoolDeleting)
		again, err := e.s.BeginDeletion(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Equal(t, d.Since, again.Since, "the first call's time stays")
		assert.Zero(t, again.FailedQueued)

		// Running work finishes; a reservation may still be approved.
		require.Equal(t, StateReserved, e.complete(run, OutcomeSuccess))
		_, err = e.s.Approve(e.ctx, e.pool, "held", "tester")
		require.NoError(t, err)
		for {
			m := e.take("a", a)
			st := e.complete(m, OutcomeSuccess)
			if m.Task == "held" {
				require.Equal(t, StateSucceeded, st, "the approved apply ran")
				break
			}
		}

		// The deletion times out: what b still holds ends.
		ended, err := e.s.Abandon(e.ctx, e.pool, "b", b)
		require.NoError(t, err)
		assert.Contains(t, ended, "run", "b's reservation ends")
		tk := e.task("run")
		assert.Equal(t, StateFailed, tk.State)
		assert.Equal(t, ReasonPoolDeleted, tk.Reason)
		e.consistent()

		_, err = e.s.Purge(e.ctx, e.pool)
		require.ErrorIs(t, err, ErrPodBusy, "no purge while pods remain")
		for pod, uid := range map[string]string{"a": a, "b": b} {
			_, err := e.s.Abandon(e.ctx, e.pool, pod, uid)
			require.NoError(t, err)
			require.NoError(t, e.s.Drain(e.ctx, e.pool, pod, uid))
			require.NoError(t, e.s.RemovePod(e.ctx, e.pool, pod, uid, "scaled-down"))
		}
		n, err := e.s.Purge(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Positive(t, n)
		keys := e.poolKeys()
		assert.Empty(t, keys, "every key of the pool is gone")
		pools, err := e.s.Pools(e.ctx)
		require.NoError(t, err)
		assert.NotContains(t, pools, e.pool)
		_, err = e.s.Purge(e.ctx, e.pool)
		require.NoError(t, err, "purging again is a no-op")
		_, err = e.s.BeginDeletion(e.ctx, e.pool)
		require.ErrorIs(t, err, ErrPoolNotFound)
	})
}

// Deletion ends the queue in bounded scripts: more queued tasks than one
// batch all fail.
func TestPoolDeletionFailsALongQueue(t *testing.T) {
	e := newEnv(t, "redis")
	for i := range deletionBatch + 17 {
		e.submit(fmt.Sprintf("t%d", i), Plan)
	}
	d, err := e.s.BeginDeletion(e.ctx, e.pool)
	require.NoError(t, err)
	assert.Equal(t, deletionBatch+17, d.FailedQueued)
	assert.Zero(t, e.stats().QueuedTotal())
	n, err := e.s.Purge(e.ctx, e.pool)
	require.NoError(t, err)
	assert.Equal(t, deletionBatch+17, n)
	assert.Empty(t, e.poolKeys())
}

func TestAbandonOnlyWhileDeleting(t *testing.T) {
	e := newEnv(t, "redis")
	a := e.pod("a")
	_, err := e.s.Abandon(e.ctx, e.pool, "a", a)
	require.ErrorIs(t, err, ErrPodState)
	_, err = e.s.Purge(e.ctx, e.pool)
	require.ErrorIs(t, err, ErrPodState)
}

// poolKeys lists every key under the pool's hash tag, on every node.
func (e *env) poolKeys() []string {
	e.t.Helper()
	var mu sync.Mutex
	var out []string
	base := e.s.base(e.pool)
	scan := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, base+"*", 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	switch c := e.rdb.(type) {
	case *redis.ClusterClient:
		require.NoError(e.t, c.ForEachMaster(e.ctx, scan))
	case *redis.Client:
		require.NoError(e.t, scan(e.ctx, c))
	default:
		e.t.Fatalf("client %T", e.rdb)
	}
	return out
}
