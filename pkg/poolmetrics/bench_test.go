package poolmetrics

// BenchmarkScrape measures one scrape of 1,000 pools on a real
// redis-server: Redis' own CPU per scrape (INFO cpu deltas: meaningful
// only while nothing else uses that server, true for the one redistest
// starts per test binary), the round trips and the commands. own: the
// collector reads every pool itself (the scaler with --history-interval
// 0). lent: it takes the counters from a history recorder's tick (the
// scaler's default), so the stats script runs for no pool.
//
//	go test -run '^$' -bench Scrape -benchtime 50x ./pkg/poolmetrics/

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func BenchmarkScrape(b *testing.B) {
	const n = 1000
	opt, err := redis.ParseURL(redistest.Standalone(b))
	require.NoError(b, err)
	admin := redis.NewClient(opt)
	defer admin.Close()
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	prefix := redistest.Prefix(b)
	store, err := slots.New(b.Context(), rdb, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(b, err)
	for i := range n {
		p := slots.PoolID{Namespace: "bench", Name: fmt.Sprintf("pool-%d", i)}
		_, err := store.DeclarePool(b.Context(), p, slots.DefaultPoolConfig())
		require.NoError(b, err)
		_, err = store.Submit(b.Context(), p, slots.TaskSpec{ID: "t1", Type: slots.Plan}) // something queued
		require.NoError(b, err)
	}
	rec, err := history.NewRecorder(b.Context(), store, rdb, history.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(b, err)
	for range 2 { // the registry, then the pools
		_, err := rec.Tick(b.Context())
		require.NoError(b, err)
	}
	hook := &redistest.Calls{}
	rdb.AddHook(hook)

	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"own", Options{}},
		{"lent", Options{Stats: rec, StatsMaxAge: time.Hour}},
	} {
		b.Run(fmt.Sprintf("pools=%d/%s", n, tc.name), func(b *testing.B) {
			tc.opts.CacheFor, tc.opts.Logger = time.Nanosecond, quiet()
			reg := prometheus.NewRegistry()
			reg.MustRegister(New(store, rdb, tc.opts))
			scrape := func() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
			scrape() // warm: connections, the registry
			rt0, cmd0, cpu0 := hook.RoundTrips.Load(), hook.Commands.Load(), redistest.CPU(b, admin)
			b.ResetTimer()
			for b.Loop() {
				scrape()
			}
			b.StopTimer()
			cpu := redistest.CPU(b, admin) - cpu0
			per := float64(b.N)
			b.ReportMetric(float64(hook.RoundTrips.Load()-rt0)/per, "roundtrips/scrape")
			b.ReportMetric(float64(hook.Commands.Load()-cmd0)/per, "cmds/scrape")
			b.ReportMetric(float64(cpu.Microseconds())/per, "redis-cpu-µs/scrape")
		})
	}
}
