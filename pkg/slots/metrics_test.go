package slots

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// poolMetrics reads the pool's counters for Prometheus.
func (e *env) poolMetrics() PoolMetrics {
	e.t.Helper()
	pipe := e.rdb.Pipeline()
	p := e.s.QueuePoolMetrics(e.ctx, pipe, e.pool)
	_, err := pipe.Exec(e.ctx)
	require.NoError(e.t, err)
	m, err := p.Result()
	require.NoError(e.t, err)
	return m
}

// redisNow is the backend's clock, the one the scripts stamp with.
func (e *env) redisNow() time.Time {
	e.t.Helper()
	now, err := e.rdb.Time(e.ctx).Result()
	require.NoError(e.t, err)
	return now
}

// backdate moves a field of a task's record (a time in ms) back by d.
func (e *env) backdate(id, field string, d time.Duration) {
	e.t.Helper()
	key := e.s.base(e.pool) + keyTask + id
	v, err := e.rdb.HGet(e.ctx, key, field).Int64()
	require.NoError(e.t, err)
	require.NoError(e.t, e.rdb.HSet(e.ctx, key, field, v-d.Milliseconds()).Err())
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// The scripts count queue waits, phase durations and finished tasks where
// the transitions happen: each lands in its bucket, type, state and reason.
func TestPoolMetricsCountTransitions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		empty := e.poolMetrics()
		assert.Empty(t, empty.QueueWait)
		assert.Empty(t, empty.Finished)
		assert.True(t, empty.NextReservationExpiry.IsZero())

		// "waited" queues with no pod; its queue time is set 100 s back,
		// so the pod's registration takes it after a wait of about 100 s.
		e.submit("waited", Plan)
		qat := e.s.base(e.pool) + keyQueuedAt
		score, err := e.rdb.ZScore(e.ctx, qat, "waited").Result()
		require.NoError(t, err)
		require.NoError(t, e.rdb.ZAdd(e.ctx, qat, redisZ(score-100_000, "waited")).Err())
		uid := e.pod("p1")
		a := e.take("p1", uid)
		require.Equal(t, "waited", a.Task)
		// "direct" finds a free slot: a wait of 0.
		e.submit("direct", Plan)
		b := e.take("p1", uid)

		m := e.poolMetrics()
		qw := m.QueueWait[Plan]
		require.Len(t, qw.Counts, len(QueueWaitBuckets)+1)
		assert.Equal(t, uint64(2), qw.Count())
		assert.Equal(t, uint64(1), qw.Counts[0], "the direct placement waited 0 s: bucket le=1")
		assert.Equal(t, uint64(1), qw.Counts[5], "the queued task waited ~100 s: bucket le=120 (after 60)")
		assert.GreaterOrEqual(t, qw.Sum, 100*time.Second)
		cum := qw.Cumulative(QueueWaitBuckets)
		assert.Equal(t, uint64(1), cum[60])
		assert.Equal(t, uint64(2), cum[120])
		assert.Equal(t, uint64(2), cum[3600])

		// "waited"'s plan ran ~200 s (its start is set back); it succeeds.
		e.backdate("waited", "sat", 200*time.Second)
		require.Equal(t, StateSucceeded, e.complete(a, OutcomeSuccess))
		// "direct" fails with a reason of the caller's own words: "other".
		_, err = e.s.Complete(e.ctx, e.pool, Result{Task: b.Task, Epoch: b.Epoch, Outcome: OutcomeFailure, Reason: "disk on fire"})
		require.NoError(t, err)

		// A plan_and_apply's plan succeeds: it waits for approval, and the
		// first reservation's deadline is the pool's next expiry.
		e.submit("pa", PlanAndApply)
		c := e.take("p1", uid)
		require.Equal(t, StateReserved, e.complete(c, OutcomeSuccess))
		m = e.poolMetrics()
		pd := m.PhaseDuration[PhaseKey{Type: Plan, Phase: PhasePlan}]
		assert.Equal(t, uint64(2), pd.Count())
		assert.Equal(t, uint64(1), pd.Counts[5], "the ~200 s plan: bucket le=300 (after 120)")
		assert.Equal(t, uint64(1), m.PhaseDuration[PhaseKey{Type: PlanAndApply, Phase: PhasePlan}].Count())
		assert.Equal(t, map[FinishedKey]uint64{
			{Type: Plan, State: StateSucceeded, Reason: ""}:       1,
			{Type: Plan, State: StateFailed, Reason: ReasonOther}: 1,
		}, m.Finished)
		assert.WithinDuration(t, e.redisNow().Add(e.cfg.ReservationTTL), m.NextReservationExpiry, time.Minute)

		// The reservation's deadline passes: the reaper expires it.
		require.NoError(t, e.rdb.ZAdd(e.ctx, e.s.base(e.pool)+keyResv, redisZ(float64(e.redisNow().Add(-time.Second).UnixMilli()), "pa")).Err())
		r, err := e.s.Reap(e.ctx, e.pool, ReapOptions{})
		require.NoError(t, err)
		require.Equal(t, 1, r.Reservations)
		m = e.poolMetrics()
		assert.Equal(t, uint64(1), m.Finished[FinishedKey{Type: PlanAndApply, State: StateExpired, Reason: ReasonReservationTTL}])
		assert.True(t, m.NextReservationExpiry.IsZero(), "no reservation waits")
		e.consistent()
	})
}

// A purged pool leaves no counters behind: declared again, it starts at 0.
func TestPoolMetricsGoWithThePool(t *testing.T) {
	e := newEnv(t, "redis")
	e.submit("t1", Plan)
	_, err := e.s.Cancel(e.ctx, e.pool, "t1", "someone")
	require.NoError(t, err)
	require.NotEmpty(t, e.poolMetrics().Finished)
	_, err = e.s.BeginDeletion(e.ctx, e.pool)
	require.NoError(t, err)
	_, err = e.s.Purge(e.ctx, e.pool)
	require.NoError(t, err)
	n, err := e.rdb.Exists(e.ctx, e.s.base(e.pool)+keyMetrics).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "purge deletes the metrics hash")
}

// The Lua bounds are the Go ones, in ms, and every kept reason is listed.
func TestMetricsPrelude(t *testing.T) {
	p := metricsPrelude()
	assert.Contains(t, p, "local QW_BOUNDS = {1000, 5000, 15000,")
	assert.Contains(t, p, "local PD_BOUNDS = {5000, 15000,")
	for _, r := range MetricReasons {
		assert.Contains(t, p, `["`+r+`"] = true`)
	}
	assert.Equal(t, 1, strings.Count(luaPrelude(), "METRIC_REASONS"))
}
