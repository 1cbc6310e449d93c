package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slotscaler/slotscaler/pkg/executor"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// takeWait is how long one Take blocks on an empty inbox (Redis blocks in
// whole seconds). It bounds how late a stopping agent notices its last
// phase ended.
const takeWait = time.Second

// Why a phase's executor was stopped (context.Cause of its context).
var (
	errCancelRequested = errors.New("cancel requested")
	errFenced          = errors.New("pod incarnation fenced")
)

// hooks let tests watch and steer the agent; all optional.
type hooks struct {
	// beforeTake is called by the inbox reader before each Take.
	beforeTake func(ctx context.Context)
	// recorded is called once a phase's result is recorded.
	recorded func(phaseTiming)
}

// phaseTiming is when one phase passed each step.
type phaseTiming struct {
	Task     string
	Phase    slots.Phase
	Taken    time.Time // Take returned the assignment
	Started  time.Time // the executor runs
	Exited   time.Time // the executor exited
	Recorded time.Time // Complete returned: the slot is free (or reserved)
}

// agent is one pod's worker: it registers, heartbeats, takes work from the
// pod's inbox with one reader, runs an executor per phase and records each
// result until Redis has it.
type agent struct {
	cfg      Config
	log      *slog.Logger
	storeLog *slog.Logger
	runner   executor.Runner
	baseEnv  []string
	m        *metrics
	hooks    hooks

	conn    *redisconn.Conn
	store   *slots.Store
	uid     string
	managed bool

	// work carries every Redis call and loop; it ends on a fatal error or
	// when the agent is done, never on SIGTERM (a stopping agent still
	// heartbeats and records results).
	work     context.Context
	stopWork context.CancelFunc
	// fence is every phase's parent: a fatal error cancels it with
	// errFenced, which kills every executor, started or starting.
	fence      context.Context
	fenceCause context.CancelCauseFunc

	mu           sync.Mutex
	phases       map[slots.TaskRef]*phase
	reservations map[string]string // task → epoch of the plan that reserved slot 0 for its apply
	// applied holds the tasks whose apply this agent started. An apply
	// runs in the slot of the pod that ran its plan, so only this agent
	// could ever run it: a second apply assignment for the same task (the
	// store lost the first one's claim or approval in a failover and
	// someone approved again) is refused here, whatever the store says.
	applied  map[string]bool
	slotSems map[int]chan struct{} // one executor per slot (acquireSlot)
	taskSems map[string]*taskSem   // one executor per task (acquireSlot)
	podState slots.PodState
	// reportSeq numbers heartbeat reports (HeartbeatNumbered). It starts
	// from the clock in microseconds so it also grows across restarts of an
	// agent that keeps its uid (a static pool with a fixed POD_UID).
	reportSeq int64

	registered atomic.Bool
	stopping   atomic.Bool
	cordoned   chan struct{} // closed once the stop-time cordon is recorded
	fatalOnce  sync.Once
	fatalErr   error
	fatalCh    chan struct{}
	phaseWG    sync.WaitGroup
}

// phase is a task phase the agent reports in heartbeats: being claimed
// (slot -1), running, or finished with its result not recorded yet.
type phase struct {
	ref         slots.TaskRef
	slot        int
	as          *slots.Assignment
	stop        context.CancelCauseFunc
	pendingStop error // a stop asked for while the phase was being claimed
	refused     bool  // a second apply of the task: recorded as failed, never run
	stopped     bool  // its executor was told to stop
	finished    bool
	timing      phaseTiming
}

func newAgent(cfg Config, log, storeLog *slog.Logger, runner executor.Runner, baseEnv []string, m *metrics, h hooks) *agent {
	a := &agent{
		cfg: cfg, log: log, storeLog: storeLog, runner: runner, baseEnv: baseEnv, m: m, hooks: h,
		phases:       map[slots.TaskRef]*phase{},
		reservations: map[string]string{},
		applied:      map[string]bool{},
		slotSems:     map[int]chan struct{}{},
		taskSems:     map[string]*taskSem{},
		cordoned:     make(chan struct{}),
		fatalCh:      make(chan struct{}),
	}
	a.work, a.stopWork = context.WithCancel(context.Background())
	a.fence, a.fenceCause = context.WithCancelCause(context.Background())
	return a
}

