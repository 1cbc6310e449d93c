package slots

// model_test.go: a pure Go model of the slot store's state machine, written
// from the README ("Pod lifecycle", "Task state machine"), lib.lua's data model and
// the script contracts, for FuzzStoreMatchesModel (fuzz_test.go). It keeps no
// counters and no idle sets: which slot is idle is derived from the pods, so
// the store's bookkeeping is checked, not copied.
//
// Epochs are opaque: the model numbers assignments itself (serials) and
// learns each serial's epoch string from what the store returns.
//
// The model follows the store's documented contracts (lib.lua and the script
// headers), including the changes made to them on purpose: results kept
// per epoch, a requested cancel winning over a finishing plan and over a lost
// pod, approve telling a lost reservation (rs) from none, losses handed to the
// loss policy in queue order, and the snapshot queue in dispatch order.

import (
	"fmt"
	"slices"
	"sort"
)

// podGone marks a record while its removal runs: not active, never idle.
const podGone PodState = "gone"

type modelConfig struct {
	slots            [][]TaskType // types each slot index may run
	managed          bool
	hbto, rttl, qage int64 // ms
	maxAtt, qlim     int
}

// modelEntry is one inbox or processing-list entry.
type modelEntry struct {
	kind   byte // 'a' assignment, 'c' cancel
	task   string
	serial int
}

type modelPod struct {
	name, uid    string
	st           PodState
	seq          int
	created, reg int64
	hb           int64 // heartbeat deadline, 0 when not watched
	lhb          int64 // time of the previous heartbeat
	tasks        int   // plan phases the pod started
	slots        []string
	inbox, proc  []modelEntry
}

type modelTask struct {
	id         string
	typ        TaskType
	st         TaskState
	phase      Phase
	pod        string
	slot       int
	serial     int // current (or last) assignment, 0 after a requeue
	serials    []int
	started    bool
	sat        int64 // when the current phase started
	attempt    int
	reason, by string
	qs         int
	qat        int64
	cx         bool // cancel requested (sticky, as in the store)
	cxBy       string
	rdl        int64
	rs         bool              // held a reservation that ended without a decision (or still holds it)
	aby        string            // who approved the apply
	aserial    int               // the apply's assignment when approved
	done       map[int]TaskState // completed serial -> its first outcome (the store's "r:<epoch>")
}

type storeModel struct {
	cfg modelConfig
	now int64

	podSeq, qSeq, serialSeq int
	pods                    map[string]*modelPod
	tasks                   map[string]*modelTask
	tomb                    map[string]bool

	reapRan         bool
	reapLast, grace int64

	epochs   map[int]string // serial -> epoch, once learned
	serialOf map[string]int
}

func newStoreModel(cfg modelConfig, now int64) *storeModel {
	return &storeModel{cfg: cfg, now: now, pods: map[string]*modelPod{},
		tasks: map[string]*modelTask{}, tomb: map[string]bool{}, epochs: map[int]string{}, serialOf: map[string]int{}}
}

// learn records the epoch the store gave an assignment; an epoch seen for
// another assignment, or a different epoch for a known one, is an error.
func (m *storeModel) learn(serial int, ep string) error {
	if serial == 0 {
		if ep != "" {
			return fmt.Errorf("store has epoch %q where the model has none", ep)
		}
		return nil
	}
	if known, ok := m.epochs[serial]; ok {
		if known != ep {
			return fmt.Errorf("assignment #%d: store epoch %q, learned %q before", serial, ep, known)
		}
		return nil
	}
	if ep == "" {
		return fmt.Errorf("assignment #%d has no epoch in the store", serial)
	}
	if other, ok := m.serialOf[ep]; ok {
		return fmt.Errorf("epoch %q reused: assignment #%d and #%d", ep, other, serial)
	}
	m.epochs[serial], m.serialOf[ep] = ep, serial
	return nil
}

func (m *storeModel) epoch(serial int) string {
	if serial == 0 {
		return ""
	}
	if ep, ok := m.epochs[serial]; ok {
		return ep
	}
	return fmt.Sprintf("?unlearned#%d", serial)
}

// --- slot classes and allocation -------------------------------------------

// rank orders slots for allocation: the most specific class (fewest task
// types) first, ties by the class's first slot (the store's class order).
func (m *storeModel) rank(slot int) int {
	set := func(i int) string { return fmt.Sprint(slices.Compact(slices.Sorted(slices.Values(m.cfg.slots[i])))) }
	first := 0
	for first < slot && set(first) != set(slot) {
		first++
	}
	return len(slices.Compact(slices.Sorted(slices.Values(m.cfg.slots[slot]))))*100 + first
}

