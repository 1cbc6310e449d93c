package notify

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// commandCounter is a go-redis hook counting what a client sends: commands,
// round trips (a pipeline is one), and commands by name.
type commandCounter struct {
	commands, roundTrips atomic.Int64
	mu                   sync.Mutex
	byName               map[string]int
}

func (c *commandCounter) count(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName == nil {
		c.byName = map[string]int{}
	}
	for _, cmd := range cmds {
		c.byName[cmd.Name()]++
	}
}

func (c *commandCounter) named(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byName[name]
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.commands.Add(1)
		c.roundTrips.Add(1)
		c.count(cmd)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.commands.Add(int64(len(cmds)))
		c.roundTrips.Add(1)
		c.count(cmds...)
		return next(ctx, cmds)
	}
}

// BenchmarkNotifierAtRest is what a notifier costs Redis while nothing
// happens: N declared pools, one webhook for all of them, the default
// intervals, no events. One op is one second at rest; it reports the
// commands and round trips the notifier sent per second and the Redis CPU
// they took (ms per second), on a private real redis-server. Run it with
// -benchtime 10x (ten seconds per size).
func BenchmarkNotifierAtRest(b *testing.B) {
	for _, pools := range []int{100, 1000} {
		b.Run(fmt.Sprintf("pools-%d", pools), func(b *testing.B) { benchmarkAtRest(b, pools) })
	}
}

func benchmarkAtRest(b *testing.B, pools int) {
	srv := redistest.Start(b)
	opt, err := redis.ParseURL(srv.URL())
	require.NoError(b, err)
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	store, err := slots.New(ctx, rdb, slots.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	for i := range pools {
		p := slots.PoolID{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("pool-%d", i)}
		_, err := store.DeclarePool(ctx, p, slots.DefaultPoolConfig())
		require.NoError(b, err)
		_, err = store.RegisterPod(ctx, p, "agent-0", "uid-0") // an event in every pool's stream
		require.NoError(b, err)
	}
	// The notifier's own client, counted.
	nrdb := redis.NewClient(opt)
	b.Cleanup(func() { _ = nrdb.Close() })
	counter := &commandCounter{}
	nrdb.AddHook(counter)
	nstore, err := slots.New(ctx, nrdb, slots.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	cfg := Config{ExpiringLead: DefaultExpiringLead, Webhooks: []Webhook{{
		Name: "ops", Pools: []string{"*/*"}, Events: Events, Format: FormatJSON, URL: "http://127.0.0.1:1/hook",
		Timeout: DefaultTimeout, MaxAttempts: DefaultMaxAttempts, MaxAge: DefaultMaxAge,
		InitialBackoff: DefaultInitialBackoff, MaxBackoff: DefaultMaxBackoff,
	}}}
	n, err := New(nstore, nrdb, cfg, Options{Consumer: "bench"})
	require.NoError(b, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.Run(rctx) }()
	defer func() { cancel(); <-done }()
	// Warm up: every worker started, read its pending entries and the
	// pod's event, and made its first claim.
	time.Sleep(3 * time.Second)
	cmds, rts, cpu := counter.commands.Load(), counter.roundTrips.Load(), redistest.CPU(b, rdb)
	b.ResetTimer()
	start := time.Now()
	time.Sleep(time.Duration(b.N) * time.Second)
	elapsed := time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(float64(counter.commands.Load()-cmds)/elapsed, "commands/s")
	b.ReportMetric(float64(counter.roundTrips.Load()-rts)/elapsed, "round-trips/s")
	b.ReportMetric(float64((redistest.CPU(b, rdb)-cpu).Milliseconds())/elapsed, "redis-cpu-ms/s")
	b.ReportMetric(0, "ns/op")
}
