package slots

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/slotscaler/slotscaler/internal/faultproxy"
	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDrainReplicatedWaitsForTheReplica(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t)
	replica := redistest.Start(t, redistest.WithReplicaOf(primary))
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { _ = rrdb.Close() })
	require.Eventually(t, func() bool {
		n, err := connectedReplicas(ctx, rdb)
		info, ierr := rrdb.Info(ctx, "replication").Result()
		// Connected is not enough: WAIT counts a replica once its initial
		// sync is done and it streams.
		return err == nil && n == 1 && ierr == nil && strings.Contains(info, "master_link_status:up")
	}, 30*time.Second, 50*time.Millisecond, "replica never in sync")

	s, err := New(ctx, rdb, Options{Prefix: redistest.Prefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	pool := PoolID{Namespace: "ns", Name: "p"}
	_, err = s.DeclarePool(ctx, pool, DefaultPoolConfig())
	require.NoError(t, err)
	_, err = s.RegisterPod(ctx, pool, "a", "uid-a")
	require.NoError(t, err)

	acked, err := s.DrainReplicated(ctx, pool, "a", "uid-a", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, acked)
	// WAIT returned: the replica has the drain already, no polling needed.
	st, err := rrdb.HGet(ctx, s.base(pool)+keyPod+"a", "st").Result()
	require.NoError(t, err)
	require.Equal(t, "draining", st)

	// A busy pod is refused on the primary before any WAIT.
	_, err = s.RegisterPod(ctx, pool, "b", "uid-b")
	require.NoError(t, err)
	_, err = s.Submit(ctx, pool, TaskSpec{ID: "t1", Type: Plan})
	require.NoError(t, err)
	_, err = s.DrainReplicated(ctx, pool, "b", "uid-b", time.Second)
	require.ErrorIs(t, err, ErrPodBusy)
}

func TestDrainReplicatedWithoutReplicas(t *testing.T) {
	for _, backend := range []string{"redis", "miniredis", "cluster"} {
		t.Run(backend, func(t *testing.T) {
			e := newEnv(t, backend)
			uid := e.pod("a")
			acked, err := e.s.DrainReplicated(e.ctx, e.pool, "a", uid, time.Second)
			require.NoError(t, err)
			require.Zero(t, acked)
			snap, err := e.s.Snapshot(e.ctx, e.pool)
			require.NoError(t, err)
			require.Equal(t, PodDraining, snap.Pods[0].State)
		})
	}
}

// Found by the 30-minute fault soak (seed 20261203): an asynchronous
// failover lost claims, and the same plan ran on two pods at once, an apply
// twice. A claim now waits until a replica has it; until then the phase does
// not start (ErrNotReplicated) and the next Take claims the same entry
// again.
func TestSeed20261203AClaimStartsOnlyOnceAReplicaHasIt(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t)
	replica := redistest.Start(t)
	link := faultproxy.Start(t, primary.Addr())
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { _ = rrdb.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	follow(t, rrdb, link.Addr())

	e := replicatedEnv(t, rdb)
	s := e.s
	uid := e.pod("agent-0")
	e.submit("a", Plan)
	assert.Equal(t, "a", e.take("agent-0", uid).Task, "with the replica streaming, a claim is acknowledged")

	e.submit("b", Plan)
	link.Stall(true) // the replica falls behind
	_, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil)
	require.ErrorIs(t, err, ErrNotReplicated, "the claim stands on the primary only: the phase must not start")
	link.Stall(false)
	m, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	assert.Equal(t, "b", m.Task, "the next take claims the same entry again, now replicated")
	assert.Equal(t, 1, e.task("b").Attempt, "one start")
}

// Found by the fault soak with pool credentials (seed 20261209: an apply
// started twice, on two pods): an error reply to INFO replication — a
// pool's user refused (WRONGPASS while the janitor has not set it again
// after a Redis restart, NOPERM) or LOADING — was read as "no replicas"
// and cached, so claims and drains skipped their WAIT for a second and a
// failover could lose them. Only the embedded miniredis's "not supported"
// means no replicas; any other error is no answer.
func TestAReplicaCountRedisRefusedIsNoAnswer(t *testing.T) {
	e := newEnv(t, "redis")
	uid := e.pod("a")
	user := "t-noinfo-" + redistest.Prefix(t)
	setACLUser(t, e.rdb, user, "pw", []string{"reset", "~*", "+@all", "-info"})
	opts := e.rdb.(*redis.Client).Options()
	limited := redis.NewClient(&redis.Options{Addr: opts.Addr, DB: opts.DB, Username: user, Password: "pw", ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = limited.Close() })
	s, err := New(e.ctx, limited, Options{Prefix: e.s.prefix, Logger: quietLogger()})
	require.NoError(t, err)

	_, err = s.DrainReplicated(e.ctx, e.pool, "a", uid, time.Second)
	require.Error(t, err, "a refused INFO must not pass for a primary without replicas")
	assert.True(t, redis.IsPermissionError(errors.Unwrap(errors.Unwrap(err))) || strings.Contains(err.Error(), "NOPERM"), "%v", err)
	snap, err := e.s.Snapshot(e.ctx, e.pool)
	require.NoError(t, err)
	assert.Equal(t, PodActive, snap.Pods[0].State, "nothing was drained without knowing whether a replica must have it")
}

