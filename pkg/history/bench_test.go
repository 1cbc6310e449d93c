package history

// BenchmarkRecorderTick measures one recorder tick over 1, 100 and 1,000
// pools on a real redis-server: the time of the tick, Redis' own CPU per
// tick (INFO cpu deltas: meaningful only while nothing else uses that
// server, true for the one redistest starts per test binary), the round
// trips (a go-redis hook: one pipeline) and the commands in it. Each pool
// is written at every tick (the injected clock moves one interval per
// tick). The stats sub-benchmarks are one Store.Stats of the same pools,
// what the scaler reads for KEDA: the ratio of the two is the recorder's
// cost in "Stats reads of every pool". The trivial ones are the floor: a
// pipeline of as many one-line scripts as a tick runs (two per pool).
//
//	go test -run '^$' -bench RecorderTick -benchtime 200x ./pkg/history/

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func BenchmarkRecorderTick(b *testing.B) {
	url := redistest.Standalone(b)
	for _, n := range []int{1, 100, 1000} {
		opt, err := redis.ParseURL(url)
		require.NoError(b, err)
		admin := redis.NewClient(opt)
		e := newEnv(b, redis.NewClient(opt))
		pools := make([]slots.PoolID, n)
		for i := range pools {
			pools[i] = slots.PoolID{Namespace: "bench", Name: fmt.Sprintf("pool-%d", i)}
			e.declare(pools[i])
			e.submit(pools[i], "t1", slots.Plan) // something queued: every field has a value
		}
		hook := &redistest.Calls{}
		e.rdb.AddHook(hook)
		measure := func(b *testing.B, tick func()) {
			tick() // warm: connections, the registry and the policies
			tick()
			rt0, cmd0, cpu0 := hook.RoundTrips.Load(), hook.Commands.Load(), redistest.CPU(b, admin)
			b.ResetTimer()
			for b.Loop() {
				tick()
			}
			b.StopTimer()
			cpu := redistest.CPU(b, admin) - cpu0
			per := float64(b.N)
			b.ReportMetric(float64(hook.RoundTrips.Load()-rt0)/per, "roundtrips/tick")
			b.ReportMetric(float64(hook.Commands.Load()-cmd0)/per, "cmds/tick")
			b.ReportMetric(float64(cpu.Microseconds())/per, "redis-cpu-µs/tick")
			b.ReportMetric(float64(cpu.Nanoseconds())/per/float64(n), "redis-cpu-ns/pool")
		}
		// One clock for every run (-count): a later run's samples come after
		// the earlier ones', or they would all be refused as duplicates.
		clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
		b.Run(fmt.Sprintf("pools=%d/recorder", n), func(b *testing.B) {
			r := e.recorder(Options{Clock: clock.Now})
			var last TickResult
			measure(b, func() {
				res, err := r.Tick(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				last = res
				clock.Add(DefaultInterval)
			})
			if last.Pools != n || last.Written != n {
				b.Fatalf("the last tick read %d and wrote %d of %d pools", last.Pools, last.Written, n)
			}
		})
		b.Run(fmt.Sprintf("pools=%d/stats", n), func(b *testing.B) {
			measure(b, func() {
				if _, err := e.store.Stats(b.Context(), pools...); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(fmt.Sprintf("pools=%d/trivial", n), func(b *testing.B) {
			// The floor: as many one-line script calls as a recorder tick
			// makes (two per pool), in one pipeline.
			sc := redis.NewScript("return 1")
			require.NoError(b, sc.Load(b.Context(), e.rdb).Err())
			measure(b, func() {
				pipe := e.rdb.Pipeline()
				for i := range 2 * n {
					sc.EvalSha(b.Context(), pipe, []string{keysOf(e.prefix, pools[i/2]).fine})
				}
				if _, err := pipe.Exec(b.Context()); err != nil {
					b.Fatal(err)
				}
			})
		})
		_ = admin.Close()
	}
}
