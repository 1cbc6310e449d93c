package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// BenchmarkKEDAPoll1000Pools is one KEDA poll (GetMetricSpec + GetMetrics +
// IsActive) per op, for a random pool of 1,000, from 64 concurrent callers,
// over gRPC (bufconn) against a real redis-server. Reports calls/s and the
// p50/p99 latency of one whole poll: flat out (closed loop: latency is then
// mostly queueing behind 63 other callers on 2 cores), and with the 64
// callers paced to 1,000 polls/s in all — 3,000 calls/s, about 15 times what
// KEDA sends for 1,000 pools polled every 15 s (each poll is 3 calls, plus
// the HPA's own reads).
func BenchmarkKEDAPoll1000Pools(b *testing.B) {
	for _, rate := range []int{0, 1000} {
		name := "flat-out"
		if rate > 0 {
			name = fmt.Sprintf("paced-%d-polls-per-s", rate)
		}
		b.Run(name, func(b *testing.B) { benchmarkPoll(b, rate) })
	}
}

func benchmarkPoll(b *testing.B, rate int) {
	f := newFixture(b, redistest.Standalone(b), false)
	ctx := context.Background()
	pools := make([]slots.PoolID, 1000)
	for i := range pools {
		pools[i] = slots.PoolID{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("pool-%d", i)}
		_, err := f.store.DeclarePool(ctx, pools[i], slots.DefaultPoolConfig())
		require.NoError(b, err)
		_, err = f.store.RegisterPod(ctx, pools[i], "agent-0", "uid-0")
		require.NoError(b, err)
		for j := 0; j < i%5; j++ {
			_, err = f.store.Submit(ctx, pools[i], slots.TaskSpec{ID: fmt.Sprintf("t%d", j), Type: slots.Plan})
			require.NoError(b, err)
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var seed atomic.Uint64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb_ *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 1))
		var mine []time.Duration
		var gap time.Duration
		if rate > 0 {
			gap = time.Duration(64 * float64(time.Second) / float64(rate))
		}
		// Staggered starts: callers in lockstep would arrive in bursts of 64.
		next := time.Now()
		if gap > 0 {
			next = next.Add(time.Duration(r.Int64N(int64(gap))))
		}
		for pb_.Next() {
			if gap > 0 {
				next = next.Add(gap)
				time.Sleep(time.Until(next))
			}
			p := pools[r.IntN(len(pools))]
			ref := &pb.ScaledObjectRef{Name: p.Name, Namespace: p.Namespace, ScalerMetadata: map[string]string{"pool": p.Name}}
			t0 := time.Now()
			if _, err := f.client.GetMetricSpec(ctx, ref); err != nil {
				b.Error(err)
				return
			}
			if _, err := f.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: metricName(p)}); err != nil {
				b.Error(err)
				return
			}
			if _, err := f.client.IsActive(ctx, ref); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))*3/elapsed.Seconds(), "calls/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-poll-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-poll-µs")
	}
}
