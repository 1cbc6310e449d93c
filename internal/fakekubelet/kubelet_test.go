package fakekubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/slotscaler/slotscaler/pkg/janitor"
)

// A pod's agent starts with the container's environment resolved and the
// pod turns Running; a crash turns it Failed; a deletion kills the agent
// once, after OnDeleting, and is confirmed.
func TestKubeletRunsCrashesAndKillsAgents(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nenv > \"$OUT/$POD_NAME.env\"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kube := fake.NewClientset()
	var deleting atomic.Int32
	k := New(Config{Kube: kube, Bin: bin, Stop: Kill, ExtraEnv: []string{"OUT=" + dir, "PATH=" + os.Getenv("PATH")},
		OnDeleting: func(*corev1.Pod, bool) { deleting.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = k.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran; k.StopAll(context.Background()) })

	pods := kube.CoreV1().Pods("ns")
	create := func(name string) *corev1.Pod {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: k8stypes.UID("uid-" + name), Labels: map[string]string{janitor.LabelPool: "p"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: janitor.AgentContainer, Env: []corev1.EnvVar{
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "LOG_LEVEL", Value: "debug"}}}}}}
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return pod
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	phase := func(name string) corev1.PodPhase {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "gone"
		}
		return p.Status.Phase
	}

	a, b := create("a"), create("b")
	eventually("both agents run", func() bool {
		return phase("a") == corev1.PodRunning && phase("b") == corev1.PodRunning && k.Running() == 2
	})
	eventually("a's environment is written", func() bool {
		env, err := os.ReadFile(filepath.Join(dir, "a.env"))
		return err == nil && strings.Contains(string(env), "POD_NAME=a\n") && strings.Contains(string(env), "LOG_LEVEL=debug\n")
	})

	if !k.Crash(a.UID) {
		t.Fatal("no agent to crash for pod a")
	}
	eventually("a crashed pod turns Failed", func() bool { return phase("a") == corev1.PodFailed })
	if got := k.Crashed.Load(); got != 1 {
		t.Errorf("crashed = %d, want 1", got)
	}
	if k.Signal(a.UID, 0) {
		t.Error("a crashed agent can still be signalled")
	}

	// What the API server does on a graceful deletion: a deletionTimestamp.
	cur, err := pods.Get(ctx, "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now, grace := metav1.Now(), int64(30)
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &now, &grace
	if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("b's deletion is confirmed", func() bool {
		_, err := pods.Get(ctx, "b", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if k.Running() != 0 || k.Signal(b.UID, 0) {
		t.Error("b's agent still runs after its pod's deletion")
	}
	if got := deleting.Load(); got != 1 {
		t.Errorf("OnDeleting called %d times, want 1", got)
	}
}
