package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/slotscaler/slotscaler/pkg/janitor"
)

// kubelet plays the kubelet for the test's pods: it starts a real agent
// process for each new pod and reports the pod Running and Ready; the moment
// a pod gets a deletionTimestamp it SIGKILLs the agent (so a wrong deletion
// cannot hide behind a graceful shutdown) and confirms the deletion; an agent
// that exits by itself makes its pod Failed, as restartPolicy Never does.
type kubelet struct {
	c       *cluster
	gateDir string
	logDir  string

	mu     sync.Mutex
	agents map[types.UID]*agentProc
	paused map[string]bool // pool key -> don't start agents
	killed int             // agents killed because their pod was being deleted
	stops  sync.WaitGroup  // stop goroutines, which log to the test
	// onDeleting, when set, is called when a pod gets its deletionTimestamp,
	// before its agent is killed (the fault run records what was alive).
	onDeleting func(*corev1.Pod)
}

func (k *kubelet) setOnDeleting(fn func(*corev1.Pod)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.onDeleting = fn
}

// agentProc is a pod's agent process. An entry exists from the moment the
// kubelet decides to start it, so a pod's agent is started at most once;
// the process may still be starting, may have failed to start, or may have
// ended: signal is the only way to reach it.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process is reaped, or never started

	// mu is held while signalling and while starting, and taken to mark the
	// process ended before it is reaped. Until it is reaped the agent's pid,
	// which is also its process group's id, cannot be given to another
	// process, so a signal sent under mu never reaches a stranger's group
	// (a later agent's, say) however long the harness runs.
	mu      sync.Mutex
	running bool // started and not yet ended

	killed bool // by the kubelet: the pod was deleted (guarded by kubelet.mu)
}

// signal sends sig to the agent's process group. False when the agent is
// not running: it never started (it failed to, or its pod was deleted
// first) or it has ended. An agent being started is signalled once it is.
func (a *agentProc) signal(sig syscall.Signal) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running && syscall.Kill(-a.cmd.Process.Pid, sig) == nil
}

// reap waits for the started agent to exit, marks it ended, then reaps it
// and returns cmd.Wait's error.
func (a *agentProc) reap() error {
	var info unix.Siginfo
	for {
		// WNOWAIT: wait for the exit but leave the zombie, which keeps the
		// pid taken until signal can no longer use it.
		err := unix.Waitid(unix.P_PID, a.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break // an error other than EINTR: cmd.Wait below reports it
		}
	}
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	return a.cmd.Wait()
}

func startKubelet(t testing.TB, c *cluster) *kubelet {
	k := &kubelet{c: c, gateDir: t.TempDir(), logDir: t.TempDir(), agents: map[types.UID]*agentProc{}, paused: map[string]bool{}}
	f := informers.NewSharedInformerFactoryWithOptions(c.kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = janitor.LabelPool }))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.handle(obj) },
		UpdateFunc: func(_, obj any) { k.handle(obj) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		f.Shutdown()
		k.mu.Lock()
		procs := make([]*agentProc, 0, len(k.agents))
		for _, a := range k.agents {
			a.killed = true // the test is over: nobody reports these pods ended
			procs = append(procs, a)
		}
		k.mu.Unlock()
		for _, a := range procs {
			a.signal(syscall.SIGKILL)
			<-a.done
		}
		k.stops.Wait()
		if t.Failed() {
			t.Logf("agent logs: %s", k.logDir)
		}
	})
	return k
}

// pause stops the kubelet starting agents for a pool's new pods.
func (k *kubelet) pause(pool string, on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.paused[pool] = on
}

// open lets a gated task phase finish.
func (k *kubelet) open(task, phase string) {
	f, err := os.Create(filepath.Join(k.gateDir, task+"."+phase))
	if err == nil {
		f.Close()
	}
}

func (k *kubelet) handle(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.DeletionTimestamp != nil {
		k.stops.Go(func() { k.stop(pod) })
		return
	}
	if pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending {
		return
	}
	k.mu.Lock()
	_, running := k.agents[pod.UID]
	paused := k.paused[pod.Namespace+"/"+pod.Labels[janitor.LabelPool]]
	k.mu.Unlock()
	if running || paused {
		return
	}
	if err := k.start(pod); err != nil {
		k.c.t.Logf("kubelet: starting agent for %s: %v", pod.Name, err)
	}
}