// Found by the fault soak with pool credentials (seed 20261209: an apply
// started twice, on two pods). A primary restarted (or promoted) a moment
// ago has no replica connected until its replica reconnects; claims it took
// then skipped their WAIT, a failover to the replica lost them, and the
// task planned and applied again elsewhere. Once a replica was seen, every
// claim needs an acknowledgement, also while none is connected.
func TestAClaimNeedsAReplicaOnceOneWasSeen(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t)
	replica := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { _ = rrdb.Close() })
	follow(t, rrdb, primary.Addr())

	e := replicatedEnv(t, rdb)
	s := e.s
	uid := e.pod("agent-0")
	e.submit("a", Plan)
	a := e.take("agent-0", uid)
	assert.Equal(t, "a", a.Task, "with the replica streaming, a claim is acknowledged")
	e.complete(a, OutcomeSuccess)

	// The replica goes away: the primary reports none connected.
	require.NoError(t, rrdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	require.Eventually(t, func() bool {
		n, err := connectedReplicas(ctx, rdb)
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond)
	time.Sleep(1100 * time.Millisecond) // past any cached count

	e.submit("b", Plan)
	_, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil)
	require.ErrorIs(t, err, ErrNotReplicated, "no replica has the claim: the phase must not start")

	follow(t, rrdb, primary.Addr())
	m, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	assert.Equal(t, "b", m.Task, "the same entry, claimed again once a replica acknowledges it")
	assert.Equal(t, 1, e.task("b").Attempt, "one start")
}

// An explicit ReplicaAcks holds from the start: a process that starts while
// its replica is away does not take claims alone.
func TestReplicaAcksFixedNeedsThemFromTheStart(t *testing.T) {
	e := newEnv(t, "redis")
	uid := e.pod("agent-0")
	s, err := New(e.ctx, e.rdb, Options{Prefix: e.s.prefix, Logger: quietLogger(), ReplicaAcks: 1, ClaimReplicaWait: 100 * time.Millisecond})
	require.NoError(t, err)
	e.submit("a", Plan)
	_, err = s.Take(e.ctx, e.pool, "agent-0", uid, time.Second, nil)
	require.ErrorIs(t, err, ErrNotReplicated)
	idle := e.pod("agent-1")
	_, err = s.DrainReplicated(e.ctx, e.pool, "agent-1", idle, 100*time.Millisecond)
	require.ErrorIs(t, err, ErrNotReplicated)

	_, err = New(e.ctx, e.rdb, Options{Prefix: e.s.prefix, ReplicaAcks: -1})
	require.ErrorContains(t, err, "must be 0 (auto) or more")
}

// follow makes a server a replica of the one at addr and waits until its
// link is up (its initial sync done).
func follow(t *testing.T, replica *redis.Client, addr string) {
	t.Helper()
	ctx := context.Background()
	host, port, _ := strings.Cut(addr, ":")
	require.NoError(t, replica.Do(ctx, "REPLICAOF", host, port).Err())
	require.Eventually(t, func() bool {
		info, err := replica.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, 30*time.Second, 50*time.Millisecond, "replica never in sync")
}

// replicatedEnv is a store over a primary whose replica follows it, with a
// declared pool; claims wait 300 ms for the replica.
func replicatedEnv(t *testing.T, rdb *redis.Client) *env {
	t.Helper()
	ctx := context.Background()
	s, err := New(ctx, rdb, Options{Prefix: redistest.Prefix(t), Logger: quietLogger(), ClaimReplicaWait: 300 * time.Millisecond})
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, s: s, rdb: rdb, pool: PoolID{Namespace: "ns", Name: "p"}, cfg: DefaultPoolConfig()}
	_, err = s.DeclarePool(ctx, e.pool, e.cfg)
	require.NoError(t, err)
	return e
}
