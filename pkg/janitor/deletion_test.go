package janitor

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestSyncAddsTheFinalizer(t *testing.T) {
	f := newFixture(t, controllerPool(0))
	f.ap.Finalizers = []string{"example.com/other"}
	got := f.sync("team/pool-a", Options{})
	assert.Contains(t, got.Dyn, `patch agentpools team/pool-a {"metadata":{"finalizers":["example.com/other","`+v1alpha1.Finalizer+`"],"resourceVersion":""}}`,
		"another finalizer is kept")
}

// deleting marks the fixture's pool deleted at `at`.
func (f *fixture) deleting(at time.Time) {
	ts := metav1.NewTime(at)
	f.ap.DeletionTimestamp = &ts
}

func deletes(calls apiCalls) []string {
	var out []string
	for _, c := range calls.Kube {
		if strings.HasPrefix(c, "delete pods ") {
			name, _, _ := strings.Cut(strings.TrimPrefix(c, "delete pods team/"), " ")
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// A deleted pool: the queue fails at once and submits are refused; the idle
// pod goes, the busy one is cordoned and stays until its work ends; with
// no pod left the Redis state goes, then the finalizer.
func TestSyncDeletingPoolRemovesPodsIdleOnly(t *testing.T) {
	f := newFixture(t, controllerPool(2))
	f.declare()
	a, b := f.pod("a"), f.pod("b")
	f.register(a)
	f.register(b)
	// a: slot 0 runs a plan_and_apply's plan; b is idle.
	_, err := f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "busy", Type: slots.PlanAndApply})
	require.NoError(t, err)
	if tk, _ := f.store.Task(f.ctx, f.id, "busy"); tk.Pod != "a" {
		t.Fatalf("the task went to pod %s", tk.Pod)
	}

	f.deleting(time.Now())
	got := f.sync("team/pool-a", Options{})
	assert.Equal(t, []string{"b"}, deletes(got), "only the idle pod goes")
	assert.NotContains(t, strings.Join(got.Dyn, "\n"), "finalizers", "the finalizer stays while pods remain")
	rec, _ := f.record("a")
	assert.Equal(t, slots.PodCordoned, rec.State)
	_, err = f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "late", Type: slots.Plan})
	require.ErrorIs(t, err, slots.ErrPoolDeleting)

	// a's work ends: it goes too, idle.
	snap, err := f.store.Snapshot(f.ctx, f.id)
	require.NoError(t, err)
	for _, r := range snap.Pods {
		if r.Name != "a" {
			continue
		}
		for _, sl := range r.Slots {
			if sl.Task == "" {
				continue
			}
			m, err := f.store.Take(f.ctx, f.id, "a", string(a.UID), time.Second, nil)
			require.NoError(t, err)
			_, err = f.store.Complete(f.ctx, f.id, slots.Result{Task: m.Task, Epoch: m.Epoch, Outcome: slots.OutcomeFailure})
			require.NoError(t, err)
		}
	}
	f.pods = []*corev1.Pod{a}
	got = f.sync("team/pool-a", Options{})
	assert.Equal(t, []string{"a"}, deletes(got))

	// Both pods gone: their records go, then the state, then the finalizer.
	f.pods = nil
	f.sync("team/pool-a", Options{})
	got = f.sync("team/pool-a", Options{})
	assert.Contains(t, got.Dyn, `patch agentpools team/pool-a {"metadata":{"finalizers":[],"resourceVersion":""}}`)
	_, _, err = f.store.Pool(f.ctx, f.id)
	require.ErrorIs(t, err, slots.ErrPoolNotFound, "the pool's Redis state is gone")
}

// Past spec.deletion.timeout, the work left fails with pool-deleted and
// its pod goes in the same pass.
func TestSyncDeletingPoolTimesOut(t *testing.T) {
	f := newFixture(t, controllerPool(1))
	f.ap.Spec.Deletion.Timeout = dur(time.Minute)
	f.declare()
	a := f.pod("a")
	f.register(a)
	_, err := f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "w", Type: slots.PlanAndApply})
	require.NoError(t, err)
	m, err := f.store.Take(f.ctx, f.id, "a", string(a.UID), time.Second, nil)
	require.NoError(t, err)
	_, err = f.store.Complete(f.ctx, f.id, slots.Result{Task: m.Task, Epoch: m.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err) // reserved
	_, err = f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "q", Type: slots.PlanAndApply})
	require.NoError(t, err) // queued behind the reservation

	f.deleting(time.Now().Add(-time.Hour))
	got := f.sync("team/pool-a", Options{})
	assert.Equal(t, []string{"a"}, deletes(got))
	q, err := f.store.Task(f.ctx, f.id, "q")
	require.NoError(t, err)
	assert.Equal(t, slots.StateFailed, q.State, "the queue fails at once")
	assert.Equal(t, slots.ReasonPoolDeleted, q.Reason)
	tk, err := f.store.Task(f.ctx, f.id, "w")
	require.NoError(t, err)
	assert.Equal(t, slots.StateFailed, tk.State)
	assert.Equal(t, slots.ReasonPoolDeleted, tk.Reason)
}

// An orphaning deletion keeps the pods and the Redis state.
func TestSyncOrphaningDeletionLeavesPods(t *testing.T) {
	f := newFixture(t, controllerPool(1))
	f.declare()
	a := f.pod("a")
	f.register(a)
	f.ap.Finalizers = append(f.ap.Finalizers, metav1.FinalizerOrphanDependents)
	f.deleting(time.Now())
	got := f.sync("team/pool-a", Options{})
	assert.Empty(t, deletes(got))
	assert.Contains(t, got.Dyn, `patch agentpools team/pool-a {"metadata":{"finalizers":["orphan"],"resourceVersion":""}}`)
	_, _, err := f.store.Pool(f.ctx, f.id)
	require.NoError(t, err, "the Redis state stays")
}
