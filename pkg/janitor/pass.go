package janitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// pass is one sync of one pool.
type pass struct {
	c   *Controller
	w   *watch // the informers of the pool's namespace
	ctx context.Context
	key string
	ap  *v1alpha1.AgentPool
	id  slots.PoolID
	st  *poolState
	now time.Time
	log *slog.Logger

	mu   sync.Mutex    // guards next: actions run in parallel
	next time.Duration // when to look again (0: SyncInterval)

	// refused is the pod policy's refusal of the pool's template, or nil.
	refused error
	// deleting is the Deleting condition of a deleted pool, or nil.
	deleting *metav1.Condition
	// hpa is the verdict on the pool's HPAs, nil when they are not watched.
	hpa *hpaVerdict

	// For the janitor's report (report.go): why and recycle are the plan's
	// Why and Recycle, done what the pass did (guarded by mu).
	why, recycle map[*corev1.Pod]string
	done         []doneAction
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
	deleting := p.ap.DeletionTimestamp != nil
	if deleting && (!slices.Contains(p.ap.Finalizers, v1alpha1.Finalizer) || p.orphaning()) {
		// Not ours to hold (never had the finalizer), or a deletion that
		// keeps the pods: they and their Redis state stay as they are.
		if slices.Contains(p.ap.Finalizers, v1alpha1.Finalizer) {
			p.log.Info("pool deleted with its pods orphaned: leaving the pods and the Redis state")
			return 0, p.removeFinalizer()
		}
		return 0, nil
	}
	s, err := settingsOf(p.ap)
	if err != nil && deleting {
		// An invalid spec must not keep a deleted pool forever.
		p.log.Warn("invalid spec of a deleted pool: deleting it with the defaults", "err", err)
		s = fallbackSettings()
		err = nil
	}
	if err != nil {
		p.log.Warn("invalid AgentPool spec", "err", err)
		p.event(p.ap, corev1.EventTypeWarning, "InvalidSpec", "%v", err)
		// No snapshot is read: the report is stamped on the janitor's
		// clock.
		p.report(p.now, invalidSpecContent(p.facts(s), err))
		return 0, p.updateStatus(podCounts{}, nil, nil, &metav1.Condition{
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
	if !deleting {
		if err := p.ensureFinalizer(); apierrors.IsConflict(err) {
			// The cache has not seen our last status write yet.
			p.after(500 * time.Millisecond)
		} else if err != nil {
			// The pool is managed all the same; only its deletion would not
			// wait for idle pods. Said once per failure streak.
			if !p.st.finalizerFailed {
				p.log.Warn("cannot add the finalizer: deleting this pool would not wait for its pods to be idle", "err", err)
				p.event(p.ap, corev1.EventTypeWarning, "FinalizerFailed", "deleting this pool would not wait for idle pods: %v", err)
			}
			p.st.finalizerFailed = true
		} else {
			p.st.finalizerFailed = false
		}
	}
	// The settings as the spec has them, before the HPA verdict is added:
	// what a pass at rest compares.
	specKey := s.storeKey()
	if !deleting {
		if next, ok := p.skip(specKey); ok {
			// At rest: only what must hold on every pass (see rest.go).
			if err := p.ensureCredentials(); err != nil {
				return 0, err
			}
			if p.next > 0 && p.next < next {
				next = p.next
			}
			return next, nil
		}
	}
	// A full pass: the pool is at rest again only if it does nothing.
	p.st.rest = nil
	pods := p.podsOf()
	if p.hpa = p.checkHPAs(); p.hpa != nil {
		// Declared with the pool, so a changed verdict declares it again.
		s.Store.HPATolerance = p.hpa.Tolerance
	}
	var snap slots.Snapshot
	gone := false
	if deleting {
		snap, gone, err = p.beginDeletion(s)
	} else {
		snap, err = p.snapshotDeclared(s, len(pods))
	}
	if err != nil {
		return 0, err
	}
	pods = poolPods(pods, snap.Pods, p.ap.UID)
	if deleting && len(pods) == 0 && len(snap.Pods) == 0 {
		return 0, p.finishDeletion(gone)
	}
	if gone {
		// Deleting, and Redis has nothing of the pool (lost): no pod can be
		// proven idle. Pods whose agent ended go now; the rest at the
		// deadline, as busy ones would.
		return p.deleteUnprovable(s, pods)
	}
	if err := p.ensureCredentials(); err != nil {
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
	p.checkTemplate(s, hash)
	p.st.expectedSince = observeExpected(p.st.expectedSince, pods, snap.Pods, now)
	in := planInput{
		Now: now, Replicas: s.Replicas, TemplateHash: hash, IdleFor: s.IdleFor,
		Generation: snap.Generation, Declared: snap.Declared, HeartbeatTimeout: s.Store.HeartbeatTimeout,
		ExpectedSince: p.st.expectedSince,
		DeleteBudget:  int(lim.TokensAt(p.now)), Pods: pods, PoolUID: p.ap.UID, Records: snap.Pods,
		Clock: p.now, Streak: p.st.streak, TemplateRefused: p.refused != nil,
		RecycleAfterTasks: s.RecycleAfterTasks, RecycleAfterAge: s.RecycleAfterAge,
	}
	if deleting {
		// Scaled to zero at once: no new pod, no replacement, no idleFor,
		// no cap on removals (see deletion.go).
		in.Replicas, in.IdleFor, in.DeleteBudget, in.TemplateRefused = 0, 0, len(pods)+len(snap.Pods), true
		in.RecycleAfterTasks, in.RecycleAfterAge = 0, 0
	}
	out := plan(in)
	p.st.streak = out.Streak
	hold := !out.HoldUntil.IsZero()
	if hold {
		p.holding(snap, out.HoldUntil.Sub(now))
	}

	p.why, p.recycle = out.Why, out.Recycle
	p.expect(out.Expect)
	p.expectStopping(out.ExpectStopping)
	p.remove(out.Remove)
	if !hold {
		p.deleteDead(out.Dead)
	}
	p.recycling(out.Recycle)
	p.podOps("uncordon", "Uncordoned", janitorreport.ActionUncordoned, out.Uncordon, c.store.Uncordon)
	p.podOps("cordon", "Cordoned", janitorreport.ActionCordoned, out.Cordon, c.store.Cordon)
	p.drainAndDelete(out.Drain, lim)
	p.create(out.Create, out.Backoff, s, hash, snap.Generation,
		fmt.Sprintf("%d desired, %d live", in.Replicas, out.Status.Replicas))
	p.annotate(out.Annotate)
	p.after(out.WaitIdle)
	p.after(out.WaitRegistration)
	p.after(out.WaitRecycle)
	if out.Deferred > 0 {
		p.after(time.Duration(float64(time.Minute) / float64(s.MaxDeletionsPerMinute)))
	}

	if out.StreakEnded > 0 {
		p.log.Info("pods start again", "after", out.StreakEnded)
	}
	for state, n := range map[string]int{"live": out.Status.Replicas, "busy": out.Status.Busy, "idle": out.Status.Idle,
		"cordoned": out.Status.Cordoned, "draining": out.Status.Draining, "foreign": out.Foreign} {
		c.m.Pods.WithLabelValues(p.id.Namespace, p.id.Name, state).Set(float64(n))
	}
	if deleting {
		cond := deletingCondition(p.ap, s, len(pods), out.Status)
		p.deleting = &cond
	}
	content := summarise(in, out, p.facts(s))
	p.report(snap.At, content)
	if !deleting {
		p.declareWebhooks(s)
	}
	if err := p.updateStatus(out.Status, &s, &snap, out.Degraded); apierrors.IsConflict(err) {
		// The HPA (or our own last write, not cached yet) changed the pool
		// since the cache saw it: the next pass writes a fresh status.
		p.log.Debug("status write conflicted; retrying", "err", err)
		p.after(500 * time.Millisecond)
	} else if err != nil {
		return 0, err
	}
	p.rest(specKey, snap, out, content, deleting, p.next)
	if p.next == 0 || p.next > c.opts.SyncInterval {
		p.next = c.opts.SyncInterval
	}
	return p.next, nil
}

// podsOf lists the pods labelled with the pool from the cache: its own
// (controlled by this AgentPool) and foreign ones, which plan takes over
// only when the store holds their record (see foreign).
func (p *pass) podsOf() []*corev1.Pod {
	objs, err := p.w.pods.GetIndexer().ByIndex(byPool, p.key)
	if err != nil {
		p.log.Error("listing pods from cache", "err", err)
		return nil
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok {
			pods = append(pods, pod)
		}
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

// recycling reports the pods this pass takes out for recycling (drained
// when idle, cordoned when busy; a successor is created either way).
func (p *pass) recycling(why map[*corev1.Pod]string) {
	for pod, reason := range why {
		p.log.Info("recycling pod", "pod", pod.Name, "why", reason)
		p.event(pod, corev1.EventTypeNormal, "Recycling", "replaced by the janitor of pool %s (idle-only): %s", p.id, reason)
	}
}

// facts are what the pool's report says beside the plan.
func (p *pass) facts(s settings) reportFacts {
	return reportFacts{Pool: p.id, Janitor: p.c.opts.Identity, MaxDeletionsPerMinute: s.MaxDeletionsPerMinute,
		Refused: p.refused, Deleting: p.deleting}
}

func (p *pass) limiter(perMinute int) *rate.Limiter {
	if p.st.limiter == nil || p.st.limit != perMinute {
		p.st.limiter = rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
		p.st.limit = perMinute
	}
	return p.st.limiter
}
