package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/slotscaler/slotscaler/pkg/executor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

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

// phaseTiming is when one phase passed each step.
type phaseTiming struct {
	Task     string
	Phase    slots.Phase
	Taken    time.Time // Take returned the assignment
	Started  time.Time // the executor runs
	Exited   time.Time // the executor exited
	Recorded time.Time // Complete returned: the slot is free (or reserved)
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
	var wsReason, digest string // a refusal over the workspace; the plan's workspace digest
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
		res, wsReason, digest = a.runInWorkspace(ctx, as, timeout, log)
		a.releaseSlot(as.Task, as.Slot)
	}
	if errors.Is(context.Cause(ctx), errFenced) {
		log.Warn("phase killed: this pod is fenced, its result is not recorded", "outcome", res.Outcome)
		a.dropPhase(p.ref)
		return
	}
	r := toResult(as, res)
	r.WorkspaceDigest = digest
	switch {
	case p.refused:
		r.Reason = "apply-already-started"
	case wsReason != "":
		r.Reason = wsReason
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
	if keepsWorkspace(as, res) && !(ok && st == slots.StateReserved) {
		// The plan succeeded but no apply follows (cancelled meanwhile,
		// its pod declared lost, or the result never recorded).
		a.removeWorkspace(as.Task, log)
	}
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

// keepsWorkspace reports whether a phase's workspace outlives it: the
// successful plan of a plan_and_apply leaves it for the apply.
func keepsWorkspace(as *slots.Assignment, res executor.Result) bool {
	return as.Type == slots.PlanAndApply && as.Phase == slots.PhasePlan && res.Outcome == executor.Success
}

// runInWorkspace runs the executor in the task's workspace: a fresh one
// for a plan; for an apply, the one its plan left, and only if its digest
// is still the one the store kept with the task (else the apply is refused
// with reason workspace-changed, its executor never started). It returns
// the plan's workspace digest for a plan_and_apply, and removes the
// workspace unless an apply follows.
func (a *agent) runInWorkspace(ctx context.Context, as *slots.Assignment, timeout time.Duration, log *slog.Logger) (res executor.Result, reason, digest string) {
	job := executor.Job{Env: a.phaseEnv(as), Stdin: as.Payload, Timeout: timeout}
	if a.ws != nil {
		var dir string
		var err error
		if as.Phase == slots.PhaseApply {
			found, derr := a.ws.digest(as.Task)
			if !verifiable(as.WorkspaceDigest) || found != as.WorkspaceDigest {
				log.Error("refusing to run the apply: its workspace is not the one its plan left",
					"recorded_digest", as.WorkspaceDigest, "found_digest", found, "err", derr)
				a.removeWorkspace(as.Task, log)
				now := time.Now()
				return executor.Result{Outcome: executor.Failure, ExitCode: -1, Started: now, Exited: now,
					Output: fmt.Appendf(nil, "[slotscaler: the apply did not run: its workspace changed since its plan ended (recorded %s, found %s)]\n",
						orNone(as.WorkspaceDigest), found)}, "workspace-changed", ""
			}
			dir, err = a.ws.dir(as.Task)
		} else {
			dir, err = a.ws.create(as.Task)
		}
		if err != nil {
			log.Error("could not prepare the task's workspace", "err", err)
			a.removeWorkspace(as.Task, log)
			now := time.Now()
			return executor.Result{Outcome: executor.Failure, ExitCode: -1, Err: err, Started: now, Exited: now,
				Output: fmt.Appendf(nil, "[slotscaler: could not prepare the task's workspace: %v]\n", err)}, "", ""
		}
		job.Dir = dir
		job.Env = append(job.Env, "TASK_WORKDIR="+dir)
	}
	log.Info("phase started", "workdir", job.Dir)
	a.m.busySlots.Inc()
	res = a.runner.Run(ctx, job)
	a.m.busySlots.Dec()
	if a.ws == nil {
		return res, "", ""
	}
	if keepsWorkspace(as, res) {
		// The executor's whole process tree is gone (the runner ends it):
		// nothing of this phase changes the workspace after this.
		var err error
		digest, err = a.ws.digest(as.Task)
		if err != nil {
			log.Warn("the plan's workspace has no digest: its apply will refuse to run", "digest", digest, "err", err)
		} else {
			log.Info("plan workspace digest", "digest", digest)
		}
		return res, "", digest
	}
	a.removeWorkspace(as.Task, log)
	return res, "", ""
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
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
	results := retrier{log: log, m: a.m, op: "complete",
		warn: "recording the result failed; keeping it and retrying until Redis takes it", again: "result recorded after retries"}
	var st slots.TaskState
	err := results.do(a.work, time.Time{}, refused, func() error {
		return a.storeCall(a.work, func(ctx context.Context) (err error) {
			st, err = a.store.Complete(ctx, a.cfg.Pool, r)
			return err
		})
	})
	switch {
	case err == nil:
		return st, true
	case a.work.Err() != nil:
	default:
		log.Warn("the slot store refused the result; dropping it", "err", err)
	}
	return "", false
}
