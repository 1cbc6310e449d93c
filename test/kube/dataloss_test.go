package kube

// dataloss_test.go: Redis losing its data, agents that stop on their own,
// and the janitor restarting, on the real API server with real agents. The
// evidence that no busy pod was hurt comes from the executors themselves:
// each phase leaves a ".started" marker when it starts and a ".done" marker
// when it finishes, so a phase whose agent was killed (its pod deleted)
// never leaves ".done".

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// markerScript: like executorScript ("gate" waits for the gate file), and
// it leaves <task>.<phase>.started and <task>.<phase>.done in $GATE_DIR.
const markerScript = `p=$(cat); touch "$GATE_DIR/$TASK_ID.$TASK_PHASE.started"; ` +
	`case "$p" in gate) while [ ! -e "$GATE_DIR/$TASK_ID.$TASK_PHASE" ]; do sleep 0.1; done;; *) sleep "${p:-0}";; esac; ` +
	`touch "$GATE_DIR/$TASK_ID.$TASK_PHASE.done"`

// withMarkers makes the pool's executors leave markers (markerScript).
func withMarkers(ap *v1alpha1.AgentPool) {
	env := ap.Spec.Template.Spec.Containers[0].Env
	for i := range env {
		if env[i].Name == "EXECUTOR" {
			env[i].Value = "sh -c '" + markerScript + "'"
		}
	}
}

func (c *cluster) marker(task, phase, what string) bool {
	_, err := os.Stat(filepath.Join(c.kubelet.gateDir, task+"."+phase+"."+what))
	return err == nil
}

func (c *cluster) waitMarker(task, phase, what string) {
	c.t.Helper()
	require.Eventually(c.t, func() bool { return c.marker(task, phase, what) }, 60*time.Second, 20*time.Millisecond,
		"the executor of %s's %s never left its %q marker", task, phase, what)
}

// startJanitorProcess runs a janitor like startJanitor, and returns what
// stops it: the end of a `scaler janitor` process (a restart, a crash, a
// leader change). A janitor started after it remembers nothing.
func (c *cluster) startJanitorProcess() (stop func()) {
	c.t.Helper()
	cfg := c.janitorConfig()
	ctrl, err := janitor.New(kubernetes.NewForConfigOrDie(cfg), dynamic.NewForConfigOrDie(cfg), c.store, janitor.Options{
		SyncInterval: 200 * time.Millisecond,
		Inject:       janitor.Injection{KeyPrefix: c.prefix, RedisURL: c.redis},
		Logger:       quiet(),
	})
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	go c.store.RunReaper(ctx, 100*time.Millisecond, slots.ReapOptions{})
	go func() { done <- ctrl.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(c.t, err)
		case <-time.After(30 * time.Second):
			c.t.Error("janitor did not stop within 30s")
		}
	}
	c.t.Cleanup(stop)
	return stop
}

// loseData deletes every key of the test's slot store: Redis lost its data
// (a restart without persistence; the Redis is shared, so no FLUSHALL).
func (c *cluster) loseData() {
	c.t.Helper()
	keys, err := c.rdb.Keys(c.ctx, c.prefix+":*").Result()
	require.NoError(c.t, err)
	require.NotEmpty(c.t, keys)
	require.NoError(c.t, c.rdb.Del(c.ctx, keys...).Err())
}

func (c *cluster) record(ns, pool, pod string) (slots.PodSnapshot, bool) {
	snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: ns, Name: pool})
	if err != nil {
		return slots.PodSnapshot{}, false
	}
	for _, r := range snap.Pods {
		if r.Name == pod {
			return r, true
		}
	}
	return slots.PodSnapshot{}, false
}

// sigterm sends SIGTERM to the agent the kubelet runs for a pod, without
// touching the pod: what a node-pressure eviction or a graceful node
// shutdown does before the API shows anything.
func (c *cluster) sigterm(uid types.UID) {
	c.t.Helper()
	c.kubelet.mu.Lock()
	a, ok := c.kubelet.agents[uid]
	c.kubelet.mu.Unlock()
	require.True(c.t, ok && a.cmd != nil && a.cmd.Process != nil, "no agent runs for pod %s", uid)
	require.NoError(c.t, syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM))
}

