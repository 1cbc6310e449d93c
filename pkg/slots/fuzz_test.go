package slots

// FuzzStoreMatchesModel runs a sequence of operations decoded from the fuzz
// input against the real Store on miniredis and against storeModel
// (model_test.go), and after every operation compares the error class, the
// returned values, every task, every pod and slot (Snapshot), the queues,
// the inboxes, and that Reconcile finds nothing to repair.
//
// Input: byte 0 picks the pool (bit 0: the 2-slot policy where both slots
// run everything, else the default 3-slot one; bit 1: managed), then three
// bytes per operation (kind, a, b): a names the pod or task (with its high
// bit set: one the operation can act on, e.g. a started task for complete),
// b the variant (outcome, epoch, uid, heartbeat report...). Time stands still
// except in "advance", which moves miniredis's clock (SetTime drives Redis
// TIME, also inside scripts) and runs Reap.
//
// Fuzz it with
//
//	go test -run '^$' -fuzz FuzzStoreMatchesModel -fuzztime 60s -fuzzminimizetime 20x ./pkg/slots/
//
// Each input runs ~25 ms, and Go spends up to -fuzzminimizetime (60s by
// default) minimizing every input that adds coverage; -fuzzminimizetime 20x
// leaves more of a short run to exploring.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	fuzzPods   = 3
	fuzzTasks  = 8
	fuzzMaxOps = 40
	fuzzMaxGap = 20 * time.Second
)

var fuzzBase = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

type fuzzKind int

const (
	kSubmit fuzzKind = iota
	kTake
	kComplete
	kApprove
	kReject
	kCancel
	kExpect
	kRegister
	kHeartbeat
	kCordon
	kUncordon
	kDrain
	kRemove
	kHandBack
	kAdvance
)

// fuzzKinds maps an operation byte (mod its length) to a kind; frequent
// operations appear more than once.
var fuzzKinds = []fuzzKind{
	kSubmit, kSubmit, kSubmit, kTake, kTake, kTake, kTake, kComplete, kComplete, kComplete, kComplete,
	kApprove, kApprove, kReject, kCancel, kExpect, kExpect, kRegister, kRegister, kHeartbeat, kHeartbeat,
	kHeartbeat, kCordon, kUncordon, kDrain, kRemove, kHandBack, kAdvance, kAdvance, kAdvance,
}

var fuzzOutcomes = []Outcome{OutcomeSuccess, OutcomeFailure, OutcomeTimeout, OutcomeCancelled}

var fuzzSentinels = []error{
	ErrInvalidPool, ErrInvalidPod, ErrInvalidTask, ErrInvalidConfig, ErrPayloadTooLarge, ErrNoSlotForType,
	ErrPoolNotFound, ErrPolicyChange, ErrPodNotFound, ErrPodConflict, ErrTombstoned, ErrNotExpected,
	ErrPodLost, ErrPodState, ErrPodBusy, ErrTaskNotFound, ErrTaskConflict, ErrQueueFull, ErrStaleEpoch,
	ErrNotReserved, ErrReservationLost, ErrTaskFinished, ErrNotStarted, ErrIncompatible,
}

func errClass(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range fuzzSentinels {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "unexpected error: " + err.Error()
}

func fuzzPod(a byte) string  { return "p" + strconv.Itoa(int(a)%fuzzPods) }
func fuzzTask(a byte) string { return "t" + strconv.Itoa(int(a)%fuzzTasks) }

func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

type fuzzHarness struct {
	t     *testing.T
	e     *env
	m     *storeModel
	nslot int
	uids  map[string][]string // every uid used per pod name, oldest first
	nuid  int
	log   []string
	bad   []string
	errs  []string // error classes the store answered in this step
}

func FuzzStoreMatchesModel(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	// One miniredis and Store per process, flushed for every input: starting
	// them (and loading every script) would cost more than the input.
	e := newEnv(f, "miniredis")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		h := newFuzzHarness(t, e, data[0])
		ops := data[1:]
		for i := 0; i+2 < len(ops) && i/3 < fuzzMaxOps; i += 3 {
			h.step(fuzzKinds[int(ops[i])%len(fuzzKinds)], ops[i+1], ops[i+2])
		}
	})
}

func newFuzzHarness(t *testing.T, e *env, cfgByte byte) *fuzzHarness {
	policy := DefaultPolicy()
	if cfgByte&1 != 0 {
		// Both slots run everything; the second lists the types in another
		// order (still one class).
		policy = SlotPolicy{Slots: [][]TaskType{{Plan, PlanAndApply}, {PlanAndApply, Plan}}}
	}
	managed := cfgByte&2 != 0
	cfg := DefaultPoolConfig()
	cfg.Policy = policy
	cfg.Managed = managed
	cfg.HeartbeatTimeout = 10 * time.Second
	cfg.ReservationTTL = 20 * time.Second
	cfg.MaxQueueAge = 30 * time.Second
	cfg.MaxAttempts = 2
	cfg.QueueLimit = 4
	e.mini.FlushAll()
	e.mini.SetTime(fuzzBase)
	if _, err := e.s.DeclarePool(e.ctx, e.pool, cfg); err != nil {
		t.Fatal(err)
	}
	snap, err := e.s.Snapshot(e.ctx, e.pool)
	if err != nil {
		t.Fatal(err)
	}
	if snap.At.UnixMilli() != fuzzBase.UnixMilli() {
		t.Fatalf("miniredis SetTime does not drive TIME inside scripts: snapshot at %v, clock set to %v", snap.At, fuzzBase)
	}
	m := newStoreModel(modelConfig{slots: policy.Slots, managed: managed, hbto: 10000, rttl: 20000, qage: 30000,
		maxAtt: 2, qlim: 4}, fuzzBase.UnixMilli())
	h := &fuzzHarness{t: t, e: e, m: m, nslot: len(policy.Slots), uids: map[string][]string{}}
	h.log = append(h.log, fmt.Sprintf("pool: %d slots, managed=%v", h.nslot, managed))
	return h
}

