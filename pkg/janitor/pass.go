package janitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// pass is one sync of one pool.
type pass struct {
	c   *Controller
	ctx context.Context
	key string
	ap  *v1alpha1.AgentPool
	id  slots.PoolID
	st  *poolState
	now time.Time
	log *slog.Logger

	mu   sync.Mutex    // guards next: actions run in parallel
	next time.Duration // when to look again (0: SyncInterval)
}

func (p *pass) after(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d > 0 && (p.next == 0 || d < p.next) {
		p.next = d
	}
}

func (p *pass) run() (time.Duration, error) {
	c := p.c
	s, err := settingsOf(p.ap)
	if err != nil {
		p.log.Warn("invalid AgentPool spec", "err", err)
		p.event(p.ap, corev1.EventTypeWarning, "InvalidSpec", "%v", err)
		return 0, p.updateStatus(podCounts{}, nil, &metav1.Condition{
			Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: "InvalidSpec", Message: err.Error()})
	}
	if !c.exp.Satisfied(p.key) {
		// Our own creates/deletes are not in the cache yet: acting now could
		// double them, or take a new pod's record for one whose pod is gone.
		// Checked before the cache and Redis are read (as the ReplicaSet
		// controller does): once satisfied, the cache holds every pod whose
		// record the snapshot can show. Their informer events requeue the pool.
		p.log.Debug("waiting for the informer to show our own changes")
		return time.Second, nil
	}
	pods := p.podsOf()
	snap, err := p.snapshotDeclared(s, len(pods))
	if err != nil {
		return 0, err
	}
	// Times in the snapshot are Redis's: plan compares them with Redis's
	// clock, never the janitor's (no skew between the two).
	now := snap.At
	if now.IsZero() {
		now = p.now // dry-run, pool not declared
	}
	lim := p.limiter(s.MaxDeletionsPerMinute)
	hash := templateHash(p.ap, s, c.opts.Inject)
	p.st.expectedSince = observeExpected(p.st.expectedSince, pods, snap.Pods, now)
	out := plan(planInput{
		Now: now, Replicas: s.Replicas, TemplateHash: hash, IdleFor: s.IdleFor,
		Generation: snap.Generation, Declared: snap.Declared, HeartbeatTimeout: s.Store.HeartbeatTimeout,
		ExpectedSince: p.st.expectedSince,
		DeleteBudget:  int(lim.TokensAt(p.now)), Pods: pods, Records: snap.Pods,
		Clock: p.now, Streak: p.st.streak,
	})
	p.st.streak = out.Streak
	hold := !out.HoldUntil.IsZero()
	if hold {
		p.holding(snap, out.HoldUntil.Sub(now))
	}

	p.expect(out.Expect)
	p.expectStopping(out.ExpectStopping)
	p.remove(out.Remove)
	if !hold {
		p.deleteDead(out.Dead)
	}
	p.podOps("uncordon", "Uncordoned", out.Uncordon, c.store.Uncordon)
	p.podOps("cordon", "Cordoned", out.Cordon, c.store.Cordon)
	p.drainAndDelete(out.Drain, lim)
	p.create(out.Create, out.Backoff, s, hash, snap.Generation)
	p.annotate(out.Annotate)
	p.after(out.WaitIdle)
	p.after(out.WaitRegistration)
	if out.Deferred > 0 {
		p.after(time.Duration(float64(time.Minute) / float64(s.MaxDeletionsPerMinute)))
	}

	if out.StreakEnded > 0 {
		p.log.Info("pods start again", "after", out.StreakEnded)
	}
	for state, n := range map[string]int{"live": out.Status.Replicas, "busy": out.Status.Busy, "idle": out.Status.Idle,
		"cordoned": out.Status.Cordoned, "draining": out.Status.Draining} {
		c.m.Pods.WithLabelValues(p.id.Namespace, p.id.Name, state).Set(float64(n))
	}
	if err := p.updateStatus(out.Status, &s, out.Degraded); apierrors.IsConflict(err) {
		// The HPA (or our own last write, not cached yet) changed the pool
		// since the cache saw it: the next pass writes a fresh status.
		p.log.Debug("status write conflicted; retrying", "err", err)
		p.after(500 * time.Millisecond)
	} else if err != nil {
		return 0, err
	}
	if p.next == 0 || p.next > c.opts.SyncInterval {
		p.next = c.opts.SyncInterval
	}
	return p.next, nil
}

