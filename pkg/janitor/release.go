package janitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// ReleaseStore is the part of the slot store DrainIdle uses.
type ReleaseStore interface {
	Snapshot(ctx context.Context, id slots.PoolID) (slots.Snapshot, error)
	DrainReplicated(ctx context.Context, id slots.PoolID, pod, uid string, wait time.Duration) (int, error)
	Cordon(ctx context.Context, id slots.PoolID, pod, uid string) error
	RemovePod(ctx context.Context, id slots.PoolID, pod, uid, reason string) error
}

// DrainIdleOptions tune DrainIdle.
type DrainIdleOptions struct {
	// Selector picks the pods to remove in the pool's namespace (a label
	// selector, required).
	Selector string
	// ReplicaWait bounds the WAIT for a replica after each drain.
	ReplicaWait time.Duration
	Logger      *slog.Logger
}

// DrainIdleResult is what one DrainIdle round did and left.
type DrainIdleResult struct {
	// Removed pods were drained, deleted and their records removed.
	Removed []string
	// Forgotten are records left by the managed pool whose pod object is
	// gone (lost, draining or never registered): removed.
	Forgotten []string
	// Busy pods hold work or a reservation: cordoned, left for a later round.
	Busy []string
	// Skipped pods are not DrainIdle's to remove: a controller owns them,
	// or the store holds no record of them (so nothing proves them idle).
	Skipped []string
}

// Left is how many selected pods are still to be removed.
func (r DrainIdleResult) Left() int { return len(r.Busy) }

// DrainIdle removes, the idle-only way, the selected pods of a pool that
// nobody manages: the pods an AgentPool deleted with --cascade=orphan left
// behind when a pool goes back to a Deployment (docs/migration.md). Each
// selected pod without a controller and with a record in the store is
// cordoned while busy (a reservation can still be approved, its apply runs
// there); once idle it is drained (atomically proven idle; from then on the
// store never gives it work), the drain waits for a replica, the pod is
// deleted with a UID precondition, and its record removed. Pods with a
// controller (the Deployment's own, if the selector catches them) and pods
// without a record are never touched. One call is one round; the caller
// repeats it until Left is 0.
func DrainIdle(ctx context.Context, kube kubernetes.Interface, store ReleaseStore, id slots.PoolID, o DrainIdleOptions) (DrainIdleResult, error) {
	var res DrainIdleResult
	if o.Selector == "" {
		return res, errors.New("a label selector is required")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	list, err := kube.CoreV1().Pods(id.Namespace).List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return res, fmt.Errorf("listing pods %q in %s: %w", o.Selector, id.Namespace, err)
	}
	snap, err := store.Snapshot(ctx, id)
	if err != nil {
		return res, fmt.Errorf("reading pool %s from the slot store: %w", id, err)
	}
	records := make(map[string]slots.PodSnapshot, len(snap.Pods))
	for _, r := range snap.Pods {
		records[r.Name] = r
	}
	if err := forgetGone(ctx, kube, store, id, snap.Pods, log, &res); err != nil {
		return res, err
	}
	for i := range list.Items {
		pod := &list.Items[i]
		if pod.DeletionTimestamp != nil {
			continue
		}
		r, ok := records[pod.Name]
		if ctl := controllerOf(pod); ctl != "" || !ok || r.UID != string(pod.UID) {
			log.Info("pod skipped", "pod", pod.Name, "controller", ctl, "record", ok && r.UID == string(pod.UID))
			res.Skipped = append(res.Skipped, pod.Name)
			continue
		}
		uid := string(pod.UID)
		switch {
		case r.State == slots.PodLost:
			// A managed pool's lost agent: its work is failed already, the
			// deletion is the fence.
		case r.State != slots.PodDraining && r.Busy():
			if r.State == slots.PodActive {
				if err := store.Cordon(ctx, id, pod.Name, uid); err != nil && !errors.Is(err, slots.ErrSelfCordoned) {
					return res, fmt.Errorf("cordoning pod %s: %w", pod.Name, err)
				}
				log.Info("busy pod cordoned: removed once idle", "pod", pod.Name)
			}
			res.Busy = append(res.Busy, pod.Name)
			continue
		default:
			if _, err := store.DrainReplicated(ctx, id, pod.Name, uid, o.ReplicaWait); errors.Is(err, slots.ErrPodBusy) {
				res.Busy = append(res.Busy, pod.Name)
				continue
			} else if err != nil {
				return res, fmt.Errorf("draining pod %s: %w", pod.Name, err)
			}
		}
		if err := deleteWithUID(ctx, kube, pod); err != nil {
			return res, err
		}
		reason := ReasonScaledDown
		if r.State == slots.PodLost {
			reason = slots.ReasonAgentLost
		}
		if err := store.RemovePod(ctx, id, pod.Name, uid, reason); err != nil && !errors.Is(err, slots.ErrPodNotFound) {
			return res, fmt.Errorf("removing the record of pod %s: %w", pod.Name, err)
		}
		log.Info("pod removed", "pod", pod.Name, "uid", uid, "reason", reason)
		res.Removed = append(res.Removed, pod.Name)
	}
	return res, nil
}

// forgetGone removes the records the managed pool left whose pod object is
// gone: a lost pod's (its plans are requeued only now), a drained pod's
// deleted before its record was removed, a never-registered pod's. In a
// static pool nobody else would: the janitor no longer looks at the pool,
// and the reaper only expires heartbeats. Records of registered pods are
// left to their heartbeats (a static agent may run outside Kubernetes).
func forgetGone(ctx context.Context, kube kubernetes.Interface, store ReleaseStore, id slots.PoolID, records []slots.PodSnapshot, log *slog.Logger, res *DrainIdleResult) error {
	for _, r := range records {
		var reason string
		switch r.State {
		case slots.PodLost:
			reason = slots.ReasonAgentLost
		case slots.PodDraining:
			reason = ReasonScaledDown
		case slots.PodExpected:
			reason = ReasonPodGone
		default:
			continue
		}
		got, err := kube.CoreV1().Pods(id.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case err == nil && string(got.UID) == r.UID:
			continue // the pod exists: the main loop decides
		case err != nil && !apierrors.IsNotFound(err):
			return fmt.Errorf("checking that pod %s is gone: %w", r.Name, err)
		}
		if err := store.RemovePod(ctx, id, r.Name, r.UID, reason); err != nil && !errors.Is(err, slots.ErrPodNotFound) {
			return fmt.Errorf("removing the record of pod %s: %w", r.Name, err)
		}
		log.Info("record of a gone pod removed", "pod", r.Name, "uid", r.UID, "reason", reason)
		res.Forgotten = append(res.Forgotten, r.Name)
	}
	return nil
}

// deleteWithUID deletes this incarnation of a pod; gone already is done.
func deleteWithUID(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod) error {
	uid := pod.UID
	err := kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod %s: %w", pod.Name, err)
	}
	return nil
}
