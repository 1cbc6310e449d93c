package kube

// migration_test.go: moving a pool from a Deployment of static agents to an
// AgentPool and back (docs/migration.md), with work running and a
// plan_and_apply waiting for approval, on the real API server with real
// agents. There is no kube-controller-manager: the test creates the
// Deployment's ReplicaSet and its pods itself, and does what the garbage
// collector does for an orphaning deletion (drops the owner references).

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// runsScript is markerScript, and every start of a phase appends the pod
// running it to $GATE_DIR/<task>.<phase>.runs: a phase that ran twice, or on
// another pod, shows there.
const runsScript = `echo "$POD_NAME" >> "$GATE_DIR/$TASK_ID.$TASK_PHASE.runs"; ` + markerScript

func withRuns(ap *v1alpha1.AgentPool) {
	env := ap.Spec.Template.Spec.Containers[0].Env
	for i := range env {
		if env[i].Name == "EXECUTOR" {
			env[i].Value = "sh -c '" + runsScript + "'"
		}
	}
}

// runs lists the pods that started a task's phase, in order.
func (c *cluster) runs(task, phase string) []string {
	b, err := os.ReadFile(filepath.Join(c.kubelet.gateDir, task+"."+phase+".runs"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// deployment plays a Deployment of static agents: a ReplicaSet object and n
// pods it controls, whose agents (the test's own processes) self-register in
// the static pool ns/p. Nothing reconciles the ReplicaSet.
func (c *cluster) deployment(name string, n int) []*corev1.Pod {
	c.t.Helper()
	labels := map[string]string{"app": name}
	container := corev1.Container{
		Name: "agent", Image: "slotscaler/agent:test",
		Env: []corev1.EnvVar{
			{Name: "EXECUTOR", Value: "sh -c '" + runsScript + "'"},
			{Name: "EXECUTOR_ENV", Value: "GATE_DIR"},
			{Name: "GATE_DIR", Value: c.kubelet.gateDir},
			{Name: "HEARTBEAT_INTERVAL", Value: "300ms"},
			{Name: "REGISTER_TIMEOUT", Value: "30s"},
			{Name: "KILL_GRACE", Value: "1s"},
			{Name: "REDIS_URL", Value: c.redis},
			{Name: "KEY_PREFIX", Value: c.prefix},
			{Name: "POOL_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "POOL_NAME", Value: "p"},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
		},
	}
	rs, err := c.kube.AppsV1().ReplicaSets("ns").Create(c.ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptrTo(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{container}}},
		},
	}, metav1.CreateOptions{})
	require.NoError(c.t, err)
	var pods []*corev1.Pod
	for i := range n {
		pod, err := c.kube.CoreV1().Pods("ns").Create(c.ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + string(rune('a'+i)), Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID,
					Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true)}}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{container}},
		}, metav1.CreateOptions{})
		require.NoError(c.t, err)
		c.startOwnAgent(pod)
		pods = append(pods, pod)
	}
	return pods
}