func (m *storeModel) runs(slot int, t TaskType) bool { return slices.Contains(m.cfg.slots[slot], t) }

func (m *storeModel) hasSlotFor(t TaskType) bool {
	for i := range m.cfg.slots {
		if m.runs(i, t) {
			return true
		}
	}
	return false
}

// best is the idle slot a task of type t gets: most specific class, then the
// oldest pod, then the lowest slot index. Idle = empty slot of an active pod.
func (m *storeModel) best(t TaskType) (*modelPod, int) {
	var bp *modelPod
	bi := -1
	for _, p := range m.pods {
		if p.st != PodActive {
			continue
		}
		for i, s := range p.slots {
			if s != "" || !m.runs(i, t) {
				continue
			}
			if bp == nil || m.rank(i) < m.rank(bi) || (m.rank(i) == m.rank(bi) && (p.seq < bp.seq || (p.seq == bp.seq && i < bi))) {
				bp, bi = p, i
			}
		}
	}
	return bp, bi
}

// queued lists queued tasks in dispatch order (queue sequence).
func (m *storeModel) queued() []*modelTask {
	var out []*modelTask
	for _, t := range m.tasks {
		if t.st == StateQueued {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].qs < out[j].qs })
	return out
}

func (m *storeModel) assign(t *modelTask, phase Phase, p *modelPod, slot int) {
	m.serialSeq++
	t.st, t.phase, t.pod, t.slot, t.started = StateRunning, phase, p.name, slot, false
	t.serial = m.serialSeq
	t.serials = append(t.serials, t.serial)
	p.slots[slot] = t.id
	p.inbox = append(p.inbox, modelEntry{'a', t.id, t.serial})
}

func (m *storeModel) enqueue(t *modelTask) {
	t.st, t.pod, t.slot, t.serial, t.started, t.qat = StateQueued, "", -1, 0, false, m.now
}

// placeOrEnqueue runs a plan phase in the best idle slot, or queues the task
// in its original place (its queue sequence).
func (m *storeModel) placeOrEnqueue(t *modelTask) {
	if p, i := m.best(t.typ); p != nil {
		m.assign(t, PhasePlan, p, i)
		return
	}
	m.enqueue(t)
}

// dispatch is the at-rest invariant made true: while a queued task has an
// idle eligible slot, the oldest such task takes its best slot.
func (m *storeModel) dispatch() {
	for {
		moved := false
		for _, t := range m.queued() {
			if p, i := m.best(t.typ); p != nil {
				m.assign(t, PhasePlan, p, i)
				moved = true
				break
			}
		}
		if !moved {
			return
		}
	}
}

// fillIdle gives a newly active pod's idle slots queued work, the most
// specific slots first, each the oldest queued task it may run. It places
// the same tasks in the same slots as dispatch would (by the at-rest
// invariant only this pod has eligible idle slots); it fixes the order of
// the assignments, so of the inbox entries.
func (m *storeModel) fillIdle(p *modelPod) {
	idx := make([]int, len(p.slots))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return m.rank(a) - m.rank(b) })
	for _, i := range idx {
		if p.slots[i] != "" {
			continue
		}
		for _, t := range m.queued() {
			if m.runs(i, t.typ) {
				m.assign(t, PhasePlan, p, i)
				break
			}
		}
	}
}

// free empties a slot; an active pod's freed slot takes queued work.
func (m *storeModel) free(p *modelPod, slot int) {
	p.slots[slot] = ""
	if p.st == PodActive {
		m.dispatch()
	}
}

func (m *storeModel) finish(t *modelTask, st TaskState, reason, by string) {
	t.st, t.reason = st, reason
	if by != "" {
		t.by = by
	}
}

// lose applies the loss policy to the task in a slot whose pod died or was
// removed (requeueStarted: the pod object is gone, or the agent says it does
// not run the phase). The caller empties the slot afterwards. A reservation
// is lost (rs stays set: approve answers ErrReservationLost); a phase whose
// cancel was requested ends cancelled, whatever it was; an apply never runs
// twice.
func (m *storeModel) lose(t *modelTask, requeueStarted bool) {
	switch {
	case t.st == StateReserved:
		m.finish(t, StateFailed, ReasonReservationLost, "")
	case t.st != StateRunning:
	case t.cx:
		m.finish(t, StateCancelled, ReasonAgentLost, t.cxBy)
	case t.phase == PhaseApply:
		m.finish(t, StateFailed, ReasonAgentLost, "")
	case t.started && !requeueStarted:
		panic("model: started plan lost without a fence")
	case t.started && t.attempt >= m.cfg.maxAtt:
		m.finish(t, StateFailed, ReasonAgentLost, "")
	default:
		m.placeOrEnqueue(t)
	}
}

