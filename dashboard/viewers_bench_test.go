package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// BenchmarkRedisCommandsWithViewers measures the Redis commands per second
// the dashboard causes while 1 and while 200 browsers watch the same pool
// live. The hub reads a watched pool once per interval whatever the number
// of viewers, so the two rates should barely differ. Each op is a 100 ms
// window; the rate comes from Redis's own total_commands_processed on a
// private redis-server.
func BenchmarkRedisCommandsWithViewers(b *testing.B) {
	for _, viewers := range []int{1, 200} {
		b.Run(fmt.Sprintf("viewers=%d", viewers), func(b *testing.B) {
			srv := redistest.Start(b)
			f := newFixtureOn(b, srv.URL())
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
