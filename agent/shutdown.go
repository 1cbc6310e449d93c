package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// cordon stops new work reaching the pod; false when the agent is ending.
func (a *agent) cordon() bool {
	err := a.retryStore(a.work, "cordon", func(ctx context.Context) error { return a.store.CordonSelf(ctx, a.cfg.Pool, a.cfg.PodName, a.uid) })
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
	err := a.retryStore(a.work, "handback", func(ctx context.Context) (err error) {
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
		err := a.retryStore(a.work, "release", func(ctx context.Context) error {
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
	err := a.retryStore(ctx, "remove", func(ctx context.Context) error {
		return a.store.RemovePod(ctx, a.cfg.Pool, a.cfg.PodName, a.uid, "agent-shutdown")
	})
	if err != nil {
		a.log.Warn("removing the pod record failed; the reaper removes it when its heartbeat expires", "err", err)
		return
	}
	a.log.Info("pod record removed")
}