func (h *fuzzHarness) checkf(ok bool, format string, args ...any) {
	if !ok {
		h.bad = append(h.bad, fmt.Sprintf(format, args...))
	}
}

func (h *fuzzHarness) sameErr(got, want error) bool {
	g, w := errClass(got), errClass(want)
	h.checkf(g == w, "error: store %q (%v), model %q", g, got, w)
	if got != nil {
		h.errs = append(h.errs, g)
	}
	return g == w && got == nil
}

func (h *fuzzHarness) learn(serial int, ep string) {
	if err := h.m.learn(serial, ep); err != nil {
		h.bad = append(h.bad, err.Error())
	}
}

// --- uids ---------------------------------------------------------------

func (h *fuzzHarness) newUID(pod string) string {
	h.nuid++
	u := fmt.Sprintf("%s-u%d", pod, h.nuid)
	h.uids[pod] = append(h.uids[pod], u)
	return u
}

func (h *fuzzHarness) curUID(pod string) string {
	if p := h.m.pods[pod]; p != nil {
		return p.uid
	}
	return ""
}

func (h *fuzzHarness) oldUID(pod string) string {
	us := h.uids[pod]
	for i := len(us) - 1; i >= 0; i-- {
		if us[i] != h.curUID(pod) {
			return us[i]
		}
	}
	return ""
}

// uid (mode%8): 0-5 the record's (a new one when none), 6 an earlier one,
// 7 a new one.
func (h *fuzzHarness) uid(pod string, mode byte) string {
	switch {
	case mode%8 < 6:
		if u := h.curUID(pod); u != "" {
			return u
		}
	case mode%8 == 6:
		if u := h.oldUID(pod); u != "" {
			return u
		}
	}
	return h.newUID(pod)
}

// uidArg for cordon/uncordon/drain/remove (mode%8): 0-2 "", 3-6 the
// record's, 7 an earlier one.
func (h *fuzzHarness) uidArg(pod string, mode byte) string {
	switch {
	case mode%8 < 3:
		return ""
	case mode%8 < 7:
		return h.curUID(pod)
	}
	return h.oldUID(pod)
}

// --- operations -----------------------------------------------------------

