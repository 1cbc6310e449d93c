package janitor

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Labels and annotations the janitor puts on pods.
const (
	LabelPool         = "slotscaler.io/pool"
	LabelTemplateHash = "slotscaler.io/template-hash"

	// Busy pods carry these so cluster-autoscaler and Karpenter do not evict
	// them; idle pods don't, so node consolidation can move them.
	AnnotationSafeToEvict  = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	AnnotationDoNotDisrupt = "karpenter.sh/do-not-disrupt"
	// LabelBusy ("true") marks pods holding a running, assigned or reserved
	// slot, beside the annotations: a PodDisruptionBudget selecting it (the
	// chart makes one per pool) makes the Eviction API (kubectl drain, node
	// upgrades) refuse busy pods while idle ones evict freely. A label, as a
	// PDB selects by labels only.
	LabelBusy = "slotscaler.io/busy"

	// AnnotationGeneration is the pool's slot-store generation when the
	// janitor created the pod: a pod carrying another one (or none) may
	// predate everything Redis knows of the pool (see dataLossHold).
	AnnotationGeneration = "slotscaler.io/generation"
)

// Reasons recorded when a pod's slot-store record is removed.
const (
	ReasonScaledDown = "scaled-down" // drained by the janitor, then deleted
	ReasonPodGone    = "pod-gone"    // the pod object vanished (deleted by someone, evicted)
)

// planInput is everything one pass over a pool decides from.
type planInput struct {
	// Now is the snapshot's time, on Redis's clock: the clock of every
	// time in Records and of Declared.
	Now          time.Time
	Replicas     int
	TemplateHash string
	IdleFor      time.Duration
	// Generation is the pool's current slot-store generation and Declared
	// when it was declared (Redis TIME; zero when unknown). Together with
	// the pods' generation annotations they tell whether Redis lost the
	// pool's data recently (dataLossHold).
	Generation       string
	Declared         time.Time
	HeartbeatTimeout time.Duration
	// ExpectedSince is, per pod UID, when this janitor first saw the pod's
	// record expected (or missing) in an unbroken run of snapshots
	// (observeExpected). It only ever delays removals: a janitor that
	// forgot (restarted) waits longer, never less (see unconfirmedUntil).
	ExpectedSince map[types.UID]time.Time
	// DeleteBudget is how many pods may be drained for deletion now (the
	// pool's max deletions per minute).
	DeleteBudget int
	// Pods are the pods labelled with the pool: its own (controlled by the
	// AgentPool whose UID is PoolUID) and foreign ones (see foreign).
	Pods    []*corev1.Pod
	PoolUID types.UID
	Records []slots.PodSnapshot
	// Clock is the janitor's own clock when the pass began: the
	// start-failure streak is timed on it (see startFailures).
	Clock time.Time
	// Streak is the start-failure streak as the previous pass left it.
	Streak startStreak
	// TemplateRefused: the pod policy refuses the template, so no pod can
	// be created. Pods are then not replaced either (an outdated pod would
	// go without a successor): they count as current, and only surplus
	// goes, idle, as always. Recycling waits too.
	TemplateRefused bool
	// RecycleAfterTasks and RecycleAfterAge (spec.recycle; 0: not by that
	// measure): an active pod that started that many tasks, or was created
	// that long ago, is replaced like an outdated one (see recycleDue).
	RecycleAfterTasks int
	RecycleAfterAge   time.Duration
}

// maxStartBackoff caps the wait before replacing pods that could not start.
const maxStartBackoff = 5 * time.Minute

// startStreak is a run of pods that ended before their agent registered:
// the template cannot start, so replacements back off (1s doubling, up to
// maxStartBackoff) instead of being created as fast as they fail.
type startStreak struct {
	Failures int
	// Last is when the last failure was counted, NextCreate when pods may
	// be created again (Clock).
	Last, NextCreate time.Time
	// Counted holds the failed pods counted already: a failed pod stays in
	// the cache, and in Dead, until its deletion shows.
	Counted map[types.UID]bool
	// Msg describes the last start failure seen (Degraded's message).
	Msg string
}

// createBackoff is whether this pass may create pods.
type createBackoff struct {
	// Wait: create none for this long (0: create).
	Wait time.Duration
	// Failures is the length of the streak that decided Wait.
	Failures int
}

// podRef names one incarnation of a pod.
type podRef struct {
	Name, UID string
}

// removal is a record whose pod object is gone.
type removal struct {
	Pod    podRef
	Reason string
}

