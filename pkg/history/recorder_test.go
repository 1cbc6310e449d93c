package history

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// env is a slot store and its Redis client, under a key prefix of the test.
type env struct {
	t      testing.TB
	ctx    context.Context
	rdb    redis.UniversalClient
	store  *slots.Store
	prefix string
}

func newEnv(t testing.TB, rdb redis.UniversalClient) *env {
	t.Helper()
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix(t)
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	return &env{t: t, ctx: t.Context(), rdb: rdb, store: store, prefix: prefix}
}

func standalone(t testing.TB) *env {
	t.Helper()
	opt, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	return newEnv(t, redis.NewClient(opt))
}

func (e *env) declare(p slots.PoolID) {
	e.t.Helper()
	_, err := e.store.DeclarePool(e.ctx, p, slots.DefaultPoolConfig())
	require.NoError(e.t, err)
}

func (e *env) submit(p slots.PoolID, id string, typ slots.TaskType) {
	e.t.Helper()
	_, err := e.store.Submit(e.ctx, p, slots.TaskSpec{ID: id, Type: typ})
	require.NoError(e.t, err)
}

func (e *env) recorder(opts Options) *Recorder {
	e.t.Helper()
	opts.Prefix = e.prefix
	opts.Logger = quiet()
	r, err := NewRecorder(e.ctx, e.store, e.rdb, opts)
	require.NoError(e.t, err)
	return r
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (e *env) fine(p slots.PoolID) []Sample {
	e.t.Helper()
	return e.list(p, keysOf(e.prefix, p).fine)
}

func (e *env) coarse(p slots.PoolID) []Sample {
	e.t.Helper()
	return e.list(p, keysOf(e.prefix, p).coarse)
}

func (e *env) list(p slots.PoolID, key string) []Sample {
	e.t.Helper()
	raw, err := e.rdb.LRange(e.ctx, key, 0, -1).Result()
	require.NoError(e.t, err)
	s, err := decodeSince(p, raw, time.Time{})
	require.NoError(e.t, err)
	return s
}

func TestRecorderRecordsWhatThePoolHolds(t *testing.T) {
	e := standalone(t)
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	e.declare(pool)
	_, err := e.store.RegisterPod(e.ctx, pool, "agent-a", "uid-a")
	require.NoError(t, err)
	_, err = e.store.RegisterPod(e.ctx, pool, "agent-b", "uid-b")
	require.NoError(t, err)
	// agent-b is cordoned, so agent-a takes the work: slot 0 the apply,
	// slots 1-2 two plans; three plans wait.
	require.NoError(t, e.store.Cordon(e.ctx, pool, "agent-b", "uid-b"))
	e.submit(pool, "apply-1", slots.PlanAndApply)
	for i := range 5 {
		e.submit(pool, fmt.Sprintf("plan-%d", i), slots.Plan)
	}
	r := e.recorder(Options{Interval: time.Second})

	for range 3 { // registry, then the counters, then the write
		_, err := r.Tick(e.ctx)
		require.NoError(t, err)
	}
	got := e.fine(pool)
	require.Len(t, got, 1)
	s := got[0]
	assert.WithinDuration(t, time.Now(), s.At, 10*time.Second, "stamped with Redis TIME")
	assert.Equal(t, 2.0, s.LivePods, "active and cordoned pods are live")
	assert.Equal(t, 1.0, s.BusyPods)
	assert.Equal(t, 0.0, s.IdlePods, "a cordoned pod is not idle")
	assert.Equal(t, 1.0, s.CordonedPods)
	assert.Equal(t, map[string]float64{"plan": 3, "plan_and_apply": 0}, s.Queued)
	assert.Equal(t, 2.0, s.DesiredPods, "the busy pod and one new pod for three plans")
	assert.Positive(t, s.OldestQueuedSeconds)
}

// TestRetentionAndDownsampling records more than the layout keeps, on an
// injected clock: the fine list keeps its span, the coarse list its own,
// each coarse sample is the aggregate of the fine samples of its interval,
// and the reader's windows return them.
func TestRetentionAndDownsampling(t *testing.T) {
	t.Run("redis-server", func(t *testing.T) { testRetentionAndDownsampling(t, standalone(t)) })
	// make demo and memory:// run the embedded miniredis: its Lua must run
	// the record script the same way.
	t.Run("miniredis", func(t *testing.T) { testRetentionAndDownsampling(t, embedded(t)) })
}

func embedded(t testing.TB) *env {
	t.Helper()
	m := miniredis.RunT(t)
	return newEnv(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
}

func testRetentionAndDownsampling(t *testing.T, e *env) {
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	e.declare(pool)
	layout := Layout{FineRetention: 2 * time.Minute, CoarseInterval: 30 * time.Second, CoarseRetention: 10 * time.Minute}
	const interval = 5 * time.Second
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)} // on a 30 s boundary
	r := e.recorder(Options{Interval: interval, Layout: layout, Clock: clock.Now})

	written := map[int64]Sample{} // every fine sample ever written, by time
	const ticks = 200             // 1000 s: more than the coarse retention
	for i := range ticks {
		if i%3 == 0 { // the queue grows: the counters change over time
			e.submit(pool, fmt.Sprintf("p%d", i), []slots.TaskType{slots.Plan, slots.PlanAndApply}[i%2])
		}
		_, err := r.Tick(e.ctx)
		require.NoError(t, err)
		if f := e.fine(pool); len(f) > 0 {
			written[f[len(f)-1].At.UnixMilli()] = f[len(f)-1]
		}
		clock.Add(interval)
	}
	now := clock.Now()
	require.Greater(t, len(written), ticks-5)

	fine := e.fine(pool)
	fcap := int(layout.fineCap(interval))
	assert.GreaterOrEqual(t, len(fine), fcap, "the fine list holds its span")
	assert.LessOrEqual(t, len(fine), fcap+fcap/10, "the fine list is trimmed back to its cap")
	assert.WithinDuration(t, now, fine[0].At, layout.FineRetention+layout.FineRetention/10+2*interval, "the oldest fine sample is within the fine span (and the tenth it may grow past it)")

	coarse := e.coarse(pool)
	assert.Len(t, coarse, int(layout.coarseCap()), "the coarse list is trimmed to its cap")
	assert.WithinDuration(t, now, coarse[0].At, layout.CoarseRetention+2*layout.CoarseInterval, "the oldest coarse sample is within the coarse span")
	for _, c := range coarse {
		require.Zero(t, c.At.UnixMilli()%layout.CoarseInterval.Milliseconds(), "a coarse sample is stamped with its interval's start")
		var in []Sample
		for _, s := range written {
			if !s.At.Before(c.At) && s.At.Before(c.At.Add(layout.CoarseInterval)) {
				in = append(in, s)
			}
		}
		require.Len(t, in, int(layout.CoarseInterval/interval), "interval %v", c.At)
		sortByTime(in)
		want := Combine(c.At, in)
		assert.Equal(t, want.At.UnixMilli(), c.At.UnixMilli())
		want.At = c.At
		assert.Equal(t, want, c, "the coarse sample of %v is the mean of its fine samples", c.At)
	}
	assert.Greater(t, coarse[len(coarse)-1].QueuedTotal(), coarse[0].QueuedTotal(), "the growing queue shows")

	rd := NewReader(e.rdb, e.prefix, layout)
	hour, err := rd.Window(e.ctx, pool, Hour, now)
	require.NoError(t, err)
	for _, s := range hour {
		assert.True(t, s.At.After(now.Add(-layout.FineRetention)), "the fine window holds only its span")
	}
	// The clock is one interval past the last tick, whose sample lands
	// with the next one.
	assert.Len(t, hour, int(layout.FineRetention/interval)-2, "every sample of the span")
	assert.Equal(t, fine[len(fine)-1], hour[len(hour)-1])
	day, err := rd.Window(e.ctx, pool, Day, now)
	require.NoError(t, err)
	require.Len(t, day, len(coarse), "every coarse sample in the span, and the interval being recorded")
	assert.Equal(t, coarse[1:], day[:len(day)-1])
	last := day[len(day)-1]
	var partial []Sample
	for _, s := range fine {
		if s.At.After(coarse[len(coarse)-1].At.Add(layout.CoarseInterval - time.Millisecond)) {
			partial = append(partial, s)
		}
	}
	require.NotEmpty(t, partial)
	want := Combine(partial[0].At.Truncate(layout.CoarseInterval), partial)
	assert.Equal(t, want.At.UnixMilli(), last.At.UnixMilli())
	last.At = want.At
	assert.Equal(t, want, last, "the interval being recorded is aggregated by the reader")
}

