package kube

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// TestRecyclePodsAfterTheirTasksIdleOnly: a pool with spec.recycle.afterTasks
// 2 runs tasks on the real API server; each pod that started two tasks is
// replaced by a new pod (new name, new UID), a busy one only once its work is
// done (cordoned meanwhile, its successor beside it), an idle one at once.
// The audit checks that every pod the janitor deleted was drained.
func TestRecyclePodsAfterTheirTasksIdleOnly(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1, func(ap *v1alpha1.AgentPool) {
		two := int32(2)
		ap.Spec.Recycle = &v1alpha1.RecycleSpec{AfterTasks: &two}
	})
	c.startJanitor()
	first := c.waitActive("ns", "p", 1)[0]
	uids := map[string]bool{first.UID: true}

	// Two tasks on the only pod, the first still running: it is due, and
	// busy.
	c.submit("ns", "p", "busy", slots.Plan, "gate")
	require.Equal(t, first.Name, c.waitTask("ns", "p", "busy", started(slots.PhasePlan), "started").Pod)
	c.submit("ns", "p", "quick", slots.Plan, "0")
	require.Equal(t, first.Name, c.waitTask("ns", "p", "quick", inState(slots.StateSucceeded), "succeeded").Pod)

	// Cordoned, still running its task, with a successor beside it.
	rec := c.waitState("ns", "p", first.Name, slots.PodCordoned)
	require.Equal(t, 2, rec.TasksStarted)
	var second slots.PodSnapshot
	require.Eventually(t, func() bool {
		snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"})
		require.NoError(t, err)
		for _, p := range snap.Pods {
			if p.Name != first.Name && p.State == slots.PodActive {
				second = p
				return true
			}
		}
		return false
	}, 60*time.Second, 20*time.Millisecond, "a successor registers beside the busy pod")
	time.Sleep(time.Second) // several passes of the janitor
	require.Contains(t, podNames(c.livePods("ns", "p")), first.Name, "a busy pod is never removed")
	require.Equal(t, slots.StateRunning, c.task("ns", "p", "busy").State)
	require.EqualValues(t, 1, c.getPool("ns", "p").Status.CordonedReplicas, "the recycled pod counts as cordoned")

	// Its work done, it goes.
	c.kubelet.open("busy", "plan")
	c.waitTask("ns", "p", "busy", inState(slots.StateSucceeded), "succeeded")
	require.Eventually(t, func() bool {
		return slices.Equal(podNames(c.livePods("ns", "p")), []string{second.Name})
	}, 60*time.Second, 20*time.Millisecond, "the recycled pod is removed once idle")
	st, ok := c.audit.stateAtDeletion(first.Name)
	require.True(t, ok)
	require.Equal(t, string(slots.PodDraining), st)
	require.False(t, uids[second.UID])
	uids[second.UID] = true

	// Two tasks on the successor, one after the other: idle when it is due,
	// it is replaced at once.
	for _, id := range []string{"q2", "q3"} {
		c.submit("ns", "p", id, slots.Plan, "0")
		require.Equal(t, second.Name, c.waitTask("ns", "p", id, inState(slots.StateSucceeded), "succeeded").Pod)
	}
	var third slots.PodSnapshot
	require.Eventually(t, func() bool {
		snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"})
		require.NoError(t, err)
		live := c.livePods("ns", "p")
		if len(snap.Pods) != 1 || len(live) != 1 || snap.Pods[0].State != slots.PodActive || snap.Pods[0].Name == second.Name {
			return false
		}
		third = snap.Pods[0]
		return live[0].Name == third.Name
	}, 60*time.Second, 20*time.Millisecond, "the idle recycled pod is replaced")
	require.False(t, uids[third.UID], "a new pod, not the old one back")
	require.Zero(t, third.TasksStarted)
	st, ok = c.audit.stateAtDeletion(second.Name)
	require.True(t, ok)
	require.Equal(t, string(slots.PodDraining), st)

	// One Recycling event on each recycled pod.
	require.Eventually(t, func() bool {
		on := map[string]int{}
		for _, e := range c.events("ns", "Recycling") {
			on[e.InvolvedObject.Name] += int(max(e.Count, 1))
		}
		return on[first.Name] == 1 && on[second.Name] == 1 && len(on) == 2
	}, 30*time.Second, 50*time.Millisecond, "Recycling events on the two recycled pods")
	c.audit.check(t)
}
