package janitor

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// countingStore counts the janitor's whole-pool reads and token reads.
type countingStore struct {
	Store
	snapshots, versions atomic.Int64
}

func (s *countingStore) Snapshot(ctx context.Context, id slots.PoolID) (slots.Snapshot, error) {
	s.snapshots.Add(1)
	return s.Store.Snapshot(ctx, id)
}

func (s *countingStore) Version(ctx context.Context, id slots.PoolID) (slots.Version, error) {
	s.versions.Add(1)
	return s.Store.Version(ctx, id)
}

// restFixture is a pool of two idle registered pods, all it wants, and a
// controller that keeps its state from pass to pass.
func restFixture(t *testing.T, opts Options, muts ...func(*v1alpha1.AgentPool)) (*fixture, *Controller, *countingStore) {
	t.Helper()
	ap := controllerPool(2)
	for _, m := range muts {
		m(ap)
	}
	f := newFixture(t, ap)
	f.declare()
	f.register(f.pod("a"))
	f.register(f.pod("b"))
	cs := &countingStore{}
	f.wrap = func(s Store) Store { cs.Store = s; return cs }
	return f, f.controller(opts), cs
}

// A pool at rest is passed by reading its change token alone, until
// Redis, Kubernetes or the clock says something changed: then the pass is
// full (and the one after it rests again). A heartbeat is no change.
func TestAPoolAtRestIsPassedWithoutASnapshot(t *testing.T) {
	f, c, cs := restFixture(t, Options{})
	const key = "team/pool-a"
	pass := func(wantSnapshots int64, why string) {
		t.Helper()
		_, err := c.sync(f.ctx, key)
		require.NoError(t, err)
		require.Equal(t, wantSnapshots, cs.snapshots.Load(), why)
	}
	pass(1, "the first pass is full")
	pass(1, "at rest: no snapshot")
	require.Equal(t, 1.0, testutil.ToFloat64(f.m.RestPasses))

	_, err := f.store.Heartbeat(f.ctx, f.id, "a", "a-uid", nil)
	require.NoError(t, err)
	pass(1, "a heartbeat changes nothing the plan reads")

	// A task runs on a and ends: a was busy meanwhile, and idle since.
	_, err = f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "t1", Type: slots.Plan, Payload: []byte("x")})
	require.NoError(t, err)
	m, err := f.store.Take(f.ctx, f.id, "a", "a-uid", time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	require.NotNil(t, m.Assignment)
	_, err = f.store.Complete(f.ctx, f.id, slots.Result{Task: m.Assignment.Task, Epoch: m.Assignment.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	pass(2, "a task ran: full")
	pass(2, "at rest again")

	c.enqueue(key) // an informer event
	pass(3, "after a Kubernetes change: full")
	pass(3, "at rest again")

	c.poolState(key).rest.until = time.Now().Add(-time.Millisecond)
	pass(4, "a time-based decision (or the safety net) fell due: full")
	pass(4, "at rest again")

	// Redis lost the pool, and it was declared again: a new generation.
	keys, err := f.rdb.Keys(f.ctx, f.prefix+":v1:{"+f.id.String()+"}:*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	require.NoError(t, f.rdb.Del(f.ctx, keys...).Err())
	f.declare()
	pass(5, "a new generation: full (the data-loss hold is decided there)")
	pass(6, "holding: full until the hold ends")
}

// FullPassInterval < 0: every pass is full.
func TestEveryPassFullWithoutRest(t *testing.T) {
	f, c, cs := restFixture(t, Options{FullPassInterval: -1})
	for i := range 3 {
		_, err := c.sync(f.ctx, "team/pool-a")
		require.NoError(t, err)
		require.Equal(t, int64(i+1), cs.snapshots.Load())
	}
}

// A pool at rest with an idle surplus pod waiting for idleFor rests only
// until idleFor is reached: the clock, not a change, makes that pass.
func TestRestEndsWhenIdleForIsReached(t *testing.T) {
	f, c, _ := restFixture(t, Options{}, func(ap *v1alpha1.AgentPool) {
		one := int32(1)
		ap.Spec.Replicas = &one
		ap.Spec.IdleFor = dur(2 * time.Minute)
	})
	_, err := c.sync(f.ctx, "team/pool-a")
	require.NoError(t, err)
	after := time.Now()
	rest := c.poolState("team/pool-a").rest
	require.NotNil(t, rest, "waiting for idleFor is at rest")
	require.False(t, rest.until.After(after.Add(2*time.Minute)), "rests until idleFor, not the safety net")
}

// A pool whose HPA the janitor judged rests like any other: the verdict is
// declared with the pool's settings, and is no change of its spec.
func TestAPoolWithAnHPARests(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	_, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers("team").Create(e.ctx, hpaFor("keda-hpa-pool-a", "pool-a", ""), metav1.CreateOptions{})
	require.NoError(t, err)
	e.passOnceHPAsCached()
	require.NotNil(t, condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured))
	for range 5 {
		e.pass()
	}
	require.Positive(t, testutil.ToFloat64(e.m.RestPasses), "a pool with an HPA never rested")
}

// A pass at rest still refreshes the janitor's report (its time, so the
// dashboard does not call it stale), from the last full pass's content.
func TestAPassAtRestRefreshesTheReport(t *testing.T) {
	e, reports := newReportEnv(t, 2)
	e.pass()
	e.pass()
	e.registerAll()
	rests := func() float64 { return testutil.ToFloat64(e.m.RestPasses) }
	for i := 0; rests() == 0; i++ {
		require.Less(t, i, 5, "never at rest")
		e.pass()
	}
	last := e.report()
	e.c.reportRefresh = 0 // every pass is due to refresh it
	n := reports.writes.Load()
	e.pass()
	require.Equal(t, 2.0, rests(), "at rest")
	require.Equal(t, n+1, reports.writes.Load(), "refreshed")
	r := e.report()
	require.Equal(t, last.Summary, r.Summary)
	require.Equal(t, last.Changed, r.Changed, "the same content")
	require.False(t, r.At.Before(last.At))
}

// A pool at rest whose pods come due for recycling by age must be looked
// at then: nothing in Redis or Kubernetes changes when a pod grows old.
func TestPlanSaysWhenThePodsComeDueForRecyclingByAge(t *testing.T) {
	in := recycle(input(2, pods(pod("a", createdAgo(20*time.Hour)), pod("b", createdAgo(22*time.Hour))),
		rec("a", slots.PodActive), rec("b", slots.PodActive)), 0, 24*time.Hour)
	out := plan(in)
	require.True(t, atRest(out))
	require.Equal(t, 2*time.Hour, out.WaitRecycle, "b, the older, comes due first")

	in.RecycleAfterAge = 0
	require.Zero(t, plan(in).WaitRecycle, "no recycling by age")
}
