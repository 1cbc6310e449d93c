package janitor

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

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

func (p *pass) event(obj runtime.Object, typ, reason, msg string, args ...any) {
	if p.c.opts.DryRun {
		return
	}
	p.c.recorder.Eventf(obj, typ, reason, msg, args...)
}

// checkTemplate judges the pod the template would make with the pod
// policy. A refusal is logged and reported by a Warning event once per
// template; pods are then neither created nor replaced (plan keeps the
// existing ones, and removes idle surplus as before), and the status says
// why (TemplateAllowed False, Degraded). A fixed template is reported once.
func (p *pass) checkTemplate(s settings, hash string) {
	_, err := allowedPod(p.ap, s, hash, "", p.c.opts.Inject, p.c.opts.PodPolicy)
	p.refused = err
	if err == nil {
		if p.st.refusedHash != "" {
			p.st.refusedHash = ""
			p.log.Info("pod template allowed by the pod policy again: pods are created")
			p.event(p.ap, corev1.EventTypeNormal, "TemplateAllowed", "spec.template satisfies the pod policy (%s): pods are created", p.c.opts.PodPolicy.Level)
		}
		return
	}
	if p.st.refusedHash == hash {
		return
	}
	p.st.refusedHash = hash
	p.log.Warn("pod template refused by the pod policy: creating no pod, keeping the existing ones",
		"policy", p.c.opts.PodPolicy.Level, "violations", err.Error())
	p.event(p.ap, corev1.EventTypeWarning, "PolicyViolation", "no pod is created: %v", err)
}

// updateStatus writes the pool's status when it changed. s and snap are
// nil for an invalid spec (the slot store was not read): the queue counts
// and slot policy then keep their last values.
func (p *pass) updateStatus(n podCounts, s *settings, snap *slots.Snapshot, degraded *metav1.Condition) error {
	ap := p.ap.DeepCopy()
	st := &ap.Status
	if s != nil && p.st.policyPending == "" {
		// While a change is pending the store runs the old policy, which
		// the status showed when it was applied: it stays.
		st.SlotPolicy = policySummary(s.Store.Policy)
	}
	st.Replicas = int32(n.Replicas)
	st.ReadyReplicas = int32(n.Ready)
	st.BusyReplicas = int32(n.Busy)
	st.IdleReplicas = int32(n.Idle)
	st.CordonedReplicas = int32(n.Cordoned)
	st.DrainingReplicas = int32(n.Draining)
	st.Selector = LabelPool + "=" + ap.Name
	st.ObservedGeneration = ap.Generation
	if s != nil {
		allowed := metav1.Condition{Type: v1alpha1.ConditionTemplateAllowed, Status: metav1.ConditionTrue, Reason: "Allowed",
			ObservedGeneration: ap.Generation, Message: fmt.Sprintf("spec.template satisfies the pod policy (%s)", p.c.opts.PodPolicy.Level)}
		if p.refused != nil {
			allowed.Status, allowed.Reason = metav1.ConditionFalse, "PolicyViolation"
			allowed.Message = fmt.Sprintf("no pod is created from spec.template (pod policy %s): %v", p.c.opts.PodPolicy.Level, p.refused)
			degraded = &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: "PolicyViolation", Message: allowed.Message}
		}
		meta.SetStatusCondition(&st.Conditions, allowed)
	}
	if degraded == nil {
		degraded = &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "AsExpected", Message: "pods start"}
	}
	degraded.ObservedGeneration = ap.Generation
	meta.SetStatusCondition(&st.Conditions, *degraded)
	isDegraded := 0.0
	if degraded.Status == metav1.ConditionTrue {
		isDegraded = 1
	}
	p.c.m.Degraded.WithLabelValues(p.id.String()).Set(isDegraded)
	if p.deleting != nil {
		meta.SetStatusCondition(&st.Conditions, *p.deleting)
	}
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
	if snap != nil {
		at := snap.At
		if at.IsZero() {
			at = p.now // dry-run, pool not declared
		}
		// A deferred write of the counts is due by the clock alone: no
		// change of the pool's would start the pass that writes them.
		p.after(observeQueue(p.ap.Status, st, queueOf(*snap), at, p.c.opts.SyncInterval))
	}
	switch {
	case p.hpa != nil:
		hpa := p.hpa.Condition
		hpa.ObservedGeneration = ap.Generation
		meta.SetStatusCondition(&st.Conditions, hpa)
	case s != nil:
		// HPAs not watched (any more): nothing to say.
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionHPAToleranceHonoured)
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

