package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// kubelet mirrors the fake API's agent pods to agent processes, as a node's
// kubelet would: a new pod starts bin/agent with the container's environment
// resolved (values and downward-API fields) and is reported Running and
// Ready; a pod that gets a deletionTimestamp has its agent stopped (SIGTERM,
// SIGKILL after the pod's grace, capped) and the deletion confirmed; an
// agent that exits by itself makes its pod Failed (restartPolicy Never), for
// the janitor to replace. It decides nothing: the janitor is the only
// reconcile loop.
//
// It is also the demo's guard: when a pod's deletion reaches it while the
// agent still runs, it reads the pool's slot-store snapshot at that moment;
// a record with a running, assigned or reserved slot that is not lost means
// a busy pod was removed, which slotscaler promises never happens.
type kubelet struct {
	kube      kubernetes.Interface
	store     *slots.Store
	agentBin  string
	con       *console
	log       *slog.Logger
	stopGrace time.Duration

	mu      sync.Mutex
	agents  map[types.UID]*agentProc
	closing bool
	wg      sync.WaitGroup

	started     atomic.Int64
	checked     atomic.Int64 // deletions of running agents the guard looked at
	busyRemoved atomic.Int64
	uncheckable atomic.Int64 // deletions the guard could not check (store unreadable)
	crashed     atomic.Int64 // agents that exited by themselves
}

type agentProc struct {
	pod         *corev1.Pod
	proc        *child
	terminating bool // the kubelet is stopping it (pod deleted, or the demo stops)
}

func newKubelet(kube kubernetes.Interface, store *slots.Store, agentBin string, con *console, log *slog.Logger, stopGrace time.Duration) *kubelet {
	return &kubelet{kube: kube, store: store, agentBin: agentBin, con: con, log: log.With("component", "kubelet"),
		stopGrace: stopGrace, agents: map[types.UID]*agentProc{}}
}

// run watches pods until ctx ends. Agents keep running: stopAll stops them.
func (k *kubelet) run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(k.kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = janitor.LabelPool }))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.handle(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.handle(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				k.terminate(ctx, pod, false) // gone without a graceful deletion
			}
		},
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}

func (k *kubelet) handle(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.DeletionTimestamp != nil {
		k.terminate(ctx, pod, true)
		return
	}
	if pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending {
		return
	}
	if err := k.start(ctx, pod); err != nil {
		k.log.Error("starting agent", "pod", klogRef(pod), "err", err)
	}
}

func klogRef(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

func (k *kubelet) start(ctx context.Context, pod *corev1.Pod) error {
	k.mu.Lock()
	if _, ok := k.agents[pod.UID]; ok || k.closing {
		k.mu.Unlock()
		return nil
	}
	env, err := containerEnv(pod)
	if err != nil {
		k.mu.Unlock()
		return err
	}
	// What a container runtime adds: the image's PATH; the agent's health
	// port is free on the pod's own network, here any loopback port.
	env = append(append(baseEnv(), env...), "LISTEN_ADDRESS=127.0.0.1:0")
	proc, err := startChild(k.con, "agent "+pod.Name, k.agentBin, env)
	if err != nil {
		k.mu.Unlock()
		return err
	}
	a := &agentProc{pod: pod, proc: proc}
	k.agents[pod.UID] = a
	k.started.Add(1)
	k.mu.Unlock()

	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		<-proc.done
		k.mu.Lock()
		expected := a.terminating || k.closing
		k.mu.Unlock()
		if !expected {
			k.crashed.Add(1)
			k.log.Warn("agent exited by itself: pod ends (the janitor replaces it)", "pod", klogRef(pod), "exitCode", proc.exitCode())
			k.ended(context.WithoutCancel(ctx), pod, proc.exitCode())
		}
	}()

	now := metav1.Now()
	return k.updateStatus(ctx, pod, func(st *corev1.PodStatus) {
		*st = corev1.PodStatus{
			Phase:     corev1.PodRunning,
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: janitor.AgentContainer, Ready: true, Started: new(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
		}
	})
}

// updateStatus changes a pod's status from its latest version (conflicts
// with the janitor's annotation patches are retried); a pod that is gone or
// replaced is left alone.
func (k *kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.PodStatus)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return nil
		}
		mutate(&cur.Status)
		_, err = k.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating status of pod %s: %w", klogRef(pod), err)
	}
	return nil
}

// ended reports a pod whose agent exited: Failed (Succeeded for exit 0),
// as restartPolicy Never makes it.
func (k *kubelet) ended(ctx context.Context, pod *corev1.Pod, code int) {
	phase, reason := corev1.PodSucceeded, "Completed"
	if code != 0 {
		phase, reason = corev1.PodFailed, "Error"
	}
	now := metav1.Now()
	err := k.updateStatus(ctx, pod, func(st *corev1.PodStatus) {
		st.Phase = phase
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now}}
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: janitor.AgentContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason, FinishedAt: now}}}}
	})
	if err != nil && ctx.Err() == nil {
		k.log.Error("reporting ended pod", "pod", klogRef(pod), "err", err)
	}
}

