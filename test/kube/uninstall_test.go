package kube

// A Helm release's whole life with work running, end to end on a real
// kube-apiserver: `helm install` of the previous chart, `helm upgrade` to
// this one with a new agent image (every pod outdated), `helm uninstall`.
// The chart's pre-delete hook is a real Job, run by the real Job
// controller; its pod is played here as a kubelet would run the chart's
// image (the scaler binary, with the container's args and env, as the
// hook's own ServiceAccount).

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"k8s.io/kubernetes/pkg/controller/job"
	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Neither an upgrade nor helm uninstall cuts a running task or loses a
// reservation: the upgrade outdates both busy pods and neither goes; the
// hook deletes the release's AgentPool while the janitor still runs, and
// helm waits while the running plan finishes and the reserved apply is
// approved and runs to the end on its pod (the executor's markers say so).
// Each pod is deleted only once idle (the API server's audit says so).
func TestHelmReleaseLifecycleKeepsRunningWork(t *testing.T) {
	const release, releaseNS, ns = "team", "uninstall", "team-a"
	c := newCluster(t)
	c.createNamespace(releaseNS)
	c.createNamespace(ns)
	c.startJobController()
	hooks := c.startHookKubelet(releaseNS)
	helmCmd := helmAgainst(t, c.admin)

	// The chart's own pool, its agents running the test's marker executor.
	// 1s against 3s: the previous chart rounds heartbeat durations up to
	// whole seconds.
	pool := map[string]any{
		"name": "p", "namespace": ns, "replicas": 2,
		"idleFor": "300ms", "heartbeatTimeout": "3s", "heartbeatInterval": "1s",
		"executor": "sh -c '" + markerScript + "'", "executorEnv": []string{"GATE_DIR"},
		"env": []map[string]string{
			{"name": "GATE_DIR", "value": c.kubelet.gateDir},
			{"name": "REGISTER_TIMEOUT", "value": "30s"},
			{"name": "KILL_GRACE", "value": "1s"},
		},
	}
	values := map[string]any{
		"keda":  map[string]any{"enabled": false},
		"redis": map[string]any{"internal": map[string]any{"enabled": false}, "external": map[string]any{"url": c.redis}},
		"pools": []any{pool},
	}
	_, err := helmCmd("install", release, previousChart(t), "--namespace", releaseNS, "--values", valuesFile(t, values))
	require.NoError(t, err)

	c.startJanitor()
	before := c.waitActive(ns, "p", 2)
	require.Eventually(t, func() bool {
		return slices.Contains(c.getPool(ns, "p").Finalizers, v1alpha1.Finalizer)
	}, 30*time.Second, 20*time.Millisecond, "the janitor adds its finalizer")
	c.submit(ns, "p", "running", slots.PlanAndApply, "gate")
	c.waitMarker("running", "plan", "started")
	c.submit(ns, "p", "waiting", slots.PlanAndApply, "gate")
	c.waitMarker("waiting", "plan", "started")
	c.kubelet.open("waiting", "plan")
	reserved := c.waitTask(ns, "p", "waiting", inState(slots.StateReserved), "reserved")

	// The upgrade: this chart (its CRD is TestChartUpgrade's), a new agent
	// image for every pod.
	pool["image"] = map[string]any{"tag": "next"}
	values["crds"] = map[string]any{"install": false}
	values["uninstall"] = map[string]any{"timeout": "3m"}
	_, err = helmCmd("upgrade", release, filepath.Join(repoRoot, "charts/slotscaler"), "--namespace", releaseNS, "--values", valuesFile(t, values))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(c.livePods(ns, "p")) > 2
	}, 60*time.Second, 50*time.Millisecond, "the janitor starts pods of the new template beside the busy ones")
	time.Sleep(2 * time.Second) // passes of the janitor
	for _, p := range before {
		require.Contains(t, podNames(c.livePods(ns, "p")), p.Name, "a busy pod outlives the upgrade")
	}

	uninstalled := make(chan error, 1)
	go func() {
		_, err := helmCmd("uninstall", release, "--namespace", releaseNS, "--timeout", "4m")
		uninstalled <- err
	}()
	require.Eventually(t, func() bool {
		return cond(c.getPool(ns, "p"), v1alpha1.ConditionDeleting) == metav1.ConditionTrue
	}, 60*time.Second, 50*time.Millisecond, "the hook deletes the pool and the janitor says so")
	time.Sleep(2 * time.Second) // passes of the janitor, polls of the hook
	for _, p := range before {
		require.Contains(t, podNames(c.livePods(ns, "p")), p.Name, "a busy pod outlives the pool's deletion")
	}
	select {
	case err := <-uninstalled:
		t.Fatalf("helm uninstall returned while the pool's work ran (err %v)", err)
	default:
	}

	id := slots.PoolID{Namespace: ns, Name: "p"}
	_, err = c.store.Approve(c.ctx, id, "waiting", "tester")
	require.NoError(t, err)
	c.waitMarker("waiting", "apply", "started")
	c.kubelet.open("waiting", "apply")
	c.waitMarker("waiting", "apply", "done")
	assert.Equal(t, reserved.Pod, c.task(ns, "p", "waiting").Pod, "the apply ran on the pod its plan reserved")
	c.kubelet.open("running", "plan")
	c.waitMarker("running", "plan", "done")
	c.waitTask(ns, "p", "running", inState(slots.StateReserved), "reserved")
	require.NoError(t, c.store.Reject(c.ctx, id, "running", "tester"))

	select {
	case err := <-uninstalled:
		require.NoError(t, err, "helm uninstall")
	case <-time.After(2 * time.Minute):
		t.Fatal("helm uninstall did not return once the pool's work had ended")
	}
	_, err = c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ns).Get(c.ctx, "p", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the AgentPool is gone when helm uninstall returns: %v", err)
	require.Empty(t, c.livePods(ns, "p"))
	require.False(t, c.marker("running", "apply", "started"), "the rejected task never applied")
	c.audit.check(t)

	runs := hooks.done()
	require.NotEmpty(t, runs, "the hook Job's pod ran")
	for _, r := range runs {
		assert.Equal(t, release+"-delete-pools", r.serviceAccount, "the hook runs as its own ServiceAccount")
		assert.Zero(t, r.exit, "the hook exits 0: %s", r.output)
	}
}

