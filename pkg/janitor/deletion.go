package janitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A deleted AgentPool keeps the janitor's finalizer until its pods are gone
// the idle-only way. The pass over a deleting pool is the ordinary one with
// the pool scaled to zero at once (idleFor 0, no deletion cap, no new or
// replacement pod): busy pods are cordoned and removed when idle, a
// reservation may still be approved and its apply runs. Before that the
// store fails the queue and refuses submits (BeginDeletion). Past
// spec.deletion.timeout the work left fails with pool-deleted (Abandon) and
// its pods go as idle ones. With no pod left, the pool's Redis state and its
// Redis user are deleted, then the finalizer is removed.
//
// The garbage collector deletes the pods only once the AgentPool is gone:
// with the finalizer, after all of the above. A foreground deletion
// (kubectl delete --cascade=foreground) is the exception: the garbage
// collector deletes the pods first, busy or not. An orphaning deletion
// (--cascade=orphan) is honoured: the pods and the Redis state are left as
// they are, only the finalizer is removed.

// ensureFinalizer adds the finalizer to a pool that lacks it (a merge patch
// carrying the resourceVersion: a concurrent change makes it conflict and
// the pass is retried, rather than dropping another finalizer).
func (p *pass) ensureFinalizer() error {
	if slices.Contains(p.ap.Finalizers, v1alpha1.Finalizer) || p.c.opts.DryRun {
		return nil
	}
	return p.patchFinalizers(append(slices.Clone(p.ap.Finalizers), v1alpha1.Finalizer))
}

func (p *pass) removeFinalizer() error {
	return p.patchFinalizers(slices.DeleteFunc(slices.Clone(p.ap.Finalizers), func(f string) bool { return f == v1alpha1.Finalizer }))
}

func (p *pass) patchFinalizers(fs []string) error {
	if fs == nil {
		fs = []string{}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fs, "resourceVersion": p.ap.ResourceVersion}})
	_, err := p.c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(p.ap.Namespace).
		Patch(p.ctx, p.ap.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("setting the finalizers of pool %s: %w", p.key, err)
	}
	return nil
}

// orphaning reports a deletion that keeps the pool's pods (the garbage
// collector's orphan finalizer).
func (p *pass) orphaning() bool {
	return slices.Contains(p.ap.Finalizers, metav1.FinalizerOrphanDependents)
}

// beginDeletion marks the pool deleting in the store and, past the
// deletion's deadline, ends the work still on its pods; it returns the
// snapshot the pass plans from. gone: Redis has no state of the pool
// (purged by an earlier pass, or lost).
func (p *pass) beginDeletion(s settings) (snap slots.Snapshot, gone bool, err error) {
	deadline := p.ap.DeletionTimestamp.Add(s.DeletionTimeout)
	if p.c.opts.DryRun {
		p.log.Info("dry-run: would delete the pool", "deadline", deadline)
		snap, err = p.c.store.Snapshot(p.ctx, p.id)
		return snap, errors.Is(err, slots.ErrPoolNotFound), ignoreNotFound(err)
	}
	d, err := p.c.store.BeginDeletion(p.ctx, p.id)
	if errors.Is(err, slots.ErrPoolNotFound) {
		return slots.Snapshot{Pool: p.id}, true, nil
	}
	if err != nil {
		return snap, false, err
	}
	if !p.st.deletionSeen {
		p.st.deletionSeen = true
		p.log.Info("pool deleted: removing its pods as they become idle", "pods", d.Pods, "busy", d.BusyPods, "deadline", deadline)
		p.event(p.ap, corev1.EventTypeNormal, "Deleting",
			"removing %d pods as they become idle (%d busy); running work and reservations may finish until %s",
			d.Pods, d.BusyPods, deadline.UTC().Format(time.RFC3339))
	}
	if d.FailedQueued > 0 {
		p.log.Info("pool deleted: queued tasks failed", "tasks", d.FailedQueued, "reason", slots.ReasonPoolDeleted)
		p.event(p.ap, corev1.EventTypeNormal, "QueueFailed", "%d queued tasks failed (%s); submits are refused", d.FailedQueued, slots.ReasonPoolDeleted)
	}
	snap, err = p.c.store.Snapshot(p.ctx, p.id)
	if err != nil {
		return snap, false, fmt.Errorf("reading pool %s from the slot store: %w", p.id, err)
	}
	if !p.now.After(deadline) {
		p.after(deadline.Sub(p.now))
		return snap, false, nil
	}
	abandoned := 0
	for _, r := range snap.Pods {
		if !r.Busy() || r.State == slots.PodLost || r.State == slots.PodDraining {
			continue
		}
		ended, err := p.c.store.Abandon(p.ctx, p.id, r.Name, r.UID)
		if err != nil {
			p.log.Error("ending the work of a deleted pool's pod", "pod", r.Name, "err", err)
			continue
		}
		abandoned++
		p.log.Warn("pool deletion timed out: the pod's work failed", "pod", r.Name, "tasks", ended, "reason", slots.ReasonPoolDeleted)
		p.event(p.ap, corev1.EventTypeWarning, "DeletionTimedOut", "spec.deletion.timeout %v passed: pod %s's tasks %v failed (%s)",
			s.DeletionTimeout, r.Name, ended, slots.ReasonPoolDeleted)
	}
	if abandoned > 0 {
		snap, err = p.c.store.Snapshot(p.ctx, p.id)
		if err != nil {
			return snap, false, fmt.Errorf("reading pool %s from the slot store: %w", p.id, err)
		}
	}
	return snap, false, nil
}