// podsOf lists the pool's pods from the cache: labelled with the pool and
// controlled by this AgentPool (a pod left by a deleted pool of the same
// name is not ours).
func (p *pass) podsOf() []*corev1.Pod {
	objs, err := p.c.pods.GetIndexer().ByIndex(byPool, p.key)
	if err != nil {
		p.log.Error("listing pods from cache", "err", err)
		return nil
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		pod, ok := o.(*corev1.Pod)
		if !ok {
			continue
		}
		if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != p.ap.UID {
			continue
		}
		pods = append(pods, pod)
	}
	return pods
}

// snapshotDeclared reads the pool's slot-store state, declaring the pool
// first when its settings changed or Redis does not know it. A pool missing
// from Redis while it has pods means Redis lost its data: declared again, it
// gets a new generation, and plan holds every removal while the pods that
// predate it re-register (dataLossHold) — the same hold a janitor starting
// after the loss derives from the snapshot.
func (p *pass) snapshotDeclared(s settings, pods int) (slots.Snapshot, error) {
	if p.st.declared != s.storeKey() || p.st.policyPending != "" {
		if err := p.declare(s); err != nil {
			return slots.Snapshot{}, err
		}
	}
	snap, err := p.c.store.Snapshot(p.ctx, p.id)
	if errors.Is(err, slots.ErrPoolNotFound) {
		if p.c.opts.DryRun {
			return slots.Snapshot{Pool: p.id}, nil
		}
		p.log.Warn("pool missing from Redis: declaring it again", "pods", pods)
		p.st.declared = ""
		if err := p.declare(s); err != nil {
			return slots.Snapshot{}, err
		}
		snap, err = p.c.store.Snapshot(p.ctx, p.id)
	}
	if err != nil {
		return slots.Snapshot{}, fmt.Errorf("reading pool %s from the slot store: %w", p.id, err)
	}
	return snap, nil
}

func (p *pass) declare(s settings) error {
	if p.c.opts.DryRun {
		p.log.Info("dry-run: would declare the pool in Redis")
		return nil
	}
	key := s.storeKey()
	d, err := p.c.store.DeclarePool(p.ctx, p.id, s.Store)
	if errors.Is(err, slots.ErrPolicyChange) {
		// Every other setting was applied; the store keeps the old slot
		// policy while the pool has pods. Declared again on every pass, the
		// change lands as soon as the pool has none; meanwhile the status
		// says so (SlotPolicyPending), and one event per spec.
		if p.st.policyEventFor != key {
			p.st.policyEventFor = key
			p.log.Warn("slot policy change pending: the old policy stays until the pool has no pods", "why", d.PendingReason)
			p.event(p.ap, corev1.EventTypeWarning, "SlotPolicyPending",
				"spec.slots changed while the %s: the old slot policy stays until the pool has no pods (scale it to 0); every other setting is applied", d.PendingReason)
		}
		p.st.declared, p.st.policyPending = key, d.PendingReason
		return nil
	}
	if err != nil {
		return err
	}
	if p.st.policyPending != "" {
		p.log.Info("slot policy applied", "generation", d.Generation)
		p.event(p.ap, corev1.EventTypeNormal, "SlotPolicyApplied", "the pool has no pods: spec.slots applied")
	}
	p.log.Debug("pool declared", "generation", d.Generation)
	p.st.declared, p.st.policyPending = key, ""
	return nil
}

// holding reports a data-loss hold: a warning and an event once per
// generation (the hold itself is recomputed by every pass), and a look
// again when it ends.
func (p *pass) holding(snap slots.Snapshot, left time.Duration) {
	p.after(left)
	if p.st.heldGeneration == snap.Generation {
		return
	}
	p.st.heldGeneration = snap.Generation
	p.log.Warn("Redis lost this pool's data: rebuilding pod records and deleting nothing until the agents registered again",
		"generation", snap.Generation, "declared", snap.Declared, "for", left)
	p.event(p.ap, corev1.EventTypeWarning, "RedisDataLoss",
		"pods predate the pool's generation in Redis (declared %s): rebuilding pod records, deleting nothing for %v",
		snap.Declared.UTC().Format(time.RFC3339), left.Round(time.Millisecond))
}

func (p *pass) limiter(perMinute int) *rate.Limiter {
	if p.st.limiter == nil || p.st.limit != perMinute {
		p.st.limiter = rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
		p.st.limit = perMinute
	}
	return p.st.limiter
}

// act carries out one mutating action, or only logs it in dry-run mode,
// and counts it.
func (p *pass) act(action string, pod string, fn func() error) error {
	if p.c.opts.DryRun {
		p.log.Info("dry-run: would "+action, "pod", pod)
		p.c.m.Actions.WithLabelValues(action, resultDryRun).Inc()
		return nil
	}
	err := fn()
	result := resultSuccess
	switch {
	case errors.Is(err, slots.ErrPodBusy), errors.Is(err, slots.ErrSelfCordoned):
		// Expected refusals: the store keeps a pod that got work, or whose
		// own stopping agent cordoned it, whatever this pass decided.
		result = resultRefused
	case errors.Is(err, slots.ErrNotReplicated):
		result = resultNotReplicated
	case err != nil:
		result = resultError
	}
	p.c.m.Actions.WithLabelValues(action, result).Inc()
	return err
}

