package notify

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Results of one delivery attempt (the result label): bounded.
const (
	ResultSuccess      = "success"       // a 2xx
	ResultHTTPError    = "http_error"    // any other status
	ResultTimeout      = "timeout"       // no answer within the webhook's timeout
	ResultNetworkError = "network_error" // refused, reset, DNS, TLS…
)

// metrics are the notifier's; labels are bounded: pool and webhook (the
// pairs the config file makes), result (the four above).
type metrics struct {
	deliveries  *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	// groupRemovals has no pool or webhook label: the pairs are gone
	// (their series with them); the log names them.
	groupRemovals *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slotscaler_notify_deliveries_total",
			Help: "Webhook delivery attempts by result (success, http_error, timeout, network_error).",
		}, []string{"pool", "webhook", "result"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slotscaler_notify_dead_letters_total",
			Help: "Events given up after the webhook's max attempts or max age.",
		}, []string{"pool", "webhook"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slotscaler_notify_delivery_duration_seconds",
			Help:    "Duration of one webhook delivery attempt.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"pool", "webhook"}),
		groupRemovals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slotscaler_notify_group_removals_total",
			Help: "Attempts to remove the consumer groups of a webhook no longer configured for a pool, by result (destroyed, in_use, error).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.deadLetters, m.duration, m.groupRemovals} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// forget drops the series of a pair that is gone (its pool deleted), so
// the label sets stay those of the pairs that exist.
func (m *metrics) forget(pool, webhook string) {
	l := prometheus.Labels{"pool": pool, "webhook": webhook}
	m.deliveries.DeletePartialMatch(l)
	m.deadLetters.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
}
