package poolmetrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

type env struct {
	t      *testing.T
	ctx    context.Context
	rdb    redis.UniversalClient
	store  *slots.Store
	prefix string
	c      *Collector
	reg    *prometheus.Registry
	// pipelines counts the pipelines sent to Redis (round trips).
	pipelines atomic.Int64
	// seen are the pools the last OnPools call named.
	seen atomic.Pointer[[]slots.PoolID]
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEnv is a store on a fresh prefix of the test Redis and a collector
// that reads on every scrape (no cache), registered alone.
func newEnv(t *testing.T) *env {
	t.Helper()
	opts, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	e := &env{t: t, ctx: context.Background(), rdb: rdb}
	rdb.AddHook(pipelineCounter{&e.pipelines})
	e.prefix = redistest.Prefix(t)
	e.store, err = slots.New(e.ctx, rdb, slots.Options{Prefix: e.prefix, Logger: quiet()})
	require.NoError(t, err)
	e.c = New(e.store, rdb, Options{CacheFor: time.Nanosecond, Logger: quiet(),
		OnPools: func(p []slots.PoolID) { e.seen.Store(&p) }})
	e.reg = prometheus.NewPedanticRegistry()
	require.NoError(t, e.reg.Register(e.c))
	return e
}

type pipelineCounter struct{ n *atomic.Int64 }

func (pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

func (e *env) declare(ns, name string) slots.PoolID {
	e.t.Helper()
	p := slots.PoolID{Namespace: ns, Name: name}
	_, err := e.store.DeclarePool(e.ctx, p, slots.DefaultPoolConfig())
	require.NoError(e.t, err)
	return p
}

// scrape gathers the registry (linted by the pedantic registry) and flattens
// it: `name{label="value",...}` -> value; a histogram gives its _count, _sum
// and _bucket{le=...} samples as the text format would.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	return scrape(e.t, e.reg)
}

func scrape(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := labelsOf(m)
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[mf.GetName()+"_count"+braces(labels)] = float64(h.GetSampleCount())
				out[mf.GetName()+"_sum"+braces(labels)] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[mf.GetName()+"_bucket"+braces(append(slices.Clone(labels), fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound()))))] = float64(b.GetCumulativeCount())
				}
			case dto.MetricType_COUNTER:
				out[mf.GetName()+braces(labels)] = m.GetCounter().GetValue()
			default:
				out[mf.GetName()+braces(labels)] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func labelsOf(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return out
}

func braces(labels []string) string {
	if len(labels) == 0 {
		return ""
	}
	sort.Strings(labels)
	return "{" + strings.Join(labels, ",") + "}"
}