func (h *fuzzHarness) step(k fuzzKind, a, b byte) {
	s, ctx, pool, m := h.e.s, h.e.ctx, h.e.pool, h.m
	var desc string
	switch k {
	case kSubmit:
		id, typ := fuzzTask(a), []TaskType{Plan, PlanAndApply}[b&1]
		desc = fmt.Sprintf("submit %s %s", id, typ)
		got, err := s.Submit(ctx, pool, TaskSpec{ID: id, Type: typ, Payload: []byte("payload-" + id)})
		want, werr := m.Submit(id, typ)
		if h.sameErr(err, werr) {
			h.checkf(got.Created == want.created && got.State == want.st && got.Pod == want.pod && got.Slot == want.slot,
				"submit: store %+v, model %+v", got, want)
			h.learn(want.serial, got.Epoch)
		}

	case kTake:
		pod := h.pickPod(a, func(p *modelPod) bool { return len(p.inbox)+len(p.proc) > 0 })
		p := m.pods[pod]
		if p == nil || len(p.inbox)+len(p.proc) == 0 {
			desc = "take " + pod + " (inbox empty: peek only)"
			break
		}
		desc = "take " + pod
		got, err := s.Take(ctx, pool, pod, p.uid, time.Second, nil)
		want, werr := m.Take(pod)
		if !h.sameErr(err, werr) {
			break
		}
		if got == nil || want == nil {
			h.checkf(got == nil && want == nil, "take: store %+v, model %+v", got, want)
			break
		}
		desc += fmt.Sprintf(" -> %s %s", map[MessageKind]string{MsgAssignment: "assignment", MsgCancel: "cancel"}[want.kind], want.task)
		h.checkf(got.Kind == want.kind && got.Task == want.task, "take: store %+v, model %+v", got, want)
		h.learn(want.serial, got.Epoch)
		if want.kind == MsgAssignment && got.Assignment != nil {
			a := got.Assignment
			h.checkf(a.Task == want.task && a.Epoch == got.Epoch && a.Type == want.typ && a.Phase == want.phase &&
				a.Slot == want.slot && a.Attempt == want.attempt && string(a.Payload) == "payload-"+want.task,
				"take: store assignment %+v, model %+v", *a, want)
		}

	case kComplete:
		id := h.pickTask(a, func(t *modelTask) bool { return t.st == StateRunning && t.started })
		outcome, mode := fuzzOutcomes[b%4], (b>>2)%4
		reason := ""
		if b&0x40 != 0 {
			reason = "boom"
		}
		ep, which := "ffffffffffff-999999", "bogus"
		if t := m.tasks[id]; t != nil && len(t.serials) > 0 {
			cur := t.serial
			if cur == 0 {
				cur = t.serials[len(t.serials)-1]
			}
			switch mode {
			case 0, 1:
				ep, which = m.epoch(cur), "current"
			case 2:
				if old := slices.DeleteFunc(slices.Clone(t.serials), func(x int) bool { return x == cur }); len(old) > 0 {
					ep, which = m.epoch(old[int(b>>4)%len(old)]), "earlier"
				}
			}
		}
		desc = fmt.Sprintf("complete %s %s (%s epoch) reason %q", id, outcome, which, reason)
		got, err := s.Complete(ctx, pool, Result{Task: id, Epoch: ep, Outcome: outcome, Reason: reason, Output: []byte("out")})
		want, werr := m.Complete(id, ep, outcome, reason)
		if h.sameErr(err, werr) {
			h.checkf(got == want, "complete: store %s, model %s", got, want)
		}

	case kApprove:
		id := h.pickTask(a, func(t *modelTask) bool { return t.st == StateReserved })
		desc = "approve " + id
		got, err := s.Approve(ctx, pool, id, "alice")
		want, werr := m.Approve(id, "alice")
		if h.sameErr(err, werr) {
			h.learn(want, got)
		}

	case kReject:
		id := h.pickTask(a, func(t *modelTask) bool { return t.st == StateReserved })
		var err error
		if b&1 == 0 {
			desc = "reject " + id
			err = s.Reject(ctx, pool, id, "bob")
		} else {
			desc = "release reservation " + id
			err = s.ReleaseReservation(ctx, pool, id, "agent-shutdown")
		}
		werr := m.EndReservation(id, map[bool]string{false: "bob", true: "agent"}[b&1 != 0], b&1 != 0, "agent-shutdown")
		h.sameErr(err, werr)

	case kCancel:
		id := h.pickTask(a, func(t *modelTask) bool { return !t.st.Terminal() })
		desc = "cancel " + id
		got, err := s.Cancel(ctx, pool, id, "carol")
		want, werr := m.Cancel(id, "carol")
		if h.sameErr(err, werr) {
			h.checkf(got == want, "cancel: store %s, model %s", got, want)
		}

	case kExpect:
		pod := fuzzPod(a)
		uid := h.uid(pod, b)
		desc = fmt.Sprintf("expect %s %s", pod, uid)
		h.sameErr(s.ExpectPod(ctx, pool, pod, uid), m.ExpectPod(pod, uid))

	case kRegister:
		pod := fuzzPod(a)
		uid := h.uid(pod, b&3|b>>5<<2)
		var orphans []int
		for i := 0; i < h.nslot; i++ {
			if b>>(2+i)&1 != 0 {
				orphans = append(orphans, i)
			}
		}
		desc = fmt.Sprintf("register %s %s orphans %v", pod, uid, orphans)
		if b&0x80 != 0 && m.cfg.managed && m.pods[pod] == nil {
			desc = "expect and " + desc
			if !h.sameErr(s.ExpectPod(ctx, pool, pod, uid), m.ExpectPod(pod, uid)) {
				break
			}
		}
		got, err := s.RegisterPod(ctx, pool, pod, uid, orphans...)
		want, werr := m.RegisterPod(pod, uid, orphans)
		if h.sameErr(err, werr) {
			h.checkf(got == want, "register: store %s, model %s", got, want)
		}

	case kHeartbeat:
		pod := h.pickPod(a, func(p *modelPod) bool { return true })
		uid := h.uid(pod, b>>5)
		reps, how := h.reports(pod, b)
		desc = fmt.Sprintf("heartbeat %s %s %s %v", pod, uid, how, reps)
		var running []RunningPhase
		for _, r := range reps {
			running = append(running, RunningPhase{Slot: r.slot, Task: r.task, Epoch: r.ep})
		}
		got, err := s.Heartbeat(ctx, pool, pod, uid, running)
		st, stop, werr := m.Heartbeat(pod, uid, reps)
		if h.sameErr(err, werr) {
			var gotStop []string
			for _, r := range got.Stop {
				gotStop = append(gotStop, r.Task+"|"+r.Epoch)
			}
			slices.Sort(gotStop)
			if len(stop) > 0 {
				desc += fmt.Sprintf(" -> stop %v", stop)
			}
			h.checkf(got.State == st && slices.Equal(gotStop, stop), "heartbeat: store %s stop %v, model %s stop %v", got.State, gotStop, st, stop)
		}

	case kCordon, kUncordon, kDrain, kRemove:
		pod := h.pickPod(a, func(p *modelPod) bool { return true })
		uid := h.uidArg(pod, b)
		desc = fmt.Sprintf("%s %s uid %q", map[fuzzKind]string{kCordon: "cordon", kUncordon: "uncordon", kDrain: "drain", kRemove: "remove"}[k], pod, uid)
		var err, werr error
		switch k {
		case kCordon:
			err, werr = s.Cordon(ctx, pool, pod, uid), m.Cordon(pod, uid)
		case kUncordon:
			err, werr = s.Uncordon(ctx, pool, pod, uid), m.Uncordon(pod, uid)
		case kDrain:
			err, werr = s.Drain(ctx, pool, pod, uid), m.Drain(pod, uid)
		case kRemove:
			err, werr = s.RemovePod(ctx, pool, pod, uid, "deleted"), m.Remove(pod, uid)
		}
		h.sameErr(err, werr)

	case kHandBack:
		pod := h.pickPod(a, func(p *modelPod) bool { return true })
		uid := h.uid(pod, b)
		desc = fmt.Sprintf("handback %s %s", pod, uid)
		got, err := s.HandBack(ctx, pool, pod, uid)
		want, werr := m.HandBack(pod, uid)
		if h.sameErr(err, werr) {
			h.checkf(slices.Equal(got, want), "handback: store %v, model %v", got, want)
		}

	case kAdvance:
		secs := 1 + int64(a)%24 // mostly short steps: pods outlive a few of them
		if a&0x80 != 0 {
			secs = 1 + int64(a)%4
		}
		m.now += secs * 1000
		h.e.mini.SetTime(time.UnixMilli(m.now).UTC())
		desc = fmt.Sprintf("advance %ds and reap", secs)
		got, err := s.Reap(ctx, pool, ReapOptions{MaxGap: fuzzMaxGap})
		want := m.Reap(fuzzMaxGap.Milliseconds())
		if h.sameErr(err, nil) {
			desc += fmt.Sprintf(" -> %+v", want)
			h.checkf(got == want, "reap: store %+v, model %+v", got, want)
		}
	}
	if len(h.errs) > 0 {
		desc += " -> " + strings.Join(h.errs, ", ")
		h.errs = nil
	}
	h.log = append(h.log, fmt.Sprintf("%-3d %s", len(h.log), desc))
	if len(h.bad) == 0 {
		h.compareState()
	}
	if len(h.bad) > 0 {
		h.t.Fatalf("store and model differ after step %d:\n  %s\noperations:\n  %s\nmodel:\n%s",
			len(h.log)-1, strings.Join(h.bad, "\n  "), strings.Join(h.log, "\n  "), h.dumpModel())
	}
}