// run is the agent's life: connect, register, work until sig ends, then
// stop gracefully. It returns nil after a clean stop, or the error that
// ended it (a fenced pod, a registration that never succeeded).
func (a *agent) run(sig context.Context) error {
	defer a.stopWork()
	defer func() {
		if a.conn != nil {
			a.conn.Close()
		}
	}()
	if err := a.connect(sig); err != nil {
		if sig.Err() != nil {
			return nil // stopped before it ever registered: nothing to clean up
		}
		return err
	}
	if err := a.register(sig, nil); err != nil {
		if sig.Err() != nil {
			return nil
		}
		return err
	}
	a.registered.Store(true)

	var loops sync.WaitGroup
	hbStop := make(chan struct{})
	readerDone := make(chan struct{})
	loops.Add(2)
	go func() { defer loops.Done(); a.heartbeatLoop(hbStop) }()
	go func() { defer loops.Done(); defer close(readerDone); a.readLoop() }()

	select {
	case <-sig.Done():
		a.log.Info("stopping: cordoning, handing back unstarted work, releasing reservations, finishing running phases")
		a.stopping.Store(true)
		if a.cordon() {
			close(a.cordoned)
		}
		select {
		case <-readerDone:
		case <-a.fatalCh:
		}
	case <-a.fatalCh:
	}
	if a.isFatal() {
		a.stopWork()
		a.phaseWG.Wait()
		close(hbStop)
		loops.Wait()
		return a.fatalErr
	}
	// The reader saw nothing running, nothing to record and an empty inbox.
	a.phaseWG.Wait()
	close(hbStop)
	loops.Wait()
	if !a.managed {
		a.removeSelf()
	}
	a.log.Info("stopped")
	return nil
}

func (a *agent) isFatal() bool {
	select {
	case <-a.fatalCh:
		return true
	default:
		return false
	}
}

// fatal ends the agent: its executors are killed and it exits non-zero.
func (a *agent) fatal(err error) {
	a.fatalOnce.Do(func() {
		a.fatalErr = err
		a.log.Error("stopping at once: killing executors without recording their results", "err", err)
		close(a.fatalCh)
		a.fenceCause(errFenced)
	})
}

// fenced reports errors that mean this pod incarnation may do no more work.
func fenced(err error) bool {
	return errors.Is(err, slots.ErrTombstoned) || errors.Is(err, slots.ErrPodLost) || errors.Is(err, slots.ErrPodConflict)
}

// transient reports whether a failed store call is worth retrying: network
// and Redis trouble, or a pool not (yet, again) declared. Other store
// errors are answers that a retry will not change.
func transient(err error) bool {
	for _, s := range []error{slots.ErrStaleEpoch, slots.ErrTaskNotFound, slots.ErrNotStarted, slots.ErrTaskFinished,
		slots.ErrInvalidTask, slots.ErrInvalidPod, slots.ErrInvalidPool, slots.ErrNotReserved, slots.ErrReservationLost,
		slots.ErrTombstoned, slots.ErrPodLost, slots.ErrPodConflict, slots.ErrPodState, slots.ErrNotExpected,
		slots.ErrPodNotFound, slots.ErrIncompatible} {
		if errors.Is(err, s) {
			return false
		}
	}
	return true
}

// permanentError marks a start-up failure that waiting will not fix.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// connect opens Redis and the store and reads the pool's config, retrying
// for --register-timeout while Redis or the pool is not there yet.
func (a *agent) connect(sig context.Context) error {
	deadline := time.Now().Add(a.cfg.RegisterTimeout)
	var bo backoff
	for warned := false; ; {
		err := a.tryConnect(sig)
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return perm.error
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after --register-timeout %v: %w", a.cfg.RegisterTimeout, err)
		}
		if !warned {
			a.log.Warn("slot store not ready; retrying", "err", err, "for", a.cfg.RegisterTimeout)
			warned = true
		}
		if !sleepCtx(sig, bo.next()) {
			return sig.Err()
		}
	}
}

