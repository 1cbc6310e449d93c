package kube

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// TestChurn runs random task load, random replica changes and random agent
// kills against the janitor and checks the guarantees over the whole run:
// every pod the janitor deleted was drained (or lost, or ended) at that
// moment; no task was lost to a janitor deletion; live pods never exceed the
// replicas asked for (within the janitor's reaction time) plus busy pods;
// live pods converge to spec.replicas; every task ends with a reason.
func TestChurn(t *testing.T) {
	duration := 40 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SLOTSCALER_CHURN")); err == nil {
		duration = d
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %v", seed, duration)
	rng := rand.New(rand.NewPCG(seed, 7))

	c := newCluster(t)
	const ns, name = "churn", "pool"
	c.newPool(ns, name, 3, func(ap *v1alpha1.AgentPool) {
		idle := metav1.Duration{Duration: 100 * time.Millisecond}
		ap.Spec.IdleFor = &idle
		many := int32(6000)
		ap.Spec.MaxDeletionsPerMinute = &many
	})
	c.startJanitor()
	c.waitActive(ns, name, 3)
	id := slots.PoolID{Namespace: ns, Name: name}

	// Replicas asked for over time, for the watcher's bound.
	var mu sync.Mutex
	type setting struct {
		at time.Time
		n  int
	}
	asked := []setting{{time.Now(), 3}}
	maxAskedSince := func(since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		m := 0
		for i, s := range asked {
			next := time.Now()
			if i+1 < len(asked) {
				next = asked[i+1].at
			}
			if next.After(since) && s.n > m {
				m = s.n
			}
		}
		return m
	}
	// The janitor's reaction time: idleFor, a few passes, the API round trips.
	// Generous for shared CI machines; replica changes come every ~0.5 s,
	// so the bound still catches a janitor that keeps surplus idle pods or
	// overshoots a scale-up.
	const lag = 3 * time.Second

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var violations []string
	var vmu sync.Mutex
	samples := 0
	wg.Go(func() { // watcher
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			at := time.Now()
			list, err := c.kube.CoreV1().Pods(ns).List(c.ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			snap, err := c.store.Snapshot(c.ctx, id)
			if err != nil {
				continue
			}
			busy := 0
			for _, p := range snap.Pods {
				if p.Busy() && p.State != slots.PodLost {
					busy++
				}
			}
			live := 0
			for _, p := range list.Items {
				if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
					live++
				}
			}
			bound := maxAskedSince(at.Add(-lag)) + busy
			samples++
			if live > bound {
				vmu.Lock()
				violations = append(violations, fmt.Sprintf("%s: %d live pods > %d (replicas asked within %v) + %d busy",
					at.Format("15:04:05.000"), live, bound-busy, lag, busy))
				vmu.Unlock()
			}
		}
	})
	wg.Go(func() { // the platform: approves or rejects reserved tasks
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			snap, err := c.store.Snapshot(c.ctx, id)
			if err != nil {
				continue
			}
			for _, p := range snap.Pods {
				for _, s := range p.Slots {
					if s.State == slots.SlotReserved {
						if rand.IntN(4) == 0 {
							_ = c.store.Reject(c.ctx, id, s.Task, "churn")
						} else {
							_, _ = c.store.Approve(c.ctx, id, s.Task, "churn")
						}
					}
				}
			}
		}
	})

	killed := map[string]bool{} // pods the test killed or deleted
	var tasks []string
	ops := map[string]int{}
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		switch r := rng.IntN(100); {
		case r < 86:
			tid := fmt.Sprintf("t%05d", len(tasks))
			tt := slots.Plan
			if rng.IntN(4) == 0 {
				tt = slots.PlanAndApply
			}
			payload := fmt.Sprintf("%.2f", 0.05+rng.Float64()*0.4)
			_, err := c.store.Submit(c.ctx, id, slots.TaskSpec{ID: tid, Type: tt, Payload: []byte(payload)})
			require.NoError(t, err)
			tasks = append(tasks, tid)
			ops["submit"]++
		case r < 90:
			n := rng.IntN(9)
			c.scaleTo(ns, name, int32(n))
			mu.Lock()
			asked = append(asked, setting{time.Now(), n})
			mu.Unlock()
			ops["scale"]++
		default:
			live := c.livePods(ns, name)
			if len(live) == 0 {
				continue
			}
			p := live[rng.IntN(len(live))]
			switch rng.IntN(3) {
			case 0: // the agent crashes: the pod ends (Failed)
				if c.kubelet.crash(p.UID) {
					killed[p.Name] = true
					ops["crash"]++
				}
			case 1: // someone deletes the pod
				killed[p.Name] = true
				_ = c.kube.CoreV1().Pods(ns).Delete(c.ctx, p.Name, metav1.DeleteOptions{})
				ops["delete"]++
			case 2: // the agent hangs: its heartbeat expires
				if c.kubelet.freeze(p.UID) {
					killed[p.Name] = true
					ops["freeze"]++
				}
			}
		}
		time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
	}
	t.Logf("operations: %v", ops)

	// Let the work finish on enough pods, then converge.
	c.scaleTo(ns, name, 6)
	mu.Lock()
	asked = append(asked, setting{time.Now(), 6})
	mu.Unlock()
	var stuck []slots.Task
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		stuck = stuck[:0]
		for _, tid := range tasks {
			if tk := c.task(ns, name, tid); !tk.State.Terminal() {
				stuck = append(stuck, tk)
			}
		}
		if len(stuck) == 0 {
			break
		}
	}
	if len(stuck) > 0 {
		snap, _ := c.store.Snapshot(c.ctx, id)
		for _, p := range snap.Pods {
			t.Logf("pod %s %s slots %+v", p.Name, p.State, p.Slots)
		}
		for _, p := range c.livePods(ns, name) {
			t.Logf("live pod %s phase %s", p.Name, p.Status.Phase)
		}
		for _, tk := range stuck[:min(len(stuck), 5)] {
			t.Logf("stuck task %s %s phase %s pod %s history %+v", tk.ID, tk.State, tk.Phase, tk.Pod, tk.History)
		}
		t.Fatalf("%d tasks never ended", len(stuck))
	}
	c.scaleTo(ns, name, 2)
	mu.Lock()
	asked = append(asked, setting{time.Now(), 2})
	mu.Unlock()
	c.waitActive(ns, name, 2)
	close(stop)
	wg.Wait()

	c.audit.check(t)
	require.Greater(t, samples, 100)
	require.Empty(t, violations, "live pods exceeded replicas + busy pods")

	// No task was lost to a janitor deletion: every requeue and every
	// agent-lost failure comes from a pod the test killed.
	lostByKill, states := 0, map[slots.TaskState]int{}
	for _, tid := range tasks {
		tk := c.task(ns, name, tid)
		states[tk.State]++
		if tk.State == slots.StateFailed {
			require.NotEmpty(t, tk.Reason, "task %s failed without a reason", tid)
		}
		var from []string
		for _, h := range tk.History {
			if h.State == "requeued" {
				from = append(from, podOf(strings.TrimPrefix(h.Detail, "from ")))
			}
		}
		if tk.State == slots.StateFailed && (tk.Reason == slots.ReasonAgentLost || tk.Reason == slots.ReasonReservationLost) {
			from = append(from, tk.Pod)
		}
		for _, pod := range from {
			lostByKill++
			require.True(t, killed[pod], "task %s lost work on pod %s, which the test did not kill (history %+v)", tid, pod, tk.History)
			if st, ok := c.audit.stateAtDeletion(pod); ok {
				require.NotEqual(t, string(slots.PodDraining), st, "task %s lost on a pod the janitor drained", tid)
			}
		}
	}
	t.Logf("tasks: %d %v; work lost to test kills: %d; kubelet kills on deletion: %d", len(tasks), states, lostByKill, c.kubelet.killedCount())
	require.Greater(t, len(tasks)+ops["scale"], 1000, "thousands of operations")
}

func podOf(slot string) string {
	pod, _, _ := strings.Cut(slot, "#")
	return pod
}

// freeze SIGSTOPs a pod's agent and its executors: a hung agent whose
// heartbeat expires while the pod looks healthy.
func (k *kubelet) freeze(uid types.UID) bool {
	k.mu.Lock()
	a, ok := k.agents[uid]
	k.mu.Unlock()
	if !ok {
		return false
	}
	return syscall.Kill(-a.cmd.Process.Pid, syscall.SIGSTOP) == nil
}

func (k *kubelet) killedCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}