// valuesFile writes Helm values to a file for --values.
func valuesFile(t *testing.T, values map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(values)
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(f, b, 0o600))
	return f
}

// startJobController runs the real Job controller, as
// kube-controller-manager does.
func (c *cluster) startJobController() {
	c.t.Helper()
	ctx, _, _, f := c.controllerDeps()
	jc, err := job.NewController(ctx, c.kube, f.Core().V1().Pods(), f.Batch().V1().Jobs(), nil, nil)
	require.NoError(c.t, err)
	f.Start(ctx.Done())
	go jc.Run(ctx, 1)
}

// hookKubelet runs the pods of Jobs in one namespace as a kubelet would run
// the chart's image: the scaler binary with the container's args and plain
// env, authenticated as the pod's ServiceAccount (a token the TokenRequest
// API binds to the pod, as a kubelet mounts one), then reports the pod
// Succeeded or Failed.
type hookKubelet struct {
	c       *cluster
	ns      string
	mu      sync.Mutex
	started map[string]bool
	runs    []hookRun
	wg      sync.WaitGroup
}

type hookRun struct {
	pod, serviceAccount string
	exit                int
	output              string
}

func (c *cluster) startHookKubelet(ns string) *hookKubelet {
	h := &hookKubelet{c: c, ns: ns, started: map[string]bool{}}
	ctx, cancel := context.WithCancel(c.ctx)
	go func() {
		for ctx.Err() == nil {
			pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel})
			if err == nil {
				for _, p := range pods.Items {
					h.mu.Lock()
					start := !h.started[p.Name] && (p.Status.Phase == corev1.PodPending || p.Status.Phase == "")
					if start {
						h.started[p.Name] = true
						h.wg.Add(1)
					}
					h.mu.Unlock()
					if start {
						go h.run(ctx, p)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	c.t.Cleanup(func() { cancel(); h.wg.Wait() })
	return h
}

func (h *hookKubelet) run(ctx context.Context, pod corev1.Pod) {
	defer h.wg.Done()
	t := h.c.t
	r := hookRun{pod: pod.Name, serviceAccount: pod.Spec.ServiceAccountName, exit: -1}
	defer func() {
		h.mu.Lock()
		h.runs = append(h.runs, r)
		h.mu.Unlock()
	}()
	tok, err := h.c.kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		r.output = "token request: " + err.Error()
		t.Logf("hook pod %s: %s", pod.Name, r.output)
		return
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"in-cluster": {Server: h.c.admin.Host, CertificateAuthorityData: h.c.admin.CAData, TLSServerName: h.c.admin.ServerName}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"sa": {Token: tok.Status.Token}},
		Contexts:       map[string]*clientcmdapi.Context{"in-cluster": {Cluster: "in-cluster", AuthInfo: "sa"}},
		CurrentContext: "in-cluster",
	}, kubeconfig); err != nil {
		r.output = err.Error()
		return
	}
	ct := pod.Spec.Containers[0]
	cmd := exec.CommandContext(ctx, scalerBin, ct.Args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBECONFIG=" + kubeconfig}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
		}
	}
	out, err := cmd.CombinedOutput()
	r.output = string(out)
	var exit *exec.ExitError
	switch {
	case err == nil:
		r.exit = 0
	case errors.As(err, &exit):
		r.exit = exit.ExitCode()
	default:
		r.output += err.Error()
	}
	phase := corev1.PodSucceeded
	if r.exit != 0 {
		phase = corev1.PodFailed
		t.Logf("hook pod %s exited %d: %s", pod.Name, r.exit, r.output)
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := h.c.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		p.Status.Phase = phase
		p.Status.StartTime = &now
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ct.Name, Image: ct.Image, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: int32(r.exit), StartedAt: now, FinishedAt: now}}}}
		_, err = h.c.kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	}); err != nil && ctx.Err() == nil {
		t.Logf("hook pod %s: reporting %s: %v", pod.Name, phase, err)
	}
}

// done returns the hook pods' runs that ended.
func (h *hookKubelet) done() []hookRun {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.runs)
}
