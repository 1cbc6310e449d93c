package janitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// act carries out one mutating action, or only logs it in dry-run mode,
// and counts it.
func (p *pass) act(action string, pod string, fn func() error) error {
	if p.c.opts.DryRun {
		p.log.Info("dry-run: would "+action, "pod", pod)
		p.c.m.Actions.WithLabelValues(action, resultDryRun).Inc()
		return nil
	}
	err := fn()
	p.c.m.Actions.WithLabelValues(action, resultOf(err)).Inc()
	return err
}

// guards are the store's refusals that overrule a pass's decision to keep
// a pod safe: a drain of a pod that got work since the snapshot
// (ErrPodBusy), an uncordon of a pod its own stopping agent cordoned
// (ErrSelfCordoned). They are the protocol working, not a fault.
var guards = []error{slots.ErrPodBusy, slots.ErrSelfCordoned}

// resultOf is an action's result label, from slots.Classify. Operators
// read the labels, so they mean what they meant before the store had one
// classification:
//   - refused is a guard only. The other refusals these calls can get (no
//     such pool or pod, another incarnation, a state that does not allow
//     it, a tombstone, invalid input) mean the pass acted on a state the
//     store no longer holds, which is worth an "error".
//   - not-replicated stays apart from the other unavailable errors: the
//     drain stands on the primary and the pod waits, which is not the
//     store failing.
//   - Everything else, the Kubernetes API's errors (never a refusal of the
//     store) and a canceled context included, is an error.
func resultOf(err error) string {
	switch slots.Classify(err) {
	case slots.KindNone:
		return resultSuccess
	case slots.KindRefused:
		if slices.ContainsFunc(guards, func(g error) bool { return errors.Is(err, g) }) {
			return resultRefused
		}
	case slots.KindUnavailable:
		if errors.Is(err, slots.ErrNotReplicated) {
			return resultNotReplicated
		}
	}
	return resultError
}

// parallel runs fn for each item with bounded concurrency.
func parallel[T any](p *pass, items []T, fn func(T)) {
	var g errgroup.Group
	g.SetLimit(p.c.opts.Parallelism)
	for _, it := range items {
		g.Go(func() error { fn(it); return nil })
	}
	_ = g.Wait()
}

func (p *pass) expect(pods []*corev1.Pod) {
	parallel(p, pods, func(pod *corev1.Pod) {
		err := p.act("expect", pod.Name, func() error {
			return p.c.store.ExpectPod(p.ctx, p.id, pod.Name, string(pod.UID))
		})
		switch {
		case err == nil:
		case errors.Is(err, slots.ErrTombstoned):
			// The store removed this incarnation (a deletion that did not
			// finish): the pod object must go too.
			p.deleteDead([]deadPod{{Pod: pod, Reason: "tombstoned"}})
		default:
			p.log.Error("writing expected record", "pod", pod.Name, "err", err)
		}
	})
}

// expectStopping writes the records of terminating pods that lost theirs
// (Redis lost its data): their agents register again, cordoned, and finish
// what they run instead of giving up and killing it.
func (p *pass) expectStopping(pods []*corev1.Pod) {
	parallel(p, pods, func(pod *corev1.Pod) {
		err := p.act("expect-stopping", pod.Name, func() error {
			return p.c.store.ExpectStoppingPod(p.ctx, p.id, pod.Name, string(pod.UID))
		})
		switch {
		case err == nil:
			p.log.Info("stopping pod's record written: its agent may register again with the work it finishes", "pod", pod.Name)
		case errors.Is(err, slots.ErrTombstoned):
			// The store removed this incarnation already (its object is
			// going; the cache still shows it): nothing to register.
			p.log.Debug("stopping pod was removed already", "pod", pod.Name)
		default:
			p.log.Error("writing a stopping pod's record", "pod", pod.Name, "err", err)
		}
	})
}

func (p *pass) remove(rs []removal) {
	parallel(p, rs, func(r removal) {
		// Removing a record fences its pod's work (plans requeued, applies
		// failed): worth one uncached read to be sure the pod is gone, not
		// just missing from a lagging cache. A drained pod has no work to
		// fence, so scale-downs skip the read.
		if r.Reason != ReasonScaledDown {
			got, err := p.c.kube.CoreV1().Pods(p.id.Namespace).Get(p.ctx, r.Pod.Name, metav1.GetOptions{})
			switch {
			case err == nil && string(got.UID) == r.Pod.UID && got.Labels[LabelPool] == "":
				// A static agent's pod (a Deployment's) the pool takes over
				// (docs/migration.md): labelled, the informer shows it and
				// the next pass handles it as a foreign pod.
				p.adopt(got)
				p.after(time.Second)
				return
			case err == nil && string(got.UID) == r.Pod.UID:
				p.log.Info("pod record kept: the pod exists, the cache is behind", "pod", r.Pod.Name)
				p.after(time.Second)
				return
			case err != nil && !apierrors.IsNotFound(err):
				p.log.Error("checking that a pod is gone", "pod", r.Pod.Name, "err", err)
				return
			}
		}
		err := p.act("remove", r.Pod.Name, func() error {
			return p.c.store.RemovePod(p.ctx, p.id, r.Pod.Name, r.Pod.UID, r.Reason)
		})
		if err != nil {
			p.log.Error("removing pod record", "pod", r.Pod.Name, "uid", r.Pod.UID, "err", err)
			return
		}
		p.log.Info("pod record removed", "pod", r.Pod.Name, "uid", r.Pod.UID, "reason", r.Reason)
		p.did(janitorreport.ActionRemovedRecord, r.Pod.Name, r.Reason)
	})
}