// A janitor that starts after Redis lost its data (restarted, or crash
// looping while Redis was down) must hold removals like one that ran
// through the loss. Before the fix the new janitor declared the pool, wrote
// expected records for pods whose agents still ran work, took them for
// never-registered pods and deleted the surplus at once, busy ones
// included; their executors died with them and never left ".done".
func TestJanitorStartedAfterRedisLostItsDataDeletesNoBusyPod(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 3, withMarkers)
	stop := c.startJanitorProcess()
	c.waitActive("ns", "p", 3)

	// Four gated plans fill the plan slots of two pods; the third is idle.
	tasks := []string{"t1", "t2", "t3", "t4"}
	busy := map[string]bool{}
	for _, id := range tasks {
		c.submit("ns", "p", id, slots.Plan, "gate")
		busy[c.waitTask("ns", "p", id, started(slots.PhasePlan), "started").Pod] = true
		c.waitMarker(id, "plan", "started")
	}
	require.Len(t, busy, 2)

	// The janitor stops; Redis loses its data; the HPA lowers replicas; a
	// new janitor starts.
	stop()
	c.loseData()
	c.scaleTo("ns", "p", 1)
	c.startJanitor()

	// The busy agents register again with the phases they run.
	for pod := range busy {
		require.Eventually(t, func() bool {
			r, ok := c.record("ns", "p", pod)
			return ok && r.State != slots.PodExpected && r.Busy()
		}, 60*time.Second, 20*time.Millisecond, "the agent of busy pod %s never registered again", pod)
	}
	// Once the hold is over the idle pod goes; the busy ones stay.
	require.Eventually(t, func() bool { return len(c.livePods("ns", "p")) == 2 }, 60*time.Second, 20*time.Millisecond)
	for _, p := range c.livePods("ns", "p") {
		require.True(t, busy[p.Name], "pod %s is left, so a busy pod was deleted", p.Name)
	}
	// Every executor is still alive: each finishes once its gate opens.
	for _, id := range tasks {
		require.False(t, c.marker(id, "plan", "done"))
		c.kubelet.open(id, "plan")
		c.waitMarker(id, "plan", "done")
	}
	require.NotEmpty(t, c.events("ns", "RedisDataLoss"))
	c.audit.check(t)
}

// ownAgent is an agent process the test runs for a pod in place of the
// kubelet, so the test decides when it gets SIGTERM and sees how it exits.
type ownAgent struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

func (c *cluster) startOwnAgent(pod *corev1.Pod, extraEnv ...string) *ownAgent {
	c.t.Helper()
	env, err := c.kubelet.env(c.ctx, pod)
	require.NoError(c.t, err)
	logf, err := os.Create(filepath.Join(c.kubelet.logDir, pod.Name+".own.log"))
	require.NoError(c.t, err)
	cmd := exec.Command(agentBin)
	cmd.Env = append(append(env, "PATH="+os.Getenv("PATH"), "LISTEN_ADDRESS=127.0.0.1:0", "LOG_LEVEL=info"), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(c.t, cmd.Start())
	a := &ownAgent{cmd: cmd, done: make(chan struct{})}
	go func() {
		a.err = cmd.Wait()
		logf.Close()
		close(a.done)
	}()
	c.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	})
	now := metav1.Now()
	require.NoError(c.t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		st, err := c.kube.CoreV1().Pods(pod.Namespace).Get(c.ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "agent", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}}
		_, err = c.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(c.ctx, st, metav1.UpdateOptions{})
		return err
	}))
	return a
}

