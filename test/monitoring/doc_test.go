// Package monitoring tests the monitoring pack of slotscaler: the chart's
// alerting rules with Prometheus' own rule test engine (promtool test
// rules), every PromQL query of the rules and of the Grafana dashboard
// with Prometheus' parser against the metrics the binaries export, and the
// chart's monitoring objects (helm template).
//
// A module of its own: github.com/prometheus/prometheus (the PromQL parser)
// stays out of the shipped module's graph, and promtool is built apart
// (internal/testutil.PromtoolBinary, cached like helm).
package monitoring
