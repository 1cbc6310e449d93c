package kube

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/internal/fakekubelet"
)

// kubelet plays the kubelet for the test's pods with the fake kubelet in
// Kill mode: the moment a pod gets a deletionTimestamp its agent is
// SIGKILLed (so a wrong deletion cannot hide behind a graceful shutdown)
// and the deletion confirmed. The agent of a pod the API server removes at
// once (these pods have no nodeName) is left running (StopGone off). Each
// agent logs to a file of its own in logDir and gates its executors'
// phases on files in gateDir.
type kubelet struct {
	*fakekubelet.Kubelet
	c       *cluster
	gateDir string
	logDir  string

	// mu guards what the package's tests read besides the fake kubelet:
	// every agent started (never forgotten) and how many pods' deletions
	// reached an agent.
	mu     sync.Mutex
	agents map[types.UID]*agentProc
	killed int // agents killed because their pod was being deleted
	// onDeleting, when set, is called when a pod gets its deletionTimestamp,
	// before its agent is killed (the fault run records what was alive).
	onDeleting func(*corev1.Pod)
}

// agentProc is a pod's agent process.
type agentProc struct {
	*fakekubelet.Proc
	cmd *exec.Cmd
}

// signal sends sig to the agent's process group; false when it does not
// run.
func (a *agentProc) signal(sig syscall.Signal) bool { return a.Signal(sig) }

func (k *kubelet) setOnDeleting(fn func(*corev1.Pod)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.onDeleting = fn
}

func startKubelet(t testing.TB, c *cluster) *kubelet {
	k := &kubelet{c: c, gateDir: t.TempDir(), logDir: t.TempDir(), agents: map[types.UID]*agentProc{}}
	k.Kubelet = fakekubelet.New(fakekubelet.Config{
		Kube: c.kube, Bin: agentBin, Stop: fakekubelet.Kill,
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelError})).With("component", "kubelet"),
		ExtraEnv: []string{"PATH=" + os.Getenv("PATH"), "LISTEN_ADDRESS=127.0.0.1:0", "LOG_LEVEL=info"},
		Output: func(pod *corev1.Pod) (io.WriteCloser, error) {
			return os.Create(filepath.Join(k.logDir, pod.Name+".log"))
		},
		OnStart: func(pod *corev1.Pod, p *fakekubelet.Proc) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.agents[pod.UID] = &agentProc{Proc: p, cmd: p.Cmd()}
		},
		OnDeleting: func(pod *corev1.Pod, _ bool) {
			k.mu.Lock()
			if _, ok := k.agents[pod.UID]; ok {
				k.killed++
			}
			onDeleting := k.onDeleting
			k.mu.Unlock()
			if onDeleting != nil {
				onDeleting(pod)
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := k.Run(ctx); err != nil {
			t.Errorf("kubelet: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
		k.StopAll(context.Background()) // the test is over: nobody reports these pods ended
		if t.Failed() {
			t.Logf("agent logs: %s", k.logDir)
		}
	})
	return k
}

// testWriter logs each line written to it to the test.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// pause stops the kubelet starting agents for a pool's new pods.
func (k *kubelet) pause(pool string, on bool) { k.Pause(pool, on) }

// open lets a gated task phase finish.
func (k *kubelet) open(task, phase string) {
	f, err := os.Create(filepath.Join(k.gateDir, task+"."+phase))
	if err == nil {
		f.Close()
	}
}

// close gates a task phase again.
func (k *kubelet) close(task, phase string) {
	_ = os.Remove(filepath.Join(k.gateDir, task+"."+phase))
}

// env resolves the agent container's environment as the kubelet would.
func (k *kubelet) env(ctx context.Context, pod *corev1.Pod) ([]string, error) {
	return k.ContainerEnv(ctx, pod)
}

// crash SIGKILLs a pod's agent without touching the pod (a crash): the pod
// turns Failed. False when the pod has no running agent.
func (k *kubelet) crash(uid types.UID) bool { return k.Crash(uid) }

// freeze SIGSTOPs a pod's agent: a hung agent whose heartbeat expires while
// the pod looks healthy. Its executors, in process groups of their own, run
// on, and their results are never reported. False when the pod has no
// running agent.
func (k *kubelet) freeze(uid types.UID) bool { return k.Signal(uid, syscall.SIGSTOP) }
