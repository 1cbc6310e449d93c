// Package fakekubelet plays a node's kubelet for agent pods, for the demo
// (on client-go's fake API) and the test/kube suite (on a real API server):
// a new pod starts the real agent binary with the container's environment
// resolved and is reported Running and Ready; a pod that gets a
// deletionTimestamp has its agent stopped and the deletion confirmed; an
// agent that exits by itself makes its pod Failed (restartPolicy Never), for
// the janitor to replace. It decides nothing: the janitor is the only
// reconcile loop.
package fakekubelet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
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

	"github.com/slotscaler/slotscaler/internal/childproc"
	"github.com/slotscaler/slotscaler/pkg/janitor"
)

// StopMode is how a deleted pod's agent is stopped.
type StopMode int

const (
	// Graceful is a kubelet's way: SIGTERM, so the agent finishes its
	// running phases, then SIGKILL once the pod's deletion grace, capped by
	// Config.Grace, is over.
	Graceful StopMode = iota
	// Kill sends SIGKILL at once, so a wrong deletion cannot hide behind a
	// graceful shutdown.
	Kill
)

// Config is what a Kubelet runs and how.
type Config struct {
	Kube kubernetes.Interface
	Bin  string // the agent binary
	Log  *slog.Logger
	Stop StopMode
	// Grace caps SIGTERM → SIGKILL in Graceful mode, for a deleted pod and
	// for StopAll.
	Grace time.Duration
	// BaseEnv comes before the container's environment (what the image
	// provides: the container may override it), ExtraEnv after it (it
	// overrides the container's).
	BaseEnv, ExtraEnv []string
	// Output, when set, opens a pod's agent's stdout and stderr; it is
	// closed once the agent is reaped.
	Output func(pod *corev1.Pod) (io.WriteCloser, error)
	// OnStart, when set, is called once a pod's agent has been started, or
	// failed to start.
	OnStart func(pod *corev1.Pod, p *Proc)
	// StopGone stops the agent of a pod that leaves the API without the
	// kubelet having seen a deletionTimestamp, as a kubelet does. The API
	// server deletes a pod at once when it has no spec.nodeName or has
	// ended; left false, such a pod's agent runs on, unstopped and
	// unreported, like one on a node cut off from the API, until StopAll.
	StopGone bool
	// OnDeleting, when set, is called once per pod whose deletion reaches
	// the kubelet, before its agent is signalled: what is alive then is what
	// the deletion ends. running is whether the agent still runs.
	OnDeleting func(pod *corev1.Pod, running bool)
}

// Kubelet mirrors the agent pods (those with the janitor's pool label) to
// agent processes.
type Kubelet struct {
	cfg Config

	mu      sync.Mutex
	procs   map[types.UID]*Proc
	paused  map[string]bool // "namespace/pool": don't start agents
	closing bool
	wg      sync.WaitGroup // every goroutine that reaps, stops or reports

	Started atomic.Int64 // agent processes started
	Crashed atomic.Int64 // agents that exited by themselves
}

// New returns a Kubelet that does nothing until Run.
func New(cfg Config) *Kubelet {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Kubelet{cfg: cfg, procs: map[types.UID]*Proc{}, paused: map[string]bool{}}
}