// deadPod is a pod object to delete without a drain: its agent is gone
// (lost heartbeat, exited) or its record was tombstoned. The pod object's
// deletion is the fence; the record is removed once the object is gone.
type deadPod struct {
	Pod *corev1.Pod
	// Reason is logged and put on the event.
	Reason string
	// NeverStarted: the pod ended without its agent ever registering (the
	// template cannot start); the pool backs off and reports Degraded.
	NeverStarted bool
}

// planOutput is what to do, in the order the controller does it.
type planOutput struct {
	Expect []*corev1.Pod // pods without a record: write their expected record
	// ExpectStopping lists terminating pods without a record (Redis lost
	// it): write a record whose registration is cordoned by its agent.
	ExpectStopping []*corev1.Pod
	Remove         []removal // records without a pod object
	Dead           []deadPod
	Uncordon       []*corev1.Pod
	Cordon         []*corev1.Pod
	Drain          []*corev1.Pod // drain, then delete
	Create         int
	// Annotate lists pods whose busy marks (LabelBusy and the do-not-evict
	// annotations) must change: true adds them (busy), false removes them
	// (idle).
	Annotate map[*corev1.Pod]bool
	// WaitIdle: surplus pods are idle but not yet for idleFor; look again then.
	WaitIdle time.Duration
	// WaitRegistration: pods to remove have an expected record while their
	// agent runs (unconfirmedUntil); look again when that is settled.
	WaitRegistration time.Duration
	// WaitRecycle: a pod comes due for recycling by age then
	// (recycleWait); look again.
	WaitRecycle time.Duration
	// Deferred counts surplus idle pods left for lack of deletion budget or
	// because of a hold, and pods due for recycling left for the same
	// reasons.
	Deferred int
	// Recycle says, for each pod this pass takes out for recycling (in
	// Drain or Cordon), why: for the log and the pod's event.
	Recycle map[*corev1.Pod]string
	// HoldUntil, when set, is until when Redis's data loss holds every
	// removal (Redis clock): see dataLossHold. Records are rebuilt
	// meanwhile, and pods already draining (proven idle) may still go.
	HoldUntil time.Time
	Status    podCounts
	// Foreign counts the live foreign pods (see foreign) still in the pool.
	Foreign int
	// StartFailures describes pods whose agent never came up, sorted.
	StartFailures []string
	// Streak is the start-failure streak for the next pass; Backoff says
	// whether this pass may create pods; StreakEnded is the length of the
	// streak this pass ended (an agent registered after its last failure),
	// or 0.
	Streak      startStreak
	Backoff     createBackoff
	StreakEnded int
	// Degraded is the pool's Degraded condition when its pods cannot
	// start, or nil.
	Degraded *metav1.Condition

	// The rest is for the janitor's report (report.go) only: no decision
	// reads it.
	//
	// Why says why each pod in Drain, Cordon and Uncordon is there.
	Why map[*corev1.Pod]string
	// Leaving counts the busy pods that no longer count and go once idle,
	// cordoned by this pass or before, by why they go (goSurplus…).
	Leaving map[string]int
	// IdleWaiting counts the surplus idle pods waiting for idleFor
	// (WaitIdle is the soonest), Unconfirmed the pods to remove waiting
	// for WaitRegistration, Starting the pool's own live pods whose agent
	// has not registered.
	IdleWaiting, Unconfirmed, Starting int
}

// Why pods go: the keys of planOutput.Leaving, and how planOutput.Why
// starts. The janitor's report shows them.
const (
	goSurplus  = "surplus"
	goOutdated = "outdated template"
	goRecycle  = "recycling"
	goForeign  = "foreign pod"
	goStopping = "agent stopping"
)

// podCounts feed AgentPool status.
type podCounts struct {
	Replicas, Ready, Busy, Idle, Cordoned, Draining int
}

// waitingFailures are container waiting reasons meaning the pod cannot start
// by itself.
var waitingFailures = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "CrashLoopBackOff": true,
}