// terminate stops a deleted pod's agent (once) after the guard looked at
// it; graceful deletions are then confirmed (deleted with grace 0).
func (k *kubelet) terminate(ctx context.Context, pod *corev1.Pod, graceful bool) {
	k.mu.Lock()
	a, ok := k.agents[pod.UID]
	if ok && a.terminating {
		k.mu.Unlock()
		return
	}
	if ok {
		a.terminating = true
	}
	k.mu.Unlock()
	if !ok && !graceful {
		return
	}
	if ok && !a.proc.exited() {
		k.guard(ctx, pod)
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		if ok {
			grace := k.stopGrace
			if g := pod.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
				grace = time.Duration(*g) * time.Second
			}
			if a.proc.stop(context.WithoutCancel(ctx), grace) {
				k.log.Warn("agent did not stop within its grace: killed", "pod", klogRef(pod), "grace", grace)
			}
			k.mu.Lock()
			delete(k.agents, pod.UID)
			k.mu.Unlock()
		}
		if !graceful || ctx.Err() != nil {
			return
		}
		zero := int64(0)
		uid := pod.UID
		err := k.kube.CoreV1().Pods(pod.Namespace).Delete(context.WithoutCancel(ctx), pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			k.log.Error("confirming pod deletion", "pod", klogRef(pod), "err", err)
		}
	}()
}

// guard checks, at the moment a running agent's pod is deleted, that the
// store holds no work on that pod.
func (k *kubelet) guard(ctx context.Context, pod *corev1.Pod) {
	id := slots.PoolID{Namespace: pod.Namespace, Name: pod.Labels[janitor.LabelPool]}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	snap, err := k.store.Snapshot(rctx, id)
	if err != nil {
		k.uncheckable.Add(1)
		k.log.Warn("guard: cannot read the pool to check a pod deletion", "pod", klogRef(pod), "err", err)
		return
	}
	k.checked.Add(1)
	i := slices.IndexFunc(snap.Pods, func(p slots.PodSnapshot) bool { return p.Name == pod.Name && p.UID == string(pod.UID) })
	if i < 0 {
		return
	}
	rec := snap.Pods[i]
	if !rec.Busy() || rec.State == slots.PodLost {
		return
	}
	k.busyRemoved.Add(1)
	var work []string
	for _, s := range rec.Slots {
		if s.State != slots.SlotIdle {
			work = append(work, fmt.Sprintf("slot %d %s %s", s.Index, s.State, s.Task))
		}
	}
	k.con.Printf("!!!!! BUSY POD REMOVED: %s (record %s; %s) — slotscaler must never do this", klogRef(pod), rec.State, strings.Join(work, ", "))
	k.log.Error("BUSY POD REMOVED", "pod", klogRef(pod), "uid", pod.UID, "state", rec.State, "work", work)
}

// stopAll stops every agent (the demo is stopping): SIGTERM, so they finish
// running phases, SIGKILL after the grace. Pods are left as they are.
func (k *kubelet) stopAll(ctx context.Context) {
	k.mu.Lock()
	k.closing = true
	procs := make([]*child, 0, len(k.agents))
	for _, a := range k.agents {
		a.terminating = true
		procs = append(procs, a.proc)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(ctx, k.stopGrace) })
	}
	wg.Wait()
	k.wg.Wait()
}

// containerEnv resolves the agent container's environment as the kubelet
// does: values, and the downward-API fields the janitor uses.
func containerEnv(pod *corev1.Pod) ([]string, error) {
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == janitor.AgentContainer })
	if i < 0 {
		i = 0
	}
	var env []string
	for _, e := range pod.Spec.Containers[i].Env {
		v := e.Value
		if s := e.ValueFrom; s != nil {
			if s.FieldRef == nil {
				return nil, fmt.Errorf("env %s: only fieldRef sources are supported by the demo kubelet", e.Name)
			}
			switch s.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "metadata.uid":
				v = string(pod.UID)
			default:
				return nil, fmt.Errorf("env %s: fieldRef %s is not supported by the demo kubelet", e.Name, s.FieldRef.FieldPath)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// running counts agent processes that have not exited.
func (k *kubelet) running() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, a := range k.agents {
		if !a.proc.exited() {
			n++
		}
	}
	return n
}

// killAll SIGKILLs every agent now (a second Ctrl-C).
func (k *kubelet) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closing = true
	for _, a := range k.agents {
		a.terminating = true
		a.proc.signal(syscall.SIGKILL)
	}
}