// loseAll hands several tasks of one pod to the loss policy, oldest in the
// queue (by queue sequence) first, whatever their slots.
func (m *storeModel) loseAll(ts []*modelTask, requeueStarted bool) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].qs < ts[j].qs })
	for _, t := range ts {
		m.lose(t, requeueStarted)
	}
}

// removePod deletes a record: tombstone, loss policy with the pod object gone.
func (m *storeModel) removePod(p *modelPod) {
	p.st = podGone
	var lost []*modelTask
	for i, s := range p.slots {
		if s == "" {
			continue
		}
		p.slots[i] = "~" // vacated, not idle
		if s != "!" {
			lost = append(lost, m.tasks[s])
		}
	}
	m.loseAll(lost, true)
	m.tomb[p.uid] = true
	delete(m.pods, p.name)
}

// markLost: a managed pod's heartbeat expired; unstarted phases go back,
// applies and reservations fail (an apply whose cancel was requested ends
// cancelled), started plans wait for the pod's removal. The losses go to the
// loss policy in queue order.
func (m *storeModel) markLost(p *modelPod) {
	p.st = PodLost
	p.hb = 0
	var lost []*modelTask
	for i, s := range p.slots {
		if s == "" || s == "!" {
			continue
		}
		t := m.tasks[s]
		if t.st == StateReserved || !t.started || t.phase == PhaseApply {
			p.slots[i] = ""
			lost = append(lost, t)
		}
	}
	m.loseAll(lost, false)
}

// --- tasks -----------------------------------------------------------------

type modelSubmit struct {
	created bool
	st      TaskState
	serial  int
	pod     string
	slot    int
}

func (m *storeModel) Submit(id string, typ TaskType) (modelSubmit, error) {
	if t := m.tasks[id]; t != nil {
		if t.typ != typ {
			return modelSubmit{}, ErrTaskConflict
		}
		return modelSubmit{false, t.st, t.serial, t.pod, t.slot}, nil
	}
	if !m.hasSlotFor(typ) {
		return modelSubmit{}, ErrNoSlotForType
	}
	if p, _ := m.best(typ); p == nil && len(m.queued()) >= m.cfg.qlim {
		return modelSubmit{}, ErrQueueFull
	}
	m.qSeq++
	t := &modelTask{id: id, typ: typ, slot: -1, qs: m.qSeq, done: map[int]TaskState{}}
	m.tasks[id] = t
	m.placeOrEnqueue(t)
	if t.st == StateRunning {
		return modelSubmit{true, StateRunning, t.serial, t.pod, t.slot}, nil
	}
	return modelSubmit{true, StateQueued, 0, "", -1}, nil
}

type modelMsg struct {
	kind    MessageKind
	task    string
	serial  int
	typ     TaskType
	phase   Phase
	slot    int
	attempt int
}

// Take pops the next inbox entry (an entry left in the processing list by a
// failed claim comes first) and claims an assignment.
func (m *storeModel) Take(pod string) (*modelMsg, error) {
	p := m.pods[pod]
	if p == nil {
		return nil, fmt.Errorf("model: take on pod %s without record", pod)
	}
	var e modelEntry
	switch {
	case len(p.proc) > 0:
		e = p.proc[0]
	case len(p.inbox) > 0:
		e, p.inbox = p.inbox[0], p.inbox[1:]
		p.proc = append(p.proc, e)
	default:
		return nil, nil
	}
	if e.kind == 'c' {
		p.proc = removeEntry(p.proc, e)
		return &modelMsg{kind: MsgCancel, task: e.task, serial: e.serial}, nil
	}
	if p.st == PodLost {
		return nil, ErrPodLost
	}
	p.proc = removeEntry(p.proc, e)
	t := m.tasks[e.task]
	if t == nil || t.st != StateRunning || t.serial != e.serial || t.started || t.pod != pod {
		return nil, nil
	}
	t.attempt++
	t.started, t.sat = true, m.now
	if t.phase == PhasePlan {
		p.tasks++
	}
	return &modelMsg{kind: MsgAssignment, task: t.id, serial: t.serial, typ: t.typ, phase: t.phase, slot: t.slot, attempt: t.attempt}, nil
}

