package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/slotscaler/slotscaler/pkg/capacity"
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
	}
	m.registry.MustRegister(m.requests, m.latency, m.desired, m.binding, m.oldestQueue,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observePool(p slots.PoolID, desired int, st slots.Stats, why capacity.Explanation) {
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
