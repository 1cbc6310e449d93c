package janitor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// BenchmarkJanitorPassAtRest: one janitor pass over a pool of 1,000 idle
// registered pods that wants no change, on a redis-server of its own (so
// INFO commandstats counts this benchmark alone). "full" reads the whole
// pool (the snapshot, in pages) and plans, as every pass did before rest
// passes; "rest" reads the pool's change token and skips (rest.go).
//
//	go test -run '^$' -bench JanitorPassAtRest -benchtime 20x ./pkg/janitor/
//
// Per pass: redis-us (Redis's own time in the pass's scripts, INFO
// commandstats usec of EVALSHA: every Redis call of a pass is a script,
// and a script's time includes the commands it runs), redis-cmds (every
// command Redis ran, those inside scripts included), round-trips (counted
// by a go-redis hook; a pipeline is one). ns/op includes the plan, the
// fake API's status write and the fake informers, none of which is Redis's.
func BenchmarkJanitorPassAtRest(b *testing.B) {
	const pods = 1000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := redistest.Start(b)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	admin := redis.NewClient(opts)
	defer admin.Close()
	hook := &redistest.Calls{}
	rdb.AddHook(hook)
	prefix := "bench"
	store, err := slots.New(ctx, rdb, slots.Options{Prefix: prefix, Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	f := newFixtureWith(b, ctx, controllerPool(pods), store, rdb, prefix)
	f.declare()
	for i := range pods {
		f.register(f.pod(fmt.Sprintf("agent-%04d", i)))
	}
	for _, mode := range []struct {
		name  string
		every time.Duration
	}{{"full", -1}, {"rest", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			c := f.controller(Options{FullPassInterval: mode.every})
			if _, err := c.sync(ctx, "team/pool-a"); err != nil { // the first pass is full either way
				b.Fatal(err)
			}
			before, err := redistest.ReadInfo(ctx, admin)
			if err != nil {
				b.Fatal(err)
			}
			trips := hook.RoundTrips.Load()
			b.ResetTimer()
			for range b.N {
				if _, err := c.sync(ctx, "team/pool-a"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after, err := redistest.ReadInfo(ctx, admin)
			if err != nil {
				b.Fatal(err)
			}
			n := float64(b.N)
			b.ReportMetric(float64(after.Scripts().Usec-before.Scripts().Usec)/n, "redis-us/pass")
			b.ReportMetric(float64(after.AllCalls()-before.AllCalls())/n, "redis-cmds/pass")
			b.ReportMetric(float64(hook.RoundTrips.Load()-trips)/n, "round-trips/pass")
		})
	}
}