func removeEntry(list []modelEntry, e modelEntry) []modelEntry {
	if i := slices.Index(list, e); i >= 0 {
		return slices.Delete(slices.Clone(list), i, i+1)
	}
	return list
}

func (m *storeModel) Complete(id, ep string, outcome Outcome, reason string) (TaskState, error) {
	t := m.tasks[id]
	if t == nil {
		return "", ErrTaskNotFound
	}
	// A repeat with any epoch this task completed returns that epoch's
	// first outcome.
	if serial, ok := m.serialOf[ep]; ok {
		if st, ok := t.done[serial]; ok {
			return st, nil
		}
	}
	if t.st != StateRunning || ep != m.epoch(t.serial) {
		return "", ErrStaleEpoch
	}
	if !t.started {
		return "", ErrNotStarted
	}
	st, by := StateSucceeded, ""
	planOfPA := t.typ == PlanAndApply && t.phase == PhasePlan
	switch {
	case outcome == OutcomeSuccess && planOfPA && t.cx:
		// A cancel requested while the plan ran wins: no apply nobody
		// wants holds slot 0.
		st, by, reason = StateCancelled, t.cxBy, ""
	case outcome == OutcomeSuccess && planOfPA && m.pods[t.pod].st == PodLost:
		// The apply could not run where the plan's files are: the
		// reservation is lost as soon as it would begin, and approve
		// answers ErrReservationLost.
		st, reason = StateFailed, ReasonReservationLost
		t.rs = true
	case outcome == OutcomeSuccess && planOfPA:
		t.st, t.rdl, t.rs = StateReserved, m.now+m.cfg.rttl, true
		t.done[t.serial] = StateReserved
		return StateReserved, nil
	case outcome == OutcomeFailure:
		st = StateFailed
		if reason == "" {
			reason = ReasonExitCode
		}
	case outcome == OutcomeTimeout:
		st, reason = StateFailed, ReasonTimeout
	case outcome == OutcomeCancelled:
		st, by = StateCancelled, t.cxBy
	default:
		reason = ""
	}
	t.done[t.serial] = st
	m.finish(t, st, reason, by)
	m.free(m.pods[t.pod], t.slot)
	return st, nil
}

// notReserved is the error for approve/reject of a task that is not
// reserved: ErrReservationLost only if it held a reservation that ended
// without a decision (expiry, pod loss, release), else ErrNotReserved.
func (m *storeModel) notReserved(t *modelTask) error {
	if t.rs {
		return ErrReservationLost
	}
	return ErrNotReserved
}

func (m *storeModel) Approve(id, by string) (int, error) {
	t := m.tasks[id]
	if t == nil {
		return 0, ErrTaskNotFound
	}
	if t.st != StateReserved {
		if t.aby == by && t.aserial != 0 {
			return t.aserial, nil // the same approver again: the first answer
		}
		return 0, m.notReserved(t)
	}
	p := m.pods[t.pod]
	m.serialSeq++
	t.st, t.phase, t.started, t.attempt, t.by, t.rdl, t.rs = StateRunning, PhaseApply, false, 0, by, 0, false
	t.serial = m.serialSeq
	t.serials = append(t.serials, t.serial)
	t.aby, t.aserial = by, t.serial
	p.inbox = append(p.inbox, modelEntry{'a', t.id, t.serial})
	return t.serial, nil
}

// EndReservation is Reject (release false) or ReleaseReservation.
func (m *storeModel) EndReservation(id, by string, release bool, reason string) error {
	t := m.tasks[id]
	if t == nil {
		return ErrTaskNotFound
	}
	if t.st != StateReserved {
		if !release && t.st == StateRejected && t.by == by {
			return nil // the same rejection again
		}
		return m.notReserved(t)
	}
	if release {
		m.finish(t, StateFailed, reason, by) // rs stays: the reservation was lost, not decided
	} else {
		t.rs = false
		m.finish(t, StateRejected, "", by)
	}
	m.free(m.pods[t.pod], t.slot)
	return nil
}