// plan decides one pass over a pool. It is pure: the same input gives the
// same output.
func plan(in planInput) planOutput {
	out := planOutput{Annotate: map[*corev1.Pod]bool{}, Recycle: map[*corev1.Pod]string{},
		Why: map[*corev1.Pod]string{}, Leaving: map[string]int{}}
	records := make(map[string]*slots.PodSnapshot, len(in.Records))
	for i := range in.Records {
		records[in.Records[i].Name] = &in.Records[i]
	}
	// A foreign pod is the pool's only while the store has its record:
	// one without (never a static agent of this pool, or its record is gone
	// with Redis's data) is left alone, neither given a record nor deleted.
	in.Pods = poolPods(in.Pods, in.Records, in.PoolUID)
	objects := make(map[string]*corev1.Pod, len(in.Pods))
	for _, p := range in.Pods {
		objects[p.Name] = p
	}
	out.HoldUntil = dataLossHold(in, records)
	hold := !out.HoldUntil.IsZero()

	// Records whose pod object is gone: remove them (requeues plans, fails
	// applies and reservations). Not while holding: records are being rebuilt.
	for _, r := range in.Records {
		if p, ok := objects[r.Name]; ok && string(p.UID) == r.UID {
			continue
		}
		if hold {
			continue
		}
		reason := ReasonPodGone
		switch r.State {
		case slots.PodDraining:
			reason = ReasonScaledDown
		case slots.PodLost:
			reason = slots.ReasonAgentLost
		}
		out.Remove = append(out.Remove, removal{Pod: podRef{r.Name, r.UID}, Reason: reason})
	}

	var current, outdated, due []*member
	var cordoned, leaving, foreigners []*member
	for _, p := range in.Pods {
		var rec *slots.PodSnapshot
		if r, ok := records[p.Name]; ok && r.UID == string(p.UID) {
			rec = r
		}
		if p.DeletionTimestamp != nil {
			// Terminating: its record goes when the object does. One
			// without a record lost it with Redis's data while its agent
			// may still finish a phase in its grace period: the agent needs
			// a record to register again, or it gives up after its register
			// timeout and kills that phase. The record is written cordoned
			// on the agent's behalf, so no new work reaches a pod that is
			// going away.
			if rec == nil && !ended(p) {
				out.ExpectStopping = append(out.ExpectStopping, p)
			}
			continue
		}
		m := &member{pod: p, rec: rec}
		registered := rec != nil && rec.State != slots.PodExpected
		alien := foreign(p, in.PoolUID)
		if ended(p) {
			// A foreign pod that never started says nothing of the template.
			out.Dead = append(out.Dead, deadPod{Pod: p, Reason: "pod-" + string(p.Status.Phase), NeverStarted: !registered && !alien})
			if !registered && !alien {
				out.StartFailures = append(out.StartFailures, p.Name+": "+podFailure(p))
			}
			continue
		}
		if !registered && !alien {
			out.Starting++
			if why := waitingFailure(p); why != "" {
				out.StartFailures = append(out.StartFailures, p.Name+": "+why)
			}
		}
		if rec == nil {
			out.Expect = append(out.Expect, p)
			m.rec = &slots.PodSnapshot{Name: p.Name, UID: string(p.UID), State: slots.PodExpected}
			rec = m.rec
		}
		if rec.State == slots.PodExpected {
			if until := unconfirmedUntil(p, in); in.Now.Before(until) {
				m.unconfirmedFor = until.Sub(in.Now)
			}
		}
		busy := rec.Busy()
		if busy {
			out.Status.Busy++
		}
		if all, some := busyMarks(p); rec.State != slots.PodLost && rec.State != slots.PodDraining && (busy && !all || !busy && some) {
			out.Annotate[p] = busy
		}
		switch rec.State {
		case slots.PodLost:
			out.Dead = append(out.Dead, deadPod{Pod: p, Reason: slots.ReasonAgentLost})
			continue
		case slots.PodDraining:
			out.Status.Draining++
			out.Drain = append(out.Drain, p) // drained before; delete it (again)
			out.Why[p] = "drained before, deleted again"
			continue
		}
		if alien {
			out.Foreign++
			if rec.State == slots.PodCordoned {
				out.Status.Cordoned++
			}
			if !busy && rec.State != slots.PodExpected {
				out.Status.Idle++
			}
			foreigners = append(foreigners, m)
			continue
		}
		switch rec.State {
		case slots.PodCordoned:
			out.Status.Cordoned++
			if !busy {
				out.Status.Idle++
			}
			if rec.CordonedBy == slots.CordonedByAgent {
				// Its own agent cordoned it: the agent got SIGTERM (node-
				// pressure eviction, graceful node shutdown, a deletion the
				// informer does not show yet) and ends once its work is done.
				// Work given to it would die at the end of its grace period,
				// so it is never uncordoned and does not count as a replica:
				// replacements are created beside it.
				leaving = append(leaving, m)
				continue
			}
			cordoned = append(cordoned, m)
			continue
		case slots.PodActive:
			if !busy {
				out.Status.Idle++
			}
		}
		if p.Labels[LabelTemplateHash] != in.TemplateHash && !in.TemplateRefused {
			outdated = append(outdated, m)
			continue
		}
		if recycleDue(in, m) != "" {
			due = append(due, m)
			continue
		}
		current = append(current, m)
	}

	budget := in.DeleteBudget
	if hold {
		budget = 0
	}
	drain := func(m *member, why string) bool {
		if budget <= 0 {
			out.Deferred++
			return false
		}
		budget--
		out.Drain = append(out.Drain, m.pod)
		out.Why[m.pod] = why
		return true
	}
	cordon := func(m *member, why, group string) {
		out.Cordon = append(out.Cordon, m.pod)
		out.Why[m.pod] = why
		out.Leaving[group]++
	}
	unconfirmed := func(m *member) {
		wait(&out.WaitRegistration, m.unconfirmedFor)
		out.Unconfirmed++
	}

	// A leaving pod (cordoned by its stopping agent) is drained once idle,
	// like a cordoned pod nobody needs. Its agent's exit would end it too
	// (the pod ends, and ended pods are deleted), but the drain does not
	// depend on the agent getting there: a proven-idle pod goes either way,
	// and a busy one is refused atomically.
	for _, m := range leaving {
		if !m.rec.Busy() {
			drain(m, goStopping)
		} else {
			out.Leaving[goStopping]++
		}
	}

	// Foreign pods (a migration from a Deployment, see foreign) never count
	// and never get new work: busy ones are cordoned, keeping what they run
	// and their reservations (an approval still reaches a cordoned pod and
	// its apply runs there); idle ones are drained and deleted at once, no
	// idleFor, like any pod nobody needs. One whose agent may have
	// registered (its record expected while its agent runs) waits like an
	// own pod.
	for _, m := range foreigners {
		switch {
		case m.unconfirmedFor > 0:
			unconfirmed(m)
		case m.rec.Busy():
			if m.rec.State == slots.PodActive {
				cordon(m, goForeign, goForeign)
			} else {
				out.Leaving[goForeign]++
			}
		default:
			drain(m, goForeign)
		}
	}

	// Outdated pods are replaced: idle ones go now, busy ones are cordoned
	// (bin-packing would otherwise keep the oldest pods busy forever) and go
	// once idle. Neither counts, so replacements are created.
	for _, m := range outdated {
		switch {
		case m.rec.Busy():
			cordon(m, goOutdated, goOutdated)
		case m.unconfirmedFor > 0:
			unconfirmed(m)
		default:
			drain(m, goOutdated)
		}
	}

	// Pods due for recycling are replaced like outdated ones, but only as
	// fast as the deletion budget allows, so a pool whose pods all come due
	// at once (created together, afterAge) is not doubled in one pass: a
	// recycled pod, idle or busy, takes one from what is left of the
	// budget, less the recycled pods still cordoned (each needs one when it
	// is idle). The rest stay replicas, working as before, until a later
	// pass. Idle ones first (they go at once), then the oldest.
	waiting := 0
	for _, m := range cordoned {
		if recycleDue(in, m) != "" {
			waiting++
		}
	}
	allow := budget - waiting
	slices.SortStableFunc(due, func(a, b *member) int {
		if a.rec.Busy() != b.rec.Busy() {
			if a.rec.Busy() {
				return 1
			}
			return -1
		}
		if c := a.pod.CreationTimestamp.Compare(b.pod.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.pod.Name, b.pod.Name)
	})
	for _, m := range due {
		if allow <= 0 {
			out.Deferred++
			current = append(current, m)
			continue
		}
		allow--
		out.Recycle[m.pod] = recycleDue(in, m)
		if why := goRecycle + ": " + out.Recycle[m.pod]; m.rec.Busy() {
			cordon(m, why, goRecycle)
		} else {
			drain(m, why) // allow never exceeds budget: this drain has one
		}
	}

	deficit := in.Replicas - len(current)
	// Cordoned pods of the current template come back first when replicas
	// rise (not those due for recycling); the rest, once idle, are drained.
	slices.SortFunc(cordoned, func(a, b *member) int { return cmp.Compare(b.busySlots(), a.busySlots()) })
	for _, m := range cordoned {
		if deficit > 0 && (m.pod.Labels[LabelTemplateHash] == in.TemplateHash || in.TemplateRefused) && recycleDue(in, m) == "" {
			out.Uncordon = append(out.Uncordon, m.pod)
			out.Why[m.pod] = "needed again"
			current = append(current, m)
			deficit--
			continue
		}
		why, group := cordonedWhy(in, m)
		if !m.rec.Busy() {
			drain(m, why)
		} else {
			out.Leaving[group]++
		}
	}
	if deficit > 0 && !in.TemplateRefused {
		out.Create = deficit
	}

	surplus := -deficit
	if surplus > 0 {
		victimOrder(current)
		for _, m := range current[:surplus] {
			switch {
			case m.unconfirmedFor > 0:
				// Maybe registered and busy: neither drained as never
				// registered nor cordoned (the store cordons only registered
				// pods); its agent settles it within a heartbeat timeout.
				unconfirmed(m)
			case m.rec.State == slots.PodExpected:
				drain(m, goSurplus+", its agent never registered")
			case m.rec.Busy():
				cordon(m, goSurplus+", busy", goSurplus)
			default:
				idle := in.Now.Sub(m.rec.IdleSince())
				if idle >= in.IdleFor {
					drain(m, fmt.Sprintf("%s, idle for idleFor %v", goSurplus, in.IdleFor))
				} else {
					wait(&out.WaitIdle, in.IdleFor-idle)
					out.IdleWaiting++
				}
			}
		}
		current = current[surplus:]
	}

	out.Status.Replicas = len(current)
	for _, m := range current {
		if (m.rec.State == slots.PodActive || m.rec.State == slots.PodCordoned) && podReady(m.pod) {
			out.Status.Ready++
		}
	}
	slices.Sort(out.StartFailures)
	startFailures(in, hold, &out)
	out.WaitRecycle = recycleWait(in, records)
	return out
}

