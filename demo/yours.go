package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// yours keeps one plan_and_apply in the first pool that nobody in the demo
// decides: its plan runs, then slot 0 stays reserved until you approve or
// reject it on the dashboard's approvals page (or its reservation expires).
// When it ends, the next one is submitted, so the tour always finds an
// approval waiting. Its ids do not carry the load's prefix, so the load
// neither decides nor counts them.
type yours struct {
	store *slots.Store
	pool  slots.PoolID
	run   string
	con   *console
	url   string // the dashboard's approvals page
	log   *slog.Logger
	// poll is how often the task's state is read (one HGET-sized read).
	poll time.Duration
	// last is the id of the task waiting now (or last), for tests.
	last chan string
}

// yoursTaskID is the n-th task of run that waits for you.
func yoursTaskID(run string, n int) string { return fmt.Sprintf("yours-%s-%d", run, n) }

func (y *yours) loop(ctx context.Context) {
	for n := 1; ctx.Err() == nil; n++ {
		id := yoursTaskID(y.run, n)
		if !y.submit(ctx, id) {
			return
		}
		y.watch(ctx, id)
	}
}

// submit retries while the janitor has not declared the pool yet; false
// when ctx ended or the store refused the task for good.
func (y *yours) submit(ctx context.Context, id string) bool {
	spec := slots.TaskSpec{ID: id, Type: slots.PlanAndApply, SubmittedBy: "demo"}
	for ctx.Err() == nil {
		_, err := y.store.Submit(ctx, y.pool, spec)
		switch {
		case err == nil:
			return true
		case errors.Is(err, slots.ErrPoolNotFound), errors.Is(err, slots.ErrQueueFull):
			sleep(ctx, time.Second)
		default:
			if ctx.Err() == nil {
				y.log.Warn("submitting the task that waits for your approval", "task", id, "err", err)
			}
			return false
		}
	}
	return false
}

// watch follows the task until it ends, saying once when it waits for you.
func (y *yours) watch(ctx context.Context, id string) {
	told := false
	for ctx.Err() == nil {
		t, err := y.store.Task(ctx, y.pool, id)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				y.log.Warn("reading the task that waits for your approval", "task", id, "err", err)
			}
		case t.State == slots.StateReserved && !told:
			told = true
			y.con.Printf("%s  %-14s %s waits for your approval: %s", clock(time.Now()), y.pool.String(), id, y.url)
			select {
			case y.last <- id:
			default:
			}
		case t.State.Terminal():
			how := string(t.State)
			if t.By != "" {
				how += " by " + t.By
			}
			y.con.Printf("%s  %-14s %s %s; the next one follows", clock(time.Now()), y.pool.String(), id, how)
			sleep(ctx, y.poll)
			return
		}
		sleep(ctx, y.poll)
	}
}
