package janitor

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the janitor's Prometheus metrics. Every destructive or
// mutating action on a pod is counted with its result.
type Metrics struct {
	// Actions counts pod actions: action = create | expect | expect-stopping | delete |
	// drain | cordon | uncordon | remove | annotate; result = success | error
	// | dry-run, for drain also refused (the pod was busy) and
	// not-replicated (no replica acknowledged in time), for uncordon also
	// refused (the pod's own stopping agent cordoned it).
	Actions *prometheus.CounterVec
	// Syncs counts passes over pools by result.
	Syncs *prometheus.CounterVec
	// RestPasses counts the passes over pools at rest that read only the
	// pool's change token, no snapshot (rest.go); Syncs counts them too.
	RestPasses prometheus.Counter
	// Pods reports each pool's pods by state (live, busy, idle, cordoned,
	// draining, and foreign: static agents' pods being taken over).
	Pods *prometheus.GaugeVec
	// ReportWrites counts writes of the pools' janitor reports (for the
	// dashboard) by result: one per change of a report, or per refresh.
	ReportWrites *prometheus.CounterVec
	// Degraded is 1 while a pool's Degraded condition is True (its pods
	// cannot start, its spec is invalid, its template is refused), else 0.
	// Its one label is pool="<namespace>/<name>", as the scaler's per-pool
	// metrics have it (pkg/poolmetrics): a "namespace" label would clash
	// with the one Prometheus sets to the scraped pod's namespace.
	Degraded *prometheus.GaugeVec
}

// NewMetrics registers the janitor's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "pod_actions_total",
			Help: "Pod actions by action and result (refused: a drain of a busy pod, an uncordon of a pod its stopping agent cordoned).",
		}, []string{"action", "result"}),
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "syncs_total",
			Help: "Passes over a pool by result.",
		}, []string{"result"}),
		RestPasses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "rest_passes_total",
			Help: "Passes over a pool at rest that read only its change token from Redis (no snapshot, no plan).",
		}),
		Pods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "pool_pods",
			Help: "Pods of a pool by state as of the last pass.",
		}, []string{"namespace", "pool", "state"}),
		ReportWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "report_writes_total",
			Help: "Writes of the pools' janitor reports for the dashboard, by result (one per change of a report, or per refresh).",
		}, []string{"result"}),
		Degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "slotscaler", Subsystem: "janitor", Name: "pool_degraded",
			Help: "1 while the pool's Degraded condition is True (pods cannot start, invalid spec, template refused by the pod policy), else 0.",
		}, []string{"pool"}),
	}
	// Both results exist from the start, so rate() over errors sees the first.
	m.Syncs.WithLabelValues(resultSuccess)
	m.Syncs.WithLabelValues(resultError)
	if reg != nil {
		reg.MustRegister(m.Actions, m.Syncs, m.RestPasses, m.Pods, m.ReportWrites, m.Degraded)
	}
	return m
}

// Results of an action.
const (
	resultSuccess       = "success"
	resultError         = "error"
	resultDryRun        = "dry-run"
	resultRefused       = "refused"
	resultNotReplicated = "not-replicated"
)