func (k *kubelet) start(pod *corev1.Pod) error {
	ctx := context.Background()
	env, err := k.env(ctx, pod)
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(k.logDir, pod.Name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(agentBin)
	cmd.Env = append(env, "PATH="+os.Getenv("PATH"), "LISTEN_ADDRESS=127.0.0.1:0", "LOG_LEVEL=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	// Held until the process has started (or failed to): a crash, freeze or
	// deletion of the pod meanwhile waits for it instead of finding no
	// process to signal.
	a.mu.Lock()
	k.mu.Lock()
	if _, dup := k.agents[pod.UID]; dup {
		k.mu.Unlock()
		a.mu.Unlock()
		logf.Close()
		return nil
	}
	k.agents[pod.UID] = a
	k.mu.Unlock()
	err = cmd.Start()
	a.running = err == nil
	a.mu.Unlock()
	if err != nil {
		logf.Close()
		close(a.done)
		k.mu.Lock()
		killed := a.killed
		k.mu.Unlock()
		if !killed {
			// As a kubelet whose container cannot start: the pod fails
			// (restartPolicy Never), and the janitor replaces it.
			k.exited(pod, err)
		}
		return fmt.Errorf("starting the agent: %w", err)
	}
	go func() {
		err := a.reap()
		logf.Close()
		close(a.done)
		k.mu.Lock()
		killed := a.killed
		k.mu.Unlock()
		if !killed {
			k.exited(pod, err)
		}
	}()
	now := metav1.Now()
	st := pod.DeepCopy()
	st.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "agent", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	_, err = k.c.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, st, metav1.UpdateOptions{})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("reporting pod %s running: %w", pod.Name, err)
	}
	return nil
}

// env resolves the agent container's environment as the kubelet would.
func (k *kubelet) env(ctx context.Context, pod *corev1.Pod) ([]string, error) {
	var env []string
	for _, e := range pod.Spec.Containers[0].Env {
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
				default:
					return nil, fmt.Errorf("fieldRef %s not supported by the test kubelet", s.FieldRef.FieldPath)
				}
			case s.SecretKeyRef != nil:
				sec, err := k.c.kube.CoreV1().Secrets(pod.Namespace).Get(ctx, s.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("secret %s: %w", s.SecretKeyRef.Name, err)
				}
				v = string(sec.Data[s.SecretKeyRef.Key])
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// stop SIGKILLs the pod's agent and confirms the deletion.
func (k *kubelet) stop(pod *corev1.Pod) {
	k.mu.Lock()
	onDeleting := k.onDeleting
	k.mu.Unlock()
	if onDeleting != nil {
		onDeleting(pod)
	}
	k.mu.Lock()
	a, ok := k.agents[pod.UID]
	switch {
	case !ok:
		// Deleted before its agent was started: leave an ended entry so a
		// late start (an older event of the pod) does not start one.
		done := make(chan struct{})
		close(done)
		k.agents[pod.UID] = &agentProc{done: done, killed: true}
	case !a.killed:
		a.killed = true
		k.killed++
	}
	k.mu.Unlock()
	if ok {
		a.signal(syscall.SIGKILL)
		<-a.done
	}
	uid := pod.UID
	zero := int64(0)
	err := k.c.kube.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.c.t.Logf("kubelet: confirming deletion of %s: %v", pod.Name, err)
	}
}

// exited reports a pod whose agent ended by itself as Failed.
func (k *kubelet) exited(pod *corev1.Pod, waitErr error) {
	code := int32(0)
	var ee *exec.ExitError
	switch {
	case errors.As(waitErr, &ee):
		code = int32(ee.ExitCode())
	case waitErr != nil:
		code = 128 // never ran, as a container runtime reports a start error
	}
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	ctx := context.Background()
	// An error left after the retries is the API server going away at the
	// end of a test: nothing to report to.
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.c.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pod.UID || cur.DeletionTimestamp != nil {
			return nil // gone or going: nothing to report
		}
		st := cur.DeepCopy()
		st.Status.Phase = phase
		st.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.Now()}}
		st.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "agent",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error"}}}}
		_, err = k.c.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, st, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// crash SIGKILLs a pod's agent without touching the pod (a crash): the pod
// turns Failed. False when the pod has no running agent.
func (k *kubelet) crash(uid types.UID) bool {
	k.mu.Lock()
	a, ok := k.agents[uid]
	k.mu.Unlock()
	if !ok || !a.signal(syscall.SIGKILL) {
		return false
	}
	<-a.done
	return true
}

// freeze SIGSTOPs a pod's agent: a hung agent whose heartbeat expires while
// the pod looks healthy. Its executors, in process groups of their own, run
// on, and their results are never reported. False when the pod has no
// running agent.
func (k *kubelet) freeze(uid types.UID) bool {
	k.mu.Lock()
	a, ok := k.agents[uid]
	k.mu.Unlock()
	return ok && a.signal(syscall.SIGSTOP)
}
