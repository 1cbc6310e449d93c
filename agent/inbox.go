package main

import (
	"context"
	"fmt"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// takeWait is how long one Take blocks on an empty inbox (Redis blocks in
// whole seconds). It bounds how late a stopping agent notices its last
// phase ended.
const takeWait = time.Second

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
	// A failed Take is retried from the top of the loop, not in place, so
	// a stop that begins while Redis is down still hands work back first.
	takes := retrier{log: a.log, m: a.m, op: "take", warn: "reading the inbox failed; retrying", again: "reading the inbox again"}
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
			takes.failed(err)
			takes.pause(a.work) // the loop ends if work did
			continue
		}
		takes.succeeded()
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

func (a *agent) dropPhase(ref slots.TaskRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.phases, ref)
}