func sortByTime(s []Sample) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].At.Before(s[j-1].At); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestTwoRecordersWriteOneSamplePerInterval: the scaler's replicas each run
// a recorder; each pool still gets one sample per interval.
func TestTwoRecordersWriteOneSamplePerInterval(t *testing.T) {
	e := standalone(t)
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	e.declare(pool)
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
	a := e.recorder(Options{Interval: 10 * time.Second, Clock: clock.Now})
	b := e.recorder(Options{Interval: 10 * time.Second, Clock: clock.Now})
	var written, dups int
	for range 12 {
		for _, r := range []*Recorder{a, b} {
			res, err := r.Tick(e.ctx)
			require.NoError(t, err)
			written += res.Written
			dups += res.Duplicates
			clock.Add(3 * time.Second) // out of phase, and both within the interval
		}
		clock.Add(4 * time.Second)
	}
	fine := e.fine(pool)
	require.NotEmpty(t, fine)
	assert.Equal(t, len(fine), written)
	assert.Positive(t, dups, "the second replica's samples were refused")
	for i := 1; i < len(fine); i++ {
		assert.Greater(t, fine[i].At.UnixMilli()/10_000, fine[i-1].At.UnixMilli()/10_000, "one sample per 10 s interval")
	}
}

func TestRecorderForgetsDeletedPoolsAndRecordsNewOnes(t *testing.T) {
	e := standalone(t)
	a, b := slots.PoolID{Namespace: "ci", Name: "a"}, slots.PoolID{Namespace: "ci", Name: "b"}
	e.declare(a)
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
	r := e.recorder(Options{Interval: time.Second, Clock: clock.Now})
	tick := func() {
		t.Helper()
		_, err := r.Tick(e.ctx)
		require.NoError(t, err)
		clock.Add(time.Second)
	}
	tick()
	tick()
	e.declare(b)
	for range 4 {
		tick()
	}
	assert.NotEmpty(t, e.fine(b), "a pool declared later is recorded")
	n := len(e.fine(a))
	_, err := e.store.BeginDeletion(e.ctx, a)
	require.NoError(t, err)
	_, err = e.store.Purge(e.ctx, a)
	require.NoError(t, err)
	for range 4 {
		tick()
	}
	assert.LessOrEqual(t, len(e.fine(a)), n+1, "a deleted pool is no longer recorded (one sample read before may land)")
	ttl, err := e.rdb.PTTL(e.ctx, keysOf(e.prefix, a).fine).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "a deleted pool's history expires")
	ttl, err = e.rdb.PTTL(e.ctx, keysOf(e.prefix, b).fine).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "history expires 24 h after its last sample")
	assert.LessOrEqual(t, ttl, DefaultLayout.ttl())
}