// orphan drops a pod's owner references, as the garbage collector does for
// the dependents of an object deleted with --cascade=orphan.
func (c *cluster) orphan(name string) {
	c.t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": nil}})
	_, err := c.kube.CoreV1().Pods("ns").Patch(c.ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(c.t, err)
}

// recordState is a pod's record state in ns/p ("" without one).
func (c *cluster) recordState(pod string) slots.PodState {
	r, ok := c.record("ns", "p", pod)
	if !ok {
		return ""
	}
	return r.State
}

func (c *cluster) podGone(name string) bool {
	_, err := c.kube.CoreV1().Pods("ns").Get(c.ctx, name, metav1.GetOptions{})
	return apierrors.IsNotFound(err)
}

// declareStatic runs `scaler declare-pool` for the static pool ns/p.
func (c *cluster) declareStatic(args ...string) {
	c.t.Helper()
	cmd := exec.Command(scalerBin, append([]string{"declare-pool", "--heartbeat-timeout", "2s"}, args...)...)
	cmd.Env = []string{"REDIS_URL=" + c.redis, "KEY_PREFIX=" + c.prefix, "POOL_NAMESPACE=ns", "POOL_NAME=p"}
	out, err := cmd.CombinedOutput()
	require.NoError(c.t, err, "scaler declare-pool: %s", out)
}

// A pool moves from a Deployment of static agents to an AgentPool and back,
// with a plan running and a plan_and_apply waiting for approval each way:
// no running phase is cut (the executors' markers), every phase runs once,
// the reserved apply runs on the pod that planned it, new work goes to the
// new side, and a pod is deleted only once drained (the API server audit).
func TestMigratingFromADeploymentAndBack(t *testing.T) {
	c := newCluster(t)
	c.createNamespace("ns")
	pool := slots.PoolID{Namespace: "ns", Name: "p"}

	// Today: a static pool, three agents in a Deployment. One runs a plan,
	// one holds a reservation, one is idle.
	c.declareStatic()
	c.deployment("agents", 3)
	require.Eventually(t, func() bool {
		return c.recordState("agents-a") == slots.PodActive && c.recordState("agents-b") == slots.PodActive &&
			c.recordState("agents-c") == slots.PodActive
	}, 60*time.Second, 20*time.Millisecond, "the Deployment's agents register")
	c.submit("ns", "p", "running", slots.PlanAndApply, "gate")
	c.waitMarker("running", "plan", "started")
	c.submit("ns", "p", "waiting", slots.PlanAndApply, "gate")
	c.waitMarker("waiting", "plan", "started")
	c.kubelet.open("waiting", "plan")
	waiting := c.waitTask("ns", "p", "waiting", inState(slots.StateReserved), "reserved")
	running := c.task("ns", "p", "running")
	idle := map[string]bool{"agents-a": true, "agents-b": true, "agents-c": true}
	delete(idle, running.Pod)
	delete(idle, waiting.Pod)
	require.Len(t, idle, 1, "the plans run on two pods: %s, %s", running.Pod, waiting.Pod)
	var idlePod string
	for p := range idle {
		idlePod = p
	}

	// Forward. 1: the Deployment (and its ReplicaSet) deleted with
	// --cascade=orphan: the pods run on, controlled by nobody.
	require.NoError(t, c.kube.AppsV1().ReplicaSets("ns").Delete(c.ctx, "agents", metav1.DeleteOptions{}))
	for _, p := range []string{"agents-a", "agents-b", "agents-c"} {
		c.orphan(p)
	}
	// 2: the AgentPool of the same namespace and name.
	c.newPool("ns", "p", 2, withRuns)
	c.startJanitor()

	// Its own pods come up beside the Deployment's, which are taken over:
	// the busy ones cordoned, the idle one removed at once.
	require.Eventually(t, func() bool {
		return len(c.ownPods()) == 2 && c.recordState(running.Pod) == slots.PodCordoned &&
			c.recordState(waiting.Pod) == slots.PodCordoned && c.podGone(idlePod)
	}, 60*time.Second, 20*time.Millisecond, "the AgentPool's pods are created, the busy foreign pods cordoned, the idle one removed")
	own := c.ownPods()
	require.Eventually(t, func() bool {
		return c.recordState(own[0]) == slots.PodActive && c.recordState(own[1]) == slots.PodActive
	}, 60*time.Second, 20*time.Millisecond, "the AgentPool's agents register")
	require.Eventually(t, func() bool { return c.getPool("ns", "p").Status.Replicas == 2 }, 30*time.Second, 20*time.Millisecond,
		"status.replicas counts the AgentPool's pods only")

	// New work goes to the AgentPool's pods.
	c.submit("ns", "p", "after", slots.Plan, "gate")
	c.waitMarker("after", "plan", "started")
	assert.Contains(t, own, c.task("ns", "p", "after").Pod)

	// The reservation is approved: its apply runs on the cordoned foreign pod
	// that planned it. The running plan finishes there too.
	_, err := c.store.Approve(c.ctx, pool, "waiting", "tester")
	require.NoError(t, err)
	c.waitMarker("waiting", "apply", "started")
	c.kubelet.open("waiting", "apply")
	c.waitTask("ns", "p", "waiting", inState(slots.StateSucceeded), "succeeded")
	c.kubelet.open("running", "plan")
	c.waitTask("ns", "p", "running", inState(slots.StateReserved), "reserved")
	_, err = c.store.Approve(c.ctx, pool, "running", "tester")
	require.NoError(t, err)
	c.kubelet.open("running", "apply")
	c.waitTask("ns", "p", "running", inState(slots.StateSucceeded), "succeeded")

	// Idle now, the foreign pods go; the AgentPool's stay.
	require.Eventually(t, func() bool {
		return c.podGone(running.Pod) && c.podGone(waiting.Pod) && c.recordState(running.Pod) == "" && c.recordState(waiting.Pod) == ""
	}, 60*time.Second, 20*time.Millisecond, "the idle foreign pods are removed")
	assert.Equal(t, []string{waiting.Pod}, c.runs("waiting", "apply"), "the apply ran once, where its plan ran")
	assert.Equal(t, []string{running.Pod}, c.runs("running", "apply"))
	for _, name := range []string{running.Pod, waiting.Pod, idlePod} {
		st, ok := c.audit.stateAtDeletion(name)
		assert.True(t, ok && st == string(slots.PodDraining), "pod %s deleted drained, not %q", name, st)
	}
	assert.ElementsMatch(t, own, c.ownPods(), "the AgentPool's pods were never replaced")

	// Back. Work on the AgentPool's pods: "after" runs, "held" waits for
	// approval.
	c.submit("ns", "p", "held", slots.PlanAndApply, "gate")
	c.waitMarker("held", "plan", "started")
	c.kubelet.open("held", "plan")
	held := c.waitTask("ns", "p", "held", inState(slots.StateReserved), "reserved")
	after := c.task("ns", "p", "after")

	// 1: the AgentPool deleted with --cascade=orphan: the janitor only
	// removes its finalizer; the garbage collector drops the pods' owner
	// references and its own finalizer.
	require.NoError(t, c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Delete(c.ctx, "p",
		metav1.DeleteOptions{PropagationPolicy: ptrTo(metav1.DeletePropagationOrphan)}))
	require.Eventually(t, func() bool {
		ap := c.getPool("ns", "p")
		return len(ap.Finalizers) == 1 && ap.Finalizers[0] == metav1.FinalizerOrphanDependents
	}, 30*time.Second, 20*time.Millisecond, "the janitor releases the orphaning deletion")
	for _, p := range own {
		c.orphan(p)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": nil}})
	_, err = c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns").Patch(c.ctx, "p", types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(t, err)
	// 2: the pool is static again; 3: the Deployment is back, its agents
	// self-register.
	c.declareStatic("--unmanage")
	c.deployment("agents2", 2)
	require.Eventually(t, func() bool {
		return c.recordState("agents2-a") == slots.PodActive && c.recordState("agents2-b") == slots.PodActive
	}, 60*time.Second, 20*time.Millisecond, "the new Deployment's agents register")

	// 4: `scaler drain-idle` removes the AgentPool's pods as they free: the
	// busy ones are cordoned, so new work goes to the Deployment. The
	// selector catches the Deployment's pods too: they have a controller,
	// so they are not drain-idle's.
	drain := func() janitor.DrainIdleResult {
		res, err := janitor.DrainIdle(c.ctx, kubernetes.NewForConfigOrDie(c.janitorConfig()), c.store, pool,
			janitor.DrainIdleOptions{Selector: "app in (p, agents2)", ReplicaWait: time.Second})
		require.NoError(t, err)
		return res
	}
	res := drain()
	busy := []string{after.Pod}
	if held.Pod != after.Pod {
		busy = append(busy, held.Pod)
	}
	assert.ElementsMatch(t, busy, res.Busy, "the busy pods are cordoned, an idle one removed")
	assert.ElementsMatch(t, []string{"agents2-a", "agents2-b"}, res.Skipped, "the Deployment's pods are not drain-idle's")
	c.submit("ns", "p", "back", slots.Plan, "gate")
	c.waitMarker("back", "plan", "started")
	assert.True(t, strings.HasPrefix(c.task("ns", "p", "back").Pod, "agents2-"), "new work goes to the Deployment")

	_, err = c.store.Approve(c.ctx, pool, "held", "tester")
	require.NoError(t, err)
	c.waitMarker("held", "apply", "started")
	c.kubelet.open("held", "apply")
	c.kubelet.open("after", "plan")
	c.kubelet.open("back", "plan")
	c.waitTask("ns", "p", "held", inState(slots.StateSucceeded), "succeeded")
	c.waitTask("ns", "p", "after", inState(slots.StateSucceeded), "succeeded")
	c.waitTask("ns", "p", "back", inState(slots.StateSucceeded), "succeeded")
	require.Eventually(t, func() bool { return drain().Left() == 0 }, 60*time.Second, 200*time.Millisecond,
		"drain-idle removes the AgentPool's pods once idle")
	for _, p := range own {
		assert.True(t, c.podGone(p), "pod %s is removed", p)
		assert.Equal(t, slots.PodState(""), c.recordState(p))
		st, ok := c.audit.stateAtDeletion(p)
		assert.True(t, ok && st == string(slots.PodDraining), "pod %s deleted drained, not %q", p, st)
	}
	for _, p := range []string{"agents2-a", "agents2-b"} {
		assert.False(t, c.podGone(p), "the Deployment's pod %s stays", p)
		assert.Equal(t, slots.PodActive, c.recordState(p))
	}
	assert.Equal(t, []string{held.Pod}, c.runs("held", "apply"), "the apply ran once, where its plan ran")

	// No phase was cut, none ran twice.
	for _, tp := range [][2]string{{"running", "plan"}, {"running", "apply"}, {"waiting", "plan"}, {"waiting", "apply"},
		{"after", "plan"}, {"held", "plan"}, {"held", "apply"}, {"back", "plan"}} {
		assert.True(t, c.marker(tp[0], tp[1], "done"), "%s's %s finished", tp[0], tp[1])
		assert.Len(t, c.runs(tp[0], tp[1]), 1, "%s's %s ran once", tp[0], tp[1])
	}
	c.audit.check(t)
}

// ownPods names the live pods the AgentPool ns/p controls.
func (c *cluster) ownPods() []string {
	c.t.Helper()
	var out []string
	for _, p := range c.livePods("ns", "p") {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.Kind == v1alpha1.Kind {
			out = append(out, p.Name)
		}
	}
	return out
}
