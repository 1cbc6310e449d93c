package kube

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func (c *cluster) submit(ns, pool, id string, tt slots.TaskType, payload string) {
	c.t.Helper()
	_, err := c.store.Submit(c.ctx, slots.PoolID{Namespace: ns, Name: pool}, slots.TaskSpec{ID: id, Type: tt, Payload: []byte(payload)})
	require.NoError(c.t, err)
}

func (c *cluster) task(ns, pool, id string) slots.Task {
	c.t.Helper()
	tk, err := c.store.Task(c.ctx, slots.PoolID{Namespace: ns, Name: pool}, id)
	require.NoError(c.t, err)
	return tk
}

func (c *cluster) waitTask(ns, pool, id string, ok func(slots.Task) bool, what string) slots.Task {
	c.t.Helper()
	// Not require.Eventually: its message is formatted when it is called,
	// and a failure must show the task's last state, not the zero Task.
	deadline := time.Now().Add(60 * time.Second)
	for {
		tk := c.task(ns, pool, id)
		if ok(tk) {
			return tk
		}
		if time.Now().After(deadline) {
			c.describePool(ns, pool)
			require.FailNowf(c.t, "task state", "task %s/%s/%s never %s within 60s; last %+v", ns, pool, id, what, tk)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func started(phase slots.Phase) func(slots.Task) bool {
	return func(t slots.Task) bool { return t.State == slots.StateRunning && t.Phase == phase && t.Started }
}

func inState(s slots.TaskState) func(slots.Task) bool {
	return func(t slots.Task) bool { return t.State == s }
}

// describePool logs what the store and the API server say of a pool, for a
// failing wait to explain itself.
func (c *cluster) describePool(ns, pool string) {
	c.t.Helper()
	snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: ns, Name: pool})
	if err != nil {
		c.t.Logf("snapshot of %s/%s: %v", ns, pool, err)
	} else {
		c.t.Logf("store: %s/%s has %d pods, %d queued", ns, pool, len(snap.Pods), len(snap.Queue))
		for _, p := range snap.Pods {
			var st []string
			for _, s := range p.Slots {
				st = append(st, fmt.Sprintf("%d:%s:%s", s.Index, s.State, s.Task))
			}
			c.t.Logf("  pod %s state=%s cordonedBy=%s registered=%s heartbeatDeadline=%s slots=%v",
				p.Name, p.State, p.CordonedBy, p.Registered.Format(time.StampMilli), p.HeartbeatDeadline.Format(time.StampMilli), st)
		}
	}
	pods, err := c.kube.CoreV1().Pods(ns).List(c.ctx, metav1.ListOptions{})
	if err != nil {
		c.t.Logf("listing pods of %s: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		c.t.Logf("  api: pod %s phase=%s deleting=%v", p.Name, p.Status.Phase, p.DeletionTimestamp != nil)
	}
}

func podNames(pods []corev1.Pod) []string {
	var n []string
	for _, p := range pods {
		n = append(n, p.Name)
	}
	slices.Sort(n)
	return n
}

func TestScaleUpThenDownRemovesIdlePods(t *testing.T) {
	c := newCluster(t)
	c.newPool("team-a", "pool-a", 3)
	c.startJanitor()
	c.waitActive("team-a", "pool-a", 3)
	require.Eventually(t, func() bool {
		ap := c.getPool("team-a", "pool-a")
		return ap.Status.Replicas == 3 && ap.Status.ReadyReplicas == 3 && ap.Status.IdleReplicas == 3 &&
			cond(ap, v1alpha1.ConditionReady) == metav1.ConditionTrue && ap.Status.Selector == janitor.LabelPool+"=pool-a"
	}, 30*time.Second, 50*time.Millisecond)

	pods := c.livePods("team-a", "pool-a")
	for _, p := range pods {
		require.Equal(t, corev1.RestartPolicyNever, p.Spec.RestartPolicy)
		require.Equal(t, "pool-a", metav1.GetControllerOf(&p).Name)
		require.NotEmpty(t, p.Labels[janitor.LabelTemplateHash])
		require.GreaterOrEqual(t, *p.Spec.TerminationGracePeriodSeconds, int64(3600), "grace covers the 1h default phase timeout")
		require.NotContains(t, p.Annotations, janitor.AnnotationDoNotDisrupt, "idle pods are evictable")
	}

	c.scaleTo("team-a", "pool-a", 1)
	c.waitActive("team-a", "pool-a", 1)
	for _, p := range pods {
		if st, ok := c.audit.stateAtDeletion(p.Name); ok {
			require.Equal(t, string(slots.PodDraining), st, "pod %s deleted only after its drain", p.Name)
		}
	}
	require.Eventually(t, func() bool {
		ap := c.getPool("team-a", "pool-a")
		return ap.Status.Replicas == 1 && ap.Status.ReadyReplicas == 1
	}, 30*time.Second, 50*time.Millisecond)

	c.scaleTo("team-a", "pool-a", 0)
	c.waitActive("team-a", "pool-a", 0)
	c.audit.check(t)
}

func cond(ap *v1alpha1.AgentPool, typ string) metav1.ConditionStatus {
	for _, c := range ap.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func TestBusyPodIsCordonedAndRemovedOnlyWhenIdle(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 2)
	c.startJanitor()
	c.waitActive("ns", "p", 2)
	c.submit("ns", "p", "long", slots.Plan, "gate")
	tk := c.waitTask("ns", "p", "long", started(slots.PhasePlan), "started")
	busyPod := tk.Pod
	require.Eventually(t, func() bool {
		for _, p := range c.livePods("ns", "p") {
			if p.Name == busyPod {
				return p.Annotations[janitor.AnnotationDoNotDisrupt] == "true" && p.Annotations[janitor.AnnotationSafeToEvict] == "false"
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "busy pods carry the do-not-evict annotations")

	c.scaleTo("ns", "p", 0)
	// The idle pod goes; the busy one is cordoned and stays while it works.
	require.Eventually(t, func() bool {
		live := c.livePods("ns", "p")
		return len(live) == 1 && live[0].Name == busyPod
	}, 30*time.Second, 20*time.Millisecond)
	snap := c.waitState("ns", "p", busyPod, slots.PodCordoned)
	require.True(t, snap.Busy())
	time.Sleep(time.Second) // several passes of the janitor
	require.Len(t, c.livePods("ns", "p"), 1, "a busy pod is never removed")
	require.Equal(t, slots.StateRunning, c.task("ns", "p", "long").State)
	require.Equal(t, int32(0), c.getPool("ns", "p").Status.Replicas, "a cordoned surplus pod is not in status.replicas")
	// What the dashboard shows of it: the janitor's report says it waits
	// for the busy pod and that it cordoned it.
	rep := c.janitorReport("ns", "p", func(r janitorreport.Report) bool {
		return hasAction(r, janitorreport.ActionCordoned, busyPod)
	})
	require.Equal(t, 0, rep.Replicas)
	require.Equal(t, "test-janitor", rep.Janitor)
	require.Condition(t, func() bool {
		return slices.ContainsFunc(rep.Waiting, func(w janitorreport.Wait) bool { return w.Kind == janitorreport.WaitBusy && w.Pods == 1 })
	}, "the report waits for the busy pod: %+v", rep.Waiting)

	c.kubelet.open("long", "plan")
	c.waitTask("ns", "p", "long", inState(slots.StateSucceeded), "succeeded")
	require.Eventually(t, func() bool { return len(c.livePods("ns", "p")) == 0 }, 30*time.Second, 20*time.Millisecond)
	st, ok := c.audit.stateAtDeletion(busyPod)
	require.True(t, ok)
	require.Equal(t, string(slots.PodDraining), st)
	rep = c.janitorReport("ns", "p", func(r janitorreport.Report) bool {
		return hasAction(r, janitorreport.ActionDrained, busyPod) && len(r.Waiting) == 0
	})
	require.Equal(t, 0, rep.Live)
	c.audit.check(t)
}

// janitorReport waits for the janitor's report of a pool to satisfy ok.
func (c *cluster) janitorReport(ns, pool string, ok func(janitorreport.Report) bool) janitorreport.Report {
	c.t.Helper()
	reports := janitorreport.NewStore(c.rdb, c.prefix)
	var last janitorreport.Report
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, found, err := reports.Read(c.ctx, slots.PoolID{Namespace: ns, Name: pool})
		require.NoError(c.t, err)
		if found && ok(r) {
			return r
		}
		last = r
		if time.Now().After(deadline) {
			require.FailNowf(c.t, "janitor report", "the janitor's report of %s/%s never matched; last %+v", ns, pool, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasAction(r janitorreport.Report, kind, pod string) bool {
	return slices.ContainsFunc(r.Actions, func(a janitorreport.Action) bool { return a.Kind == kind && slices.Contains(a.Pods, pod) })
}

func (c *cluster) waitState(ns, pool, pod string, st slots.PodState) slots.PodSnapshot {
	c.t.Helper()
	var got slots.PodSnapshot
	require.Eventually(c.t, func() bool {
		snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: ns, Name: pool})
		if err != nil {
			return false
		}
		for _, p := range snap.Pods {
			if p.Name == pod {
				got = p
				return p.State == st
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "pod %s never %s (last %s)", pod, st, got.State)
	return got
}

func TestReservedSlotKeepsItsPodUntilApproval(t *testing.T) {
	for _, end := range []string{"approve", "reject"} {
		t.Run(end, func(t *testing.T) {
			c := newCluster(t)
			c.newPool("ns", "p", 1)
			c.startJanitor()
			c.waitActive("ns", "p", 1)
			c.submit("ns", "p", "tf", slots.PlanAndApply, "0")
			tk := c.waitTask("ns", "p", "tf", inState(slots.StateReserved), "reserved")
			c.scaleTo("ns", "p", 0)
			c.waitState("ns", "p", tk.Pod, slots.PodCordoned)
			time.Sleep(time.Second)
			require.Len(t, c.livePods("ns", "p"), 1, "a reserved slot keeps its pod")

			id := slots.PoolID{Namespace: "ns", Name: "p"}
			if end == "approve" {
				_, err := c.store.Approve(c.ctx, id, "tf", "tester")
				require.NoError(t, err)
				c.waitTask("ns", "p", "tf", inState(slots.StateSucceeded), "succeeded (the apply ran on the cordoned pod)")
			} else {
				require.NoError(t, c.store.Reject(c.ctx, id, "tf", "tester"))
			}
			require.Eventually(t, func() bool { return len(c.livePods("ns", "p")) == 0 }, 30*time.Second, 20*time.Millisecond)
			require.Equal(t, tk.Pod, c.task("ns", "p", "tf").Pod)
			c.audit.check(t)
		})
	}
}

func TestVanishedPodRequeuesItsPlanAndFailsItsApply(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 2)
	c.startJanitor()
	c.waitActive("ns", "p", 2)
	// Both on slot 0 of the same pod cannot be: a plan_and_apply in its
	// apply and a plan, each gated.
	c.submit("ns", "p", "apply", slots.PlanAndApply, "gate")
	c.waitTask("ns", "p", "apply", started(slots.PhasePlan), "planning")
	c.kubelet.open("apply", "plan")
	tk := c.waitTask("ns", "p", "apply", inState(slots.StateReserved), "reserved")
	_, err := c.store.Approve(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"}, "apply", "tester")
	require.NoError(t, err)
	c.waitTask("ns", "p", "apply", started(slots.PhaseApply), "applying")
	victim := tk.Pod
	c.submit("ns", "p", "plan", slots.Plan, "gate")
	pl := c.waitTask("ns", "p", "plan", started(slots.PhasePlan), "planning")
	if pl.Pod != victim {
		// Plans go to plan-only slots of the oldest pod first: both pods are
		// candidates; put a second plan on the victim to have one there.
		c.submit("ns", "p", "plan2", slots.Plan, "gate")
		pl = c.waitTask("ns", "p", "plan2", started(slots.PhasePlan), "planning")
	}
	require.Equal(t, victim, pl.Pod, "a plan runs on the victim pod")

	// Someone deletes the pod (not the janitor): the kubelet kills the agent.
	var uid = ""
	for _, p := range c.livePods("ns", "p") {
		if p.Name == victim {
			uid = string(p.UID)
		}
	}
	require.NotEmpty(t, uid)
	require.NoError(t, c.kube.CoreV1().Pods("ns").Delete(c.ctx, victim, metav1.DeleteOptions{}))

	failed := c.waitTask("ns", "p", "apply", inState(slots.StateFailed), "failed")
	require.Equal(t, slots.ReasonAgentLost, failed.Reason, "an apply is never requeued")
	// The plan is requeued and runs again, on the replacement pod or the other one.
	c.kubelet.open(pl.ID, "plan")
	again := c.waitTask("ns", "p", pl.ID, inState(slots.StateSucceeded), "succeeded after requeue")
	require.Equal(t, 2, again.Attempt)
	require.NotEqual(t, victim, again.Pod)
	c.waitActive("ns", "p", 2)
	c.audit.check(t)
}

func TestTemplateChangeReplacesIdlePodsOnly(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 2)
	c.startJanitor()
	c.waitActive("ns", "p", 2)
	old := c.livePods("ns", "p")
	oldHash := old[0].Labels[janitor.LabelTemplateHash]
	c.submit("ns", "p", "busy", slots.Plan, "gate")
	busy := c.waitTask("ns", "p", "busy", started(slots.PhasePlan), "started").Pod

	c.updatePool("ns", "p", func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Labels["version"] = "2"
	})
	// The idle old pod is replaced; the busy one is cordoned, keeps working,
	// and a replacement comes up beside it.
	require.Eventually(t, func() bool {
		live := c.livePods("ns", "p")
		current, outdated := 0, 0
		for _, p := range live {
			if p.Labels[janitor.LabelTemplateHash] == oldHash {
				outdated++
				if p.Name != busy {
					return false
				}
			} else if p.Labels["version"] == "2" {
				current++
			}
		}
		return current == 2 && outdated == 1
	}, 60*time.Second, 50*time.Millisecond)
	c.waitState("ns", "p", busy, slots.PodCordoned)
	require.Equal(t, slots.StateRunning, c.task("ns", "p", "busy").State)

	c.kubelet.open("busy", "plan")
	c.waitTask("ns", "p", "busy", inState(slots.StateSucceeded), "succeeded")
	require.Eventually(t, func() bool {
		live := c.livePods("ns", "p")
		for _, p := range live {
			if p.Labels[janitor.LabelTemplateHash] == oldHash {
				return false
			}
		}
		return len(live) == 2
	}, 60*time.Second, 50*time.Millisecond)
	c.waitActive("ns", "p", 2)
	c.audit.check(t)
}

func TestRegistrationRacingDeletionLoses(t *testing.T) {
	c := newCluster(t)
	c.kubelet.pause("ns/p", true) // pods are created, agents never start
	c.newPool("ns", "p", 1)
	c.startJanitor()
	var pod corev1.Pod
	id := slots.PoolID{Namespace: "ns", Name: "p"}
	require.Eventually(t, func() bool {
		live := c.livePods("ns", "p")
		if len(live) != 1 {
			return false
		}
		pod = live[0]
		snap, err := c.store.Snapshot(c.ctx, id)
		return err == nil && len(snap.Pods) == 1 && snap.Pods[0].State == slots.PodExpected
	}, 30*time.Second, 20*time.Millisecond)

	c.scaleTo("ns", "p", 0)
	require.Eventually(t, func() bool {
		_, err := c.kube.CoreV1().Pods("ns").Get(c.ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 30*time.Second, 20*time.Millisecond)
	// The agent comes up late and tries to register its incarnation.
	_, err := c.store.RegisterPod(c.ctx, id, pod.Name, string(pod.UID))
	require.Error(t, err, "a registration racing the deletion of a never-registered pod loses")
	require.True(t, errorsIsAny(err, slots.ErrTombstoned, slots.ErrNotExpected, slots.ErrPodState), "refused as removed: %v", err)
	c.audit.check(t)
}

func TestPodsThatCannotStartBackOffAndDegrade(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1, func(ap *v1alpha1.AgentPool) {
		// The agent exits at once: the executor does not exist.
		ap.Spec.Template.Spec.Containers[0].Env[0].Value = "/nonexistent/executor"
	})
	c.startJanitor()
	require.Eventually(t, func() bool {
		ap := c.getPool("ns", "p")
		return cond(ap, v1alpha1.ConditionDegraded) == metav1.ConditionTrue
	}, 60*time.Second, 50*time.Millisecond)
	// Replacements are backed off: over 3 s at most a few pods are created,
	// not one per pass (the janitor passes every 200 ms).
	created := func() int {
		n := 0
		for _, e := range c.events("ns", "SuccessfulCreate") {
			n += int(e.Count)
		}
		return n
	}
	before := created()
	time.Sleep(3 * time.Second)
	require.LessOrEqual(t, created()-before, 3, "pod creation backs off after start failures")
}

func (c *cluster) events(ns, reason string) []corev1.Event {
	c.t.Helper()
	list, err := c.kube.CoreV1().Events(ns).List(c.ctx, metav1.ListOptions{})
	require.NoError(c.t, err)
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func TestDryRunSendsNoMutatingRequest(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 3)
	c.startJanitor(func(o *janitor.Options) { o.DryRun = true })
	// Many passes (every 200 ms), each deciding to create 3 pods.
	time.Sleep(3 * time.Second)
	require.Zero(t, c.audit.mutating.Load(), "dry-run sent mutating requests")
	require.Empty(t, c.livePods("ns", "p"))
	_, _, err := c.store.Pool(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"})
	require.ErrorIs(t, err, slots.ErrPoolNotFound, "dry-run writes nothing to Redis")
	ap := c.getPool("ns", "p")
	require.Zero(t, ap.Status.ObservedGeneration, "dry-run writes no status")
}

func TestOneAgentPoolPerNamespaceName(t *testing.T) {
	c := newCluster(t)
	c.newPool("team-a", "pool", 1)
	c.newPool("team-b", "pool", 2)
	c.startJanitor()
	a := c.waitActive("team-a", "pool", 1)
	b := c.waitActive("team-b", "pool", 2)
	require.NotEqual(t, a[0].Name, b[0].Name)
	for _, p := range c.livePods("team-b", "pool") {
		require.Equal(t, "team-b", p.Namespace)
	}
	c.audit.check(t)
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// After Redis loses its data the janitor declares the pool again, rebuilds
// expected records from the pods, lets the agents re-register, and deletes
// nothing for one heartbeat timeout — even with a scale-down pending.
func TestRedisDataLossHoldsDeletions(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 3)
	c.startJanitor()
	before := map[string]bool{}
	for _, p := range c.waitActive("ns", "p", 3) {
		before[p.Name] = true
	}
	c.scaleTo("ns", "p", 1)
	keys, err := c.rdb.Keys(c.ctx, c.prefix+":*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	lost := time.Now()
	require.NoError(t, c.rdb.Del(c.ctx, keys...).Err())

	// The agents re-register against rebuilt records; then the scale-down
	// happens, no earlier than a heartbeat timeout (2 s) after the loss.
	c.waitActive("ns", "p", 1)
	c.audit.mu.Lock()
	first := c.audit.firstDel
	c.audit.mu.Unlock()
	require.False(t, first.IsZero())
	require.True(t, first.After(lost.Add(2*time.Second)), "first deletion %v after the loss, want ≥ the 2s heartbeat timeout", first.Sub(lost))
	require.NotEmpty(t, c.events("ns", "RedisDataLoss"))
	for _, p := range c.livePods("ns", "p") {
		require.True(t, before[p.Name], "the surviving pod is one of the original ones, not a replacement")
	}
	c.audit.check(t)
}

// A busy pod cordoned for a scale-down comes back when replicas rise again:
// no new pod is created while a cordoned one can serve.
func TestCordonLiftsWhenReplicasRise(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1)
	c.startJanitor()
	c.waitActive("ns", "p", 1)
	c.submit("ns", "p", "long", slots.Plan, "gate")
	pod := c.waitTask("ns", "p", "long", started(slots.PhasePlan), "started").Pod
	c.scaleTo("ns", "p", 0)
	c.waitState("ns", "p", pod, slots.PodCordoned)
	c.scaleTo("ns", "p", 1)
	c.waitState("ns", "p", pod, slots.PodActive)
	time.Sleep(time.Second) // several passes
	live := c.livePods("ns", "p")
	require.Len(t, live, 1)
	require.Equal(t, pod, live[0].Name, "the cordoned pod was taken back; nothing new created")
	c.kubelet.open("long", "plan")
	c.waitTask("ns", "p", "long", inState(slots.StateSucceeded), "succeeded")
	c.audit.check(t)
}

// With a lagging informer and a slow Redis, a pass must never take a pod it
// just created for one whose object is gone: scaling up deletes nothing and
// removes no record.
func TestInformerLagNeverFencesNewPods(t *testing.T) {
	c := newCluster(t)
	c.audit.watchDelay.Store(int64(60 * time.Millisecond))
	c.scriptDelay.Store(int64(100 * time.Millisecond))
	c.newPool("ns", "p", 3)
	c.startJanitor()
	c.waitActive("ns", "p", 3)
	c.scaleTo("ns", "p", 6)
	c.waitActive("ns", "p", 6)
	time.Sleep(time.Second)
	c.audit.mu.Lock()
	deleted := len(c.audit.deleted)
	c.audit.mu.Unlock()
	require.Zero(t, deleted, "scaling up deleted pods")
	page, err := c.store.Events(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"}, "", 1000)
	require.NoError(t, err)
	for _, e := range page.Events {
		require.NotContains(t, fmt.Sprint(e), janitor.ReasonPodGone, "a new pod's record was removed")
	}
	require.Len(t, c.livePods("ns", "p"), 6)
}
