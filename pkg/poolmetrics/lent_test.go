package poolmetrics

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// scriptCounter counts the scripts sent through a client. The collector
// runs one script, the stats script, once per pool it reads itself.
type scriptCounter struct{ n *atomic.Int64 }

func (scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}
func (h scriptCounter) count(c redis.Cmder) {
	if n := strings.ToLower(c.Name()); n == "evalsha" || n == "eval" {
		h.n.Add(1)
	}
}

// lentEnv is the test store with pools, the history recorder over it
// (ticked by the test) and a count of the scripts run through the client.
type lentEnv struct {
	*env
	rec     *history.Recorder
	pools   []slots.PoolID
	scripts atomic.Int64
}

func newLentEnv(t *testing.T, pools int) *lentEnv {
	t.Helper()
	e := &lentEnv{env: newEnv(t)}
	e.rdb.AddHook(scriptCounter{&e.scripts})
	for i := range pools {
		e.pools = append(e.pools, e.declare("team", fmt.Sprintf("pool-%d", i)))
	}
	// Something in every gauge of the first pool: a queued task, a busy pod.
	p := e.pools[0]
	_, err := e.store.RegisterPod(e.ctx, p, "pod-0", "uid-0")
	require.NoError(t, err)
	for _, id := range []string{"t1", "t2", "t3", "t4", "t5"} {
		_, err = e.store.Submit(e.ctx, p, slots.TaskSpec{ID: id, Type: slots.Plan})
		require.NoError(t, err)
	}
	e.take(p, "pod-0", "uid-0")
	e.rec, err = history.NewRecorder(e.ctx, e.store, e.rdb, history.Options{Prefix: e.prefix, Logger: quiet()})
	require.NoError(t, err)
	return e
}

// tick runs one recorder tick, which must succeed.
func (e *lentEnv) tick() {
	e.t.Helper()
	_, err := e.rec.Tick(e.ctx)
	require.NoError(e.t, err)
}

// lending is a collector the recorder lends its reads to, reading on
// every scrape, registered alone.
func (e *lentEnv) lending(maxAge time.Duration) (*Collector, prometheus.Gatherer) {
	c := New(e.store, e.rdb, Options{CacheFor: time.Nanosecond, Logger: quiet(), Stats: e.rec, StatsMaxAge: maxAge})
	return c, registry(e.t, c)
}

// scriptsDuring returns the scripts run while f ran.
func (e *lentEnv) scriptsDuring(f func()) int64 {
	before := e.scripts.Load()
	f()
	return e.scripts.Load() - before
}

// A scrape after a recorder tick takes every pool's counters from the
// tick and runs no stats script; its series are those of a collector
// reading for itself. A pool declared since the tick is read by the
// scrape alone; one purged since loses its series all the same.
func TestScrapeAfterARecorderTickRunsNoStatsScript(t *testing.T) {
	e := newLentEnv(t, 5)
	e.tick() // learns the pools
	e.tick() // reads their counters
	_, g := e.lending(time.Minute)

	var lent map[string]float64
	assert.Zero(t, e.scriptsDuring(func() { lent = scrape(t, g) }), "stats scripts run by a scrape after a recorder tick")
	own := e.scrape()
	assert.Equal(t, 5.0, lent["slotscaler_pools"])
	require.Equal(t, keys(own), keys(lent), "the same series")
	for k, v := range own {
		switch {
		case strings.HasPrefix(k, "slotscaler_pool_metrics_reads_total"):
		case strings.HasPrefix(k, "slotscaler_pool_oldest_queued_task_age_seconds"):
			assert.InDelta(t, v, lent[k], 5, k) // counted to each read's time
		default:
			assert.Equal(t, v, lent[k], k)
		}
	}
	first := `slotscaler_pool_queued_tasks{pool="team/pool-0",type="plan"}`
	require.Equal(t, 2.0, lent[first], "five submitted, three assigned to the pod")

	e.declare("team", "fresh")
	var s map[string]float64
	assert.Equal(t, int64(1), e.scriptsDuring(func() { s = scrape(t, g) }), "only the pool declared since the tick is read")
	assert.NotEmpty(t, series(s, "team/fresh"))
	assert.Equal(t, 6.0, s["slotscaler_pools"])

	_, err := e.store.BeginDeletion(e.ctx, e.pools[1])
	require.NoError(t, err)
	_, err = e.store.Purge(e.ctx, e.pools[1])
	require.NoError(t, err)
	s = scrape(t, g)
	assert.Empty(t, series(s, "team/pool-1"), "a pool purged after the tick that read it")
	assert.NotEmpty(t, series(s, "team/pool-0"))
	assert.Equal(t, 5.0, s["slotscaler_pools"])
}