// recycleWait is how long until the first pod not yet due for recycling
// by age (spec.recycle.afterAge) comes due, or 0: no record changes then,
// so a pool at rest must be looked at again by the clock (rest.go).
func recycleWait(in planInput, records map[string]*slots.PodSnapshot) time.Duration {
	var w time.Duration
	d := in.RecycleAfterAge
	if d <= 0 || in.TemplateRefused {
		return 0
	}
	for _, p := range in.Pods {
		r, ok := records[p.Name]
		if !ok || r.UID != string(p.UID) || p.DeletionTimestamp != nil || p.Labels[LabelTemplateHash] != in.TemplateHash ||
			(r.State != slots.PodActive && r.State != slots.PodCordoned) {
			continue
		}
		if age := in.Now.Sub(p.CreationTimestamp.Time); age < d {
			wait(&w, d-age)
		}
	}
	return w
}

// cordonedWhy says why a pod the janitor cordoned, and does not take back,
// goes: for planOutput.Why, and its group for planOutput.Leaving.
func cordonedWhy(in planInput, m *member) (why, group string) {
	switch {
	case m.pod.Labels[LabelTemplateHash] != in.TemplateHash && !in.TemplateRefused:
		return goOutdated, goOutdated
	case recycleDue(in, m) != "":
		return goRecycle + ": " + recycleDue(in, m), goRecycle
	}
	return goSurplus, goSurplus
}