// adopt labels a pod the store holds a record of, which is not one of the
// pool's, with the pool: the janitor's informer sees only labelled pods.
// Only the label is written; the pod keeps its owner, and plan takes it
// for a foreign pod (cordoned, removed once idle).
func (p *pass) adopt(pod *corev1.Pod) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels": map[string]any{LabelPool: p.id.Name}, "resourceVersion": pod.ResourceVersion}})
	err := p.act("adopt", pod.Name, func() error {
		_, err := p.c.kube.CoreV1().Pods(pod.Namespace).Patch(p.ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		p.log.Error("labelling a foreign pod with its pool", "pod", pod.Name, "err", err)
		return
	}
	p.log.Info("foreign pod taken over: it gets no new work and is removed once idle", "pod", pod.Name, "controller", controllerOf(pod))
	p.event(pod, corev1.EventTypeNormal, "TakenOver", "registered in pool %s without being its pod: cordoned, removed once idle", p.id)
}

// controllerOf names a pod's controller ("" for none).
func controllerOf(pod *corev1.Pod) string {
	if ref := metav1.GetControllerOf(pod); ref != nil {
		return ref.Kind + "/" + ref.Name
	}
	return ""
}

// deleteDead deletes pods whose agent is gone. No drain: nothing runs there
// any more that the deletion could hurt, and the deletion is the fence.
func (p *pass) deleteDead(dead []deadPod) {
	parallel(p, dead, func(d deadPod) {
		if err := p.deletePod(d.Pod, d.Reason); err == nil {
			p.event(p.ap, corev1.EventTypeWarning, "PodReplaced", "deleted pod %s: %s", d.Pod.Name, d.Reason)
			p.did(janitorreport.ActionDeleted, d.Pod.Name, d.Reason)
		}
	})
}

func (p *pass) deletePod(pod *corev1.Pod, reason string) error {
	uid := pod.UID
	c := p.c
	err := p.act("delete", pod.Name, func() error {
		c.exp.ExpectDeletion(p.key, uid)
		err := c.kube.CoreV1().Pods(pod.Namespace).Delete(p.ctx, pod.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			// Gone already, or the name holds another incarnation: either
			// way this one is gone.
			c.exp.DeletionObserved(p.key, uid)
			return nil
		}
		if err != nil {
			c.exp.DeletionObserved(p.key, uid)
			return fmt.Errorf("deleting pod %s: %w", pod.Name, err)
		}
		return nil
	})
	if err != nil {
		p.log.Error("deleting pod", "pod", pod.Name, "reason", reason, "err", err)
		return err
	}
	p.log.Info("pod deleted", "pod", pod.Name, "uid", uid, "reason", reason)
	return nil
}

// podOps runs a store operation on each pod; kind is the action's kind in
// the janitor's report.
func (p *pass) podOps(action, reason, kind string, pods []*corev1.Pod, fn func(context.Context, slots.PoolID, string, string) error) {
	parallel(p, pods, func(pod *corev1.Pod) {
		err := p.act(action, pod.Name, func() error { return fn(p.ctx, p.id, pod.Name, string(pod.UID)) })
		if errors.Is(err, slots.ErrSelfCordoned) {
			// The pod's agent cordoned it after the snapshot (it is
			// stopping): it stays cordoned, and the next pass, seeing who
			// owns the cordon, creates a replacement.
			p.log.Info(action+" refused: the pod's own stopping agent cordoned it", "pod", pod.Name)
			p.event(pod, corev1.EventTypeNormal, "UncordonRefused", "left cordoned: its agent is stopping; a replacement is created")
			p.after(100 * time.Millisecond)
			return
		}
		if err != nil {
			p.log.Error(action+" failed", "pod", pod.Name, "err", err)
			return
		}
		p.log.Info("pod "+strings.ToLower(reason), "pod", pod.Name)
		p.event(pod, corev1.EventTypeNormal, reason, "%s by the janitor of pool %s", reason, p.id)
		p.did(p.leaveKind(pod, kind), pod.Name, p.why[pod])
	})
}

// drainAndDelete removes pods by the protocol: atomic drain (refused unless
// every slot is idle and none reserved), a replica has the drain, delete with
// a UID precondition. A refused drain leaves the pod alone this pass.
func (p *pass) drainAndDelete(pods []*corev1.Pod, lim *rate.Limiter) {
	var refused atomic.Int32
	parallel(p, pods, func(pod *corev1.Pod) {
		r := lim.ReserveN(p.now, 1)
		err := p.act("drain", pod.Name, func() error {
			_, err := p.c.store.DrainReplicated(p.ctx, p.id, pod.Name, string(pod.UID), p.c.opts.ReplicaWait)
			return err
		})
		if err != nil {
			r.CancelAt(p.now)
			if errors.Is(err, slots.ErrPodBusy) {
				refused.Add(1)
				p.log.Info("drain refused: pod got work", "pod", pod.Name)
				p.event(pod, corev1.EventTypeNormal, "DrainRefused", "not removed: %v", err)
				return
			}
			p.log.Error("draining pod", "pod", pod.Name, "err", err)
			return
		}
		if p.c.opts.DryRun {
			return
		}
		if err := p.deletePod(pod, ReasonScaledDown); err == nil {
			p.event(p.ap, corev1.EventTypeNormal, "ScaledDown", "deleted idle pod %s", pod.Name)
			p.did(p.leaveKind(pod, janitorreport.ActionDrained), pod.Name, p.why[pod])
		}
	})
	if refused.Load() > 0 {
		p.after(100 * time.Millisecond)
	}
}

// create makes n pods in slow-start batches (1, 2, 4, …) like the
// ReplicaSet controller, so a template that cannot be created fails once,
// not n times. Each pod's expected record is written right after it exists.
// why is the reason the janitor's report gives.
func (p *pass) create(n int, backoff createBackoff, s settings, hash, generation, why string) {
	if n <= 0 {
		return
	}
	if backoff.Wait > 0 {
		p.log.Info("backing off pod creation: pods of this template could not start", "pods", n, "retryIn", backoff.Wait, "failures", backoff.Failures)
		p.after(backoff.Wait)
		return
	}
	c := p.c
	created := 0
	for batch := 1; created < n; batch = min(batch*2, n-created) {
		batch = min(batch, n-created)
		pods := make([]*corev1.Pod, batch)
		for i := range pods {
			pod, err := allowedPod(p.ap, s, hash, generation, c.opts.Inject, c.opts.PodPolicy)
			if err != nil {
				// checkTemplate refused the same template before plan, so
				// plan asked for none; a pod differing from that check by its
				// name or generation still never goes unchecked.
				p.log.Error("pod refused by the pod policy", "err", err)
				return
			}
			pods[i] = pod
		}
		var failed atomic.Int32
		if !c.opts.DryRun {
			c.exp.ExpectCreations(p.key, batch)
		}
		parallel(p, pods, func(pod *corev1.Pod) {
			err := p.act("create", pod.Name, func() error {
				got, err := c.kube.CoreV1().Pods(pod.Namespace).Create(p.ctx, pod, metav1.CreateOptions{})
				if err != nil {
					c.exp.CreationObserved(p.key)
					return fmt.Errorf("creating pod %s: %w", pod.Name, err)
				}
				pod = got
				return nil
			})
			if err != nil {
				failed.Add(1)
				p.log.Error("creating pod", "err", err)
				p.event(p.ap, corev1.EventTypeWarning, "FailedCreate", "%v", err)
				return
			}
			if c.opts.DryRun {
				return
			}
			p.log.Info("pod created", "pod", pod.Name, "uid", pod.UID)
			p.did(janitorreport.ActionCreated, pod.Name, why)
			p.event(p.ap, corev1.EventTypeNormal, "SuccessfulCreate", "created pod %s", pod.Name)
			if err := p.act("expect", pod.Name, func() error {
				return c.store.ExpectPod(p.ctx, p.id, pod.Name, string(pod.UID))
			}); err != nil {
				// The next pass writes it (a pod without a record).
				p.log.Error("writing expected record", "pod", pod.Name, "err", err)
			}
		})
		created += batch
		if failed.Load() > 0 {
			if skipped := n - created; skipped > 0 {
				p.log.Info("pod creation failed: skipping the rest of this pass", "skipped", skipped)
			}
			p.after(time.Second)
			return
		}
	}
}

// annotate adds the busy label and the do-not-evict annotations to busy pods
// and removes them from idle ones, with one merge patch (never mutating the
// cached object).
func (p *pass) annotate(want map[*corev1.Pod]bool) {
	pods := make([]*corev1.Pod, 0, len(want))
	for pod := range want {
		pods = append(pods, pod)
	}
	// In name order, not the map's: the same pass makes the same calls.
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	parallel(p, pods, func(pod *corev1.Pod) {
		var v1, v2, label any // null removes the annotation or label
		if want[pod] {
			v1, v2, label = "false", "true", "true"
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{LabelBusy: label},
			"annotations": map[string]any{AnnotationSafeToEvict: v1, AnnotationDoNotDisrupt: v2}}})
		err := p.act("annotate", pod.Name, func() error {
			_, err := p.c.kube.CoreV1().Pods(pod.Namespace).Patch(p.ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		})
		if err != nil {
			p.log.Error("annotating pod", "pod", pod.Name, "err", err)
		}
	})
}
