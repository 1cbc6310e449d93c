package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// driver is the platform: it submits plans and plan_and_apply, approves,
// rejects and cancels, and changes replicas, and logs its own decisions
// (the evidence of when a reservation was ended by someone).
type driver struct {
	r   *faultRun
	rng *rand.Rand

	mu         sync.Mutex
	tasks      map[string]*drivenTask
	order      []string
	counts     map[string]int
	unfinished []string
}

type drivenTask struct {
	id      string
	typ     slots.TaskType
	decided time.Time // when a reject or cancel was sent (the reservation ends at or after it)
	done    bool
	final   string
}

func (d *driver) count(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.counts == nil {
		d.counts = map[string]int{}
	}
	d.counts[what]++
}

func (d *driver) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.tasks)
}

func (d *driver) summary() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return countsString(d.counts)
}

// decidedAt is when the driver first sent a reject or cancel for the task.
func (d *driver) decidedAt(id string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.tasks[id]
	if t == nil || t.decided.IsZero() {
		return time.Time{}, false
	}
	return t.decided, true
}

func (d *driver) open() []*drivenTask {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*drivenTask
	for _, id := range d.order {
		if t := d.tasks[id]; !t.done {
			out = append(out, t)
		}
	}
	return out
}

func (d *driver) pool() slots.PoolID { return slots.PoolID{Namespace: d.r.ns, Name: d.r.pool} }

func (d *driver) call(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(d.r.ctx, 2*time.Second)
	defer cancel()
	return fn(ctx)
}

func (d *driver) run(ctx context.Context) {
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		open := d.open()
		switch x := d.rng.IntN(100); {
		case x < 40 && len(open) < 30:
			d.submit(slots.Plan)
		case x < 60 && len(open) < 30:
			d.submit(slots.PlanAndApply)
		case x < 64 && len(open) > 0:
			d.cancel(open[d.rng.IntN(len(open))])
		case x < 68:
			replicas := int32(1 + d.rng.IntN(5))
			d.r.c.scaleTo(d.r.ns, d.r.pool, replicas)
			d.count("scale")
		}
		n++
		d.decide(open, false)
	}
}

func (d *driver) submit(typ slots.TaskType) {
	d.mu.Lock()
	id := fmt.Sprintf("t%04d", len(d.order))
	t := &drivenTask{id: id, typ: typ}
	d.tasks[id] = t
	d.order = append(d.order, id)
	d.mu.Unlock()
	payload := strconv.FormatFloat(0.05+d.rng.Float64()*1.2, 'f', 2, 64)
	if d.rng.IntN(10) == 0 {
		payload = "fail"
	}
	// Submit is idempotent by id: resent until Redis answers.
	for range 20 {
		err := d.call(func(ctx context.Context) error {
			_, err := d.r.c.store.Submit(ctx, d.pool(), slots.TaskSpec{ID: id, Type: typ, Payload: []byte(payload)})
			return err
		})
		if err == nil {
			d.count("submit-" + string(typ))
			return
		}
		if d.r.ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.mu.Lock()
	t.done, t.final = true, "never submitted"
	d.mu.Unlock()
}

func (d *driver) cancel(t *drivenTask) {
	d.mu.Lock()
	if t.decided.IsZero() {
		t.decided = time.Now()
	}
	d.mu.Unlock()
	if err := d.call(func(ctx context.Context) error {
		_, err := d.r.c.store.Cancel(ctx, d.pool(), t.id, "driver")
		return err
	}); err == nil {
		d.count("cancel")
	}
}

// decide looks at open tasks: approves or rejects reserved ones, notes the
// ended. all: approve every reservation (settling).
func (d *driver) decide(open []*drivenTask, all bool) {
	for _, t := range open {
		var tk slots.Task
		err := d.call(func(ctx context.Context) (err error) {
			tk, err = d.r.c.store.Task(ctx, d.pool(), t.id)
			return err
		})
		switch {
		case errors.Is(err, slots.ErrTaskNotFound):
			d.finish(t, "gone (store lost it)")
			continue
		case err != nil:
			continue
		case tk.State.Terminal():
			d.finish(t, string(tk.State)+" "+tk.Reason)
			continue
		case tk.State != slots.StateReserved:
			continue
		}
		x := d.rng.IntN(100)
		switch {
		case all || x < 60:
			if d.call(func(ctx context.Context) error {
				_, err := d.r.c.store.Approve(ctx, d.pool(), t.id, "driver")
				return err
			}) == nil {
				d.count("approve")
			}
		case x < 75:
			d.mu.Lock()
			if t.decided.IsZero() {
				t.decided = time.Now()
			}
			d.mu.Unlock()
			if d.call(func(ctx context.Context) error { return d.r.c.store.Reject(ctx, d.pool(), t.id, "driver") }) == nil {
				d.count("reject")
			}
		}
		// else: left waiting (it may expire)
	}
}

func (d *driver) finish(t *drivenTask, final string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !t.done {
		t.done, t.final = true, final
		if d.counts == nil {
			d.counts = map[string]int{}
		}
		d.counts["end "+strings.Fields(final)[0]]++
	}
}

// settle approves every reservation until every task ended or timeout;
// what is left is in unfinished.
func (d *driver) settle(timeout time.Duration) {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		open := d.open()
		if len(open) == 0 {
			return
		}
		d.decide(open, true)
		time.Sleep(200 * time.Millisecond)
	}
	for _, t := range d.open() {
		var tk slots.Task
		_ = d.call(func(ctx context.Context) (err error) { tk, err = d.r.c.store.Task(ctx, d.pool(), t.id); return err })
		d.unfinished = append(d.unfinished, fmt.Sprintf("%s (%s) is %s", t.id, t.typ, tk.State))
	}
}

// waitConverged waits until the pool has n live pods, each with an active
// record, and no other record.
func (r *faultRun) waitConverged(n int, timeout time.Duration) {
	r.t.Helper()
	var last string
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		snap, err := r.c.store.Snapshot(r.ctx, slots.PoolID{Namespace: r.ns, Name: r.pool})
		live := r.c.livePods(r.ns, r.pool)
		if err == nil {
			ok := len(snap.Pods) == n && len(live) == n
			for _, p := range snap.Pods {
				ok = ok && p.State == slots.PodActive
			}
			if ok {
				return
			}
			last = fmt.Sprintf("%d live pods, records %v", len(live), podStates(&snap))
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Errorf("seed %d: the pool did not converge to %d active pods after faults stopped: %s", r.seed, n, last)
}
