package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/internal/fakekubelet"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// kubelet is the demo's node: the fake kubelet runs bin/agent for each
// agent pod with its output on the console, and stops it gracefully when
// the pod is deleted (SIGTERM, SIGKILL after the pod's grace, capped).
//
// It is also the demo's guard: when a pod's deletion reaches it while the
// agent still runs, it reads the pool's slot-store snapshot at that moment;
// a record with a running, assigned or reserved slot that is not lost means
// a busy pod was removed, which slotscaler promises never happens.
type kubelet struct {
	*fakekubelet.Kubelet
	store *slots.Store
	con   *console
	log   *slog.Logger

	started, crashed *atomic.Int64 // the fake kubelet's counts, for the report

	checked     atomic.Int64 // deletions of running agents the guard looked at
	busyRemoved atomic.Int64
	uncheckable atomic.Int64 // deletions the guard could not check (store unreadable)
}

func newKubelet(kube kubernetes.Interface, store *slots.Store, agentBin string, con *console, log *slog.Logger, stopGrace time.Duration) *kubelet {
	k := &kubelet{store: store, con: con, log: log.With("component", "kubelet")}
	k.Kubelet = fakekubelet.New(fakekubelet.Config{
		Kube: kube, Bin: agentBin, Log: k.log, Stop: fakekubelet.Graceful, Grace: stopGrace, StopGone: true,
		// What a container runtime adds: the image's PATH; the agent's
		// health port is free on the pod's own network, here any loopback
		// port.
		BaseEnv: baseEnv(), ExtraEnv: []string{"LISTEN_ADDRESS=127.0.0.1:0"},
		Output: func(pod *corev1.Pod) (io.WriteCloser, error) {
			return con.prefixed("[agent " + pod.Name + "]"), nil
		},
		OnDeleting: func(pod *corev1.Pod, running bool) {
			if running {
				k.guard(context.Background(), pod)
			}
		},
	})
	k.started, k.crashed = &k.Started, &k.Crashed
	return k
}

// run watches pods until ctx ends. Agents keep running: stopAll stops them.
func (k *kubelet) run(ctx context.Context) error { return k.Run(ctx) }

// stopAll stops every agent (the demo is stopping): SIGTERM, so they finish
// running phases, SIGKILL after the grace. Pods are left as they are.
func (k *kubelet) stopAll(ctx context.Context) { k.StopAll(ctx) }

// killAll SIGKILLs every agent now (a second Ctrl-C).
func (k *kubelet) killAll() { k.KillAll() }

// running counts agent processes that have not exited.
func (k *kubelet) running() int { return k.Running() }

// guard checks, at the moment a running agent's pod is deleted, that the
// store holds no work on that pod.
func (k *kubelet) guard(ctx context.Context, pod *corev1.Pod) {
	id := slots.PoolID{Namespace: pod.Namespace, Name: pod.Labels[janitor.LabelPool]}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ref := pod.Namespace + "/" + pod.Name
	snap, err := k.store.Snapshot(rctx, id)
	if err != nil {
		k.uncheckable.Add(1)
		k.log.Warn("guard: cannot read the pool to check a pod deletion", "pod", ref, "err", err)
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
	k.con.Printf("!!!!! BUSY POD REMOVED: %s (record %s; %s) — slotscaler must never do this", ref, rec.State, strings.Join(work, ", "))
	k.log.Error("BUSY POD REMOVED", "pod", ref, "uid", pod.UID, "state", rec.State, "work", work)
}