// Without a recorder read young enough, a scrape runs the stats script
// of every pool itself: no recorder, none ticked yet, a read older than
// the bound, a recorder whose last tick failed.
func TestScrapeWithoutAFreshRecorderReadRunsTheStatsScript(t *testing.T) {
	const pools = 4
	tests := map[string]func(e *lentEnv) *Collector{
		"no recorder": func(e *lentEnv) *Collector {
			return New(e.store, e.rdb, Options{CacheFor: time.Nanosecond, Logger: quiet(), StatsMaxAge: time.Minute})
		},
		"no bound": func(e *lentEnv) *Collector {
			e.tick()
			e.tick()
			c, _ := e.lending(0)
			return c
		},
		"recorder not ticked yet": func(e *lentEnv) *Collector {
			c, _ := e.lending(time.Minute)
			return c
		},
		"recorder read no pools yet": func(e *lentEnv) *Collector {
			e.tick() // reads the registry only
			c, _ := e.lending(time.Minute)
			return c
		},
		"recorder read older than the bound": func(e *lentEnv) *Collector {
			e.tick()
			e.tick()
			c, _ := e.lending(time.Minute)
			c.now = func() time.Time { return time.Now().Add(time.Minute) }
			return c
		},
		"recorder's last tick failed": func(e *lentEnv) *Collector {
			opt, err := redis.ParseURL("redis://" + e.rdb.(*redis.Client).Options().Addr)
			require.NoError(e.t, err)
			broken := redis.NewClient(opt)
			rec, err := history.NewRecorder(e.ctx, e.store, broken, history.Options{Prefix: e.prefix, Logger: quiet()})
			require.NoError(e.t, err)
			for range 2 {
				_, err = rec.Tick(e.ctx)
				require.NoError(e.t, err)
			}
			_, _, ok := rec.LatestStats()
			require.True(e.t, ok)
			require.NoError(e.t, broken.Close())
			_, err = rec.Tick(e.ctx)
			require.Error(e.t, err)
			return New(e.store, e.rdb, Options{CacheFor: time.Nanosecond, Logger: quiet(), Stats: rec, StatsMaxAge: time.Minute})
		},
	}
	for name, setup := range tests {
		t.Run(name, func(t *testing.T) {
			e := newLentEnv(t, pools)
			c := setup(e)
			g := registry(t, c)
			var s map[string]float64
			assert.Equal(t, int64(pools), e.scriptsDuring(func() { s = scrape(t, g) }), "stats scripts of a scrape")
			assert.Equal(t, float64(pools), s["slotscaler_pools"])
			assert.Equal(t, 2.0, s[`slotscaler_pool_queued_tasks{pool="team/pool-0",type="plan"}`])
		})
	}
}

func keys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// statsTakenEarlier lends a recorder's reads as if Redis had answered
// them an hour earlier.
type statsTakenEarlier struct{ rec *history.Recorder }

func (s statsTakenEarlier) LatestStats() ([]slots.PoolStats, time.Time, bool) {
	st, at, ok := s.rec.LatestStats()
	out := make([]slots.PoolStats, len(st))
	for i, ps := range st {
		out[i] = ps
		out[i].Now = ps.Now.Add(-time.Hour)
	}
	return out, at, ok
}

// A waiting reservation's expiry counts from when the scrape read it, not
// from the older time of lent counters.
func TestLentStatsKeepTheReservationExpiryCurrent(t *testing.T) {
	e := newLentEnv(t, 1)
	p := e.declare("team", "apply")
	_, err := e.store.RegisterPod(e.ctx, p, "pod-a", "uid-a")
	require.NoError(t, err)
	_, err = e.store.Submit(e.ctx, p, slots.TaskSpec{ID: "pa", Type: slots.PlanAndApply})
	require.NoError(t, err)
	as := e.take(p, "pod-a", "uid-a")
	_, err = e.store.Complete(e.ctx, p, slots.Result{Task: as.Task, Epoch: as.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	e.tick()
	e.tick()

	c := New(e.store, e.rdb, Options{CacheFor: time.Nanosecond, Logger: quiet(), Stats: statsTakenEarlier{e.rec}, StatsMaxAge: time.Minute})
	g := registry(t, c)
	var s map[string]float64
	require.Zero(t, e.scriptsDuring(func() { s = scrape(t, g) }), "the counters are lent")
	assert.Equal(t, 1.0, s[`slotscaler_pool_reserved_slots{pool="team/apply"}`])
	assert.InDelta(t, time.Hour.Seconds(), s[`slotscaler_pool_next_reservation_expiry_seconds{pool="team/apply"}`], 60)
}
