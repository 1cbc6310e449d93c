package kube

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The chart's janitor client limits (values.yaml janitor.kubeApiQPS, janitor.kubeApiBurst).
const chartQPS, chartBurst = 50, 100

// BenchmarkJanitor1000Pods measures one pool of 1,000 pods on the real API
// server, the janitor at the chart's client QPS/burst: the time from a
// replica change to 1,000 pods created (and registered by simulated agents),
// the API requests per reconcile at rest, and the time to remove 500 idle
// pods. Run with -benchtime 1x (make bench-kube).
func BenchmarkJanitor1000Pods(b *testing.B) {
	for range b.N {
		benchJanitor(b, 1000)
	}
}

func benchJanitor(b *testing.B, pods int) {
	c := newCluster(b)
	const ns, name = "bench", "pool"
	c.kubelet.pause(ns+"/"+name, true) // agents are simulated below: 1,000 processes would measure the machine
	reg := prometheus.NewRegistry()
	m := janitor.NewMetrics(reg)
	c.startJanitorWith(func(cfg *rest.Config) { cfg.QPS, cfg.Burst = chartQPS, chartBurst }, func(o *janitor.Options) {
		o.Metrics = m
		o.SyncInterval = time.Second
	})
	id := slots.PoolID{Namespace: ns, Name: name}

	// Simulated agents: register every expected record (what an agent does
	// at start-up).
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			snap, err := c.store.Snapshot(c.ctx, id)
			if err != nil {
				continue
			}
			for _, p := range snap.Pods {
				if p.State == slots.PodExpected {
					_, _ = c.store.RegisterPod(c.ctx, id, p.Name, p.UID)
				}
			}
		}
	}()

	waitPods := func(n int, what string) time.Duration {
		start := time.Now()
		require.Eventually(b, func() bool {
			snap, err := c.store.Snapshot(c.ctx, id)
			if err != nil || len(snap.Pods) != n {
				return false
			}
			for _, p := range snap.Pods {
				if p.State != slots.PodActive {
					return false
				}
			}
			return len(c.livePods(ns, name)) == n
		}, 10*time.Minute, 100*time.Millisecond, what)
		return time.Since(start)
	}

	b.ResetTimer()
	before := c.audit.total.Load()
	c.newPool(ns, name, int32(pods), func(ap *v1alpha1.AgentPool) {
		idle := metav1.Duration{Duration: time.Millisecond}
		hb := metav1.Duration{Duration: time.Hour} // simulated agents don't heartbeat
		many := int32(100000)                      // measure the API, not the pool's own cap
		ap.Spec.IdleFor, ap.Spec.HeartbeatTimeout, ap.Spec.MaxDeletionsPerMinute = &idle, &hb, &many
	})
	up := waitPods(pods, "pods created")
	createReqs := c.audit.total.Load() - before

	// At rest: passes that find nothing to do.
	syncs := func() float64 { return testutil.ToFloat64(m.Syncs.WithLabelValues("success")) }
	time.Sleep(2 * time.Second) // status settles
	r0, s0 := c.audit.total.Load(), syncs()
	time.Sleep(5 * time.Second)
	restReqs, restSyncs := c.audit.total.Load()-r0, syncs()-s0

	before = c.audit.total.Load()
	c.scaleTo(ns, name, int32(pods/2))
	down := waitPods(pods/2, "idle pods removed")
	downReqs := c.audit.total.Load() - before
	b.StopTimer()
	c.audit.check(b)

	b.ReportMetric(up.Seconds(), fmt.Sprintf("s/create-%d", pods))
	b.ReportMetric(float64(createReqs)/float64(pods), "reqs/pod-created")
	b.ReportMetric(down.Seconds(), fmt.Sprintf("s/remove-%d", pods/2))
	b.ReportMetric(float64(downReqs)/float64(pods/2), "reqs/pod-removed")
	b.ReportMetric(float64(restReqs)/max(restSyncs, 1), "reqs/idle-reconcile")
	b.Logf("QPS %d burst %d: %d pods created in %v (%d requests), %d removed in %v (%d requests); at rest %d requests over %.0f passes",
		chartQPS, chartBurst, pods, up.Round(time.Millisecond), createReqs, pods/2, down.Round(time.Millisecond), downReqs, restReqs, restSyncs)
}
