package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestLentStatsMaxAge(t *testing.T) {
	for _, tc := range []struct{ interval, want time.Duration }{
		{time.Second, 6 * time.Second},
		{history.DefaultInterval, 15 * time.Second},
		{25 * time.Second, 30 * time.Second},
		{time.Minute, 30 * time.Second},
		{5 * time.Minute, 30 * time.Second},
	} {
		assert.Equal(t, tc.want, lentStatsMaxAge(tc.interval), "history interval %v", tc.interval)
	}
}

// scriptHook counts the scripts sent through a client.
type scriptHook struct{ n atomic.Int64 }

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}
func (h *scriptHook) count(c redis.Cmder) {
	if n := strings.ToLower(c.Name()); n == "evalsha" || n == "eval" {
		h.n.Add(1)
	}
}

// With the history recorder on, a scrape of the scaler's /metrics after a
// tick runs no stats script (the pool series come from the tick's read);
// with it off, the scrape reads every pool itself.
func TestScrapeBorrowsTheHistoryRecordersRead(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	hook := &scriptHook{}
	rdb.AddHook(hook)
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	const pools = 3
	for i := range pools {
		_, err := store.DeclarePool(t.Context(), slots.PoolID{Namespace: "team", Name: fmt.Sprintf("p%d", i)}, slots.DefaultPoolConfig())
		require.NoError(t, err)
	}
	rec, err := history.NewRecorder(t.Context(), store, rdb, history.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	for range 2 { // the registry, then the pools
		_, err := rec.Tick(t.Context())
		require.NoError(t, err)
	}

	for _, tc := range []struct {
		name    string
		rec     *history.Recorder
		scripts int64
	}{
		{"recorder on", rec, 0},
		{"recorder off", nil, pools},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics()
			m.exportPools(store, rdb, tc.rec, history.DefaultInterval, quiet())
			before := hook.n.Load()
			mfs, err := m.registry.Gather()
			require.NoError(t, err)
			assert.Equal(t, tc.scripts, hook.n.Load()-before, "stats scripts run by the scrape")
			var n float64
			for _, mf := range mfs {
				if mf.GetName() == "slotscaler_pools" {
					n = mf.GetMetric()[0].GetGauge().GetValue()
				}
			}
			assert.Equal(t, float64(pools), n)
		})
	}
}