func (a *agent) tryConnect(sig context.Context) error {
	ctx, cancel := context.WithTimeout(sig, a.cfg.RedisTimeout)
	defer cancel()
	if a.conn == nil {
		conn, err := redisconn.Open(ctx, a.cfg.RedisURL, a.log)
		if err != nil {
			return err
		}
		a.conn = conn
	}
	if a.store == nil {
		store, err := slots.New(ctx, a.conn.Client, slots.Options{Prefix: a.cfg.KeyPrefix, Logger: a.storeLog})
		if err != nil {
			if errors.Is(err, slots.ErrIncompatible) {
				return permanentError{fmt.Errorf("opening slot store: %w", err)}
			}
			return fmt.Errorf("opening slot store: %w", err)
		}
		a.store = store
	}
	pcfg, _, err := a.store.Pool(ctx, a.cfg.Pool)
	if err != nil {
		return err
	}
	if err := checkHeartbeat(a.cfg.HeartbeatInterval, a.cfg.Pool, pcfg); err != nil {
		return permanentError{err}
	}
	a.managed = pcfg.Managed
	a.uid = a.cfg.PodUID
	if a.uid == "" {
		if a.managed {
			return permanentError{fmt.Errorf("missing --pod-uid (env POD_UID): pool %s is managed, its agents register against the UID the janitor expects", a.cfg.Pool)}
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		a.uid = "gen-" + hex.EncodeToString(b[:])
	}
	a.log.Info("pool found", "managed", a.managed, "heartbeat_timeout", pcfg.HeartbeatTimeout,
		"heartbeat_interval", a.cfg.HeartbeatInterval, "slots", len(pcfg.Policy.Slots), "uid", a.uid, "executor", a.runner.String())
	return nil
}

// register registers the pod (again, with orphan slots, after Redis lost
// its record), retrying for --register-timeout while the janitor's expected
// record, the pool or Redis is missing.
func (a *agent) register(ctx context.Context, orphans []int) error {
	deadline := time.Now().Add(a.cfg.RegisterTimeout)
	var bo backoff
	for warned := false; ; {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RedisTimeout)
		register := a.store.RegisterPod
		if a.stopping.Load() {
			// Re-registering after data loss while stopping: straight into
			// our own cordon, so no new work arrives that SIGKILL would end.
			register = a.store.RegisterStoppingPod
		}
		st, err := register(rctx, a.cfg.Pool, a.cfg.PodName, a.uid, orphans...)
		cancel()
		if err == nil {
			a.setPodState(st)
			a.log.Info("registered", "uid", a.uid, "state", st, "orphan_slots", orphans)
			return nil
		}
		retry := transient(err) || errors.Is(err, slots.ErrNotExpected) || errors.Is(err, slots.ErrPodConflict)
		if !retry || errors.Is(err, slots.ErrTombstoned) {
			return fmt.Errorf("registering: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registering: gave up after --register-timeout %v: %w", a.cfg.RegisterTimeout, err)
		}
		if !warned {
			a.log.Warn("registration refused for now; retrying", "err", err, "for", a.cfg.RegisterTimeout)
			warned = true
		}
		if !sleepCtx(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

func (a *agent) setPodState(st slots.PodState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.podState != st && a.podState != "" {
		a.log.Info("pod state changed", "from", a.podState, "to", st)
	}
	a.podState = st
}

// ready says whether /readyz answers 200, and why not.
func (a *agent) ready() (bool, string) {
	switch {
	case a.isFatal():
		return false, "fenced"
	case a.stopping.Load():
		return false, "stopping"
	case !a.registered.Load():
		return false, "not registered"
	}
	a.mu.Lock()
	st := a.podState
	a.mu.Unlock()
	if st != slots.PodActive {
		return false, "pod is " + string(st)
	}
	return true, "ready"
}

// heartbeatLoop sends one heartbeat at a time, every --heartbeat-interval.
func (a *agent) heartbeatLoop(stop <-chan struct{}) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-a.work.Done():
			return
		case <-t.C:
		}
		a.heartbeat(&failing)
	}
}

