package main

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// poolSummary is one pool's counters and the capacity model's answer.
type poolSummary struct {
	Pool          string         `json:"pool"`
	Namespace     string         `json:"namespace"`
	Name          string         `json:"name"`
	Pods          map[string]int `json:"pods"`
	TotalPods     int            `json:"total_pods"`
	LivePods      int            `json:"live_pods"`
	BusyPods      int            `json:"busy_pods"`
	IdlePods      int            `json:"idle_pods"`
	SlotsIdle     int            `json:"slots_idle"`
	SlotsRunning  int            `json:"slots_running"`
	SlotsReserved int            `json:"slots_reserved"`
	Queued        map[string]int `json:"queued"`
	QueuedTotal   int            `json:"queued_total"`
	OldestQueued  *time.Time     `json:"oldest_queued,omitempty"`
	OldestQueuedS float64        `json:"oldest_queued_age_seconds"`
	DesiredPods   *int           `json:"desired_pods"`
	// Explanation says why DesiredPods is what it is; null with it.
	Explanation   *explanationView `json:"explanation"`
	HPA           hpaView          `json:"hpa"`
	Unschedulable map[string]int   `json:"unschedulable,omitempty"`
	Utilisation   float64          `json:"utilisation"`
	At            time.Time        `json:"at"`
	// oldestAge is the oldest queued task's age at At: the API's seconds
	// and the overview's age text are both read from it.
	oldestAge time.Duration
}

// poolSummary reads one pool's counters and config and summarises them as
// poolSummaries does: the pool page and the API's pool resource explain
// the same answer the list gives.
func (s *server) poolSummary(ctx context.Context, pool slots.PoolID) (poolSummary, error) {
	cfg, err := s.configs.Get(ctx, pool)
	if err != nil {
		return poolSummary{}, err
	}
	stats, err := s.store.Stats(ctx, pool)
	if err != nil {
		return poolSummary{}, err
	}
	if stats[0].Err != nil {
		return poolSummary{}, stats[0].Err
	}
	return summarise(cfg, stats[0].Stats), nil
}

// poolSummaries reads the counters and config of every pool keep accepts
// (the pools the identity may read) and computes desired pods. The API's
// pool list and the overview page both show this, so they cannot disagree.
func (s *server) poolSummaries(ctx context.Context, keep func(slots.PoolID) bool) ([]poolSummary, error) {
	pools, err := s.store.Pools(ctx)
	if err != nil {
		return nil, err
	}
	pools = slices.DeleteFunc(pools, func(p slots.PoolID) bool { return !keep(p) })
	if len(pools) == 0 {
		return []poolSummary{}, nil
	}
	stats, err := s.store.Stats(ctx, pools...)
	if err != nil {
		return nil, err
	}
	out := make([]poolSummary, 0, len(stats))
	for _, ps := range stats {
		if ps.Err != nil {
			if errors.Is(ps.Err, slots.ErrPoolNotFound) {
				continue // removed between listing and reading
			}
			return nil, ps.Err
		}
		cfg, err := s.configs.Get(ctx, ps.Pool)
		if errors.Is(err, slots.ErrPoolNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, summarise(cfg, ps.Stats))
	}
	return out, nil
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

func summarise(cfg slots.PoolConfig, st slots.Stats) poolSummary {
	p := poolSummary{Pool: st.Pool.String(), Namespace: st.Pool.Namespace, Name: st.Pool.Name,
		Pods: map[string]int{}, TotalPods: st.TotalPods, LivePods: st.LivePods(), BusyPods: st.BusyPods, IdlePods: st.IdlePods,
		SlotsIdle: sum(st.IdleSlots), SlotsRunning: sum(st.RunningSlots), SlotsReserved: st.Reserved,
		Queued: map[string]int{}, QueuedTotal: st.QueuedTotal(), At: st.Now}
	for k, v := range st.Pods {
		p.Pods[string(k)] = v
	}
	for _, t := range slots.TaskTypes {
		p.Queued[string(t)] = st.Queued[t]
	}
	for t, n := range st.Queued {
		p.Queued[string(t)] = n
	}
	if !st.OldestQueued.IsZero() {
		o := st.OldestQueued
		p.OldestQueued = &o
		p.oldestAge = max(0, st.Now.Sub(o))
		p.OldestQueuedS = p.oldestAge.Seconds()
	}
	// desired_pods stays null when the capacity model refuses the input.
	if res, err := capacity.Desired(slots.CapacityInput(cfg, st, 0)); err == nil {
		d := res.Desired
		p.DesiredPods = &d
		p.Unschedulable = res.Unschedulable
		e := viewExplanation(res.Why)
		p.Explanation = &e
	}
	p.HPA = viewHPA(st.HPATolerance, p.LivePods, p.DesiredPods)
	// Utilisation: slots holding work (running or reserved) over the slots
	// that could (those plus the idle slots of active pods).
	if busy := p.SlotsRunning + p.SlotsReserved; busy+p.SlotsIdle > 0 {
		p.Utilisation = float64(busy) / float64(busy+p.SlotsIdle)
	}
	return p
}
