package slots

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The hammer drives one managed pool with 64 goroutines of random operations
// while agents (one blocking inbox reader each), a reaper and a janitor run
// beside them, then checks the guarantees against the pool's event stream:
// every state change is appended to it inside the script that makes it, so
// its order is the order Redis applied them.
//
// Checked: the intervals each slot is held never overlap; no drained pod
// ever gets work, and a pod is drained only with every slot free; a started
// plan is requeued only after its pod was removed; no apply phase ever starts
// twice; every task ends in exactly one state, consistent with the indexes;
// the at-rest invariant holds and counters equal a recount (checked
// atomically during the run and at the end).

const hammerWorkers = 64

// hammerOps is per worker; miniredis runs Lua in Go (gopher-lua) and is
// several times slower under -race, so it gets a shorter run.
var hammerOps = map[string]int{"redis": 80, "cluster": 80, "miniredis": 60}

type hammerAgent struct {
	name, uid string
	ctx       context.Context
	kill      context.CancelFunc
	dead      atomic.Bool // killed by the hammer: left for the reaper to find
	active    atomic.Bool // registered
	born      time.Time
	mu        sync.Mutex
	running   map[string]RunningPhase // task -> what heartbeats report
	seq       int64                   // number of the last heartbeat report taken
	cancelled map[TaskRef]bool
	wg        sync.WaitGroup
}

type hammer struct {
	e      *env
	ctx    context.Context
	mu     sync.Mutex
	agents map[string]*hammerAgent
	target int
	seq    int
	tasks  []string
	// reserved collects tasks whose plan just reserved a slot, so approvals
	// and rejections mostly hit live reservations.
	reserved []string

	applyStarts sync.Map // task -> *atomic.Int32
	counts      sync.Map // name -> *atomic.Int64
	failures    chan string
	wg          sync.WaitGroup
}