func (a *ownAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// A pod being deleted whose agent still finishes a phase in its grace
// period, when Redis loses its data: the janitor writes the terminating
// pod a record (cordoned by its agent), so the agent registers again and
// finishes. Before the fix no record was written: the agent's registration
// was refused until --register-timeout, and it exited killing the phase.
func TestTerminatingPodsAgentFinishesItsPhaseAfterRedisLostItsData(t *testing.T) {
	c := newCluster(t)
	c.kubelet.pause("ns/p", true) // this pod's agent is the test's own
	c.newPool("ns", "p", 1, withMarkers)
	c.startJanitor()
	var pod corev1.Pod
	require.Eventually(t, func() bool {
		live := c.livePods("ns", "p")
		if len(live) != 1 {
			return false
		}
		pod = live[0]
		_, ok := c.record("ns", "p", pod.Name)
		return ok
	}, 30*time.Second, 20*time.Millisecond)
	// A finalizer keeps the object terminating after the test kubelet
	// confirms the deletion: the grace period, as long as the test needs.
	const finalizer = "test.slotscaler.io/grace"
	_, err := c.kube.CoreV1().Pods("ns").Patch(c.ctx, pod.Name, types.MergePatchType,
		[]byte(`{"metadata":{"finalizers":["`+finalizer+`"]}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	defer func() {
		_, err := c.kube.CoreV1().Pods("ns").Patch(c.ctx, pod.Name, types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		if !apierrors.IsNotFound(err) {
			require.NoError(t, err)
		}
	}()
	const registerTimeout = 3 * time.Second
	agent := c.startOwnAgent(&pod, "REGISTER_TIMEOUT="+registerTimeout.String())
	c.waitActive("ns", "p", 1)
	c.submit("ns", "p", "work", slots.Plan, "gate")
	require.Equal(t, pod.Name, c.waitTask("ns", "p", "work", started(slots.PhasePlan), "started").Pod)
	c.waitMarker("work", "plan", "started")

	// The pod is deleted; its agent gets SIGTERM and cordons itself.
	require.NoError(t, c.kube.CoreV1().Pods("ns").Delete(c.ctx, pod.Name, metav1.DeleteOptions{}))
	require.NoError(t, agent.cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool {
		r, ok := c.record("ns", "p", pod.Name)
		return ok && r.CordonedBy == slots.CordonedByAgent
	}, 30*time.Second, 20*time.Millisecond)

	// Redis loses its data while the phase runs.
	c.loseData()
	require.Eventually(t, func() bool {
		if agent.exited() {
			return true
		}
		r, ok := c.record("ns", "p", pod.Name)
		return ok && r.UID == string(pod.UID) && r.State == slots.PodCordoned && r.Busy()
	}, 60*time.Second, 20*time.Millisecond)
	require.False(t, agent.exited(), "the stopping agent gave up registering and exited (%v)", agent.err)
	r, _ := c.record("ns", "p", pod.Name)
	require.Equal(t, slots.CordonedByAgent, r.CordonedBy, "no new work reaches a stopping pod")

	// Longer than the agent's register timeout: it would have given up.
	time.Sleep(registerTimeout + time.Second)
	require.False(t, agent.exited(), "the agent exited (%v)", agent.err)
	c.kubelet.open("work", "plan")
	c.waitMarker("work", "plan", "done")
	select {
	case <-agent.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the stopping agent did not exit once its phase finished")
	}
	require.NoError(t, agent.err, "the agent stops gracefully")
	c.audit.check(t)
}

// An agent that got SIGTERM while its pod was not deleted (node-pressure
// eviction, graceful node shutdown, informer lag) cordons the pod itself and
// finishes its work. The janitor must not take it back when replicas rise:
// work given to it would die at the end of its grace period. Before the fix
// the janitor counted it as a replica to uncordon (which the store refuses)
// and created one pod fewer.
func TestPodItsAgentCordonedIsReplacedNotUncordoned(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1, withMarkers)
	c.startJanitor()
	c.waitActive("ns", "p", 1)
	c.submit("ns", "p", "work", slots.Plan, "gate")
	leaving := c.waitTask("ns", "p", "work", started(slots.PhasePlan), "started").Pod
	c.waitMarker("work", "plan", "started")
	var uid types.UID
	for _, p := range c.livePods("ns", "p") {
		uid = p.UID
	}

	c.sigterm(uid)
	require.Eventually(t, func() bool {
		r, ok := c.record("ns", "p", leaving)
		return ok && r.State == slots.PodCordoned && r.CordonedBy == slots.CordonedByAgent
	}, 30*time.Second, 20*time.Millisecond)
	c.scaleTo("ns", "p", 2)

	// Two new pods come up beside the leaving one, which stays cordoned.
	require.Eventually(t, func() bool {
		others := 0
		for _, p := range c.livePods("ns", "p") {
			if r, ok := c.record("ns", "p", p.Name); p.Name != leaving && ok && r.State == slots.PodActive {
				others++
			}
		}
		return others == 2
	}, 60*time.Second, 20*time.Millisecond, "the janitor did not replace the pod its agent cordoned")
	r, ok := c.record("ns", "p", leaving)
	require.True(t, ok)
	require.Equal(t, slots.PodCordoned, r.State)
	c.submit("ns", "p", "next", slots.Plan, "0")
	require.NotEqual(t, leaving, c.waitTask("ns", "p", "next", inState(slots.StateSucceeded), "succeeded").Pod,
		"no new work reaches the leaving pod")

	// Its own phase finishes; its agent exits; the pod ends and goes.
	c.kubelet.open("work", "plan")
	c.waitMarker("work", "plan", "done")
	require.Eventually(t, func() bool {
		_, err := c.kube.CoreV1().Pods("ns").Get(c.ctx, leaving, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 60*time.Second, 20*time.Millisecond)
	c.waitActive("ns", "p", 2)
	c.audit.check(t)
}