func (a *agent) heartbeat(failing *bool) {
	seq, report := a.report()
	ctx, cancel := context.WithTimeout(a.work, a.cfg.RedisTimeout)
	reply, err := a.store.HeartbeatNumbered(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, seq, report)
	cancel()
	switch {
	case err == nil:
		if *failing {
			a.log.Info("heartbeats recorded again")
			*failing = false
		}
		a.setPodState(reply.State)
		for _, ref := range reply.Stop {
			a.stopPhase(ref, errCancelRequested, "heartbeat")
		}
	case a.work.Err() != nil:
	case fenced(err):
		a.fatal(fmt.Errorf("heartbeat refused: %w", err))
	case errors.Is(err, slots.ErrPodNotFound), errors.Is(err, slots.ErrPodState):
		// Redis lost the pod's record (data loss; the janitor may have
		// rebuilt it as expected): register again with the busy slots.
		busy := a.busySlots()
		a.log.Warn("the slot store lost this pod's record; registering again", "err", err, "busy_slots", busy)
		if rerr := a.register(a.work, busy); rerr != nil && a.work.Err() == nil {
			a.fatal(fmt.Errorf("registering again after the slot store lost this pod: %w", rerr))
		}
	default:
		a.m.redisErrors.WithLabelValues("heartbeat").Inc()
		if !*failing {
			a.log.Warn("heartbeat failed; running phases continue, retrying", "err", err)
			*failing = true
		}
	}
}

// report lists what the agent really runs: phases being claimed (slot -1),
// running, or holding a result not recorded yet. One entry per task: a
// phase still running wins over a finished one of the same task (an apply
// can start once its plan's result is recorded, before the agent heard so).
// seq numbers the report; it is taken under the same lock as the phases,
// so a phase added after it (claimPending) is in every report numbered
// higher.
func (a *agent) report() (seq int64, _ []slots.RunningPhase) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reportSeq = max(a.reportSeq+1, time.Now().UnixMicro())
	byTask := map[string]*phase{}
	for _, p := range a.phases {
		if q, ok := byTask[p.ref.Task]; ok && !q.finished {
			continue
		}
		byTask[p.ref.Task] = p
	}
	out := make([]slots.RunningPhase, 0, len(byTask))
	for _, p := range byTask {
		out = append(out, slots.RunningPhase{Slot: p.slot, Task: p.ref.Task, Epoch: p.ref.Epoch})
	}
	slices.SortFunc(out, func(x, y slots.RunningPhase) int { return x.Slot - y.Slot })
	return a.reportSeq, out
}

// claimPending adds a phase about to be claimed to what heartbeats report
// (slot -1) and returns the number of the first report that includes it.
func (a *agent) claimPending(r slots.TaskRef) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.phases[r]; !ok {
		a.phases[r] = &phase{ref: r, slot: -1}
	}
	return a.reportSeq + 1
}

func (a *agent) busySlots() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int
	for _, p := range a.phases {
		if p.slot >= 0 && !slices.Contains(out, p.slot) {
			out = append(out, p.slot)
		}
	}
	slices.Sort(out)
	return out
}

// quiet reports, in one look, whether no phase is in flight and whether
// a reservation is held.
func (a *agent) quiet() (idle, held bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.phases) == 0, len(a.reservations) > 0
}

// readLoop is the pod's one inbox reader. Once the agent is stopping and
// cordoned it hands back unstarted work and releases reservations, then
// keeps reading (cancels of running phases, applies approved before the
// release) until nothing runs, nothing waits to be recorded and the inbox
// is empty.
func (a *agent) readLoop() {
	handedBack, mayGetApply := false, false
	var bo backoff
	failing := false
	for a.work.Err() == nil {
		if a.hooks.beforeTake != nil {
			a.hooks.beforeTake(a.work)
		}
		if a.stopping.Load() && !handedBack {
			select {
			case <-a.cordoned:
			case <-a.work.Done():
				return
			}
			if !a.handBack() {
				return
			}
			handedBack = true
		}
		if handedBack {
			// A plan that ends after the hand-back may still reserve slot
			// 0: release every reservation as it appears. Only a held
			// reservation can bring an apply (approved before its release)
			// into the inbox; without one, once idle the agent is done.
			idle, held := a.quiet()
			if held {
				a.releaseReservations()
				mayGetApply = true
				continue
			}
			if idle && !mayGetApply {
				return
			}
		}
		m, claimed, taken, err := a.take()
		if err != nil {
			if a.work.Err() != nil {
				return
			}
			if fenced(err) {
				a.fatal(fmt.Errorf("taking work: %w", err))
				return
			}
			a.m.redisErrors.WithLabelValues("take").Inc()
			if !failing {
				a.log.Warn("reading the inbox failed; retrying", "err", err)
				failing = true
			}
			sleepCtx(a.work, bo.next())
			continue
		}
		if failing {
			a.log.Info("reading the inbox again")
			failing = false
		}
		bo.reset()
		if m == nil {
			if idle, held := a.quiet(); handedBack && !claimed && idle && !held {
				return // and the inbox was empty
			}
			continue
		}
		switch m.Kind {
		case slots.MsgCancel:
			a.stopPhase(slots.TaskRef{Task: m.Task, Epoch: m.Epoch}, errCancelRequested, "cancel message")
		case slots.MsgAssignment:
			a.start(m.Assignment, taken)
		}
	}
}