func (h *hammer) count(name string) {
	v, _ := h.counts.LoadOrStore(name, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (h *hammer) countOf(name string) int64 {
	v, ok := h.counts.Load(name)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (h *hammer) fail(format string, args ...any) {
	select {
	case h.failures <- fmt.Sprintf(format, args...):
	default:
	}
}

// expected is the set of errors an operation may legitimately meet under
// concurrency; anything else fails the test.
func expected(err error, allowed ...error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return true
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return true
		}
	}
	return false
}

// spawn creates a pod the way the janitor does (expected record first) and
// starts its agent, which registers after a random delay so registrations
// race drains of expected pods.
func (h *hammer) spawn() {
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("agent-%d", h.seq)
	a := &hammerAgent{name: name, uid: fmt.Sprintf("uid-%d", h.seq), born: time.Now(), running: map[string]RunningPhase{}, cancelled: map[TaskRef]bool{}}
	a.ctx, a.kill = context.WithCancel(h.ctx)
	h.agents[name] = a
	h.mu.Unlock()
	if err := h.e.s.ExpectPod(h.ctx, h.e.pool, name, a.uid); !expected(err) {
		h.fail("expect %s: %v", name, err)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.runAgent(a)
	}()
}

func (h *hammer) runAgent(a *hammerAgent) {
	time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond)
	if _, err := h.e.s.RegisterPod(a.ctx, h.e.pool, a.name, a.uid); err != nil {
		if !expected(err, ErrPodState, ErrTombstoned, ErrPodNotFound) {
			h.fail("register %s: %v", a.name, err)
		}
		h.count("register-lost-race")
		a.kill()
		return
	}
	h.count("register")
	a.active.Store(true)
	a.wg.Add(1)
	go func() { // heartbeats
		defer a.wg.Done()
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-tick.C:
			}
			a.mu.Lock()
			var report []RunningPhase
			for _, r := range a.running {
				report = append(report, r)
			}
			a.seq++
			seq := a.seq
			a.mu.Unlock()
			reply, err := h.e.s.HeartbeatNumbered(a.ctx, h.e.pool, a.name, a.uid, seq, report)
			if err != nil {
				if !expected(err, ErrPodLost, ErrTombstoned, ErrPodNotFound) {
					h.fail("heartbeat %s: %v", a.name, err)
				}
				a.kill()
				return
			}
			a.mu.Lock()
			for _, s := range reply.Stop {
				a.cancelled[s] = true
			}
			a.mu.Unlock()
		}
	}()
	defer a.wg.Wait()
	for a.ctx.Err() == nil {
		var claiming TaskRef
		m, err := h.e.s.Take(a.ctx, h.e.pool, a.name, a.uid, time.Second, func(r TaskRef) int64 {
			claiming = r
			a.mu.Lock()
			defer a.mu.Unlock()
			a.running[r.Task] = RunningPhase{Slot: -1, Task: r.Task, Epoch: r.Epoch}
			return a.seq + 1
		})
		if err != nil {
			if !expected(err, ErrPodLost, ErrTombstoned, ErrPodNotFound) {
				h.fail("take %s: %v", a.name, err)
			}
			a.kill()
			return
		}
		if m == nil || m.Kind != MsgAssignment {
			a.mu.Lock()
			if claiming.Task != "" {
				delete(a.running, claiming.Task)
			}
			if m != nil && m.Kind == MsgCancel {
				a.cancelled[TaskRef{Task: m.Task, Epoch: m.Epoch}] = true
			}
			a.mu.Unlock()
			continue
		}
		as := m.Assignment
		if as.Phase == PhaseApply {
			v, _ := h.applyStarts.LoadOrStore(as.Task, new(atomic.Int32))
			v.(*atomic.Int32).Add(1)
		}
		a.mu.Lock()
		a.running[as.Task] = RunningPhase{Slot: as.Slot, Task: as.Task, Epoch: as.Epoch}
		a.mu.Unlock()
		a.wg.Add(1)
		go func() { // the executor
			defer a.wg.Done()
			time.Sleep(time.Duration(rand.IntN(4)) * time.Millisecond)
			a.mu.Lock()
			cancelled := a.cancelled[TaskRef{Task: as.Task, Epoch: as.Epoch}]
			a.mu.Unlock()
			r := Result{Task: as.Task, Epoch: as.Epoch, Outcome: OutcomeSuccess}
			switch n := rand.IntN(100); {
			case cancelled:
				r.Outcome = OutcomeCancelled
			case n < 8:
				r.Outcome, r.ExitCode = OutcomeFailure, 1
			case n < 12:
				r.Outcome = OutcomeTimeout
			}
			if a.ctx.Err() != nil {
				return // killed: the result is never reported
			}
			st, err := h.e.s.Complete(a.ctx, h.e.pool, r)
			if !expected(err, ErrStaleEpoch) {
				h.fail("complete %s on %s: %v", as.Task, a.name, err)
			}
			if st == StateReserved {
				h.mu.Lock()
				h.reserved = append(h.reserved, as.Task)
				h.mu.Unlock()
			}
			h.count("complete")
			a.mu.Lock()
			delete(a.running, as.Task)
			a.mu.Unlock()
		}()
	}
}

// randomAgent picks a live agent; registered only, unless anyState.
func (h *hammer) randomAgent(r *rand.Rand, anyState bool) *hammerAgent {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.agents))
	for n, a := range h.agents {
		if !a.dead.Load() && (anyState || a.active.Load()) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return h.agents[names[r.IntN(len(names))]]
}

func (h *hammer) randomTask(r *rand.Rand) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.tasks) == 0 {
		return "none"
	}
	return h.tasks[r.IntN(len(h.tasks))]
}