// pickTask: with the high bit of a, one of the tasks that match (if any);
// else task a.
func (h *fuzzHarness) pickTask(a byte, match func(*modelTask) bool) string {
	if a&0x80 != 0 {
		var ids []string
		for i := 0; i < fuzzTasks; i++ {
			if t := h.m.tasks[fuzzTask(byte(i))]; t != nil && match(t) {
				ids = append(ids, t.id)
			}
		}
		if len(ids) > 0 {
			return ids[int(a&0x7f)%len(ids)]
		}
	}
	return fuzzTask(a)
}

// pickPod: with the high bit of a, the first pod from a on whose record
// matches (if any); else pod a.
func (h *fuzzHarness) pickPod(a byte, match func(*modelPod) bool) string {
	if a&0x80 != 0 {
		for i := 0; i < fuzzPods; i++ {
			if p := h.m.pods[fuzzPod(a+byte(i))]; p != nil && match(p) {
				return p.name
			}
		}
	}
	return fuzzPod(a)
}

// reports builds what a pod's agent tells a heartbeat. Mode (b%4): 0 what the
// model says it runs (started phases, and orphan slots); 1 leave out one
// started phase; 2 nothing; 3 one started phase with a wrong epoch, a ghost,
// and an assignment it is claiming (slot -1).
func (h *fuzzHarness) reports(pod string, b byte) ([]modelReport, string) {
	p := h.m.pods[pod]
	var reps []modelReport
	var started []int // indexes into reps
	var claiming *modelReport
	if p != nil {
		for i, s := range p.slots {
			switch {
			case s == "!":
				reps = append(reps, modelReport{slot: i, task: fmt.Sprintf("orphan-%s-%d", pod, i), ep: "0"})
			case s != "":
				t := h.m.tasks[s]
				if t.st == StateRunning && t.started {
					started = append(started, len(reps))
					reps = append(reps, modelReport{slot: i, task: s, ep: h.m.epoch(t.serial)})
				} else if t.st == StateRunning && claiming == nil {
					claiming = &modelReport{slot: -1, task: s, ep: h.m.epoch(t.serial)}
				}
			}
		}
	}
	k := int(b>>2) % 4
	switch b % 4 {
	case 1:
		if len(started) > 0 {
			j := started[k%len(started)]
			how := "omitting " + reps[j].task
			return slices.Delete(reps, j, j+1), how
		}
		return reps, "exact"
	case 2:
		return nil, "empty"
	case 3:
		if len(started) > 0 {
			reps[started[k%len(started)]].ep = "ffffffffffff-7"
		}
		reps = append(reps, modelReport{slot: -1, task: "ghost", ep: "x-1"})
		if claiming != nil {
			reps = append(reps, *claiming)
		}
		return reps, "wrong epoch, ghost, claiming"
	}
	return reps, "exact"
}

// --- state comparison -----------------------------------------------------

