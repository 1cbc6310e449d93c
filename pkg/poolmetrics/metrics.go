package poolmetrics

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Every per-pool series carries pool="<namespace>/<name>", as the scaler's
// other metrics do: one label, and not "namespace", which Prometheus'
// Kubernetes discovery sets to the scraped pod's namespace.

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("slotscaler_"+name, help, labels, nil)
}

var (
	descReads = desc("pool_metrics_reads_total",
		"Reads of every pool for these metrics, by result (success, error); a failed read exports no pool series.", "result")
	descPools  = desc("pools", "Pools in the slot store's registry (declared, including those being deleted).")
	descQueued = desc("pool_queued_tasks", "Queued tasks by type.", "pool", "type")
	descOldest = desc("pool_oldest_queued_task_age_seconds",
		"Age of the pool's oldest queued task (0 when none): how long the longest waiter found no eligible slot free.", "pool")
	descReserved = desc("pool_reserved_slots",
		"Slots reserved for an apply: plan_and_apply tasks whose plan succeeded, awaiting approval.", "pool")
	descNextExpiry = desc("pool_next_reservation_expiry_seconds",
		"Seconds until the pool's first reservation expires unless approved (only while one waits).", "pool")
	descPods = desc("pool_pods",
		"Pods by lifecycle state: expected (created, agent not registered), active, cordoned, draining, lost.", "pool", "state")
	descBusyPods = desc("pool_busy_pods", "Pods with a running, reserved or orphan slot, in any state.", "pool")
	descIdlePods = desc("pool_idle_pods", "Active pods whose every slot is idle.", "pool")
	descIdle     = desc("pool_idle_slots", "Idle slots of active pods: free for queued work.", "pool")
	descRunning  = desc("pool_running_slots", "Slots running a phase (assigned or started).", "pool")
	descWait     = desc("pool_queue_wait_seconds",
		"How long tasks waited in the queue before a slot took them (0 when a slot was free), by type.", "pool", "type")
	descPhase = desc("pool_phase_duration_seconds",
		"How long phases ran, from the agent's claim to its recorded outcome, by type and phase.", "pool", "type", "phase")
	descFinished = desc("pool_tasks_finished_total",
		"Tasks that ended, by type, state (succeeded, failed, cancelled, rejected, expired) and reason "+
			"(empty; a store reason such as agent-lost, queue-age, reservation-ttl, timeout, exit-code; other).",
		"pool", "type", "state", "reason")
	descExpiries = desc("pool_reservation_expiries_total",
		"Reservations that expired unapproved (tasks expired with reason reservation-ttl).", "pool")
)

var allDescs = []*prometheus.Desc{descReads, descPools, descQueued, descOldest, descReserved, descNextExpiry,
	descPods, descBusyPods, descIdlePods, descIdle, descRunning, descWait, descPhase, descFinished, descExpiries}

// podStates are the lifecycle states exported, each always (0 when none).
var podStates = []slots.PodState{slots.PodExpected, slots.PodActive, slots.PodCordoned, slots.PodDraining, slots.PodLost}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func emitPool(ch chan<- prometheus.Metric, p poolReading) {
	pool, st, m := p.id.String(), p.stats, p.metrics
	types := slices.Sorted(maps.Keys(st.Queued))
	for _, t := range types {
		gauge(ch, descQueued, float64(st.Queued[t]), pool, string(t))
	}
	age := 0.0
	if !st.OldestQueued.IsZero() {
		age = max(0, st.Now.Sub(st.OldestQueued).Seconds())
	}
	gauge(ch, descOldest, age, pool)
	gauge(ch, descReserved, float64(st.Reserved), pool)
	if !m.NextReservationExpiry.IsZero() {
		gauge(ch, descNextExpiry, max(0, m.NextReservationExpiry.Sub(p.metricsAt).Seconds()), pool)
	}
	for _, s := range podStates {
		gauge(ch, descPods, float64(st.Pods[s]), pool, string(s))
	}
	gauge(ch, descBusyPods, float64(st.BusyPods), pool)
	gauge(ch, descIdlePods, float64(st.IdlePods), pool)
	gauge(ch, descIdle, float64(sum(st.IdleSlots)), pool)
	gauge(ch, descRunning, float64(sum(st.RunningSlots)), pool)

	// Every type of the pool has its histograms from the start (zeros), so
	// rate() sees the first observation; a type no longer configured keeps
	// its counts.
	waits := maps.Clone(m.QueueWait)
	phases := maps.Clone(m.PhaseDuration)
	for _, t := range types {
		if _, ok := waits[t]; !ok {
			waits[t] = slots.Histogram{}
		}
		for _, ph := range phasesOf(t) {
			if _, ok := phases[slots.PhaseKey{Type: t, Phase: ph}]; !ok {
				phases[slots.PhaseKey{Type: t, Phase: ph}] = slots.Histogram{}
			}
		}
	}
	for t, h := range waits {
		ch <- histogram(descWait, h, slots.QueueWaitBuckets, pool, string(t))
	}
	for k, h := range phases {
		ch <- histogram(descPhase, h, slots.PhaseDurationBuckets, pool, string(k.Type), string(k.Phase))
	}
	var expiries uint64
	for k, n := range m.Finished {
		ch <- prometheus.MustNewConstMetric(descFinished, prometheus.CounterValue, float64(n), pool, string(k.Type), string(k.State), k.Reason)
		if k.State == slots.StateExpired && k.Reason == slots.ReasonReservationTTL {
			expiries += n
		}
	}
	ch <- prometheus.MustNewConstMetric(descExpiries, prometheus.CounterValue, float64(expiries), pool)
}

func phasesOf(t slots.TaskType) []slots.Phase {
	if t == slots.PlanAndApply {
		return []slots.Phase{slots.PhasePlan, slots.PhaseApply}
	}
	return []slots.Phase{slots.PhasePlan}
}

func histogram(d *prometheus.Desc, h slots.Histogram, bounds []float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstHistogram(d, h.Count(), h.Sum.Seconds(), h.Cumulative(bounds), labels...)
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
