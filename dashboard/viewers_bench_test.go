package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/perclient"
)

// BenchmarkRedisCommandsWithViewers measures the Redis commands per second
// the dashboard causes while 1 and while 200 browsers watch the same pool
// live. The hub reads a watched pool once per interval whatever the number
// of viewers, so the two rates should barely differ (and the pool is at
// rest, so most ticks read only its change token: BenchmarkLiveTickAtRest). Each op is a 100 ms
// window; the rate comes from Redis's own total_commands_processed on a
// private redis-server.
func BenchmarkRedisCommandsWithViewers(b *testing.B) {
	for _, viewers := range []int{1, 200} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			srv := redistest.Start(b)
			// One client opens them all: let it hold that many streams.
			f := newFixtureOn(b, srv.URL(), func(s *server) { s.streams = perclient.New(viewers) })
			for i := 0; i < 10; i++ {
				f.addPod()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			path := "/pools/" + f.pool.Namespace + "/" + f.pool.Name + "/live"
			for i := 0; i < viewers; i++ {
				events := f.viewer(ctx, path)
				<-events // connected and served once
				go func() {
					for range events {
					}
				}()
			}
			admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer admin.Close()
			before, t0 := commands(b, admin), time.Now()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				time.Sleep(100 * time.Millisecond)
			}
			b.StopTimer()
			after := commands(b, admin)
			b.ReportMetric(float64(after-before)/time.Since(t0).Seconds(), "redis-cmds/s")
		})
	}
}

func commands(b *testing.B, c *redis.Client) int64 {
	b.Helper()
	info, err := c.Info(context.Background(), "stats").Result()
	require.NoError(b, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(b, err)
			return n
		}
	}
	b.Fatal("no total_commands_processed in INFO stats")
	return 0
}

// BenchmarkLiveTickAtRest measures one tick of the live hub's poller over a
// watched pool of 1,000 idle registered pods at rest, on a redis-server of
// its own (so INFO commandstats counts this benchmark alone). "full" reads
// the whole pool every tick, as the hub did before change tokens (its
// fullEvery at 1); "token" is a tick that reads the change token and skips;
// "default" is the mix at the default 2 s --live-interval (a full read
// every liveFullReadEvery, the token on the ticks between).
//
//	go test -run '^$' -bench LiveTickAtRest -benchtime 200x ./dashboard/
//
// Per tick: redis-us (Redis's own time in scripts, INFO commandstats usec
// of EVALSHA: the hub's reads are scripts, and a script's time includes
// the commands it runs), redis-cmds (every command Redis ran, those inside
// scripts included).
func BenchmarkLiveTickAtRest(b *testing.B) {
	const pods = 1000
	ctx := b.Context()
	srv := redistest.Start(b)
	f := newFixtureOn(b, srv.URL())
	for i := range pods {
		name := fmt.Sprintf("agent-%04d", i)
		_, err := f.store.RegisterPod(ctx, f.pool, name, "uid-"+name)
		require.NoError(b, err)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer admin.Close()
	for _, mode := range []struct {
		name      string
		fullEvery int
	}{{"full", 1}, {"token", math.MaxInt}, {"default", fullReadTicks(2 * time.Second)}} {
		b.Run(mode.name, func(b *testing.B) {
			h := newPoolHub(f.store, 2*time.Second, quiet())
			h.fullEvery = mode.fullEvery
			feed := &poolFeed{subs: map[*subscription]struct{}{}}
			h.read(ctx, f.pool, feed) // the first viewer's read is full either way
			require.NotNil(b, feed.latest)
			require.Len(b, feed.latest.Pods, pods)
			before := scriptStats(b, admin)
			b.ResetTimer()
			for range b.N {
				h.read(ctx, f.pool, feed)
			}
			b.StopTimer()
			after := scriptStats(b, admin)
			n := float64(b.N)
			b.ReportMetric(float64(after.scriptUsec-before.scriptUsec)/n, "redis-us/tick")
			b.ReportMetric(float64(after.calls-before.calls)/n, "redis-cmds/tick")
		})
	}
}

// redisWork is the commands a redis-server ran (INFO commandstats, INFO
// itself left out) and its time in scripts.
type redisWork struct{ calls, scriptUsec int64 }

func scriptStats(b *testing.B, admin *redis.Client) redisWork {
	b.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	var w redisWork
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(k, "cmdstat_") || k == "cmdstat_info" {
			continue
		}
		for kv := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(val, 10, 64)
			switch name {
			case "calls":
				w.calls += n
			case "usec":
				if k == "cmdstat_evalsha" || k == "cmdstat_eval" {
					w.scriptUsec += n
				}
			}
		}
	}
	return w
}