func (h *fuzzHarness) compareState() {
	s, ctx, pool, m := h.e.s, h.e.ctx, h.e.pool, h.m
	for i := 0; i < fuzzTasks; i++ {
		id := fuzzTask(byte(i))
		got, err := s.Task(ctx, pool, id)
		mt := m.tasks[id]
		if mt == nil {
			h.checkf(errors.Is(err, ErrTaskNotFound), "task %s: model has none, store: %v %+v", id, err, got)
			continue
		}
		if err != nil {
			h.bad = append(h.bad, fmt.Sprintf("task %s: %v", id, err))
			continue
		}
		h.learn(mt.serial, got.Epoch)
		want := Task{ID: id, Type: mt.typ, State: mt.st, Phase: mt.phase, Epoch: m.epoch(mt.serial), Attempt: mt.attempt,
			Started: mt.started, Reason: mt.reason, By: mt.by, CancelRequested: mt.cx, Pod: got.Pod, Slot: got.Slot}
		switch mt.st {
		case StateRunning, StateReserved:
			want.Pod, want.Slot = mt.pod, mt.slot
		case StateQueued:
			want.Pod, want.Slot = "", -1
		}
		g := got
		g.Pool, g.Payload, g.Output, g.ExitCode, g.Created, g.Updated, g.History = PoolID{}, nil, "", 0, time.Time{}, time.Time{}, nil
		h.checkf(fmt.Sprintf("%+v", g) == fmt.Sprintf("%+v", want), "task %s:\n    store %+v\n    model %+v", id, g, want)
	}

	// Inboxes and processing lists (this also learns epochs of assignments
	// the model made inside scripts), the queues in dispatch order, and the
	// reservation deadlines: raw keys, read in one round trip.
	base := s.base(pool)
	pipe := h.e.rdb.Pipeline()
	lists := map[string]*redis.StringSliceCmd{}
	for i := 0; i < fuzzPods; i++ {
		pod := fuzzPod(byte(i))
		for _, l := range []string{keyInbox, keyProc} {
			lists[l+pod] = pipe.LRange(ctx, base+l+pod, 0, -1)
		}
	}
	queues := map[TaskType]*redis.StringSliceCmd{}
	for _, typ := range TaskTypes {
		queues[typ] = pipe.ZRange(ctx, base+keyQueue+string(typ), 0, -1)
	}
	resv := pipe.ZRangeWithScores(ctx, base+keyResv, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		h.bad = append(h.bad, err.Error())
		return
	}
	for i := 0; i < fuzzPods; i++ {
		pod := fuzzPod(byte(i))
		var inbox, proc []modelEntry
		if p := m.pods[pod]; p != nil {
			inbox, proc = p.inbox, p.proc
		}
		for _, l := range []struct {
			key  string
			want []modelEntry
		}{{keyInbox, inbox}, {keyProc, proc}} {
			got := lists[l.key+pod].Val()
			ok := len(got) == len(l.want)
			for j := 0; ok && j < len(got); j++ {
				kind, rest, _ := strings.Cut(got[j], "|")
				id, ep, _ := strings.Cut(rest, "|")
				ok = kind == string(l.want[j].kind) && id == l.want[j].task
				if ok {
					h.learn(l.want[j].serial, ep)
				}
			}
			var want []string
			for _, e := range l.want {
				want = append(want, string(e.kind)+"|"+e.task+"|"+m.epoch(e.serial))
			}
			h.checkf(ok, "%s%s: store %q, model %q", l.key, pod, got, want)
		}
	}
	// Dispatch order per type: the queue sequence, kept across requeues.
	for _, typ := range TaskTypes {
		var want []string
		for _, t := range m.queued() {
			if t.typ == typ {
				want = append(want, t.id)
			}
		}
		h.checkf(slices.Equal(queues[typ].Val(), want), "queue %s: store %v, model %v", typ, queues[typ].Val(), want)
	}
	var gotResv, wantResv []string
	for _, z := range resv.Val() {
		gotResv = append(gotResv, fmt.Sprintf("%v@%d", z.Member, int64(z.Score)))
	}
	for i := 0; i < fuzzTasks; i++ {
		if t := m.tasks[fuzzTask(byte(i))]; t != nil && t.st == StateReserved {
			wantResv = append(wantResv, fmt.Sprintf("%s@%d", t.id, t.rdl))
		}
	}
	slices.Sort(gotResv)
	slices.Sort(wantResv)
	h.checkf(slices.Equal(gotResv, wantResv), "reservation deadlines: store %v, model %v", gotResv, wantResv)

	snap, err := s.Snapshot(ctx, pool)
	if err != nil {
		h.bad = append(h.bad, err.Error())
		return
	}
	h.checkf(msOf(snap.At) == m.now, "snapshot at %d, model clock %d", msOf(snap.At), m.now)
	var gotPods, wantPods []string
	for _, p := range snap.Pods {
		line := fmt.Sprintf("%s uid=%s %s seq=%d created=%d reg=%d hb=%d tasks=%d", p.Name, p.UID, p.State, p.Seq,
			msOf(p.Created), msOf(p.Registered), msOf(p.HeartbeatDeadline), p.TasksStarted)
		for _, sl := range p.Slots {
			line += fmt.Sprintf(" [%d %s %s %s %s %s a%d cx=%v rdl=%d]", sl.Index, sl.State, sl.Task, sl.Type, sl.Phase,
				sl.Epoch, sl.Attempt, sl.CancelRequested, msOf(sl.ReservedUntil))
		}
		gotPods = append(gotPods, line)
	}
	for _, p := range m.sortedPods() {
		line := fmt.Sprintf("%s uid=%s %s seq=%d created=%d reg=%d hb=%d tasks=%d", p.name, p.uid, p.st, p.seq, p.created, p.reg, p.hb, p.tasks)
		for i, s := range p.slots {
			switch s {
			case "":
				line += fmt.Sprintf(" [%d %s     a0 cx=false rdl=0]", i, SlotIdle)
			case "!":
				line += fmt.Sprintf(" [%d %s     a0 cx=false rdl=0]", i, SlotOrphan)
			default:
				t := m.tasks[s]
				st := SlotAssigned
				switch {
				case t.st == StateReserved:
					st = SlotReserved
				case t.started:
					st = SlotRunning
				}
				rdl := int64(0)
				if t.st == StateReserved {
					rdl = t.rdl
				}
				line += fmt.Sprintf(" [%d %s %s %s %s %s a%d cx=%v rdl=%d]", i, st, s, t.typ, t.phase, m.epoch(t.serial),
					t.attempt, t.cx, rdl)
			}
		}
		wantPods = append(wantPods, line)
	}
	h.checkf(slices.Equal(gotPods, wantPods), "pods:\n    store %s\n    model %s", strings.Join(gotPods, "\n          "), strings.Join(wantPods, "\n          "))

	var gotQ, wantQ []string
	for _, q := range snap.Queue {
		gotQ = append(gotQ, fmt.Sprintf("%s/%s@%d", q.ID, q.Type, msOf(q.QueuedAt)))
	}
	wantCounts := map[TaskType]int{}
	for _, t := range m.queued() { // dispatch order, across types
		wantCounts[t.typ]++
		if len(wantQ) < SnapshotQueueList {
			wantQ = append(wantQ, fmt.Sprintf("%s/%s@%d", t.id, t.typ, t.qat))
		}
	}
	h.checkf(slices.Equal(gotQ, wantQ), "snapshot queue: store %v, model %v", gotQ, wantQ)
	h.checkf(maps.Equal(snap.Queued, wantCounts) || len(wantCounts) == 0 && len(snap.Queued) == 0,
		"snapshot queue counts: store %v, model %v", snap.Queued, wantCounts)

	diffs, err := s.Reconcile(ctx, pool, false)
	h.checkf(err == nil && len(diffs) == 0, "reconcile: %v %v", err, diffs)
}