// recycleDue says why a registered pod is due for recycling
// (spec.recycle), or "" when it is not. Only active and cordoned pods of
// the current template are judged: expected pods never ran anything, and
// draining, lost and outdated ones go anyway. Nothing is recycled while the
// template is refused: no successor could be created.
//
// The age is the pod object's (creationTimestamp, the API server's clock)
// against the snapshot's time (Redis's): a skew between the two moves a
// recycle by as much, which for ages of hours does not matter. The task
// count is the store's (TasksStarted).
func recycleDue(in planInput, m *member) string {
	if in.TemplateRefused || m.pod.Labels[LabelTemplateHash] != in.TemplateHash ||
		(m.rec.State != slots.PodActive && m.rec.State != slots.PodCordoned) {
		return ""
	}
	if n := in.RecycleAfterTasks; n > 0 && m.rec.TasksStarted >= n {
		return fmt.Sprintf("started %d tasks (spec.recycle.afterTasks %d)", m.rec.TasksStarted, n)
	}
	if d := in.RecycleAfterAge; d > 0 {
		if age := in.Now.Sub(m.pod.CreationTimestamp.Time); age >= d {
			return fmt.Sprintf("%v old (spec.recycle.afterAge %v)", age.Round(time.Second), d)
		}
	}
	return ""
}