// janitor removes pods that are draining or lost (their agent is stopped
// first: the deletion is the fence) and keeps the pool at its target size.
func (h *hammer) janitor(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(15 * time.Millisecond):
		}
		snap, err := h.e.s.Snapshot(h.ctx, h.e.pool)
		if err != nil {
			h.fail("snapshot: %v", err)
			continue
		}
		live := 0
		for _, p := range snap.Pods {
			h.mu.Lock()
			a := h.agents[p.Name]
			h.mu.Unlock()
			if p.State == PodExpected && a != nil && time.Since(a.born) > time.Second {
				// Never registered: drained from expected like any idle pod.
				if err := h.e.s.Drain(h.ctx, h.e.pool, p.Name, p.UID); !expected(err, ErrPodState) {
					h.fail("drain expected %s: %v", p.Name, err)
				}
				h.count("drain-expected")
				continue
			}
			if p.State != PodDraining && p.State != PodLost {
				live++
				continue
			}
			h.mu.Lock()
			delete(h.agents, p.Name)
			h.mu.Unlock()
			if a != nil {
				a.kill()
			}
			if err := h.e.s.RemovePod(h.ctx, h.e.pool, p.Name, p.UID, "deleted"); !expected(err) {
				h.fail("remove %s: %v", p.Name, err)
			}
			h.count("remove-" + string(p.State))
		}
		h.mu.Lock()
		missing := h.target - live
		h.mu.Unlock()
		for ; missing > 0; missing-- {
			h.spawn()
		}
		// Scale down as the janitor does: cordon the newest surplus pods, and
		// drain cordoned pods the moment they are idle.
		for i := len(snap.Pods) - 1; i >= 0 && missing < 0; i-- {
			p := snap.Pods[i]
			if p.State == PodActive {
				if err := h.e.s.Cordon(h.ctx, h.e.pool, p.Name, p.UID); !expected(err, ErrPodState, ErrPodNotFound, ErrTombstoned) {
					h.fail("cordon surplus %s: %v", p.Name, err)
				}
				missing++
			}
		}
		for _, p := range snap.Pods {
			if p.State == PodCordoned && !p.Busy() {
				err := h.e.s.Drain(h.ctx, h.e.pool, p.Name, p.UID)
				if err == nil {
					h.count("drain")
				} else if !expected(err, ErrPodBusy, ErrPodState, ErrPodNotFound) {
					h.fail("drain surplus %s: %v", p.Name, err)
				}
			}
		}
	}
}

func (h *hammer) reaper(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		r, err := h.e.s.Reap(h.ctx, h.e.pool, ReapOptions{Batch: 50, MaxGap: 10 * time.Second})
		if err != nil {
			h.fail("reap: %v", err)
		}
		if r.Reservations > 0 {
			h.count("reservation-expired")
		}
		if r.Heartbeats > 0 {
			h.count("heartbeat-expired")
		}
		if r.Grace {
			h.count("grace")
		}
	}
}

