package main

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the dashboard's collectors on its own registry.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	viewers  prometheus.Gauge
	watched  prometheus.GaugeFunc
	ticks    *prometheus.CounterVec
}

func newMetrics(hub *poolHub) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "dashboard", Name: "requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "slotscaler", Subsystem: "dashboard", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route pattern (SSE streams excluded).",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		viewers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "slotscaler", Subsystem: "dashboard", Name: "live_viewers",
			Help: "Open SSE streams of pool grids.",
		}),
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "slotscaler", Subsystem: "dashboard", Name: "live_ticks_total",
			Help: "Ticks of the live hub's pollers by what they read: snapshot (the whole pool) or token (its change token only, unchanged).",
		}, []string{"read"}),
	}
	m.watched = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "slotscaler", Subsystem: "dashboard", Name: "watched_pools",
		Help: "Pools the live hub is reading (one Redis read per interval each).",
	}, func() float64 { return float64(hub.watching()) })
	for _, read := range []string{liveReadSnapshot, liveReadToken} {
		m.ticks.WithLabelValues(read) // both series from the start
	}
	m.reg.MustRegister(m.requests, m.duration, m.viewers, m.watched, m.ticks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hub.onViewer = func(d int) { m.viewers.Add(float64(d)) }
	hub.onTick = func(read string) { m.ticks.WithLabelValues(read).Inc() }
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observe records one finished request under its chi route pattern (never
// the raw path, so pool and task names do not explode the label space).
func (m *metrics) observe(r *http.Request, code int, seconds float64) {
	route := "unmatched"
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		route = rc.RoutePattern()
	}
	m.requests.WithLabelValues(route, methodLabel(r.Method), strconv.Itoa(code)).Inc()
	if route != "/pools/{ns}/{name}/live" {
		m.duration.WithLabelValues(route).Observe(seconds)
	}
}

// methodLabel maps the request method to a fixed set: any client can send
// any token as a method, and each new one would be a new time series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
