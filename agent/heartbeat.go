package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// heartbeatLoop sends one heartbeat at a time, every --heartbeat-interval.
func (a *agent) heartbeatLoop(stop <-chan struct{}) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	// A beat that fails is not retried: the next tick sends a fresh report.
	beats := retrier{log: a.log, m: a.m, op: "heartbeat",
		warn: "heartbeat failed; running phases continue, retrying", again: "heartbeats recorded again"}
	for {
		select {
		case <-stop:
			return
		case <-a.work.Done():
			return
		case <-t.C:
		}
		a.heartbeat(&beats)
		// In the background: a sweep reads the store (a reservation's
		// task) and deletes files, neither of which may delay a beat.
		go a.sweepWorkspaces()
	}
}

func (a *agent) heartbeat(beats *retrier) {
	seq, report := a.report()
	var reply slots.HeartbeatReply
	err := a.storeCall(a.work, func(ctx context.Context) (err error) {
		reply, err = a.store.HeartbeatNumbered(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, seq, report)
		return err
	})
	switch {
	case err == nil:
		beats.succeeded()
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
		beats.failed(err)
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