// Run watches pods until ctx ends. Agents keep running: StopAll or KillAll
// stops them.
func (k *Kubelet) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(k.cfg.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = janitor.LabelPool }))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.handle(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.handle(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok && k.cfg.StopGone {
				k.deleting(ctx, pod, false) // gone, maybe without a graceful deletion
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

func (k *Kubelet) handle(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.DeletionTimestamp != nil {
		k.deleting(ctx, pod, true)
		return
	}
	if pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending {
		return
	}
	if err := k.start(ctx, pod); err != nil {
		k.cfg.Log.Error("starting agent", "pod", ref(pod), "err", err)
	}
}

func ref(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

// Pause stops (on) or resumes starting agents for the new pods of a pool
// ("namespace/name").
func (k *Kubelet) Pause(pool string, on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.paused[pool] = on
}

func (k *Kubelet) start(ctx context.Context, pod *corev1.Pod) error {
	k.mu.Lock()
	_, known := k.procs[pod.UID]
	skip := known || k.closing || k.paused[pod.Namespace+"/"+pod.Labels[janitor.LabelPool]]
	k.mu.Unlock()
	if skip {
		return nil
	}
	env, err := k.ContainerEnv(ctx, pod)
	if err != nil {
		return err
	}
	var out io.WriteCloser
	if k.cfg.Output != nil {
		if out, err = k.cfg.Output(pod); err != nil {
			return err
		}
	}
	// The agent container's args, as a kubelet passes them (its image's
	// command is the agent binary).
	var args []string
	if i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == janitor.AgentContainer }); i >= 0 {
		args = pod.Spec.Containers[i].Args
	} else if len(pod.Spec.Containers) > 0 {
		args = pod.Spec.Containers[0].Args
	}
	cmd := exec.Command(k.cfg.Bin, args...)
	cmd.Env = slices.Concat(k.cfg.BaseEnv, env, k.cfg.ExtraEnv)
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.SysProcAttr = sysProcAttr()
	// A grandchild holding an output pipe must not keep Wait forever.
	cmd.WaitDelay = 2 * time.Second
	p := &Proc{cmd: cmd, out: out, done: make(chan struct{})}
	// Held until the process has started (or failed to): a crash, freeze or
	// deletion of the pod meanwhile waits for it instead of finding no
	// process to signal.
	p.mu.Lock()
	k.mu.Lock()
	if _, dup := k.procs[pod.UID]; dup || k.closing {
		k.mu.Unlock()
		p.mu.Unlock()
		if out != nil {
			_ = out.Close()
		}
		return nil
	}
	k.procs[pod.UID] = p
	k.mu.Unlock()
	err = childproc.Start(cmd)
	p.running = err == nil
	p.mu.Unlock()
	if k.cfg.OnStart != nil {
		k.cfg.OnStart(pod, p)
	}
	if err != nil {
		p.err = err
		p.end()
		// As a kubelet whose container cannot start: the pod fails
		// (restartPolicy Never), and the janitor replaces it.
		k.exited(ctx, pod, p)
		return fmt.Errorf("starting the agent: %w", err)
	}
	k.Started.Add(1)
	k.wg.Go(func() {
		p.reap()
		k.exited(ctx, pod, p)
	})

	now := metav1.Now()
	return k.updateStatus(ctx, pod, func(cur *corev1.Pod) bool {
		cur.Status = corev1.PodStatus{
			Phase:     corev1.PodRunning,
			StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: janitor.AgentContainer, Ready: true, Started: new(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
		}
		return true
	})
}

// ContainerEnv resolves the agent container's environment as the kubelet
// does: values, the downward-API fields and the secret keys the janitor
// uses.
func (k *Kubelet) ContainerEnv(ctx context.Context, pod *corev1.Pod) ([]string, error) {
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == janitor.AgentContainer })
	if i < 0 {
		i = 0
	}
	var env []string
	for _, e := range pod.Spec.Containers[i].Env {
		v := e.Value
		if s := e.ValueFrom; s != nil {
			switch {
			case s.FieldRef != nil:
				switch s.FieldRef.FieldPath {
				case "metadata.name":
					v = pod.Name
				case "metadata.namespace":
					v = pod.Namespace
				case "metadata.uid":
					v = string(pod.UID)
				case fmt.Sprintf("metadata.labels['%s']", janitor.LabelPool):
					v = pod.Labels[janitor.LabelPool]
				default:
					return nil, fmt.Errorf("env %s: fieldRef %s is not supported by the fake kubelet", e.Name, s.FieldRef.FieldPath)
				}
			case s.SecretKeyRef != nil:
				sec, err := k.cfg.Kube.CoreV1().Secrets(pod.Namespace).Get(ctx, s.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: secret %s: %w", e.Name, s.SecretKeyRef.Name, err)
				}
				v = string(sec.Data[s.SecretKeyRef.Key])
			default:
				return nil, fmt.Errorf("env %s: only fieldRef and secretKeyRef sources are supported by the fake kubelet", e.Name)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// updateStatus changes a pod's status from its latest version (conflicts
// with the janitor's annotation patches are retried); a pod that is gone or
// replaced, or that mutate declines, is left alone.
func (k *Kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, mutate func(cur *corev1.Pod) bool) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.cfg.Kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID || !mutate(cur) {
			return nil
		}
		_, err = k.cfg.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating status of pod %s: %w", ref(pod), err)
	}
	return nil
}

// exited reports a pod whose agent ended (or never started) without the
// kubelet stopping it: Failed, Succeeded for exit 0, as restartPolicy Never
// makes it.
func (k *Kubelet) exited(ctx context.Context, pod *corev1.Pod, p *Proc) {
	k.mu.Lock()
	expected := p.stopping || k.closing
	k.mu.Unlock()
	if expected {
		return
	}
	code := p.ExitCode()
	if p.cmd.Process != nil {
		k.Crashed.Add(1)
		k.cfg.Log.Warn("agent exited by itself: pod ends (the janitor replaces it)", "pod", ref(pod), "exitCode", code)
	}
	phase, reason := corev1.PodSucceeded, "Completed"
	if code != 0 {
		phase, reason = corev1.PodFailed, "Error"
	}
	now := metav1.Now()
	err := k.updateStatus(context.WithoutCancel(ctx), pod, func(cur *corev1.Pod) bool {
		if cur.DeletionTimestamp != nil {
			return false // its deletion is confirmed once the agent is stopped
		}
		cur.Status.Phase = phase
		cur.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now}}
		cur.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: janitor.AgentContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason, FinishedAt: now}}}}
		return true
	})
	if err != nil && ctx.Err() == nil {
		k.cfg.Log.Error("reporting ended pod", "pod", ref(pod), "err", err)
	}
}