func (m *storeModel) Cancel(id, by string) (TaskState, error) {
	t := m.tasks[id]
	if t == nil {
		return "", ErrTaskNotFound
	}
	switch {
	case t.st == StateQueued:
		m.finish(t, StateCancelled, "", by)
		return StateCancelled, nil
	case t.st == StateReserved || (t.st == StateRunning && !t.started):
		t.rs = false // a decision, not a loss
		m.finish(t, StateCancelled, "", by)
		m.free(m.pods[t.pod], t.slot)
		return StateCancelled, nil
	case t.st == StateRunning:
		if !t.cx {
			t.cx, t.cxBy = true, by
			p := m.pods[t.pod]
			p.inbox = append(p.inbox, modelEntry{'c', t.id, t.serial})
		}
		return StateRunning, nil
	case t.st == StateCancelled && t.by == by:
		return StateCancelled, nil // the same cancel again
	}
	return "", ErrTaskFinished
}

// --- pods ------------------------------------------------------------------

func (m *storeModel) newRecord(pod, uid string) *modelPod {
	m.podSeq++
	p := &modelPod{name: pod, uid: uid, st: PodExpected, seq: m.podSeq, created: m.now, slots: make([]string, len(m.cfg.slots))}
	m.pods[pod] = p
	return p
}

func (m *storeModel) ExpectPod(pod, uid string) error {
	if m.tomb[uid] {
		return ErrTombstoned
	}
	if p := m.pods[pod]; p != nil {
		if p.uid == uid {
			return nil
		}
		return ErrPodConflict
	}
	m.newRecord(pod, uid)
	return nil
}

func (m *storeModel) RegisterPod(pod, uid string, orphans []int) (PodState, error) {
	if m.tomb[uid] {
		return "", ErrTombstoned
	}
	p := m.pods[pod]
	switch {
	case p == nil && m.cfg.managed:
		return "", ErrNotExpected
	case p == nil:
		p = m.newRecord(pod, uid)
	case p.uid != uid:
		return "", ErrPodConflict
	case p.st == PodActive || p.st == PodCordoned:
		p.hb = m.now + m.cfg.hbto
		return p.st, nil
	case p.st != PodExpected:
		return "", ErrPodState
	}
	p.st, p.reg, p.hb = PodActive, m.now, m.now+m.cfg.hbto
	for _, i := range orphans {
		p.slots[i] = "!"
	}
	m.fillIdle(p)
	return PodActive, nil
}

type modelReport struct {
	slot int
	task string
	ep   string
}

// Heartbeat returns the pod's state and the "<task>|<epoch>" to stop, sorted.
func (m *storeModel) Heartbeat(pod, uid string, reports []modelReport) (PodState, []string, error) {
	p := m.pods[pod]
	if p == nil || p.uid != uid {
		switch {
		case m.tomb[uid]:
			return "", nil, ErrTombstoned
		case p == nil:
			return "", nil, ErrPodNotFound
		}
		return "", nil, ErrPodConflict
	}
	switch p.st {
	case PodLost:
		return "", nil, ErrPodLost
	case PodExpected:
		return "", nil, ErrPodState
	}
	prev := p.lhb
	p.hb, p.lhb = m.now+m.cfg.hbto, m.now
	reported, onSlot := map[string]string{}, map[string]int{}
	for _, r := range reports {
		reported[r.task], onSlot[r.task] = r.ep, r.slot
	}
	start := slices.Clone(p.slots)
	ours := map[string]bool{}
	var stop []string
	var lost []*modelTask
	var vacated []int
	for i, s := range start {
		switch s {
		case "":
		case "!":
			still := false
			for _, slot := range onSlot {
				still = still || slot == i
			}
			if !still {
				m.free(p, i)
			}
		default:
			t := m.tasks[s]
			if t.st != StateRunning {
				continue
			}
			if ep, ok := reported[s]; ok && ep == m.epoch(t.serial) {
				ours[s] = true
				if t.cx {
					stop = append(stop, s+"|"+ep)
				}
			} else if t.started && t.sat < prev {
				p.slots[i] = "~"
				lost = append(lost, t)
				vacated = append(vacated, i)
			}
		}
	}
	m.loseAll(lost, true)
	for _, i := range vacated {
		m.free(p, i)
	}
	for id, ep := range reported {
		if slot := onSlot[id]; !ours[id] && !(slot >= 0 && slot < len(start) && start[slot] == "!") {
			stop = append(stop, id+"|"+ep)
		}
	}
	sort.Strings(stop)
	return p.st, stop, nil
}