func (h *fuzzHarness) dumpModel() string {
	var b strings.Builder
	for _, p := range h.m.sortedPods() {
		fmt.Fprintf(&b, "  pod %s %s %s slots %q inbox %d proc %d hb %d\n", p.name, p.uid, p.st, p.slots, len(p.inbox), len(p.proc), p.hb)
	}
	for i := 0; i < fuzzTasks; i++ {
		if t := h.m.tasks[fuzzTask(byte(i))]; t != nil {
			fmt.Fprintf(&b, "  task %s %s %s %s %s#%d #%d started=%v attempt=%d qs=%d qat=%d cx=%v reason=%q\n", t.id, t.typ,
				t.st, t.phase, t.pod, t.slot, t.serial, t.started, t.attempt, t.qs, t.qat, t.cx, t.reason)
		}
	}
	fmt.Fprintf(&b, "  now %d", h.m.now)
	return b.String()
}

// --- seed corpus ----------------------------------------------------------

const (
	seedStatic3  byte = 0
	seedStatic2  byte = 1
	seedManaged3 byte = 2
	seedManaged2 byte = 3
)

func fop(k fuzzKind, a, b byte) []byte { return []byte{byte(slices.Index(fuzzKinds, k)), a, b} }

func fseed(cfg byte, ops ...[]byte) []byte { return slices.Concat(append([][]byte{{cfg}}, ops...)...) }

func sSubmit(task byte, pa bool) []byte {
	if pa {
		return fop(kSubmit, task, 1)
	}
	return fop(kSubmit, task, 0)
}
func sTake(pod byte) []byte { return fop(kTake, pod, 0) }

// sComplete: outcome index into fuzzOutcomes; epoch 0 current, 2 earlier, 3 bogus.
func sComplete(task byte, outcome, epoch byte) []byte {
	return fop(kComplete, task, outcome|epoch<<2)
}
func sApprove(task byte) []byte          { return fop(kApprove, task, 0) }
func sReject(task byte) []byte           { return fop(kReject, task, 0) }
func sRelease(task byte) []byte          { return fop(kReject, task, 1) }
func sCancel(task byte) []byte           { return fop(kCancel, task, 0) }
func sExpect(pod byte) []byte            { return fop(kExpect, pod, 0) }
func sRegister(pod byte) []byte          { return fop(kRegister, pod, 0) }
func sRegisterUID(pod, mode byte) []byte { return fop(kRegister, pod, mode&3|mode>>2<<5) }
func sOrphans(pod, mask byte) []byte     { return fop(kRegister, pod, mask<<2) }

// sHeartbeat: mode 0 exact, 1 omit the k-th started phase, 2 empty, 3 wrong epoch/ghost/claiming.
func sHeartbeat(pod, mode, k byte) []byte    { return fop(kHeartbeat, pod, mode|k<<2) }
func sHeartbeatUID(pod, uidMode byte) []byte { return fop(kHeartbeat, pod, uidMode<<5) }
func sCordon(pod byte) []byte                { return fop(kCordon, pod, 3) }
func sUncordon(pod byte) []byte              { return fop(kUncordon, pod, 3) }
func sDrain(pod byte) []byte                 { return fop(kDrain, pod, 3) }
func sRemove(pod byte) []byte                { return fop(kRemove, pod, 3) }
func sHandBack(pod byte) []byte              { return fop(kHandBack, pod, 0) }
func sAdvance(secs byte) []byte              { return fop(kAdvance, secs-1, 0) }

