package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

const (
	namespace = "slotscaler"
	subsystem = "agent"
)

type metrics struct {
	registry       *prometheus.Registry
	tasks          *prometheus.CounterVec
	phaseDuration  *prometheus.HistogramVec
	busySlots      prometheus.Gauge
	reservedSlots  prometheus.Gauge
	pendingResults prometheus.Gauge
	redisErrors    *prometheus.CounterVec
	// duplicateStarts counts assignments refused because their phase
	// already runs here: it should stay 0; anything else is a bug.
	duplicateStarts prometheus.Counter
}

// newMetrics registers the agent's metrics, each with the label
// pool="<namespace>/<name>" (the pool this agent serves), as the scaler's
// per-pool metrics have it: a query joins an agent's numbers with its
// pool's without relabelling, in and outside Kubernetes.
func newMetrics(pool slots.PoolID) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "task_phases_total",
			Help: "Task phases this agent ran, by task type, phase and outcome (success, failure, timeout, cancelled).",
		}, []string{"type", "phase", "outcome"}),
		phaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "phase_duration_seconds",
			Help:    "How long executors ran, by task type, phase and outcome.",
			Buckets: []float64{.1, .5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}, []string{"type", "phase", "outcome"}),
		busySlots: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "busy_slots",
			Help: "Slots running an executor now.",
		}),
		reservedSlots: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "reserved_slots",
			Help: "Slots held for the apply of a plan_and_apply whose plan succeeded here.",
		}),
		pendingResults: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "pending_results",
			Help: "Finished phases whose result is not recorded in Redis yet (retried until it is).",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "redis_errors_total",
			Help: "Failed slot store calls by operation (each is retried).",
		}, []string{"op"}),
		duplicateStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "duplicate_starts_refused_total",
			Help: "Assignments refused because their phase already runs in this agent (a phase starts once).",
		}),
	}
	// The ops retried with a count (heartbeat.go, inbox.go, phase.go) exist
	// from the start, so rate() over errors sees the first one.
	for _, op := range []string{"heartbeat", "take", "complete"} {
		m.redisErrors.WithLabelValues(op)
	}
	prometheus.WrapRegistererWith(prometheus.Labels{"pool": pool.String()}, m.registry).MustRegister(
		m.tasks, m.phaseDuration, m.busySlots, m.reservedSlots, m.pendingResults, m.redisErrors, m.duplicateStarts)
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
