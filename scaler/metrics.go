package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/poolmetrics"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

const namespace = "slotscaler"

type metrics struct {
	registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	desired     *prometheus.GaugeVec
	binding     *prometheus.GaugeVec
	oldestQueue *prometheus.GaugeVec
	redisUp     prometheus.Gauge

	// observed are the pools with series in the vectors above, so that
	// forgetPools can drop those of pools that went: KEDA stops asking
	// about a deleted pool, and nothing would update its series again.
	mu       sync.Mutex
	observed map[string]bool
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "requests_total",
			Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "request_duration_seconds",
			Help:    "gRPC request latency by method (streams: until the stream ends).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "desired_pods",
			Help: "Desired pod count last reported to KEDA, per pool.",
		}, []string{"pool"}),
		binding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "desired_pods_binding",
			Help: "1 for what set the pool's desired pod count at the last read, 0 for the others: idle (no work), " +
				"busy (pods holding work; the queue fits their idle slots), slots (the queue needs new pods, every slot counts), " +
				"slot-class (new pods for work only some slots may run), min, max (a replica bound).",
		}, []string{"pool", "binding"}),
		oldestQueue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "oldest_queued_task_age_seconds",
			Help: "Age of the pool's oldest queued task at the last read (0 when none).",
		}, []string{"pool"}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "scaler", Name: "redis_up",
			Help: "1 while the scaler reaches Redis (a PING every 2 s), else 0: the scaler is not ready then.",
		}),
		observed: map[string]bool{},
	}
	m.registry.MustRegister(m.requests, m.latency, m.desired, m.binding, m.oldestQueue, m.redisUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// maxLentStatsAge caps lentStatsMaxAge whatever --history-interval.
const maxLentStatsAge = 30 * time.Second

// lentStatsMaxAge is how old the history recorder's read of the pools'
// counters may be for a scrape to export it rather than run the stats
// script of every pool again: one recorder interval plus the 5 s a
// scrape's own read answers later scrapes for (poolmetrics.DefaultCacheFor).
// A recorder that ticks on time (its read takes milliseconds) so answers
// every scrape, with gauges at most 15 s old at the default 10 s interval;
// one that missed a tick (failing, or stuck) answers none, and the scrape
// reads for itself. Capped at 30 s, a usual scrape interval: with a longer
// --history-interval the pool gauges must not lag by minutes, so scrapes
// read for themselves in the rest of each interval.
func lentStatsMaxAge(historyInterval time.Duration) time.Duration {
	return min(historyInterval+poolmetrics.DefaultCacheFor, maxLentStatsAge)
}

// exportPools registers the per-pool view of every pool (pkg/poolmetrics)
// and drops this scaler's own series of pools that went with each of its
// reads. rec (nil when the scaler records no history) lends the collector
// its read of the pools' counters.
func (m *metrics) exportPools(store *slots.Store, rdb redis.UniversalClient, rec *history.Recorder, historyInterval time.Duration, log *slog.Logger) {
	opts := poolmetrics.Options{Logger: log, OnPools: m.forgetPools}
	if rec != nil {
		opts.Stats, opts.StatsMaxAge = rec, lentStatsMaxAge(historyInterval)
	}
	m.registry.MustRegister(poolmetrics.New(store, rdb, opts))
}

// forgetPools deletes the series of every pool not in pools.
func (m *metrics) forgetPools(pools []slots.PoolID) {
	keep := make(map[string]bool, len(pools))
	for _, p := range pools {
		keep[p.String()] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.observed {
		if keep[p] {
			continue
		}
		for _, v := range []*prometheus.GaugeVec{m.desired, m.binding, m.oldestQueue} {
			v.DeletePartialMatch(prometheus.Labels{"pool": p})
		}
		delete(m.observed, p)
	}
}

func (m *metrics) observePool(p slots.PoolID, desired int, st slots.Stats, why capacity.Explanation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observed[p.String()] = true
	m.desired.WithLabelValues(p.String()).Set(float64(desired))
	// One series per binding, so a query needs no absent(): bounded at
	// len(capacity.Bindings) per pool.
	for _, b := range capacity.Bindings {
		v := 0.0
		if b == why.Binding() {
			v = 1
		}
		m.binding.WithLabelValues(p.String(), b).Set(v)
	}
	age := 0.0
	if !st.OldestQueued.IsZero() {
		age = st.Now.Sub(st.OldestQueued).Seconds()
	}
	m.oldestQueue.WithLabelValues(p.String()).Set(age)
}

func (m *metrics) observe(method string, start time.Time, err error) {
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := next(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	start := time.Now()
	err := next(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}