// take runs one Take. A phase being claimed is reported in heartbeats from
// before its claim script runs until the agent runs it or knows it will
// not. claimed says whether an assignment entry was seen.
func (a *agent) take() (msg *slots.Message, claimed bool, taken time.Time, err error) {
	var ref *slots.TaskRef
	ctx, cancel := context.WithTimeout(a.work, takeWait+a.cfg.RedisTimeout)
	defer cancel()
	m, err := a.store.Take(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, takeWait, func(r slots.TaskRef) int64 {
		ref = &r
		return a.claimPending(r)
	})
	taken = time.Now()
	if ref == nil {
		return m, false, taken, err
	}
	switch {
	case err == nil && m != nil && m.Kind == slots.MsgAssignment:
		return m, true, taken, nil
	case err == nil:
		a.dropPhase(*ref) // a stale entry, dropped by the store
		return nil, true, taken, nil
	case fenced(err):
		a.dropPhase(*ref)
		return nil, true, taken, err
	}
	// The claim may have landed with its reply lost. The store's next Take
	// claims this very entry again and gets the same assignment back if it
	// had (claim.lua is idempotent for a pod and epoch): that is the one
	// recovery path. Until then the phase stays in heartbeat reports, so the
	// store never judges it missing. A second path (reading the task and
	// running it here) would start the phase twice.
	a.log.Warn("claim outcome unknown; the next take claims it again", "task", ref.Task, "epoch", ref.Epoch, "err", err)
	return nil, true, taken, err
}

func (a *agent) dropPhase(ref slots.TaskRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.phases, ref)
}

// start runs an assignment's phase in its slot.
func (a *agent) start(as *slots.Assignment, taken time.Time) {
	ref := slots.TaskRef{Task: as.Task, Epoch: as.Epoch}
	ctx, stop := context.WithCancelCause(a.fence)
	a.mu.Lock()
	p := a.phases[ref]
	if p != nil && p.as != nil {
		// This phase already runs here (or its result waits to be
		// recorded): a phase is started once, whatever answers twice.
		a.mu.Unlock()
		stop(nil)
		a.log.Error("refusing to start a phase this agent already runs", "task", as.Task, "epoch", as.Epoch, "slot", as.Slot)
		a.m.duplicateStarts.Inc()
		return
	}
	for r, other := range a.phases {
		if r != ref && other.slot == as.Slot && other.as != nil && !other.finished {
			// The store frees a slot only once its phase's result is
			// recorded: it lost what runs there (data loss, a failover).
			// The new phase waits for the slot (acquireSlot).
			a.log.Warn("assignment for a slot this agent still runs another phase in", "slot", as.Slot, "task", as.Task, "running", r.Task)
		}
	}
	if p == nil {
		p = &phase{ref: ref}
		a.phases[ref] = p
	}
	p.slot, p.as, p.stop = as.Slot, as, stop
	p.timing = phaseTiming{Task: as.Task, Phase: as.Phase, Taken: taken}
	if p.pendingStop != nil {
		stop(p.pendingStop)
		p.stopped = true
	}
	if as.Phase == slots.PhaseApply {
		delete(a.reservations, as.Task)
		a.m.reservedSlots.Set(float64(len(a.reservations)))
		if a.applied[as.Task] {
			p.refused = true
			a.m.duplicateStarts.Inc()
			a.log.Error("refusing a second apply of a task whose apply this agent already started; recording it as failed",
				"task", as.Task, "epoch", as.Epoch, "slot", as.Slot)
		}
		a.applied[as.Task] = true
	}
	a.mu.Unlock()
	a.phaseWG.Add(1)
	go a.runPhase(ctx, p)
}