func (p *pass) event(obj runtime.Object, typ, reason, msg string, args ...any) {
	if p.c.opts.DryRun {
		return
	}
	p.c.recorder.Eventf(obj, typ, reason, msg, args...)
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
	})
}

// deleteDead deletes pods whose agent is gone. No drain: nothing runs there
// any more that the deletion could hurt, and the deletion is the fence.
func (p *pass) deleteDead(dead []deadPod) {
	parallel(p, dead, func(d deadPod) {
		if err := p.deletePod(d.Pod, d.Reason); err == nil {
			p.event(p.ap, corev1.EventTypeWarning, "PodReplaced", "deleted pod %s: %s", d.Pod.Name, d.Reason)
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

func (p *pass) podOps(action, reason string, pods []*corev1.Pod, fn func(context.Context, slots.PoolID, string, string) error) {
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
		}
	})
	if refused.Load() > 0 {
		p.after(100 * time.Millisecond)
	}
}

// create makes n pods in slow-start batches (1, 2, 4, …) like the
// ReplicaSet controller, so a template that cannot be created fails once,
// not n times. Each pod's expected record is written right after it exists.
func (p *pass) create(n int, backoff createBackoff, s settings, hash, generation string) {
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
			pods[i] = newPod(p.ap, s, hash, generation, c.opts.Inject)
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

// annotate adds the do-not-evict annotations to busy pods and removes them
// from idle ones, with a merge patch (never mutating the cached object).
func (p *pass) annotate(want map[*corev1.Pod]bool) {
	pods := make([]*corev1.Pod, 0, len(want))
	for pod := range want {
		pods = append(pods, pod)
	}
	// In name order, not the map's: the same pass makes the same calls.
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	parallel(p, pods, func(pod *corev1.Pod) {
		var v1, v2 any // null removes the annotation
		if want[pod] {
			v1, v2 = "false", "true"
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
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

// updateStatus writes the pool's status when it changed. s is nil for an
// invalid spec.
func (p *pass) updateStatus(n podCounts, s *settings, degraded *metav1.Condition) error {
	ap := p.ap.DeepCopy()
	st := &ap.Status
	st.Replicas = int32(n.Replicas)
	st.ReadyReplicas = int32(n.Ready)
	st.BusyReplicas = int32(n.Busy)
	st.IdleReplicas = int32(n.Idle)
	st.CordonedReplicas = int32(n.Cordoned)
	st.DrainingReplicas = int32(n.Draining)
	st.Selector = LabelPool + "=" + ap.Name
	st.ObservedGeneration = ap.Generation
	if degraded == nil {
		degraded = &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "AsExpected", Message: "pods start"}
	}
	degraded.ObservedGeneration = ap.Generation
	meta.SetStatusCondition(&st.Conditions, *degraded)
	if s != nil {
		pending := metav1.Condition{Type: v1alpha1.ConditionSlotPolicyPending, Status: metav1.ConditionFalse, Reason: "Applied",
			ObservedGeneration: ap.Generation, Message: "the pool runs the slot policy of spec.slots"}
		if p.st.policyPending != "" {
			pending.Status, pending.Reason = metav1.ConditionTrue, "PoolHasPods"
			pending.Message = fmt.Sprintf("spec.slots changed while the %s: the old slot policy stays until the pool has no pods (scale it to 0); every other setting is applied", p.st.policyPending)
		}
		meta.SetStatusCondition(&st.Conditions, pending)
		ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "PodsNotReady",
			ObservedGeneration: ap.Generation, Message: fmt.Sprintf("%d of %d pods ready", n.Ready, s.Replicas)}
		if n.Ready >= s.Replicas && n.Replicas == s.Replicas {
			ready.Status, ready.Reason = metav1.ConditionTrue, "AllPodsReady"
		}
		meta.SetStatusCondition(&st.Conditions, ready)
	}
	if equality.Semantic.DeepEqual(p.ap.Status, ap.Status) {
		return nil
	}
	if p.c.opts.DryRun {
		p.log.Debug("dry-run: would update status", "replicas", st.Replicas)
		return nil
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	if err != nil {
		return fmt.Errorf("encoding status of %s: %w", p.key, err)
	}
	_, err = p.c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ap.Namespace).
		UpdateStatus(p.ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating status of %s: %w", p.key, err)
	}
	return nil
}
