package main

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"strings"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// removeWorkspace deletes a task's workspace; a failure is logged and left
// to the next sweep.
func (a *agent) removeWorkspace(task string, log *slog.Logger) {
	if a.ws == nil {
		return
	}
	if err := a.ws.remove(task); err != nil {
		log.Warn("removing the task's workspace failed; the next sweep retries", "err", err)
	}
}

// sweepWorkspaces ends the reservations the store ended without an apply
// here (rejected, expired, cancelled, lost: nothing tells the agent
// otherwise) and deletes every workspace of a task this agent neither runs
// nor holds reserved, so the disk cannot fill up with them. One sweep runs
// at a time; the heartbeat loop starts one after each beat.
func (a *agent) sweepWorkspaces() {
	if a.ws == nil || !a.ws.sweeping.CompareAndSwap(false, true) {
		return
	}
	defer a.ws.sweeping.Store(false)
	a.endFinishedReservations()

	names, err := a.ws.names()
	if err != nil {
		a.log.Warn("sweeping workspaces failed", "err", err)
		return
	}
	var removals []func() error
	a.mu.Lock()
	for _, n := range names {
		if strings.HasPrefix(n, trashPrefix) {
			// Left by a deletion that failed: no phase can use it.
			removals = append(removals, func() error { return a.ws.root.RemoveAll(n) })
			continue
		}
		if task := taskOf(n); task != "" && (a.runsTask(task) || a.reservations[task] != "") {
			continue
		}
		// Renamed under the lock: a phase of this task that starts now
		// creates a fresh workspace, never one half deleted.
		rm, err := a.ws.discard(n)
		if err != nil {
			a.log.Warn("sweeping a stale workspace failed", "name", n, "err", err)
			continue
		}
		a.log.Info("removing a stale workspace", "name", n)
		removals = append(removals, rm)
	}
	a.mu.Unlock()
	for _, rm := range removals {
		if err := rm(); err != nil {
			a.log.Warn("removing a stale workspace failed; the next sweep retries", "err", err)
		}
	}
}

// endFinishedReservations reads each held reservation's task and forgets
// the ones that ended without an apply on this pod; their workspaces are
// then stale.
func (a *agent) endFinishedReservations() {
	a.mu.Lock()
	held := maps.Clone(a.reservations)
	a.mu.Unlock()
	for task, epoch := range held {
		var t slots.TaskPlacement
		err := a.storeCall(a.work, func(ctx context.Context) (err error) {
			t, err = a.store.Placement(ctx, a.cfg.Pool, task)
			return err
		})
		switch {
		case errors.Is(err, slots.ErrTaskNotFound):
		case err != nil:
			continue // asked again at the next sweep
		case t.Pod == a.cfg.PodName && (t.State == slots.StateReserved || (t.State == slots.StateRunning && t.Phase == slots.PhaseApply)):
			continue // still held, or its apply is on its way here
		}
		a.mu.Lock()
		ended := a.reservations[task] == epoch
		if ended {
			delete(a.reservations, task)
			a.m.reservedSlots.Set(float64(len(a.reservations)))
		}
		a.mu.Unlock()
		if ended {
			a.log.Info("reservation ended without an apply here; its workspace goes", "task", task, "state", t.State)
		}
	}
}