// approver answers reservations as a platform would: mostly approve, some
// reject, and leave some to expire.
func (h *hammer) approver(stop <-chan struct{}) {
	r := rand.New(rand.NewPCG(7, 7))
	for {
		select {
		case <-stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		h.mu.Lock()
		batch := h.reserved
		h.reserved = nil
		h.mu.Unlock()
		for _, id := range batch {
			var err error
			switch n := r.IntN(10); {
			case n < 7:
				if _, err = h.e.s.Approve(h.ctx, h.e.pool, id, "alice"); err == nil {
					h.count("approve")
				}
			case n < 9:
				if err = h.e.s.Reject(h.ctx, h.e.pool, id, "bob"); err == nil {
					h.count("reject")
				}
			}
			if !expected(err, ErrNotReserved, ErrReservationLost, ErrTaskNotFound) {
				h.fail("answering reservation of %s: %v", id, err)
			}
		}
	}
}

func (h *hammer) worker(id, ops int) {
	r := rand.New(rand.NewPCG(uint64(id), 42))
	for i := 0; i < ops; i++ {
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		ctx, e := h.ctx, h.e
		switch n := r.IntN(100); {
		case n < 40:
			tt := Plan
			if r.IntN(3) == 0 {
				tt = PlanAndApply
			}
			tid := fmt.Sprintf("w%d-t%d", id, i)
			if _, err := e.s.Submit(ctx, e.pool, TaskSpec{ID: tid, Type: tt, Payload: []byte(tid)}); !expected(err, ErrQueueFull) {
				h.fail("submit: %v", err)
			}
			h.mu.Lock()
			h.tasks = append(h.tasks, tid)
			h.mu.Unlock()
		case n < 45:
			tid := h.randomTask(r)
			if _, err := e.s.Submit(ctx, e.pool, TaskSpec{ID: tid, Type: Plan}); !expected(err, ErrTaskConflict, ErrInvalidTask) {
				h.fail("resubmit %s: %v", tid, err)
			}
		case n < 58:
			if _, err := e.s.Approve(ctx, e.pool, h.randomTask(r), "alice"); err == nil {
				h.count("approve")
			} else if !expected(err, ErrNotReserved, ErrReservationLost, ErrTaskNotFound, ErrInvalidTask) {
				h.fail("approve: %v", err)
			}
		case n < 63:
			if err := e.s.Reject(ctx, e.pool, h.randomTask(r), "bob"); err == nil {
				h.count("reject")
			} else if !expected(err, ErrNotReserved, ErrReservationLost, ErrTaskNotFound, ErrInvalidTask) {
				h.fail("reject: %v", err)
			}
		case n < 67:
			if _, err := e.s.Cancel(ctx, e.pool, h.randomTask(r), "carol"); err == nil {
				h.count("cancel")
			} else if !expected(err, ErrTaskFinished, ErrTaskNotFound, ErrInvalidTask) {
				h.fail("cancel: %v", err)
			}
		case n < 76:
			// Scale-down of a busy pod: cordon it, drain it the moment it
			// is idle (racing approvals, which still reach it).
			if a := h.randomAgent(r, false); a != nil {
				err := e.s.Cordon(ctx, e.pool, a.name, a.uid)
				if !expected(err, ErrPodState, ErrPodNotFound, ErrPodConflict) {
					h.fail("cordon: %v", err)
				}
				for try := 0; err == nil && try < 2000; try++ {
					err = e.s.Drain(ctx, e.pool, a.name, a.uid)
					if err == nil {
						h.count("drain")
						break
					}
					if !expected(err, ErrPodBusy, ErrPodState, ErrPodNotFound) {
						h.fail("drain cordoned: %v", err)
					}
					if !errors.Is(err, ErrPodBusy) {
						break
					}
					err = nil
					time.Sleep(2 * time.Millisecond)
				}
			}
		case n < 77:
			if a := h.randomAgent(r, false); a != nil {
				err := e.s.Uncordon(ctx, e.pool, a.name, a.uid)
				if !expected(err, ErrPodState, ErrPodNotFound, ErrPodConflict) {
					h.fail("uncordon: %v", err)
				}
			}
		case n < 85:
			if a := h.randomAgent(r, false); a != nil {
				err := e.s.Drain(ctx, e.pool, a.name, a.uid)
				if err == nil {
					h.count("drain")
				} else if !expected(err, ErrPodBusy, ErrPodState, ErrPodNotFound) {
					h.fail("drain: %v", err)
				}
			}
		case n < 87:
			if a := h.randomAgent(r, true); a != nil {
				err := e.s.Drain(ctx, e.pool, a.name, a.uid)
				if err == nil {
					h.count("drain-racing-registration")
				} else if !expected(err, ErrPodBusy, ErrPodState, ErrPodNotFound) {
					h.fail("drain: %v", err)
				}
			}
		case n < 89:
			// An agent dies without a word: its heartbeat expires, the
			// reaper declares the pod lost, the janitor deletes it.
			if a := h.randomAgent(r, false); a != nil {
				a.dead.Store(true)
				a.kill()
				h.count("kill")
			}
		case n < 92:
			h.mu.Lock()
			h.target = 1 + r.IntN(8)
			h.mu.Unlock()
		default:
			diffs, err := e.s.Reconcile(ctx, e.pool, false)
			if err != nil {
				h.fail("reconcile: %v", err)
			} else if len(diffs) > 0 {
				h.fail("mid-run recount differs: %v", diffs)
			}
			h.count("recount")
		}
	}
}

func TestHammer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, managed, func(c *PoolConfig) {
			c.HeartbeatTimeout = time.Second
			c.ReservationTTL = 150 * time.Millisecond
			c.EventCap = 1 << 20
			c.QueueLimit = 1 << 20
			c.MaxAttempts = 3
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		h := &hammer{e: e, ctx: ctx, agents: map[string]*hammerAgent{}, target: 4, failures: make(chan string, 100)}
		stop := make(chan struct{})
		var bg sync.WaitGroup
		bg.Add(3)
		go func() { defer bg.Done(); h.approver(stop) }()
		go func() { defer bg.Done(); h.janitor(stop) }()
		go func() { defer bg.Done(); h.reaper(stop) }()

		var workers sync.WaitGroup
		for w := 0; w < hammerWorkers; w++ {
			workers.Add(1)
			go func() { defer workers.Done(); h.worker(w, hammerOps[b]) }()
		}
		workers.Wait()

		// Let the pool settle: approve what waits, until every task ends.
		h.mu.Lock()
		h.target = 3
		h.mu.Unlock()
		// The bound is on a stall, not on the whole settling: under -race
		// on a loaded machine (CI runs the demo's test beside this one)
		// the last tasks can take minutes to end, one by one.
		const stall = 60 * time.Second
		deadline := time.Now().Add(stall)
		h.mu.Lock()
		open := append([]string(nil), h.tasks...)
		h.mu.Unlock()
		for {
			var still []string
			for _, id := range open {
				tk, err := e.s.Task(ctx, e.pool, id)
				if errors.Is(err, ErrTaskNotFound) {
					continue // refused as queue-full
				}
				require.NoError(t, err)
				if !tk.State.Terminal() {
					still = append(still, id)
				}
			}
			if len(still) < len(open) {
				deadline = time.Now().Add(stall) // progress
			}
			open = still
			if len(open) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d tasks still open, none ended for %v after the load stopped: %v", len(open), stall, open[:min(len(open), 5)])
			}
			time.Sleep(50 * time.Millisecond)
		}
		close(stop)
		bg.Wait()
		cancel()
		h.wg.Wait()
		close(h.failures)
		for f := range h.failures {
			t.Error(f)
		}

		checkEventLog(t, e, h)
		e.consistent()
		t.Logf("%s: %d tasks, completes=%d approves=%d rejects=%d cancels=%d drains=%d kills=%d lost=%d reservations-expired=%d register-lost-race=%d hb-expired=%d grace=%d",
			b, len(h.tasks), h.countOf("complete"), h.countOf("approve"), h.countOf("reject"), h.countOf("cancel"), h.countOf("drain"),
			h.countOf("kill"), h.countOf("remove-lost"), h.countOf("reservation-expired"), h.countOf("register-lost-race"), h.countOf("heartbeat-expired"), h.countOf("grace"))
		for _, name := range []string{"complete", "approve", "reject", "cancel", "drain", "drain-racing-registration", "reservation-expired", "heartbeat-expired", "kill", "remove-draining", "remove-lost", "recount"} {
			require.Positive(t, h.countOf(name), "the hammer never exercised %q", name)
		}
	})
}