// stopPhase stops a phase's executor (SIGTERM, then SIGKILL after the grace).
func (a *agent) stopPhase(ref slots.TaskRef, cause error, via string) {
	a.mu.Lock()
	p := a.phases[ref]
	if p == nil || p.finished || p.stopped {
		a.mu.Unlock()
		a.log.Debug("nothing (more) to stop", "task", ref.Task, "epoch", ref.Epoch, "via", via)
		return
	}
	if p.stop == nil {
		p.pendingStop = cause
		a.mu.Unlock()
		return
	}
	stop, slot := p.stop, p.slot
	p.stopped = true
	a.mu.Unlock()
	a.log.Info("stopping phase", "task", ref.Task, "epoch", ref.Epoch, "slot", slot, "via", via, "cause", cause)
	stop(cause)
}

// phaseEnv is the executor's whole environment: the allowed variables of
// the agent's own, and the phase's.
func (a *agent) phaseEnv(as *slots.Assignment) []string {
	return append(slices.Clip(a.baseEnv),
		"TASK_ID="+as.Task,
		"TASK_TYPE="+string(as.Type),
		"TASK_PHASE="+string(as.Phase),
		"TASK_ATTEMPT="+strconv.Itoa(as.Attempt),
		"TASK_EPOCH="+as.Epoch,
		"SLOT="+strconv.Itoa(as.Slot),
		"POOL="+a.cfg.Pool.String(),
		"POD_NAME="+a.cfg.PodName,
	)
}

// runPhase runs the executor and records its result, retrying until Redis
// has it; meanwhile the phase stays in heartbeat reports.
func (a *agent) runPhase(ctx context.Context, p *phase) {
	defer a.phaseWG.Done()
	as := p.as
	log := a.log.With("task", as.Task, "type", as.Type, "phase", as.Phase, "slot", as.Slot, "epoch", as.Epoch, "attempt", as.Attempt)
	timeout := a.cfg.PlanTimeout
	if as.Phase == slots.PhaseApply {
		timeout = a.cfg.ApplyTimeout
	}
	var res executor.Result
	if p.refused {
		now := time.Now()
		res = executor.Result{Outcome: executor.Failure, ExitCode: -1, Started: now, Exited: now,
			Output: []byte("[slotscaler: this task's apply already started on this agent; an apply never runs twice]\n")}
	} else if ctx.Err() != nil || !a.acquireSlot(ctx, as.Task, as.Slot, log) {
		// Stopped while it was being claimed, or while it waited for its
		// slot: nothing to start.
		now := time.Now()
		res = executor.Result{Outcome: executor.Cancelled, ExitCode: -1, Started: now, Exited: now,
			Output: []byte("[slotscaler: cancelled before the executor started]\n")}
	} else {
		log.Info("phase started")
		a.m.busySlots.Inc()
		res = a.runner.Run(ctx, executor.Job{Env: a.phaseEnv(as), Stdin: as.Payload, Timeout: timeout})
		a.m.busySlots.Dec()
		a.releaseSlot(as.Task, as.Slot)
	}
	if errors.Is(context.Cause(ctx), errFenced) {
		log.Warn("phase killed: this pod is fenced, its result is not recorded", "outcome", res.Outcome)
		a.dropPhase(p.ref)
		return
	}
	r := toResult(as, res)
	if p.refused {
		r.Reason = "apply-already-started"
	}
	a.mu.Lock()
	p.finished = true
	p.timing.Started, p.timing.Exited = res.Started, res.Exited
	a.mu.Unlock()
	a.m.pendingResults.Inc()
	a.m.tasks.WithLabelValues(string(as.Type), string(as.Phase), string(r.Outcome)).Inc()
	a.m.phaseDuration.WithLabelValues(string(as.Type), string(as.Phase), string(r.Outcome)).Observe(res.Exited.Sub(res.Started).Seconds())
	log.Info("phase ended", "outcome", r.Outcome, "exit_code", r.ExitCode, "reason", r.Reason, "duration", res.Exited.Sub(res.Started))

	st, ok := a.complete(r, log)
	a.m.pendingResults.Dec()
	a.mu.Lock()
	delete(a.phases, p.ref)
	if ok && st == slots.StateReserved && !a.runsTask(as.Task) {
		a.reservations[as.Task] = as.Epoch
		a.m.reservedSlots.Set(float64(len(a.reservations)))
	}
	timing := p.timing
	a.mu.Unlock()
	if ok {
		timing.Recorded = time.Now()
		log.Info("result recorded", "state", st)
		if a.hooks.recorded != nil {
			a.hooks.recorded(timing)
		}
	}
}

