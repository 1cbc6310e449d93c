package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// approver is who the demo approves and rejects as (recorded with the task).
const approver = "demo"

// load is one pool's synthetic platform: it submits plans and
// plan_and_applies in busy periods, approves (or rejects) reserved applies
// after a human-like pause, and follows the pool's event stream to count
// how tasks end.
type load struct {
	store *slots.Store
	pool  PoolProfile
	prof  Profile
	id    slots.PoolID
	run   string // this run's id, in task ids
	log   *slog.Logger

	submitted atomic.Int64
	refused   atomic.Int64 // queue full
	approved  atomic.Int64
	rejected  atomic.Int64

	mu       sync.Mutex
	outcomes map[string]int // "succeeded", "failed(agent-lost)", …
	pending  sync.WaitGroup // approvals in flight
}

func newLoad(store *slots.Store, pool PoolProfile, prof Profile, run string, log *slog.Logger) *load {
	return &load{store: store, pool: pool, prof: prof, run: run,
		id:       slots.PoolID{Namespace: pool.Namespace, Name: pool.Name},
		log:      log.With("component", "load", "pool", pool.Namespace+"/"+pool.Name),
		outcomes: map[string]int{}}
}

// busyAt reports whether the profile is in a busy period at elapsed, and
// how long until that changes.
func (p PoolProfile) busyAt(elapsed time.Duration) (bool, time.Duration) {
	if elapsed < p.Offset {
		return false, p.Offset - elapsed
	}
	if p.Cycle() <= 0 {
		return false, time.Hour
	}
	in := (elapsed - p.Offset) % p.Cycle()
	if in < p.Busy {
		return true, p.Busy - in
	}
	return false, p.Cycle() - in
}

// submitLoop submits tasks until ctx ends: Poisson arrivals at Rate in busy
// periods, nothing in quiet ones.
func (l *load) submitLoop(ctx context.Context, start time.Time) {
	n := 0
	for ctx.Err() == nil {
		busy, left := l.pool.busyAt(time.Since(start))
		if !busy || l.pool.Rate <= 0 {
			sleep(ctx, left)
			continue
		}
		gap := time.Duration(rand.ExpFloat64() / l.pool.Rate * float64(time.Second))
		if gap > left {
			sleep(ctx, left)
			continue
		}
		sleep(ctx, gap)
		if ctx.Err() != nil {
			return
		}
		typ := slots.Plan
		if rand.Float64() < l.pool.ApplyRatio {
			typ = slots.PlanAndApply
		}
		n++
		spec := slots.TaskSpec{ID: fmt.Sprintf("%s-%s-%04d", l.pool.Name, l.run, n), Type: typ}
		l.submit(ctx, spec)
	}
}

// submit retries while the janitor has not declared the pool yet.
func (l *load) submit(ctx context.Context, spec slots.TaskSpec) {
	for ctx.Err() == nil {
		_, err := l.store.Submit(ctx, l.id, spec)
		switch {
		case err == nil:
			l.submitted.Add(1)
			return
		case errors.Is(err, slots.ErrPoolNotFound):
			sleep(ctx, 200*time.Millisecond)
		case errors.Is(err, slots.ErrQueueFull):
			l.refused.Add(1)
			return
		default:
			if ctx.Err() == nil {
				l.log.Warn("submitting a task", "task", spec.ID, "err", err)
			}
			return
		}
	}
}

// follow reads the pool's events until ctx ends, then until it has read
// them all: a reserved task gets its approval (or rejection) after a pause
// unless decide has ended, a finished one is counted.
func (l *load) follow(ctx, decide context.Context) {
	cursor := ""
	read := context.WithoutCancel(ctx)
	for {
		stopping := ctx.Err() != nil
		rctx, cancel := context.WithTimeout(read, 5*time.Second)
		page, err := l.store.Events(rctx, l.id, cursor, 1000)
		cancel()
		if err != nil {
			if stopping {
				break
			}
			if !errors.Is(err, slots.ErrPoolNotFound) {
				l.log.Warn("reading pool events", "err", err)
			}
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		if page.Gap && cursor != "" {
			l.log.Warn("missed pool events (stream capped or Redis lost data): counts may be short")
		}
		cursor = page.Next
		for _, e := range page.Events {
			if e.Kind != "task" || !strings.HasPrefix(e.Subject, l.pool.Name+"-"+l.run+"-") {
				continue
			}
			st := slots.TaskState(e.Fields["st"])
			switch {
			case st == slots.StateReserved && decide.Err() == nil:
				l.pending.Go(func() { l.decide(decide, e.Subject) })
			case st.Terminal():
				key := string(st)
				if r := e.Fields["reason"]; r != "" && st != slots.StateSucceeded && st != slots.StateRejected {
					key += "(" + r + ")"
				}
				l.mu.Lock()
				l.outcomes[key]++
				l.mu.Unlock()
			}
		}
		if len(page.Events) == 0 {
			if stopping {
				break
			}
			sleep(ctx, 250*time.Millisecond)
		}
	}
	l.pending.Wait()
}

// decide approves a reserved task after a pause, or rejects it.
func (l *load) decide(ctx context.Context, task string) {
	span := l.prof.ApproveMax - l.prof.ApproveMin
	wait := l.prof.ApproveMin
	if span > 0 {
		wait += rand.N(span)
	}
	sleep(ctx, wait)
	if ctx.Err() != nil {
		return
	}
	var err error
	if rand.Float64() < l.prof.RejectRatio {
		if err = l.store.Reject(ctx, l.id, task, approver); err == nil {
			l.rejected.Add(1)
		}
	} else if _, err = l.store.Approve(ctx, l.id, task, approver); err == nil {
		l.approved.Add(1)
	}
	if err != nil && ctx.Err() == nil {
		// A reservation can end first (agent stopped, TTL): not the demo's business.
		l.log.Info("deciding a reserved task", "task", task, "err", err)
	}
}

// finished returns how many tasks ended in each way, and the total.
func (l *load) finished() (map[string]int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.outcomes))
	total := 0
	for k, v := range l.outcomes {
		out[k] = v
		total += v
	}
	return out, total
}

// outcomeSummary is "41 succeeded, 3 rejected, 1 failed(exit-code)".
func outcomeSummary(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if (keys[i] == "succeeded") != (keys[j] == "succeeded") {
			return keys[i] == "succeeded"
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