// queueCounts is the part of the status read from the slot store's
// snapshot, which every pass reads anyway: no extra Redis call.
type queueCounts struct {
	Queued   int32
	ByType   map[v1alpha1.TaskType]int32 // nil when nothing is queued
	Awaiting int32
}

// queueOf counts a snapshot's queued tasks, by type, and its reserved
// slots: each is a plan_and_apply whose plan ran, waiting for approval.
func queueOf(snap slots.Snapshot) queueCounts {
	var q queueCounts
	for t, n := range snap.Queued {
		if q.ByType == nil {
			q.ByType = map[v1alpha1.TaskType]int32{}
		}
		q.Queued += int32(n)
		q.ByType[v1alpha1.TaskType(t)] += int32(n)
	}
	for _, pod := range snap.Pods {
		for _, sl := range pod.Slots {
			if sl.State == slots.SlotReserved {
				q.Awaiting++
			}
		}
	}
	return q
}

// observeQueue sets the queue counts of st, the status about to be
// written over old. Every status write is a watch event that starts
// another pass, and under load the queue changes between any two passes:
// written on every change, the counts would keep the janitor passing and
// writing as fast as the API answers. So when the counts are the only
// change they are written at most once per every (the sync interval);
// when anything else changed they ride along. at is Redis's clock. It
// returns how long a deferred write of the counts waits (0: none deferred).
func observeQueue(old v1alpha1.AgentPoolStatus, st *v1alpha1.AgentPoolStatus, q queueCounts, at time.Time, every time.Duration) time.Duration {
	if st.QueuedTasks == q.Queued && st.AwaitingApproval == q.Awaiting && maps.Equal(st.QueuedByType, q.ByType) &&
		st.QueueObservedTime != nil {
		return 0
	}
	if equality.Semantic.DeepEqual(old, *st) && old.QueueObservedTime != nil {
		// Redis's clock going back (another server after a failover) must
		// not freeze the counts either.
		if since := at.Sub(old.QueueObservedTime.Time); since >= 0 && since < every {
			return every - since
		}
	}
	st.QueuedTasks, st.QueuedByType, st.AwaitingApproval = q.Queued, q.ByType, q.Awaiting
	// Written with second precision: stored the same way, an unchanged
	// status compares equal to what the cache reads back.
	t := metav1.NewTime(at.Truncate(time.Second))
	st.QueueObservedTime = &t
	return 0
}

// policySummary is a slot policy in a short human form for the status and
// kubectl get: slots running the same types, in a row, share one range.
// The default is "3 slots: 0=plan,plan_and_apply 1-2=plan".
func policySummary(p slots.SlotPolicy) string {
	key := func(types []slots.TaskType) string {
		s := make([]string, len(types))
		for i, t := range types {
			s[i] = string(t)
		}
		slices.Sort(s)
		return strings.Join(slices.Compact(s), ",")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d slot", len(p.Slots))
	if len(p.Slots) != 1 {
		b.WriteString("s")
	}
	b.WriteString(":")
	for i := 0; i < len(p.Slots); {
		k, j := key(p.Slots[i]), i+1
		for j < len(p.Slots) && key(p.Slots[j]) == k {
			j++
		}
		if j-1 > i {
			fmt.Fprintf(&b, " %d-%d=%s", i, j-1, k)
		} else {
			fmt.Fprintf(&b, " %d=%s", i, k)
		}
		i = j
	}
	return b.String()
}