func (m *storeModel) podOp(pod, uid string) (*modelPod, error) {
	p := m.pods[pod]
	if p == nil {
		return nil, ErrPodNotFound
	}
	if uid != "" && p.uid != uid {
		return nil, ErrPodConflict
	}
	return p, nil
}

func (m *storeModel) Cordon(pod, uid string) error {
	p, err := m.podOp(pod, uid)
	switch {
	case err != nil:
		return err
	case p.st == PodCordoned:
		return nil
	case p.st != PodActive:
		return ErrPodState
	}
	p.st = PodCordoned
	return nil
}

func (m *storeModel) Uncordon(pod, uid string) error {
	p, err := m.podOp(pod, uid)
	switch {
	case err != nil:
		return err
	case p.st == PodActive:
		return nil
	case p.st != PodCordoned:
		return ErrPodState
	}
	p.st = PodActive
	m.fillIdle(p)
	return nil
}

func (m *storeModel) Drain(pod, uid string) error {
	p, err := m.podOp(pod, uid)
	switch {
	case err != nil:
		return err
	case p.st == PodDraining:
		return nil
	case p.st != PodExpected && p.st != PodActive && p.st != PodCordoned:
		return ErrPodState
	case slices.ContainsFunc(p.slots, func(s string) bool { return s != "" }):
		return ErrPodBusy
	}
	p.st = PodDraining
	return nil
}

func (m *storeModel) Remove(pod, uid string) error {
	p := m.pods[pod]
	if p == nil || (uid != "" && p.uid != uid) {
		switch {
		case uid != "" && m.tomb[uid]:
			return nil
		case p == nil:
			return ErrPodNotFound
		}
		return ErrPodConflict
	}
	m.removePod(p)
	return nil
}

func (m *storeModel) HandBack(pod, uid string) ([]string, error) {
	p := m.pods[pod]
	if p == nil {
		return nil, ErrPodNotFound
	}
	if p.uid != uid {
		return nil, ErrPodConflict
	}
	var out []string
	var back []*modelTask
	var vacated []int
	for i, s := range slices.Clone(p.slots) {
		if s == "" || s == "!" {
			continue
		}
		if t := m.tasks[s]; t.st == StateRunning && !t.started && t.phase == PhasePlan {
			p.slots[i] = "~"
			back = append(back, t)
			vacated = append(vacated, i)
		}
	}
	m.loseAll(back, false)
	for _, t := range back {
		out = append(out, t.id)
	}
	for _, i := range vacated {
		m.free(p, i)
	}
	return out, nil
}

// Reap expires heartbeats, then reservations, then queued tasks, unless the
// reaper itself was away longer than maxGap: then nothing expires for one
// heartbeat timeout. Retention is long enough never to apply here.
func (m *storeModel) Reap(maxGap int64) ReapResult {
	if m.reapRan && m.now-m.reapLast > maxGap {
		m.grace = m.now + m.cfg.hbto
	}
	m.reapRan, m.reapLast = true, m.now
	var r ReapResult
	r.Grace = m.now < m.grace
	if r.Grace {
		return r
	}
	var expired []*modelPod
	for _, p := range m.pods {
		if p.hb != 0 && p.hb <= m.now {
			expired = append(expired, p)
		}
	}
	sort.Slice(expired, func(i, j int) bool {
		a, b := expired[i], expired[j]
		return a.hb < b.hb || (a.hb == b.hb && a.name < b.name)
	})
	for _, p := range expired {
		if m.cfg.managed {
			m.markLost(p)
		} else {
			m.removePod(p)
		}
		r.Heartbeats++
	}
	var resv []*modelTask
	for _, t := range m.tasks {
		if t.st == StateReserved && t.rdl <= m.now {
			resv = append(resv, t)
		}
	}
	sort.Slice(resv, func(i, j int) bool {
		a, b := resv[i], resv[j]
		return a.rdl < b.rdl || (a.rdl == b.rdl && a.id < b.id)
	})
	for _, t := range resv {
		m.finish(t, StateExpired, ReasonReservationTTL, "")
		m.free(m.pods[t.pod], t.slot)
		r.Reservations++
	}
	if m.cfg.qage > 0 {
		for _, t := range m.queued() {
			if t.qat <= m.now-m.cfg.qage {
				m.finish(t, StateExpired, ReasonQueueAge, "")
				r.Queued++
			}
		}
	}
	return r
}

// sortedPods lists records in age order, as Snapshot does.
func (m *storeModel) sortedPods() []*modelPod {
	var out []*modelPod
	for _, p := range m.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}
