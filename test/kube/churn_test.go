package kube

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	if v := os.Getenv("SLOTSCALER_CHURN_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SLOTSCALER_CHURN_SEED=%q: %v", v, err)
		}
	}
	// First, so a run that dies (a panic, a timeout) still says how to
	// repeat it. Timing still differs between runs: the seed fixes the
	// sequence of operations, not the interleaving.
	t.Logf("seed %d, %v: rerun with SLOTSCALER_CHURN_SEED=%d SLOTSCALER_CHURN=%v", seed, duration, seed, duration)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("churn failed with seed %d: rerun with SLOTSCALER_CHURN_SEED=%d SLOTSCALER_CHURN=%v", seed, seed, duration)
		}
	})
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
		rng := rand.New(rand.NewPCG(seed, 8)) // its own: rand.Rand is not safe for concurrent use
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
						if rng.IntN(4) == 0 {
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
	// Finished tasks are read once, when first seen finished, and only what
	// the checks need is kept: the store keeps just the newest
	// RetentionCount (10,000) finished tasks, fewer than a run of a few
	// minutes submits, so they cannot all be read at the end.
	submitted := 0
	var unfinished []string
	finished := map[string]taskOutcome{}
	collect := func() (stuck []slots.Task) {
		still := unfinished[:0]
		for _, tid := range unfinished {
			tk, err := c.store.Task(c.ctx, id, tid)
			require.NoError(t, err, "task %s, unfinished when last read, is gone (evicted before the harness saw it end?)", tid)
			if !tk.State.Terminal() {
				still = append(still, tid)
				stuck = append(stuck, tk)
				continue
			}
			finished[tid] = outcomeOf(tk)
		}
		unfinished = still
		return stuck
	}
	lastCollect := time.Now()
	ops := map[string]int{}
	deadline := time.Now().Add(duration)
	// The run lasts duration, and on a slow machine longer, until it has
	// done the thousand operations the verdict asks for (at most four times
	// as long): that floor is about coverage, not speed.
	hardStop := time.Now().Add(4 * duration)
	for now := time.Now(); now.Before(deadline) || (ops["submit"]+ops["scale"] <= 1000 && now.Before(hardStop)); now = time.Now() {
		if time.Since(lastCollect) > time.Second {
			collect()
			lastCollect = time.Now()
		}
		switch r := rng.IntN(100); {
		case r < 86:
			tid := fmt.Sprintf("t%05d", submitted)
			tt := slots.Plan
			if rng.IntN(4) == 0 {
				tt = slots.PlanAndApply
			}
			payload := fmt.Sprintf("%.2f", 0.05+rng.Float64()*0.4)
			submitted++
			_, err := c.store.Submit(c.ctx, id, slots.TaskSpec{ID: tid, Type: tt, Payload: []byte(payload)})
			if errors.Is(err, slots.ErrQueueFull) { // a long spell at few replicas: the store refuses, as documented
				ops["queue-full"]++
				break
			}
			require.NoError(t, err)
			unfinished = append(unfinished, tid)
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
		if stuck = collect(); len(stuck) == 0 {
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
	require.Len(t, finished, ops["submit"])
	lostByKill, states := 0, map[slots.TaskState]int{}
	for tid, o := range finished {
		states[o.state]++
		if o.state == slots.StateFailed {
			require.NotEmpty(t, o.reason, "task %s failed without a reason", tid)
		}
		for _, pod := range o.lostOn {
			lostByKill++
			require.True(t, killed[pod], "task %s lost work on pod %s, which the test did not kill (history %s)", tid, pod, o.history)
			if st, ok := c.audit.stateAtDeletion(pod); ok {
				require.NotEqual(t, string(slots.PodDraining), st, "task %s lost on a pod the janitor drained", tid)
			}
		}
	}
	t.Logf("tasks: %d %v; work lost to test kills: %d; kubelet kills on deletion: %d", len(finished), states, lostByKill, c.kubelet.killedCount())
	require.Greater(t, len(finished)+ops["scale"], 1000, "thousands of operations")
}

// taskOutcome is what TestChurn's checks need of a finished task.
type taskOutcome struct {
	state  slots.TaskState
	reason string
	// lostOn lists the pods the task lost work on: each requeue's pod, and
	// the pod of an agent-lost or reservation-lost failure.
	lostOn  []string
	history string // only when lostOn is not empty, for the failure message
}

func outcomeOf(tk slots.Task) taskOutcome {
	o := taskOutcome{state: tk.State, reason: tk.Reason}
	for _, h := range tk.History {
		if h.State == "requeued" {
			o.lostOn = append(o.lostOn, podOf(strings.TrimPrefix(h.Detail, "from ")))
		}
	}
	if tk.State == slots.StateFailed && (tk.Reason == slots.ReasonAgentLost || tk.Reason == slots.ReasonReservationLost) {
		o.lostOn = append(o.lostOn, tk.Pod)
	}
	if len(o.lostOn) > 0 {
		o.history = fmt.Sprintf("%+v", tk.History)
	}
	return o
}

func podOf(slot string) string {
	pod, _, _ := strings.Cut(slot, "#")
	return pod
}

func (k *kubelet) killedCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.killed
}