// series lists the scraped series of a pool.
func series(s map[string]float64, pool string) []string {
	var out []string
	for k := range s {
		if strings.Contains(k, `pool="`+pool+`"`) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// take takes the next assignment from a pod's inbox.
func (e *env) take(p slots.PoolID, pod, uid string) *slots.Assignment {
	e.t.Helper()
	for range 20 {
		m, err := e.store.Take(e.ctx, p, pod, uid, 100*time.Millisecond, nil)
		require.NoError(e.t, err)
		if m != nil && m.Kind == slots.MsgAssignment {
			return m.Assignment
		}
	}
	e.t.Fatalf("no assignment for pod %s", pod)
	return nil
}

// The collector's numbers follow the pools through submitting, taking,
// completing, approving and expiring tasks.
func TestCollectorFollowsThePools(t *testing.T) {
	e := newEnv(t)
	a := e.declare("team-a", "pool-1")
	const pa = `pool="team-a/pool-1"`
	uid := "uid-p1"
	_, err := e.store.RegisterPod(e.ctx, a, "p1", uid)
	require.NoError(t, err)
	// Three plans fill the pod's three slots; a fourth and a
	// plan_and_apply queue.
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		_, err := e.store.Submit(e.ctx, a, slots.TaskSpec{ID: id, Type: slots.Plan})
		require.NoError(t, err)
	}
	_, err = e.store.Submit(e.ctx, a, slots.TaskSpec{ID: "pa", Type: slots.PlanAndApply})
	require.NoError(t, err)

	s := e.scrape()
	assert.Equal(t, 1.0, s[`slotscaler_pools`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_queued_tasks{`+pa+`,type="plan"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_queued_tasks{`+pa+`,type="plan_and_apply"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_pods{`+pa+`,state="active"}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_pods{`+pa+`,state="draining"}`])
	assert.Contains(t, s, `slotscaler_pool_pods{`+pa+`,state="draining"}`, "every state is exported, 0 when none")
	assert.Equal(t, 1.0, s[`slotscaler_pool_busy_pods{`+pa+`}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_idle_pods{`+pa+`}`])
	assert.Equal(t, 3.0, s[`slotscaler_pool_running_slots{`+pa+`}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_idle_slots{`+pa+`}`])
	assert.Equal(t, 3.0, s[`slotscaler_pool_queue_wait_seconds_count{`+pa+`,type="plan"}`], "three plans found a slot")
	assert.Equal(t, 3.0, s[`slotscaler_pool_queue_wait_seconds_bucket{le="1",`+pa+`,type="plan"}`])
	assert.Contains(t, s, `slotscaler_pool_queue_wait_seconds_count{`+pa+`,type="plan_and_apply"}`, "a type's histogram starts at 0")
	assert.Contains(t, s, `slotscaler_pool_phase_duration_seconds_count{phase="apply",`+pa+`,type="plan_and_apply"}`)
	assert.NotContains(t, s, `slotscaler_pool_next_reservation_expiry_seconds{`+pa+`}`, "no reservation waits")

	// Every phase the pod gets ends: t2 fails, the others succeed, the
	// plan_and_apply's plan reserves its slot for the apply.
	for range 5 {
		as := e.take(a, "p1", uid)
		o := slots.OutcomeSuccess
		if as.Task == "t2" {
			o = slots.OutcomeFailure
		}
		_, err := e.store.Complete(e.ctx, a, slots.Result{Task: as.Task, Epoch: as.Epoch, Outcome: o})
		require.NoError(t, err)
	}
	s = e.scrape()
	assert.Equal(t, 0.0, s[`slotscaler_pool_queued_tasks{`+pa+`,type="plan"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_reserved_slots{`+pa+`}`])
	assert.InDelta(t, time.Hour.Seconds(), s[`slotscaler_pool_next_reservation_expiry_seconds{`+pa+`}`], 60)
	assert.Equal(t, 3.0, s[`slotscaler_pool_tasks_finished_total{`+pa+`,reason="",state="succeeded",type="plan"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_tasks_finished_total{`+pa+`,reason="exit-code",state="failed",type="plan"}`])
	assert.Equal(t, 4.0, s[`slotscaler_pool_queue_wait_seconds_count{`+pa+`,type="plan"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_queue_wait_seconds_count{`+pa+`,type="plan_and_apply"}`])
	assert.Equal(t, 4.0, s[`slotscaler_pool_phase_duration_seconds_count{phase="plan",`+pa+`,type="plan"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_phase_duration_seconds_count{phase="plan",`+pa+`,type="plan_and_apply"}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_reservation_expiries_total{`+pa+`}`])
	assert.Equal(t, 2.0, s[`slotscaler_pool_idle_slots{`+pa+`}`], "the reserved slot is not idle")

	// Approved, the apply runs in the reserved slot and succeeds.
	_, err = e.store.Approve(e.ctx, a, "pa", "alice")
	require.NoError(t, err)
	as := e.take(a, "p1", uid)
	require.Equal(t, slots.PhaseApply, as.Phase)
	_, err = e.store.Complete(e.ctx, a, slots.Result{Task: as.Task, Epoch: as.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	s = e.scrape()
	assert.Equal(t, 1.0, s[`slotscaler_pool_tasks_finished_total{`+pa+`,reason="",state="succeeded",type="plan_and_apply"}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_phase_duration_seconds_count{phase="apply",`+pa+`,type="plan_and_apply"}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_reserved_slots{`+pa+`}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_idle_pods{`+pa+`}`])

	// Another plan_and_apply's reservation expires unapproved.
	_, err = e.store.Submit(e.ctx, a, slots.TaskSpec{ID: "pa2", Type: slots.PlanAndApply})
	require.NoError(t, err)
	as = e.take(a, "p1", uid)
	_, err = e.store.Complete(e.ctx, a, slots.Result{Task: as.Task, Epoch: as.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	// Its deadline passes (the key is the store's: lua/lib.lua, K.resv).
	resv := e.prefix + ":v1:{" + a.String() + "}:resv"
	require.NoError(t, e.rdb.ZAdd(e.ctx, resv, redis.Z{Score: 1, Member: "pa2"}).Err())
	_, err = e.store.Reap(e.ctx, a, slots.ReapOptions{})
	require.NoError(t, err)
	s = e.scrape()
	assert.Equal(t, 1.0, s[`slotscaler_pool_reservation_expiries_total{`+pa+`}`])
	assert.Equal(t, 1.0, s[`slotscaler_pool_tasks_finished_total{`+pa+`,reason="reservation-ttl",state="expired",type="plan_and_apply"}`])
	assert.Equal(t, 0.0, s[`slotscaler_pool_metrics_reads_total{result="error"}`])
}

// A pool's series go when the pool is purged, and OnPools stops naming it;
// a pool declared after the collector's last read appears at the next.
func TestDeletedPoolSeriesGo(t *testing.T) {
	e := newEnv(t)
	a := e.declare("team-a", "keep")
	s := e.scrape()
	require.NotEmpty(t, series(s, "team-a/keep"))
	b := e.declare("team-b", "gone")
	s = e.scrape()
	require.NotEmpty(t, series(s, "team-b/gone"), "a new pool appears at the next scrape")
	assert.Equal(t, 2.0, s["slotscaler_pools"])
	assert.ElementsMatch(t, []slots.PoolID{a, b}, *e.seen.Load())

	_, err := e.store.BeginDeletion(e.ctx, b)
	require.NoError(t, err)
	s = e.scrape()
	require.NotEmpty(t, series(s, "team-b/gone"), "a pool being deleted is still a pool")
	_, err = e.store.Purge(e.ctx, b)
	require.NoError(t, err)
	s = e.scrape()
	assert.Empty(t, series(s, "team-b/gone"))
	assert.NotEmpty(t, series(s, "team-a/keep"))
	assert.Equal(t, 1.0, s["slotscaler_pools"])
	assert.Equal(t, []slots.PoolID{a}, *e.seen.Load())
}

// A scrape is one pipeline once the pools are known, whatever their
// number; a cached read answers scrapes without Redis.
func TestOneReadPerScrape(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		e.declare("team", fmt.Sprintf("pool-%d", i))
	}
	e.scrape() // learns the pools: the registry, then the new pools
	before := e.pipelines.Load()
	s := e.scrape()
	assert.Equal(t, int64(1), e.pipelines.Load()-before, "one pipeline for 20 pools")
	assert.Equal(t, 20.0, s["slotscaler_pools"])

	now := time.Now()
	e.c.now = func() time.Time { return now }
	e.c.opts.CacheFor = time.Minute
	e.scrape() // a read, the clock's now
	before = e.pipelines.Load()
	for range 3 {
		e.scrape()
	}
	assert.Zero(t, e.pipelines.Load()-before, "scrapes within CacheFor reuse the read")
	now = now.Add(time.Minute)
	e.scrape()
	assert.Equal(t, int64(1), e.pipelines.Load()-before, "an older read is read again")
}

// A failed read exports no pool series (never an old read's numbers) and
// counts the failure; the next good read brings them back.
func TestFailedReadExportsNoPools(t *testing.T) {
	srv := redistest.Start(t, redistest.WithAppendOnly())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	store, err := slots.New(ctx, rdb, slots.Options{Logger: quiet()})
	require.NoError(t, err)
	_, err = store.DeclarePool(ctx, slots.PoolID{Namespace: "ns", Name: "p"}, slots.DefaultPoolConfig())
	require.NoError(t, err)
	c := New(store, rdb, Options{CacheFor: time.Nanosecond, Timeout: time.Second, Logger: quiet()})
	reg := registry(t, c)
	require.Equal(t, 1.0, scrape(t, reg)["slotscaler_pools"])

	srv.Stop(t)
	s := scrape(t, reg)
	assert.Equal(t, map[string]float64{
		`slotscaler_pool_metrics_reads_total{result="success"}`: 1,
		`slotscaler_pool_metrics_reads_total{result="error"}`:   1,
	}, s, "only the read counter")

	// Back (its data kept, its scripts not): the pool is exported again.
	srv.Restart(t)
	require.Eventually(t, func() bool {
		n, err := testutil.GatherAndCount(reg, "slotscaler_pool_queued_tasks")
		return err == nil && n > 0
	}, 10*time.Second, 50*time.Millisecond)
}

func registry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	r := prometheus.NewPedanticRegistry()
	require.NoError(t, r.Register(c))
	return r
}