// acquireSlot waits until no executor of this agent runs in the slot; false
// if ctx ended first. The store gives a slot one phase at a time, so this
// never waits, unless the store lost what runs there (a failover that lost
// writes, data loss): then the store, which no longer knows the running
// phase, tells the agent to stop it (heartbeat reconciliation), and the new
// phase starts once it has ended. Two executors never share a slot.
//
// The same holds for a task: a plan may be retried, never run twice at once,
// so a phase of a task that still runs here (in another slot, under an
// epoch the store forgot) waits for it too. The task is taken first, then
// the slot.
func (a *agent) acquireSlot(ctx context.Context, task string, slot int, log *slog.Logger) bool {
	a.mu.Lock()
	sem := a.slotSems[slot]
	if sem == nil {
		sem = make(chan struct{}, 1)
		a.slotSems[slot] = sem
	}
	ts := a.taskSems[task]
	if ts == nil {
		ts = &taskSem{ch: make(chan struct{}, 1)}
		a.taskSems[task] = ts
	}
	ts.users++
	a.mu.Unlock()
	if !acquire(ctx, ts.ch, log, "the task still runs another phase here (work the store lost); starting this one when it ends") {
		a.dropTaskSem(task, ts)
		return false
	}
	if !acquire(ctx, sem, log, "the slot still runs another phase (work the store lost); starting this one when it ends") {
		<-ts.ch
		a.dropTaskSem(task, ts)
		return false
	}
	return true
}

func acquire(ctx context.Context, sem chan struct{}, log *slog.Logger, waiting string) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
	}
	log.Warn(waiting)
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *agent) releaseSlot(task string, slot int) {
	a.mu.Lock()
	sem, ts := a.slotSems[slot], a.taskSems[task]
	a.mu.Unlock()
	<-sem
	<-ts.ch
	a.dropTaskSem(task, ts)
}

// taskSem is a task's one-executor semaphore, kept while anyone holds or
// waits for it (so the map does not grow with every task ever run).
type taskSem struct {
	ch    chan struct{}
	users int // a.mu
}

func (a *agent) dropTaskSem(task string, ts *taskSem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ts.users--; ts.users == 0 {
		delete(a.taskSems, task)
	}
}

// runsTask reports whether a phase of the task is in flight; a.mu held.
func (a *agent) runsTask(task string) bool {
	for ref := range a.phases {
		if ref.Task == task {
			return true
		}
	}
	return false
}

func toResult(as *slots.Assignment, res executor.Result) slots.Result {
	r := slots.Result{Task: as.Task, Epoch: as.Epoch, ExitCode: res.ExitCode, Output: res.Output}
	switch res.Outcome {
	case executor.Success:
		r.Outcome = slots.OutcomeSuccess
	case executor.Timeout:
		r.Outcome = slots.OutcomeTimeout
	case executor.Cancelled:
		r.Outcome = slots.OutcomeCancelled
	default:
		r.Outcome = slots.OutcomeFailure
		switch {
		case res.Err != nil:
			r.Reason = "executor-not-started"
		case res.Signal != 0:
			r.Reason = "signal"
		}
	}
	return r
}