// deleting stops a deleted pod's agent, once, after OnDeleting. confirm is
// for a graceful deletion (the pod has a deletionTimestamp): it is then
// confirmed by deleting the pod with grace 0, on every event, since a
// finalizer may hold the pod past the first confirmation. Without confirm
// the pod is gone from the API and the kubelet forgets it.
func (k *Kubelet) deleting(ctx context.Context, pod *corev1.Pod, confirm bool) {
	k.mu.Lock()
	p, ok := k.procs[pod.UID]
	if !ok && !confirm {
		k.mu.Unlock()
		return
	}
	if !ok {
		// Deleted before its agent was started: an ended entry keeps a late
		// event of the pod from starting one.
		p = &Proc{done: make(chan struct{})}
		close(p.done)
		k.procs[pod.UID] = p
	}
	first := !p.stopping
	p.stopping = true
	if !confirm {
		delete(k.procs, pod.UID)
	}
	k.mu.Unlock()
	k.wg.Go(func() {
		if first {
			if k.cfg.OnDeleting != nil {
				k.cfg.OnDeleting(pod, p.isRunning())
			}
			if grace, killed := k.stop(context.WithoutCancel(ctx), p, pod.DeletionGracePeriodSeconds); killed {
				k.cfg.Log.Warn("agent did not stop within its grace: killed", "pod", ref(pod), "grace", grace)
			}
		}
		<-p.done
		if !confirm || ctx.Err() != nil {
			return
		}
		zero := int64(0)
		uid := pod.UID
		err := k.cfg.Kube.CoreV1().Pods(pod.Namespace).Delete(context.WithoutCancel(ctx), pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			k.cfg.Log.Error("confirming pod deletion", "pod", ref(pod), "err", err)
		}
	})
}

// stop stops an agent in the kubelet's mode and waits for its exit. In
// Graceful mode podGrace, the pod's deletion grace in seconds (nil: none),
// shortens the wait after SIGTERM; killed reports that the grace ran out.
func (k *Kubelet) stop(ctx context.Context, p *Proc, podGrace *int64) (grace time.Duration, killed bool) {
	if k.cfg.Stop == Kill {
		p.Signal(syscall.SIGKILL)
		<-p.done
		return 0, false
	}
	grace = k.cfg.Grace
	if podGrace != nil && time.Duration(*podGrace)*time.Second < grace {
		grace = time.Duration(*podGrace) * time.Second
	}
	return grace, p.stop(ctx, grace)
}

// StopAll stops every agent as a deletion would, but leaves the pods as
// they are, and waits for everything the kubelet started. Call it once Run
// has returned; no agent starts after it.
func (k *Kubelet) StopAll(ctx context.Context) {
	k.mu.Lock()
	k.closing = true
	procs := make([]*Proc, 0, len(k.procs))
	for _, p := range k.procs {
		p.stopping = true
		procs = append(procs, p)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { k.stop(ctx, p, nil) })
	}
	wg.Wait()
	k.wg.Wait()
}

// KillAll SIGKILLs every agent now, without waiting; no agent starts after
// it.
func (k *Kubelet) KillAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closing = true
	for _, p := range k.procs {
		p.stopping = true
		p.Signal(syscall.SIGKILL)
	}
}

// Running counts agent processes that have not exited.
func (k *Kubelet) Running() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, p := range k.procs {
		if !p.exited() {
			n++
		}
	}
	return n
}

// Signal sends sig to a pod's agent without touching the pod (SIGSTOP: a
// hung agent; SIGKILL: a crash, and the pod turns Failed). False when the
// pod has no running agent.
func (k *Kubelet) Signal(uid types.UID, sig syscall.Signal) bool {
	k.mu.Lock()
	p, ok := k.procs[uid]
	k.mu.Unlock()
	return ok && p.Signal(sig)
}

// Crash SIGKILLs a pod's agent, as Signal, and waits until it is reaped.
func (k *Kubelet) Crash(uid types.UID) bool {
	k.mu.Lock()
	p, ok := k.procs[uid]
	k.mu.Unlock()
	if !ok || !p.Signal(syscall.SIGKILL) {
		return false
	}
	<-p.done
	return true
}
