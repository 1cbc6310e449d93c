package kube

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Deleting an AgentPool (kubectl delete, helm uninstall: a background
// deletion) cuts no running task and loses no reservation: the queue fails
// at once, the running plan finishes, the reserved apply is approved and
// runs (the executor's own markers say so), each pod is deleted only once
// idle (the API server's audit says so), then the pool's Redis state and
// the AgentPool itself go.
func TestDeletingAPoolWaitsForItsWork(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 2, withMarkers)
	c.startJanitor()
	c.waitActive("ns", "p", 2)
	pool := slots.PoolID{Namespace: "ns", Name: "p"}
	require.Eventually(t, func() bool {
		return slices.Contains(c.getPool("ns", "p").Finalizers, v1alpha1.Finalizer)
	}, 30*time.Second, 20*time.Millisecond, "the janitor adds its finalizer")

	c.submit("ns", "p", "running", slots.PlanAndApply, "gate")
	c.waitMarker("running", "plan", "started")
	c.submit("ns", "p", "waiting", slots.PlanAndApply, "gate")
	c.waitMarker("waiting", "plan", "started")
	c.kubelet.open("waiting", "plan")
	c.waitTask("ns", "p", "waiting", inState(slots.StateReserved), "reserved")
	c.submit("ns", "p", "queued", slots.PlanAndApply, "gate") // both slot 0s are taken
	require.Equal(t, slots.StateQueued, c.task("ns", "p", "queued").State)

	require.NoError(t, c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Delete(c.ctx, "p",
		metav1.DeleteOptions{PropagationPolicy: ptrTo(metav1.DeletePropagationBackground)}))
	q := c.waitTask("ns", "p", "queued", inState(slots.StateFailed), "failed")
	assert.Equal(t, slots.ReasonPoolDeleted, q.Reason)
	_, err := c.store.Submit(c.ctx, pool, slots.TaskSpec{ID: "late", Type: slots.Plan})
	require.ErrorIs(t, err, slots.ErrPoolDeleting)
	require.Eventually(t, func() bool {
		return cond(c.getPool("ns", "p"), v1alpha1.ConditionDeleting) == metav1.ConditionTrue
	}, 30*time.Second, 20*time.Millisecond, "the status says the pool is being deleted")
	// Both pods are busy: neither goes.
	time.Sleep(time.Second)
	require.Len(t, c.livePods("ns", "p"), 2, "busy pods stay")

	// The reservation is approved and its apply runs to the end.
	_, err = c.store.Approve(c.ctx, pool, "waiting", "tester")
	require.NoError(t, err)
	c.waitMarker("waiting", "apply", "started")
	c.kubelet.open("waiting", "apply")
	c.waitMarker("waiting", "apply", "done")
	assert.Equal(t, slots.StateSucceeded, c.waitTask("ns", "p", "waiting", inState(slots.StateSucceeded), "succeeded").State)
	// The running plan finishes; its reservation is rejected.
	c.kubelet.open("running", "plan")
	c.waitMarker("running", "plan", "done")
	c.waitTask("ns", "p", "running", inState(slots.StateReserved), "reserved")
	require.NoError(t, c.store.Reject(c.ctx, pool, "running", "tester"))

	// Every pod goes idle-only, then the state, then the AgentPool.
	require.Eventually(t, func() bool {
		_, err := c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Get(c.ctx, "p", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond, "the AgentPool is never released")
	require.Empty(t, c.livePods("ns", "p"))
	_, _, err = c.store.Pool(c.ctx, pool)
	require.True(t, errors.Is(err, slots.ErrPoolNotFound), "the pool's Redis state is gone: %v", err)
	require.False(t, c.marker("running", "apply", "started"), "the rejected task never applied")
	c.audit.check(t)
}

// Past spec.deletion.timeout the work left fails with pool-deleted and
// its pod is deleted: a deletion ends.
func TestDeletingAPoolTimesOut(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1, withMarkers, func(ap *v1alpha1.AgentPool) {
		ap.Spec.Deletion.Timeout = &metav1.Duration{Duration: 3 * time.Second}
	})
	c.startJanitor()
	c.waitActive("ns", "p", 1)
	require.Eventually(t, func() bool {
		return slices.Contains(c.getPool("ns", "p").Finalizers, v1alpha1.Finalizer)
	}, 30*time.Second, 20*time.Millisecond)
	c.submit("ns", "p", "stuck", slots.Plan, "gate")
	c.waitMarker("stuck", "plan", "started")

	require.NoError(t, c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Delete(c.ctx, "p", metav1.DeleteOptions{}))
	// The task's record goes with the pool's state soon after: poll for
	// the failure, tolerating its end.
	var tk slots.Task
	require.Eventually(t, func() bool {
		got, err := c.store.Task(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"}, "stuck")
		if err == nil {
			tk = got
		}
		return tk.State == slots.StateFailed || err != nil
	}, 60*time.Second, 10*time.Millisecond)
	require.Equal(t, slots.StateFailed, tk.State, "the task failed at the deadline before the state went")
	assert.Equal(t, slots.ReasonPoolDeleted, tk.Reason)
	require.Eventually(t, func() bool {
		_, err := c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Get(c.ctx, "p", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond, "the AgentPool is never released")
	require.Empty(t, c.livePods("ns", "p"))
}
