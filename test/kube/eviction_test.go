package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/controller/disruption"

	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// startDisruptionController runs the real PodDisruptionBudget controller
// (kube-controller-manager's) against the test API server: it computes the
// budgets' status, which the Eviction API decides by.
func (c *cluster) startDisruptionController() {
	c.t.Helper()
	ctx, disc, mapper, f := c.controllerDeps()
	dc := disruption.NewDisruptionController(ctx, f.Core().V1().Pods(), f.Policy().V1().PodDisruptionBudgets(),
		f.Core().V1().ReplicationControllers(), f.Apps().V1().ReplicaSets(), f.Apps().V1().Deployments(),
		f.Apps().V1().StatefulSets(), c.kube, mapper, c.scales, disc)
	f.Start(ctx.Done())
	go dc.Run(ctx, 1)
}

// evict asks the Eviction API to evict a pod, as kubectl drain does.
func (c *cluster) evict(ns, pod string) error {
	return c.kube.PolicyV1().Evictions(ns).Evict(c.ctx, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
	})
}

// The chart's PodDisruptionBudget and the janitor's busy label: the
// Eviction API (kubectl drain) refuses a pod with a running or a reserved
// slot, also a busy pod cordoned as surplus while busy pods outnumber
// spec.replicas, and evicts idle pods; a pod that finished its work evicts.
func TestEvictionRefusesBusyAndReservedPods(t *testing.T) {
	c := newCluster(t)
	c.startDisruptionController()
	pdb := renderChart(t, "--show-only", "templates/pools.yaml", "--set", "keda.enabled=false",
		"--set", "pools[0].name=p", "--set", "pools[0].namespace=ns")
	docs := strings.Split(string(pdb), "\n---\n")
	var budget string
	for _, d := range docs {
		if strings.Contains(d, "kind: PodDisruptionBudget") {
			budget = d
		}
	}
	require.NotEmpty(t, budget, "the chart makes a PodDisruptionBudget per pool:\n%s", pdb)
	c.apply([]byte(budget))

	c.newPool("ns", "p", 3)
	c.startJanitor()
	c.waitActive("ns", "p", 3)
	pool := slots.PoolID{Namespace: "ns", Name: "p"}

	// One pod runs a plan, another holds slot 0 for an apply awaiting
	// approval (both plan_and_apply: each needs a slot 0, so two pods).
	c.submit("ns", "p", "running", slots.PlanAndApply, "gate")
	running := c.waitTask("ns", "p", "running", started(slots.PhasePlan), "planning").Pod
	c.submit("ns", "p", "waiting", slots.PlanAndApply, "gate")
	c.waitTask("ns", "p", "waiting", started(slots.PhasePlan), "planning")
	c.kubelet.open("waiting", "plan")
	reserved := c.waitTask("ns", "p", "waiting", inState(slots.StateReserved), "reserved").Pod
	require.NotEqual(t, running, reserved)
	var idle string
	for _, p := range c.livePods("ns", "p") {
		if p.Name != running && p.Name != reserved {
			idle = p.Name
		}
	}
	require.NotEmpty(t, idle)

	labelled := func(pod string) bool {
		p, err := c.kube.CoreV1().Pods("ns").Get(c.ctx, pod, metav1.GetOptions{})
		return err == nil && p.Labels[janitor.LabelBusy] == "true"
	}
	require.Eventually(t, func() bool { return labelled(running) && labelled(reserved) }, 30*time.Second, 20*time.Millisecond,
		"the janitor labels busy pods")
	require.False(t, labelled(idle))
	// The budget's status is the disruption controller's: wait until it
	// counted both busy pods, so a refusal below is the budget's and not
	// "still being processed".
	require.Eventually(t, func() bool {
		b, err := c.kube.PolicyV1().PodDisruptionBudgets("ns").Get(c.ctx, "p-busy", metav1.GetOptions{})
		return err == nil && b.Status.ObservedGeneration == b.Generation && b.Status.ExpectedPods == 2 &&
			b.Status.CurrentHealthy == 2 && b.Status.DisruptionsAllowed == 0
	}, 30*time.Second, 50*time.Millisecond, "the disruption controller never counted the busy pods")

	refused := func(pod string) {
		t.Helper()
		err := c.evict("ns", pod)
		require.Error(t, err, "pod %s was evicted", pod)
		require.True(t, apierrors.IsTooManyRequests(err), "pod %s: want 429, got %v", pod, err)
	}
	refused(running)
	refused(reserved)

	// Busy pods outnumber spec.replicas: the janitor cordons busy surplus,
	// which the agent reports not Ready. Still refused.
	c.scaleTo("ns", "p", 1)
	require.Eventually(t, func() bool {
		_, err := c.kube.CoreV1().Pods("ns").Get(c.ctx, idle, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 50*time.Millisecond, "the idle surplus pod was never removed")
	require.Eventually(t, func() bool {
		a, _ := c.record("ns", "p", running)
		b, _ := c.record("ns", "p", reserved)
		return a.State == slots.PodCordoned || b.State == slots.PodCordoned
	}, 30*time.Second, 20*time.Millisecond, "a busy surplus pod is cordoned")
	refused(running)
	refused(reserved)

	// The task ends (its plan is rejected): its pod is idle, loses the
	// label, and evicts.
	c.kubelet.open("running", "plan")
	c.waitTask("ns", "p", "running", inState(slots.StateReserved), "reserved")
	require.NoError(t, c.store.Reject(c.ctx, pool, "running", "tester"))
	require.Eventually(t, func() bool { return !labelled(running) }, 30*time.Second, 20*time.Millisecond,
		"the janitor unlabels idle pods")
	require.Eventually(t, func() bool {
		err := c.evict("ns", running)
		return err == nil || apierrors.IsNotFound(err)
	}, 30*time.Second, 100*time.Millisecond, "an idle pod must be evictable")
	refused(reserved)
	tk, err := c.store.Task(context.Background(), pool, "waiting")
	require.NoError(t, err)
	require.Equal(t, slots.StateReserved, tk.State, "the reservation survived every eviction attempt")
	for _, p := range c.livePods("ns", "p") {
		require.NotEqual(t, corev1.PodFailed, p.Status.Phase)
	}
	c.audit.check(t)
}