// TestHistoryKeysAreOutsideThePoolACL: a pool's Redis user (its agents)
// may neither read nor write the pool's history, nor the janitor's report
// of the pool (the dashboard's other control-plane data of a pool).
func TestHistoryKeysAreOutsideThePoolACL(t *testing.T) {
	e := standalone(t)
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	rules, err := slots.PoolACL(e.prefix, pool)
	require.NoError(t, err)
	user := e.prefix + "-agent"
	args := []any{"ACL", "SETUSER", user}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, e.rdb.Do(e.ctx, append(args, "on", ">pw")...).Err())
	t.Cleanup(func() { _ = e.rdb.Do(context.Background(), "ACL", "DELUSER", user).Err() })

	dryrun := func(cmd ...any) string {
		t.Helper()
		res, err := e.rdb.Do(e.ctx, append([]any{"ACL", "DRYRUN", user}, cmd...)...).Text()
		if err != nil {
			return err.Error()
		}
		return res
	}
	require.Equal(t, "OK", dryrun("HGETALL", e.prefix+":v1:{"+pool.String()+"}:cfg"), "the user may use its pool's keys (the check works)")
	k := keysOf(e.prefix, pool)
	for _, key := range []string{k.fine, k.coarse} {
		assert.Contains(t, strings.ToLower(dryrun("LRANGE", key, "0", "-1")), "no permissions", key)
		assert.Contains(t, strings.ToLower(dryrun("RPUSH", key, "x")), "no permissions", key)
	}
	report := janitorreport.Key(e.prefix, pool)
	assert.Contains(t, strings.ToLower(dryrun("GET", report)), "no permissions", report)
	assert.Contains(t, strings.ToLower(dryrun("SET", report, "{}")), "no permissions", report)
	assert.Contains(t, k.fine, "{"+pool.String()+"}", "the pool's hash tag: the history lives on the pool's node")
}