// finishDeletion runs once the pool has neither pods nor pod records: its
// Redis state and user go, then the finalizer.
func (p *pass) finishDeletion(gone bool) error {
	if p.c.opts.DryRun {
		p.log.Info("dry-run: would purge the pool's Redis state and remove the finalizer")
		return nil
	}
	if !gone {
		n, err := p.c.store.Purge(p.ctx, p.id)
		if err != nil {
			return err
		}
		p.log.Info("pool's Redis state deleted", "tasks", n)
	}
	p.c.removeCredentials(p.ctx, p.id)
	if err := p.removeFinalizer(); err != nil {
		return err
	}
	p.log.Info("pool deletion finished: finalizer removed")
	p.event(p.ap, corev1.EventTypeNormal, "Deleted", "every pod removed and the pool's Redis state deleted")
	return nil
}

// deletingCondition says what a deleting pool waits for.
func deletingCondition(ap *v1alpha1.AgentPool, s settings, pods int, n podCounts) metav1.Condition {
	deadline := ap.DeletionTimestamp.Add(s.DeletionTimeout)
	return metav1.Condition{Type: v1alpha1.ConditionDeleting, Status: metav1.ConditionTrue, Reason: "WaitingForPods",
		ObservedGeneration: ap.Generation,
		Message: fmt.Sprintf("%d pods left, %d busy (running or reserved); their work may finish until %s, then it fails (%s)",
			pods, n.Busy, deadline.UTC().Format(time.RFC3339), slots.ReasonPoolDeleted)}
}

func ignoreNotFound(err error) error {
	if errors.Is(err, slots.ErrPoolNotFound) {
		return nil
	}
	return err
}

// deleteUnprovable handles a deleting pool whose Redis state is gone while
// it has pods: none can be proven idle, so pods whose agent ended are
// deleted now and the others at the deadline, the way busy pods would be.
func (p *pass) deleteUnprovable(s settings, pods []*corev1.Pod) (time.Duration, error) {
	deadline := p.ap.DeletionTimestamp.Add(s.DeletionTimeout)
	var dead []deadPod
	for _, pod := range pods {
		if pod.DeletionTimestamp == nil && (ended(pod) || !p.now.Before(deadline)) {
			dead = append(dead, deadPod{Pod: pod, Reason: slots.ReasonPoolDeleted})
		}
	}
	if !p.c.opts.DryRun {
		p.deleteDead(dead)
	}
	p.after(deadline.Sub(p.now))
	if p.next == 0 || p.next > p.c.opts.SyncInterval {
		p.next = p.c.opts.SyncInterval
	}
	return p.next, nil
}

// fallbackSettings are the defaults a deleted pool with an invalid spec is
// deleted with.
func fallbackSettings() settings {
	s := settings{IdleFor: DefaultIdleFor, MaxDeletionsPerMinute: DefaultMaxDeletionsPerMinute,
		PlanTimeout: DefaultPhaseTimeout, ApplyTimeout: DefaultPhaseTimeout, DeletionTimeout: DefaultPhaseTimeout}
	s.Store = slots.DefaultPoolConfig()
	s.Store.Managed = true
	return s
}