// startFailures carries the start-failure streak through the pass: it
// counts the pods in out.Dead that never started (once each), decides
// whether pods may be created, ends the streak when an agent registered
// after its last failure, and says whether the pool is Degraded.
//
// A failure is counted when its pod is deleted, so not during a data-loss
// hold, which deletes nothing. The streak is timed on the janitor's clock
// and ended by registration times on Redis's: a skew between the two
// only moves the end of a streak by as much, and pods of a template that
// starts register again and again.
func startFailures(in planInput, hold bool, out *planOutput) {
	prev := in.Streak
	next := startStreak{Failures: prev.Failures, Last: prev.Last, NextCreate: prev.NextCreate, Msg: prev.Msg,
		Counted: map[types.UID]bool{}}
	// Only pods still cached can show up in Dead again: the rest are
	// forgotten, so the set does not grow with every failure.
	for _, p := range in.Pods {
		if prev.Counted[p.UID] {
			next.Counted[p.UID] = true
		}
	}
	if !hold {
		for _, d := range out.Dead {
			if !d.NeverStarted || next.Counted[d.Pod.UID] {
				continue
			}
			next.Counted[d.Pod.UID] = true
			next.Failures++
			next.Last = in.Clock
			next.NextCreate = in.Clock.Add(min(time.Second<<min(next.Failures, 20), maxStartBackoff))
		}
	}
	out.Backoff = createBackoff{Wait: max(next.NextCreate.Sub(in.Clock), 0), Failures: next.Failures}
	// Decided before the streak may end below: a registration lifts the
	// backoff from the next pass on, within a sync interval.
	if next.Failures > 0 && slices.ContainsFunc(in.Records, func(r slots.PodSnapshot) bool {
		return !r.Registered.IsZero() && r.Registered.After(next.Last)
	}) {
		out.StreakEnded = next.Failures
		next.Failures, next.NextCreate, next.Msg = 0, time.Time{}, ""
	}
	switch {
	case len(out.StartFailures) > 0:
		next.Msg = out.StartFailures[0]
		out.Degraded = &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: "PodsCannotStart",
			Message: fmt.Sprintf("%d pods cannot start; %s", len(out.StartFailures), out.StartFailures[0])}
	case next.Failures > 0:
		// The failed pods are gone; the pool stays degraded until a pod of
		// the template registers.
		out.Degraded = &metav1.Condition{Type: v1alpha1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: "PodsCannotStart",
			Message: fmt.Sprintf("%d pods in a row ended before their agent registered (last: %s); replacements back off", next.Failures, next.Msg)}
	}
	out.Streak = next
}

// dataLossHold returns until when (Redis clock) nothing may be deleted or
// removed because Redis lost the pool's data, or the zero time.
//
// After a data loss the pool is declared again with a new generation, and
// the records of running pods are rebuilt as expected: their agents, which
// may still run work, register again (with that work) at their next
// heartbeat. Until they have, a busy pod looks like one whose agent never
// registered, which is drained without waiting for idleFor; and a record
// whose pod seems gone may be one the agents are re-creating. So for one
// heartbeat timeout nothing is drained, deleted or removed.
//
// The hold is derived from the store and the pods, never from the
// janitor's memory: a janitor that starts after the loss (a restart, a
// crash loop while Redis was down, a new leader) has nothing to remember,
// and declares the pool itself before its first snapshot. The evidence is a
// pod that predates the pool's current generation:
//
//   - Pods carry the generation they were created under (AnnotationGeneration,
//     read from the snapshot just before the create): another generation
//     means the pod existed before this one was declared. No clock is
//     involved, so a pod created the moment a pool is first declared never
//     causes a hold, and there is no skew to allow for.
//   - A pod without the annotation (created by an earlier janitor) counts
//     as predating. Its creationTimestamp cannot settle it: it is truncated
//     to the second and comes from the API server's clock, not Redis's, so a
//     pod created just before the declaration can look newer than it. Erring
//     costs little: a spurious hold only delays deletions, and it can only
//     happen within a heartbeat timeout of a declaration; a missed hold
//     deletes busy pods.
//   - Ended pods (Failed, Succeeded) are ignored: no agent runs there.
//     Terminating ones count: they prove the loss just as well.
//
// The hold lasts one heartbeat timeout from the declaration, and longer for
// a predating live pod whose agent has not registered again yet: its agent
// could only start registering once the record existed (the janitor may
// have crashed between declaring the pool and writing the records), so it
// gets a heartbeat timeout from its record's creation, or from now when the
// record is still missing (this pass writes it). That is bounded: records
// are created once, and a pod whose agent never comes back stops extending
// the hold a heartbeat timeout after its record was written.
func dataLossHold(in planInput, records map[string]*slots.PodSnapshot) time.Time {
	if in.Declared.IsZero() {
		return time.Time{}
	}
	var until time.Time
	extend := func(t time.Time) {
		if t.After(until) {
			until = t
		}
	}
	for _, p := range in.Pods {
		if ended(p) || !predates(p, in.Generation) {
			continue
		}
		extend(in.Declared.Add(in.HeartbeatTimeout))
		if p.DeletionTimestamp != nil {
			continue // its re-registration does not depend on others holding
		}
		switch r := records[p.Name]; {
		case r == nil || r.UID != string(p.UID):
			extend(in.Now.Add(in.HeartbeatTimeout))
		case r.State == slots.PodExpected:
			extend(r.Created.Add(in.HeartbeatTimeout))
		}
	}
	if !in.Now.Before(until) {
		return time.Time{}
	}
	return until
}