// uid modes of the seed helpers (see fuzzHarness.uid).
const (
	uidCur byte = 0
	uidOld byte = 6
	uidNew byte = 7
)

const (
	oSuccess   = 0
	oFailure   = 1
	oTimeout   = 2
	oCancelled = 3
)

func fuzzSeeds() [][]byte {
	return [][]byte{
		// plan_and_apply: plan, reserve, approve, apply; a repeated complete;
		// the pod drains once idle.
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sSubmit(1, false), sTake(0), sTake(0),
			sComplete(0, oSuccess, 0), sComplete(0, oSuccess, 0), sDrain(0), sApprove(0), sApprove(0), sTake(0),
			sComplete(0, oSuccess, 3), sComplete(0, oSuccess, 0), sComplete(0, oFailure, 0), sComplete(1, oFailure, 0),
			sDrain(0), sRegister(0)),
		// reject frees slot 0 for a queued plan_and_apply; the next reservation
		// expires at its deadline and approve answers reservation-lost.
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sSubmit(1, true), sTake(0), sComplete(0, oSuccess, 0),
			sReject(0), sApprove(0), sTake(0), sTake(0), sComplete(1, oSuccess, 0), sHeartbeat(0, 0, 0), sAdvance(8),
			sHeartbeat(0, 0, 0), sAdvance(8), sHeartbeat(0, 0, 0), sAdvance(8), sApprove(1), sReject(1), sDrain(0)),
		// drain refusal in a managed pool: expected, busy, reserved; a drained
		// pod cannot register and is removed; its uid is tombstoned.
		fseed(seedManaged3, sRegister(0), sExpect(0), sDrain(1), sExpect(1), sRegister(0), sSubmit(0, true),
			sDrain(0), sTake(0), sDrain(0), sComplete(0, oSuccess, 0), sCordon(0), sDrain(0), sRelease(0), sDrain(0),
			sRegister(0), sUncordon(0), sRemove(0), sHeartbeatUID(0, uidOld), sRegisterUID(0, uidOld), sRegister(1),
			sSubmit(2, false)),
		// removal requeues plans in their old place (a started one spends an
		// attempt), fails applies and reservations.
		fseed(seedStatic3, sRegister(0), sSubmit(0, false), sSubmit(1, false), sSubmit(2, true), sSubmit(3, true),
			sSubmit(4, false), sTake(0), sTake(0), sTake(0), sComplete(2, oSuccess, 0), sApprove(2), sRemove(0),
			sRegister(1), sTake(1), sTake(1), sTake(1), sRemove(1), sRegister(2), sTake(2), sTake(2), sComplete(0, oSuccess, 2),
			sRemove(2), sRegister(0)),
		// heartbeat expiry in a managed pool: unstarted work goes back, the
		// reservation fails, the started plan waits for the pod's removal.
		fseed(seedManaged3, sExpect(0), sRegister(0), sExpect(1), sRegister(1), sSubmit(0, true), sSubmit(1, false),
			sSubmit(2, false), sSubmit(3, true), sTake(0), sTake(0), sComplete(0, oSuccess, 0), sTake(1),
			sHeartbeat(1, 0, 0), sAdvance(6), sHeartbeat(1, 0, 0), sAdvance(6), sHeartbeat(0, 0, 0), sTake(0),
			sCancel(1), sComplete(1, oSuccess, 0), sRemove(0), sTake(1), sTake(1), sComplete(1, oSuccess, 0)),
		// heartbeat expiry in a static pool removes the pod at once; an
		// outage of the reaper grants grace instead.
		fseed(seedStatic3, sRegister(0), sRegister(1), sSubmit(0, false), sSubmit(1, true), sSubmit(2, false),
			sTake(0), sTake(0), sHeartbeat(1, 0, 0), sAdvance(5), sHeartbeat(1, 0, 0), sAdvance(6), sTake(1),
			sAdvance(22), sAdvance(9), sHeartbeat(1, 0, 0), sAdvance(2), sRegister(0), sHeartbeatUID(0, uidOld)),
		// queue limit and queue age; cancel of queued and unstarted work.
		fseed(seedStatic2, sSubmit(0, false), sSubmit(1, true), sSubmit(2, false), sSubmit(3, true), sSubmit(4, false),
			sSubmit(0, false), sSubmit(0, true), sCancel(3), sSubmit(4, false), sAdvance(15), sSubmit(5, true),
			sAdvance(16), sRegister(0), sCancel(5), sTake(0), sAdvance(16), sAdvance(2), sCancel(0)),
		// heartbeat reconciliation: omitted started phases (after a previous
		// heartbeat), orphan slots, wrong epochs; cancel of a running phase;
		// handback after cordon; uncordon dispatches.
		fseed(seedStatic3, sOrphans(0, 5), sSubmit(0, false), sSubmit(1, true), sSubmit(2, false), sRegister(1),
			sTake(0), sTake(1), sTake(1), sHeartbeat(1, 0, 0), sAdvance(1), sHeartbeat(1, 1, 0), sHeartbeat(0, 1, 0),
			sHeartbeat(0, 2, 0), sCancel(2), sTake(1), sHeartbeat(1, 3, 0), sComplete(2, oCancelled, 0), sCordon(1),
			sHandBack(1), sSubmit(3, false), sSubmit(4, true), sUncordon(1), sTake(0), sTake(0)),
		// a plan that finishes on a pod declared lost cannot reserve slot 0:
		// it fails (reservation-lost) at once. It never held a reservation
		// (rs unset), so approve answers ErrNotReserved.
		fseed(seedManaged3, sExpect(0), sRegister(0), sSubmit(0, true), sSubmit(1, true), sTake(0), sAdvance(10),
			sComplete(0, oSuccess, 0), sApprove(0), sRemove(0), sExpect(1), sRegister(1), sTake(1)),
		// plan attempts run out after MaxAttempts losses.
		fseed(seedManaged2, sExpect(0), sRegister(0), sSubmit(0, false), sTake(0), sRemove(0), sExpect(1),
			sRegister(1), sTake(1), sRemove(1), sExpect(2), sRegister(2), sSubmit(1, true), sTake(2), sTake(2)),

		// Behaviour changed on purpose (these seeds were first written for
		// discrepancies between the store and the model).
		//
		// Approve of a plan that expired in the queue (it never held a
		// reservation) answers ErrNotReserved.
		fseed(seedStatic3, sSubmit(0, false), sAdvance(16), sAdvance(16), sApprove(0)),
		// The plan's complete of a plan_and_apply, repeated after its apply
		// completed, returns the plan's first outcome (reserved), and the
		// apply's repeat the apply's.
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sTake(0), sComplete(0, oSuccess, 0), sApprove(0),
			sTake(0), sComplete(0, oSuccess, 0), sComplete(0, oSuccess, 2), sComplete(0, oFailure, 0)),
		// Approve and reject tell a reservation lost (released, expired, pod
		// gone: ErrReservationLost) from one decided (rejected, cancelled) or
		// never held (ErrNotReserved).
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sTake(0), sComplete(0, oSuccess, 0), sRelease(0),
			sApprove(0), sReject(0), sSubmit(1, true), sTake(0), sComplete(1, oSuccess, 0), sReject(1), sApprove(1),
			sSubmit(2, true), sTake(0), sComplete(2, oSuccess, 0), sCancel(2), sApprove(2), sSubmit(3, true),
			sTake(0), sComplete(3, oSuccess, 0), sHeartbeat(0, 0, 0), sAdvance(8), sHeartbeat(0, 0, 0), sAdvance(8),
			sHeartbeat(0, 0, 0), sAdvance(8), sReject(3), sSubmit(4, true), sTake(0), sComplete(4, oSuccess, 0),
			sRemove(0), sApprove(4)),
		// A cancel requested while the plan of a plan_and_apply runs wins over
		// its success: cancelled (by the canceller), slot 0 not reserved;
		// also when its pod was declared lost meanwhile.
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sTake(0), sCancel(0), sComplete(0, oSuccess, 0),
			sComplete(0, oSuccess, 0), sApprove(0), sDrain(0)),
		fseed(seedManaged3, sExpect(0), sRegister(0), sSubmit(0, true), sTake(0), sCancel(0), sAdvance(10),
			sComplete(0, oSuccess, 0), sApprove(0)),
		// A task whose cancel was requested ends cancelled (agent-lost) when
		// its pod is lost instead of being requeued or failed: an apply when
		// the heartbeat expires, a started plan when the pod is removed, and a
		// plan the heartbeat says the agent no longer runs.
		fseed(seedManaged3, sExpect(0), sRegister(0), sSubmit(0, true), sSubmit(1, false), sTake(0), sTake(0),
			sComplete(0, oSuccess, 0), sApprove(0), sTake(0), sCancel(0), sCancel(1), sAdvance(10), sRemove(0)),
		fseed(seedStatic3, sRegister(0), sSubmit(0, false), sTake(0), sAdvance(1), sHeartbeat(0, 0, 0), sAdvance(1),
			sCancel(0), sHeartbeat(0, 2, 0), sTake(0)),
		// Several tasks of one pod lost at once go to the loss policy oldest in
		// the queue first, not in slot order: the older plan (slot 1) takes the
		// only idle slot elsewhere, the younger one (slot 0) waits. Removal in a
		// static pool; heartbeat expiry in a managed one.
		fseed(seedStatic2, sRegister(0), sSubmit(0, false), sSubmit(1, false), sTake(0), sComplete(0, oSuccess, 0),
			sSubmit(2, false), sRegister(1), sSubmit(3, false), sRemove(0)),
		fseed(seedManaged2, sExpect(0), sRegister(0), sSubmit(0, false), sSubmit(1, false), sTake(0),
			sComplete(0, oSuccess, 0), sSubmit(2, false), sExpect(1), sRegister(1), sSubmit(3, false), sAdvance(5),
			sHeartbeat(1, 0, 0), sAdvance(5)),
		// The snapshot lists the queue in dispatch order (queue sequence,
		// across types), not by the time a task was (re)queued.
		fseed(seedStatic3, sRegister(0), sSubmit(0, true), sSubmit(1, true), sSubmit(2, false), sSubmit(3, false),
			sSubmit(4, false), sAdvance(1), sRemove(0), sRegister(1)),
	}
}