// checkEventLog replays the pool's event stream and checks the guarantees.
func checkEventLog(t *testing.T, e *env, h *hammer) {
	t.Helper()
	var events []Event
	cursor := ""
	for {
		page, err := e.s.Events(e.ctx, e.pool, cursor, 10000)
		require.NoError(t, err)
		require.False(t, page.Gap, "the event log must be complete for the check")
		if len(page.Events) == 0 {
			break
		}
		events = append(events, page.Events...)
		cursor = page.Next
	}
	type holding struct {
		slot    string
		epoch   string
		started bool
		phase   string
	}
	podState := map[string]string{}
	occupant := map[string]string{} // "pod#slot" -> task
	held := map[string]holding{}    // task -> its current slot
	final := map[string]string{}
	free := func(task string) {
		if hd, ok := held[task]; ok {
			delete(occupant, hd.slot)
			delete(held, task)
		}
	}
	podOf := func(slot string) string {
		for i := len(slot) - 1; i >= 0; i-- {
			if slot[i] == '#' {
				return slot[:i]
			}
		}
		return slot
	}
	checkRequeue := func(task string, ev Event) {
		hd, ok := held[task]
		if ok && hd.started && hd.phase == "plan" && podState[podOf(hd.slot)] != "removed" {
			t.Errorf("event %s: started plan %s requeued while its pod %s is %s", ev.Cursor, task, podOf(hd.slot), podState[podOf(hd.slot)])
		}
	}
	for _, ev := range events {
		switch ev.Kind {
		case "pod":
			st := ev.Fields["st"]
			if st == "draining" {
				for slot, task := range occupant {
					if podOf(slot) == ev.Subject {
						t.Errorf("event %s: pod %s drained while %s holds %s", ev.Cursor, ev.Subject, task, slot)
					}
				}
			}
			podState[ev.Subject] = st
		case "task":
			task, st := ev.Subject, ev.Fields["st"]
			final[task] = st
			switch st {
			case "running":
				slot := ev.Fields["pod"] + "#" + ev.Fields["slot"]
				phase := ev.Fields["phase"]
				pst := podState[ev.Fields["pod"]]
				if phase == "apply" {
					if hd := held[task]; hd.slot != slot {
						t.Errorf("event %s: apply of %s in %s, its plan ran in %q", ev.Cursor, task, slot, hd.slot)
					}
					if pst != "active" && pst != "cordoned" {
						t.Errorf("event %s: apply of %s on %s pod %s", ev.Cursor, task, pst, ev.Fields["pod"])
					}
					held[task] = holding{slot: slot, epoch: ev.Fields["ep"], phase: phase}
					continue
				}
				checkRequeue(task, ev)
				free(task)
				if pst != "active" {
					t.Errorf("event %s: %s assigned to %s pod %s", ev.Cursor, task, pst, ev.Fields["pod"])
				}
				if other, busy := occupant[slot]; busy {
					t.Errorf("event %s: %s assigned to %s while %s holds it", ev.Cursor, task, slot, other)
				}
				occupant[slot] = task
				held[task] = holding{slot: slot, epoch: ev.Fields["ep"], phase: phase}
			case "started":
				hd, ok := held[task]
				if !ok || hd.epoch != ev.Fields["ep"] {
					t.Errorf("event %s: %s started with epoch %s, current assignment %+v", ev.Cursor, task, ev.Fields["ep"], hd)
				}
				hd.started = true
				held[task] = hd
			case "queued":
				checkRequeue(task, ev)
				free(task)
			case "reserved", "cancelling":
			default: // terminal
				free(task)
			}
		}
	}
	h.applyStarts.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n > 1 {
			t.Errorf("apply of %v started %d times", k, n)
		}
		return true
	})
	// Every task in exactly one state, matching the indexes and the log.
	base := e.s.base(e.pool)
	for _, id := range h.tasks {
		tk, err := e.s.Task(e.ctx, e.pool, id)
		if errors.Is(err, ErrTaskNotFound) {
			continue
		}
		require.NoError(t, err)
		require.True(t, tk.State.Terminal(), "task %s is %s", id, tk.State)
		require.Equal(t, string(tk.State), final[id], "task %s: stored state vs event log", id)
		for _, key := range []string{keyQueue + string(Plan), keyQueue + string(PlanAndApply), keyQueuedAt, keyResv} {
			_, err := e.rdb.ZScore(e.ctx, base+key, id).Result()
			require.Error(t, err, "finished task %s still in %s", id, key)
		}
		_, err = e.rdb.ZScore(e.ctx, base+keyDone, id).Result()
		require.NoError(t, err, "finished task %s missing from done", id)
	}
	t.Logf("event log: %d events replayed", len(events))
}