// predates reports whether a pod may have been created before the pool's
// current slot-store generation (see dataLossHold).
func predates(p *corev1.Pod, generation string) bool {
	return p.Annotations[AnnotationGeneration] != generation
}

// wait keeps the smallest positive wait in *w.
func wait(w *time.Duration, d time.Duration) {
	if *w == 0 || d < *w {
		*w = d
	}
}

// unconfirmedUntil says until when a pod with an expected record (or none)
// must not be taken for one whose agent never registered, or the zero time.
//
// "Never registered" lets a surplus or outdated pod go at once, without
// idleFor: nothing can run there. But an expected record is also what a
// registered agent's record looks like after a partial data loss: an
// asynchronous failover can lose the last writes, a registration among
// them, and put the record back to expected (same generation, so no
// data-loss hold). The agent notices at its next heartbeat and registers
// again with the work it runs; until then the pod looks never registered,
// and draining it (a drain accepts an expected record) would delete a busy
// pod.
//
// Nothing in one snapshot tells the two apart: an agent that is still
// registering, one that hangs before registering, and one whose
// registration was just lost all show a running container and an expected
// record, however old the record. Time does tell: a live agent whose
// registration was lost registers again within its heartbeat interval
// (under a third of the heartbeat timeout), so a record seen expected for a
// whole heartbeat timeout, while the agent's container ran for as long, is
// not a lost registration of a live agent. Hence the rule: a pod whose
// agent container is running is "unconfirmed" until a heartbeat timeout
// after the later of its container's start and the first of the janitor's
// unbroken run of snapshots showing the record expected (ExpectedSince).
//
//   - The agent not running (pending pod, container waiting or ended):
//     nothing runs there, no wait.
//   - It cannot block scale-down: a hung agent's pod goes a heartbeat
//     timeout after the janitor first saw it (an agent that cannot register
//     exits after its register timeout anyway, and its pod is then
//     replaced as ended).
//   - Memory only ever delays: a janitor that restarted has no ExpectedSince
//     and starts the run now. A run is broken by any snapshot showing the
//     record registered, so a registration and its loss between two of the
//     janitor's passes is the case left: only a registration coming more
//     than about a heartbeat timeout after its container started, lost
//     within one pass interval, could be drained before the agent is back.
//   - startedAt is the node's clock, the rest Redis's: skew moves the first
//     bound, the second (Redis's clock only) still holds.
func unconfirmedUntil(p *corev1.Pod, in planInput) time.Time {
	started := agentStartedAt(p)
	if started.IsZero() {
		return time.Time{}
	}
	since, ok := in.ExpectedSince[p.UID]
	if !ok {
		since = in.Now // seen expected for the first time by this pass
	}
	if started.After(since) {
		since = started
	}
	return since.Add(in.HeartbeatTimeout)
}

// agentStartedAt returns when the pod's agent container started running,
// or the zero time when it is not running.
func agentStartedAt(p *corev1.Pod) time.Time {
	name := AgentContainer
	if !slices.ContainsFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == AgentContainer }) && len(p.Spec.Containers) > 0 {
		name = p.Spec.Containers[0].Name // newPod's choice
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name && cs.State.Running != nil {
			if at := cs.State.Running.StartedAt.Time; !at.IsZero() {
				return at
			}
			return time.Unix(0, 0) // running since an unknown time: only ExpectedSince bounds it
		}
	}
	return time.Time{}
}