// complete records a result, retrying until Redis takes it. false when
// the store refused it for good (the phase is no longer this pod's) or the
// agent is ending.
func (a *agent) complete(r slots.Result, log *slog.Logger) (slots.TaskState, bool) {
	var bo backoff
	failing := false
	for {
		ctx, cancel := context.WithTimeout(a.work, a.cfg.RedisTimeout)
		st, err := a.store.Complete(ctx, a.cfg.Pool, r)
		cancel()
		switch {
		case err == nil:
			if failing {
				log.Info("result recorded after retries")
			}
			return st, true
		case a.work.Err() != nil:
			return "", false
		case !transient(err):
			log.Warn("the slot store refused the result; dropping it", "err", err)
			return "", false
		}
		a.m.redisErrors.WithLabelValues("complete").Inc()
		if !failing {
			log.Warn("recording the result failed; keeping it and retrying until Redis takes it", "err", err)
			failing = true
		}
		if !sleepCtx(a.work, bo.next()) {
			return "", false
		}
	}
}

// retry runs a store call until it succeeds, fails for good or ctx ends.
func (a *agent) retry(ctx context.Context, op string, call func(ctx context.Context) error) error {
	var bo backoff
	for {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.RedisTimeout)
		err := call(cctx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		a.m.redisErrors.WithLabelValues(op).Inc()
		a.log.Debug("retrying", "op", op, "err", err)
		if !sleepCtx(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

// cordon stops new work reaching the pod; false when the agent is ending.
func (a *agent) cordon() bool {
	err := a.retry(a.work, "cordon", func(ctx context.Context) error { return a.store.CordonSelf(ctx, a.cfg.Pool, a.cfg.PodName, a.uid) })
	switch {
	case err == nil:
		a.setPodState(slots.PodCordoned)
		a.log.Info("cordoned")
	case errors.Is(err, slots.ErrPodState), errors.Is(err, slots.ErrPodNotFound):
		a.log.Info("not cordoned: no work can reach the pod anyway", "err", err)
	case fenced(err):
		a.fatal(fmt.Errorf("cordoning: %w", err))
		return false
	default:
		return false
	}
	return true
}

// handBack requeues assigned-but-unstarted plans without spending an
// attempt; false when the agent is ending.
func (a *agent) handBack() bool {
	var ids []string
	err := a.retry(a.work, "handback", func(ctx context.Context) (err error) {
		ids, err = a.store.HandBack(ctx, a.cfg.Pool, a.cfg.PodName, a.uid)
		return err
	})
	switch {
	case err == nil:
		a.log.Info("handed back unstarted work", "tasks", ids)
	case errors.Is(err, slots.ErrPodNotFound):
	case fenced(err):
		a.fatal(fmt.Errorf("handing back work: %w", err))
		return false
	default:
		return false
	}
	return true
}

// releaseReservations gives up the slots held for applies nobody approved
// yet: those tasks fail with reason agent-shutdown. An apply approved
// before the release is in the inbox and runs.
func (a *agent) releaseReservations() {
	a.mu.Lock()
	tasks := make([]string, 0, len(a.reservations))
	for t := range a.reservations {
		tasks = append(tasks, t)
	}
	a.mu.Unlock()
	slices.Sort(tasks)
	for _, t := range tasks {
		err := a.retry(a.work, "release", func(ctx context.Context) error {
			return a.store.ReleaseReservation(ctx, a.cfg.Pool, t, "agent-shutdown")
		})
		switch {
		case err == nil:
			a.log.Info("released reservation: the task fails with reason agent-shutdown", "task", t)
		case errors.Is(err, slots.ErrNotReserved), errors.Is(err, slots.ErrReservationLost), errors.Is(err, slots.ErrTaskNotFound):
			a.log.Info("reservation already ended or approved", "task", t, "err", err)
		default:
			a.log.Warn("releasing reservation failed", "task", t, "err", err)
		}
		a.mu.Lock()
		delete(a.reservations, t)
		a.m.reservedSlots.Set(float64(len(a.reservations)))
		a.mu.Unlock()
	}
}

// removeSelf deletes a static pool's pod record once the agent is done
// (in managed pools the janitor does it when the pod object is gone).
func (a *agent) removeSelf() {
	ctx, cancel := context.WithTimeout(a.work, a.cfg.RegisterTimeout)
	defer cancel()
	err := a.retry(ctx, "remove", func(ctx context.Context) error {
		return a.store.RemovePod(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, "agent-shutdown")
	})
	if err != nil {
		a.log.Warn("removing the pod record failed; the reaper removes it when its heartbeat expires", "err", err)
		return
	}
	a.log.Info("pod record removed")
}