// countingHook counts what a client sends: pipelines, and commands sent
// on their own (cluster topology reads aside).
type countingHook struct {
	mu        sync.Mutex
	pipelines int
	singles   []string
}

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !connectionSetup[cmd.Name()] {
			h.mu.Lock()
			h.singles = append(h.singles, cmd.Name())
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return !connectionSetup[c.Name()] }) {
			h.mu.Lock()
			h.pipelines++
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// connectionSetup are the commands go-redis sends on a new connection
// (pipelined), and its cluster topology reads: not the recorder's.
var connectionSetup = map[string]bool{"hello": true, "client": true, "auth": true, "select": true, "cluster": true}

func (h *countingHook) reset() (pipelines int, singles []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pipelines, singles = h.pipelines, h.singles
	h.pipelines, h.singles = 0, nil
	return pipelines, singles
}

func TestOneTickIsOnePipeline(t *testing.T) {
	e := standalone(t)
	for i := range 20 {
		e.declare(slots.PoolID{Namespace: "ci", Name: fmt.Sprintf("p%d", i)})
	}
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
	r := e.recorder(Options{Interval: time.Second, Clock: clock.Now})
	hook := &countingHook{}
	e.rdb.AddHook(hook)
	for i := range 5 {
		res, err := r.Tick(e.ctx)
		require.NoError(t, err)
		clock.Add(time.Second)
		pipes, singles := hook.reset()
		assert.Equal(t, 1, pipes, "tick %d: one pipeline", i)
		assert.Empty(t, singles, "tick %d: nothing outside the pipeline", i)
		if i >= 2 {
			assert.Equal(t, 20, res.Written, "tick %d writes every pool", i)
		}
	}
}

// TestOneTickIsOnePipelinePerClusterNode: on a Redis Cluster each node
// gets one pipeline per tick, whatever the number of pools on it.
func TestOneTickIsOnePipelinePerClusterNode(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.ClusterAddrs(t)})
	var mu sync.Mutex
	hooks := map[string]*countingHook{}
	rdb.OnNewNode(func(c *redis.Client) {
		h := &countingHook{}
		mu.Lock()
		hooks[c.Options().Addr] = h
		mu.Unlock()
		c.AddHook(h)
	})
	e := newEnv(t, rdb)
	for i := range 30 {
		e.declare(slots.PoolID{Namespace: "ci", Name: fmt.Sprintf("p%d", i)})
	}
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
	r := e.recorder(Options{Interval: time.Second, Clock: clock.Now})
	for range 3 { // the pools are known, read and written from the third tick on
		_, err := r.Tick(e.ctx)
		require.NoError(t, err)
		clock.Add(time.Second)
	}
	mu.Lock()
	for _, h := range hooks {
		h.reset()
	}
	mu.Unlock()
	res, err := r.Tick(e.ctx)
	require.NoError(t, err)
	assert.Equal(t, 30, res.Written)
	mu.Lock()
	defer mu.Unlock()
	busy := 0
	for addr, h := range hooks {
		pipes, singles := h.reset()
		assert.LessOrEqual(t, pipes, 1, "node %s: at most one pipeline", addr)
		assert.Empty(t, singles, "node %s: nothing outside the pipeline", addr)
		busy += pipes
	}
	assert.GreaterOrEqual(t, busy, 3, "30 pools spread over the three masters")
}

// TestRecorderReloadsFlushedScripts: after a Redis restart or failover the
// node no longer has the scripts; the tick loads them and goes on.
func TestRecorderReloadsFlushedScripts(t *testing.T) {
	srv := redistest.Start(t) // private: SCRIPT FLUSH would disturb other tests
	opt, err := redis.ParseURL(srv.URL())
	require.NoError(t, err)
	e := newEnv(t, redis.NewClient(opt))
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	e.declare(pool)
	clock := &fakeClock{t: time.UnixMilli(1_700_000_100_000)}
	r := e.recorder(Options{Interval: time.Second, Clock: clock.Now})
	for i := range 6 {
		require.NoError(t, e.rdb.ScriptFlush(e.ctx).Err())
		res, err := r.Tick(e.ctx)
		require.NoError(t, err, "tick %d", i)
		if i >= 2 {
			assert.Equal(t, 1, res.Written, "tick %d", i)
		}
		clock.Add(time.Second)
	}
}