// observeExpected returns ExpectedSince for the next passes: for each live
// pod whose record is expected or missing, when a snapshot first showed it
// so (kept from prev while the run is unbroken, at otherwise). Pods with
// another state, and pods that are gone, are dropped.
func observeExpected(prev map[types.UID]time.Time, pods []*corev1.Pod, records []slots.PodSnapshot, at time.Time) map[types.UID]time.Time {
	byName := make(map[string]*slots.PodSnapshot, len(records))
	for i := range records {
		byName[records[i].Name] = &records[i]
	}
	next := map[types.UID]time.Time{}
	for _, p := range pods {
		if p.DeletionTimestamp != nil || ended(p) {
			continue
		}
		if r := byName[p.Name]; r != nil && r.UID == string(p.UID) && r.State != slots.PodExpected {
			continue
		}
		if since, ok := prev[p.UID]; ok {
			next[p.UID] = since
		} else {
			next[p.UID] = at
		}
	}
	return next
}

// member is a live pod and its record.
type member struct {
	pod *corev1.Pod
	rec *slots.PodSnapshot
	// unconfirmedFor: the record is expected but the pod's agent may have
	// registered (unconfirmedUntil); how long until that is settled.
	unconfirmedFor time.Duration
}

func (m *member) busySlots() int {
	n := 0
	for _, s := range m.rec.Slots {
		if s.State != slots.SlotIdle {
			n++
		}
	}
	return n
}

// victimOrder sorts pods by how cheap they are to remove: never registered
// (pending before running), then idle longest, then pods whose agent may
// have registered (unconfirmedUntil: maybe busy), then least busy; among
// equals the newest first, since the store bin-packs onto the oldest pods.
func victimOrder(ms []*member) {
	rank := func(m *member) int {
		switch {
		case m.unconfirmedFor > 0:
			return 3
		case m.rec.State == slots.PodExpected && m.pod.Status.Phase == corev1.PodPending:
			return 0
		case m.rec.State == slots.PodExpected:
			return 1
		case !m.rec.Busy():
			return 2
		}
		return 4
	}
	slices.SortStableFunc(ms, func(a, b *member) int {
		if c := cmp.Compare(rank(a), rank(b)); c != 0 {
			return c
		}
		if rank(a) == 2 {
			if c := a.rec.IdleSince().Compare(b.rec.IdleSince()); c != 0 {
				return c
			}
		}
		if rank(a) == 4 {
			if c := cmp.Compare(a.busySlots(), b.busySlots()); c != 0 {
				return c
			}
		}
		return b.pod.CreationTimestamp.Compare(a.pod.CreationTimestamp.Time)
	})
}

// foreign reports whether a pod labelled with the pool is not the
// AgentPool's own: no controller (its Deployment and ReplicaSet were
// deleted with --cascade=orphan, or an earlier AgentPool of the same name
// was) or another one. Such a pod is a static agent the pool takes over
// (docs/migration.md): its record is kept, as the object exists, and it is
// removed the idle-only way, never counted toward spec.replicas.
func foreign(p *corev1.Pod, pool types.UID) bool {
	ref := metav1.GetControllerOf(p)
	return ref == nil || ref.UID != pool
}

// poolPods keeps the pool's own pods and the foreign ones the store holds
// a record of (same name and UID): the pods a pass works on.
func poolPods(pods []*corev1.Pod, records []slots.PodSnapshot, pool types.UID) []*corev1.Pod {
	uids := make(map[string]string, len(records))
	for _, r := range records {
		uids[r.Name] = r.UID
	}
	return slices.DeleteFunc(slices.Clone(pods), func(p *corev1.Pod) bool {
		return foreign(p, pool) && uids[p.Name] != string(p.UID)
	})
}

// ended reports whether a pod's containers have all ended (restartPolicy
// Never): no agent runs there any more.
func ended(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
}

// busyMarks says whether a pod carries all the marks of a busy pod (the
// busy label and both do-not-evict annotations) and whether it carries some.
func busyMarks(p *corev1.Pod) (all, some bool) {
	marks := []bool{p.Labels[LabelBusy] == "true", p.Annotations[AnnotationSafeToEvict] == "false", p.Annotations[AnnotationDoNotDisrupt] == "true"}
	return !slices.Contains(marks, false), slices.Contains(marks, true)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitingFailure returns why a pod's container cannot start, or "".
func waitingFailure(p *corev1.Pod) string {
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && waitingFailures[w.Reason] {
			return cs.Name + " " + w.Reason + ": " + w.Message
		}
	}
	return ""
}

// podFailure describes why an ended pod ended.
func podFailure(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			return cs.Name + " exited " + t.Reason + " (" + strconv.Itoa(int(t.ExitCode)) + ")"
		}
	}
	if p.Status.Reason != "" {
		return p.Status.Reason + ": " + p.Status.Message
	}
	return "pod " + string(p.Status.Phase)
}
