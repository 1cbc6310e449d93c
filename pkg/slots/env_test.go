package slots

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// backends are the Redis implementations every store test runs on: a real
// redis-server, miniredis (the embedded default) and a three-node Cluster.
var backends = []string{"redis", "miniredis", "cluster"}

type env struct {
	t     testing.TB
	ctx   context.Context
	s     *Store
	rdb   redis.UniversalClient
	mini  *miniredis.Miniredis // nil unless backend is miniredis
	pool  PoolID
	cfg   PoolConfig
	count int
}

func newClient(t testing.TB, backend string) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	switch backend {
	case "redis":
		opts, err := redis.ParseURL(redistest.Standalone(t))
		require.NoError(t, err)
		opts.PoolSize = 128
		c := redis.NewClient(opts)
		t.Cleanup(func() { _ = c.Close() })
		return c, nil
	case "miniredis":
		m := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: m.Addr(), PoolSize: 128})
		t.Cleanup(func() { _ = c.Close() })
		return c, m
	case "cluster":
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.ClusterAddrs(t), PoolSize: 128})
		t.Cleanup(func() { _ = c.Close() })
		return c, nil
	}
	t.Fatalf("unknown backend %q", backend)
	return nil, nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEnv returns a store on a fresh prefix with one declared pool.
func newEnv(t testing.TB, backend string, mutate ...func(*PoolConfig)) *env {
	t.Helper()
	rdb, mini := newClient(t, backend)
	ctx := context.Background()
	s, err := New(ctx, rdb, Options{Prefix: redistest.Prefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	cfg := DefaultPoolConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	e := &env{t: t, ctx: ctx, s: s, rdb: rdb, mini: mini, pool: PoolID{Namespace: "team-a", Name: "pool-1"}, cfg: cfg}
	_, err = s.DeclarePool(ctx, e.pool, cfg)
	require.NoError(t, err)
	return e
}

// forEachBackend runs fn as a subtest on every backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range backends {
		t.Run(b, func(t *testing.T) { fn(t, b) })
	}
}

// pod registers a pod (expecting it first in managed pools) and returns its uid.
func (e *env) pod(name string) string {
	e.t.Helper()
	e.count++
	uid := fmt.Sprintf("uid-%s-%d", name, e.count)
	if e.cfg.Managed {
		require.NoError(e.t, e.s.ExpectPod(e.ctx, e.pool, name, uid))
	}
	_, err := e.s.RegisterPod(e.ctx, e.pool, name, uid)
	require.NoError(e.t, err)
	return uid
}

func (e *env) submit(id string, tt TaskType) SubmitResult {
	e.t.Helper()
	r, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: id, Type: tt, Payload: []byte("payload-" + id)})
	require.NoError(e.t, err)
	return r
}

// take takes the next assignment from a pod's inbox, failing if none comes.
func (e *env) take(pod, uid string) *Assignment {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		m, err := e.s.Take(e.ctx, e.pool, pod, uid, 100*time.Millisecond, nil)
		require.NoError(e.t, err)
		if m != nil && m.Kind == MsgAssignment {
			return m.Assignment
		}
	}
	e.t.Fatalf("no assignment for pod %s", pod)
	return nil
}

// inbox returns the raw pending inbox entries of a pod.
func (e *env) inbox(pod string) []string {
	e.t.Helper()
	v, err := e.rdb.LRange(e.ctx, e.s.base(e.pool)+keyInbox+pod, 0, -1).Result()
	require.NoError(e.t, err)
	return v
}

func (e *env) complete(a *Assignment, o Outcome) TaskState {
	e.t.Helper()
	st, err := e.s.Complete(e.ctx, e.pool, Result{Task: a.Task, Epoch: a.Epoch, Outcome: o, Output: []byte("out")})
	require.NoError(e.t, err)
	return st
}

func (e *env) task(id string) Task {
	e.t.Helper()
	tk, err := e.s.Task(e.ctx, e.pool, id)
	require.NoError(e.t, err)
	return tk
}

func (e *env) stats() Stats {
	e.t.Helper()
	st, err := e.s.Stats(e.ctx, e.pool)
	require.NoError(e.t, err)
	require.NoError(e.t, st[0].Err)
	return st[0].Stats
}

// consistent asserts the counters equal a recount and the at-rest invariant holds.
func (e *env) consistent() {
	e.t.Helper()
	diffs, err := e.s.Reconcile(e.ctx, e.pool, false)
	require.NoError(e.t, err)
	require.Empty(e.t, diffs, "counters or idle sets differ from a recount")
}
