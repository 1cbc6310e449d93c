package slots

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/require"
)

// The change token moves with every change a snapshot shows, and only
// then: the janitor skips its snapshot of a pool whose token did not move,
// so a change that moved nothing would go unseen until its safety-net
// pass, and a heartbeat that moved it would make every pass full.
func TestVersionMovesWithEveryChangeASnapshotShows(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		version := func() Version {
			t.Helper()
			v, err := e.s.Version(e.ctx, e.pool)
			require.NoError(t, err)
			return v
		}
		uid := e.pod("agent-0")
		var a *Assignment
		steps := []struct {
			name    string
			do      func()
			changes bool
		}{
			{"heartbeat", func() { _, err := e.s.Heartbeat(e.ctx, e.pool, "agent-0", uid, nil); require.NoError(t, err) }, false},
			{"reap, nothing due", func() { _, err := e.s.Reap(e.ctx, e.pool, ReapOptions{}); require.NoError(t, err) }, false},
			{"snapshot and stats", func() {
				_, err := e.s.Snapshot(e.ctx, e.pool)
				require.NoError(t, err)
				e.stats()
			}, false},
			{"submit", func() { e.submit("t1", Plan) }, true},
			{"take", func() { a = e.take("agent-0", uid) }, true},
			{"heartbeat reporting the phase", func() {
				_, err := e.s.Heartbeat(e.ctx, e.pool, "agent-0", uid, []RunningPhase{{Slot: a.Slot, Task: a.Task, Epoch: a.Epoch}})
				require.NoError(t, err)
			}, false},
			{"complete", func() { e.complete(a, OutcomeSuccess) }, true},
			{"cordon", func() { require.NoError(t, e.s.Cordon(e.ctx, e.pool, "agent-0", uid)) }, true},
			{"cordon by the agent of a cordoned pod", func() { require.NoError(t, e.s.CordonSelf(e.ctx, e.pool, "agent-0", uid)) }, true},
			{"declare again", func() { _, err := e.s.DeclarePool(e.ctx, e.pool, e.cfg); require.NoError(t, err) }, true},
			{"register with an orphan slot", func() {
				_, err := e.s.RegisterPod(e.ctx, e.pool, "agent-1", "uid-1", 0)
				require.NoError(t, err)
			}, true},
			{"heartbeat freeing the orphan slot", func() {
				_, err := e.s.Heartbeat(e.ctx, e.pool, "agent-1", "uid-1", nil)
				require.NoError(t, err)
			}, true},
			{"heartbeat again", func() { _, err := e.s.Heartbeat(e.ctx, e.pool, "agent-1", "uid-1", nil); require.NoError(t, err) }, false},
			{"remove", func() { require.NoError(t, e.s.RemovePod(e.ctx, e.pool, "agent-1", "uid-1", "gone")) }, true},
		}
		for _, st := range steps {
			before := version()
			st.do()
			after := version()
			require.Equal(t, before.Generation, after.Generation, st.name)
			if st.changes {
				require.NotEqual(t, before.Changes, after.Changes, "%s must move the change token", st.name)
			} else {
				require.Equal(t, before.Changes, after.Changes, "%s must not move the change token", st.name)
			}
		}
		snap, err := e.s.Snapshot(e.ctx, e.pool)
		require.NoError(t, err)
		v := version()
		require.Equal(t, v.Changes, snap.Changes, "a snapshot begins with the token of its moment")
		require.Equal(t, v.Generation, snap.Generation)
	})
}

// A new generation (Redis lost the pool, which is declared again) is a
// new token whatever the counters say: the janitor's data-loss hold is
// decided by a full pass.
func TestVersionOfALostPool(t *testing.T) {
	e := newEnv(t, "redis")
	before, err := e.s.Version(e.ctx, e.pool)
	require.NoError(t, err)
	keys, err := e.rdb.Keys(e.ctx, e.s.base(e.pool)+"*").Result()
	require.NoError(t, err)
	require.NoError(t, e.rdb.Del(e.ctx, keys...).Err())
	_, err = e.s.Version(e.ctx, e.pool)
	require.ErrorIs(t, err, ErrPoolNotFound)
	_, err = e.s.DeclarePool(e.ctx, e.pool, e.cfg)
	require.NoError(t, err)
	after, err := e.s.Version(e.ctx, e.pool)
	require.NoError(t, err)
	require.NotEqual(t, before.Generation, after.Generation)
}

// A pool of several pages reads whole: every pod once, in the order they
// were recorded, with their slots; the pool-level part from the first page.
func TestSnapshotReadsEveryPage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		n := 2*SnapshotPageReads/5 + 3 // more than two pages of busy pods
		uids := map[string]string{}
		for i := range n {
			name := fmt.Sprintf("agent-%03d", i)
			uids[name] = e.pod(name)
		}
		// Every slot busy, and one plan queued.
		for i := range 3*n + 1 {
			e.submit(fmt.Sprintf("t%03d", i), Plan)
		}
		calls := countScripts(e)
		snap, err := e.s.Snapshot(e.ctx, e.pool)
		require.NoError(t, err)
		require.EqualValues(t, 3, calls.Load(), "pages of 12 busy pods (60 reads) for 27 pods")
		require.Len(t, snap.Pods, n)
		for i, p := range snap.Pods {
			name := fmt.Sprintf("agent-%03d", i)
			require.Equal(t, name, p.Name)
			require.Equal(t, uids[name], p.UID)
			require.Len(t, p.Slots, len(e.cfg.Policy.Slots))
			require.True(t, p.Busy(), "pod %s", name)
		}
		require.Equal(t, 1, snap.QueuedTotal())
		require.Len(t, snap.Queue, 1)
		require.NotEmpty(t, snap.Generation)
		require.NotEmpty(t, snap.Changes)
	})
}

// Pages of idle pods hold more pods (a page is bounded by its reads): a
// pool of exactly a page, and of two pages and one, reads whole.
func TestSnapshotPagesOfIdlePods(t *testing.T) {
	for _, n := range []int{SnapshotPageReads / 2, SnapshotPageReads + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := newEnv(t, "redis")
			for i := range n {
				e.pod(fmt.Sprintf("agent-%03d", i))
			}
			calls := countScripts(e)
			snap, err := e.s.Snapshot(e.ctx, e.pool)
			require.NoError(t, err)
			require.EqualValues(t, n/(SnapshotPageReads/2)+1, calls.Load(), "pages of 30 idle pods")
			require.Len(t, snap.Pods, n)
			for i, p := range snap.Pods {
				require.Equal(t, fmt.Sprintf("agent-%03d", i), p.Name)
				require.False(t, p.Busy())
			}
		})
	}
}

// countScripts counts the scripts e's client runs from now on.
func countScripts(e *env) *atomic.Int64 {
	n := &atomic.Int64{}
	e.rdb.AddHook(scriptCounter{n})
	return n
}

type scriptCounter struct{ n *atomic.Int64 }

func (h scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
