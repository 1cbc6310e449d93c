package slots

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/faultproxy"
	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
)

func TestEveryCallFailsWithinDeadlineWhenRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	conn, err := redisconn.Open(ctx, srv.URL(), nil)
	require.NoError(t, err)
	defer conn.Close()
	s, err := New(ctx, conn.Client, Options{Logger: quietLogger()})
	require.NoError(t, err)
	pool := PoolID{Namespace: "ns", Name: "p"}
	_, err = s.DeclarePool(ctx, pool, DefaultPoolConfig())
	require.NoError(t, err)
	srv.Kill(t)

	calls := map[string]func(context.Context) error{
		"submit":    func(c context.Context) error { _, err := s.Submit(c, pool, TaskSpec{ID: "t", Type: Plan}); return err },
		"register":  func(c context.Context) error { _, err := s.RegisterPod(c, pool, "p", "u"); return err },
		"heartbeat": func(c context.Context) error { _, err := s.Heartbeat(c, pool, "p", "u", nil); return err },
		"take":      func(c context.Context) error { _, err := s.Take(c, pool, "p", "u", time.Second, nil); return err },
		"drain":     func(c context.Context) error { return s.Drain(c, pool, "p", "u") },
		"stats":     func(c context.Context) error { _, err := s.Stats(c, pool); return err },
		"snapshot":  func(c context.Context) error { _, err := s.Snapshot(c, pool); return err },
		"events":    func(c context.Context) error { _, err := s.Events(c, pool, "", 10); return err },
		"reap":      func(c context.Context) error { _, err := s.Reap(c, pool, ReapOptions{}); return err },
		"task":      func(c context.Context) error { _, err := s.Task(c, pool, "t"); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := call(c)
			require.Error(t, err)
			assert.Equal(t, KindUnavailable, Classify(err), "%v", err)
			assert.Less(t, time.Since(start), 10*time.Second, "the call gives up at its deadline instead of hanging")
		})
	}
}

func TestScriptsSurviveScriptCacheFlush(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		if b == "cluster" {
			// SCRIPT FLUSH would have to reach every node; the pipeline
			// reload path is the same code as for a single node.
			return
		}
		e := newEnv(t, b)
		require.NoError(t, e.rdb.ScriptFlush(e.ctx).Err())
		e.pod("agent-0") // EVALSHA falls back to EVAL
		require.NoError(t, e.rdb.ScriptFlush(e.ctx).Err())
		st := e.stats() // the pipelined path reloads and retries
		assert.Equal(t, 1, st.IdlePods)
	})
}

func TestNewRefusesAnotherDataModelVersion(t *testing.T) {
	rdb, _ := newClient(t, "miniredis")
	ctx := context.Background()
	require.NoError(t, rdb.Set(ctx, "ss:datamodel", "2", 0).Err())
	_, err := New(ctx, rdb, Options{Logger: quietLogger()})
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = New(ctx, rdb, Options{Prefix: "other", Logger: quietLogger()})
	require.NoError(t, err, "another installation's prefix is independent")
}

func TestTwoInstallationsSharingRedisDoNotCollide(t *testing.T) {
	rdb, _ := newClient(t, "miniredis")
	ctx := context.Background()
	a, err := New(ctx, rdb, Options{Prefix: "blue", Logger: quietLogger()})
	require.NoError(t, err)
	b, err := New(ctx, rdb, Options{Prefix: "green", Logger: quietLogger()})
	require.NoError(t, err)
	pool := PoolID{Namespace: "ns", Name: "p"}
	_, err = a.DeclarePool(ctx, pool, DefaultPoolConfig())
	require.NoError(t, err)
	_, err = b.Submit(ctx, pool, TaskSpec{ID: "t", Type: Plan})
	require.ErrorIs(t, err, ErrPoolNotFound)
	pools, err := b.Pools(ctx)
	require.NoError(t, err)
	assert.Empty(t, pools)
}

// Regression: a reaper whose sweep over all pools took longer than MaxGap
// found a gap at every pool, granted grace again on each pass, and never
// expired anything. Here every reap script is slowed (the reaper reaches
// Redis through a fault proxy) so one sweep over three pools outlasts
// MaxGap; a pod whose agent stopped heartbeating must still be judged lost.
func TestAReaperSlowerThanItsMaxGapStillExpiresHeartbeats(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	prefix := redistest.Prefix(t)
	direct, err := redisconn.Open(ctx, srv.URL(), nil)
	require.NoError(t, err)
	defer direct.Close()
	s, err := New(ctx, direct.Client, Options{Prefix: prefix, Logger: quietLogger()})
	require.NoError(t, err)
	cfg := DefaultPoolConfig()
	cfg.Managed = true
	cfg.HeartbeatTimeout = 300 * time.Millisecond
	pools := []PoolID{{Namespace: "ns", Name: "a"}, {Namespace: "ns", Name: "b"}, {Namespace: "ns", Name: "c"}}
	for _, p := range pools {
		_, err = s.DeclarePool(ctx, p, cfg)
		require.NoError(t, err)
	}
	require.NoError(t, s.ExpectPod(ctx, pools[0], "agent-0", "u0"))
	_, err = s.RegisterPod(ctx, pools[0], "agent-0", "u0")
	require.NoError(t, err) // and never heartbeats again

	proxy := faultproxy.Start(t, srv.Addr())
	proxy.Add(faultproxy.Rule{Command: "EVALSHA", Action: faultproxy.Delay(80 * time.Millisecond)})
	slow, err := redisconn.Open(ctx, proxy.URL(), nil)
	require.NoError(t, err)
	defer slow.Close()
	reaperStore, err := New(ctx, slow.Client, Options{Prefix: prefix, Logger: quietLogger()})
	require.NoError(t, err)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	// A sweep: 3 reaps of 80 ms, longer than the 100 ms max gap.
	go reaperStore.RunReaper(rctx, 20*time.Millisecond, ReapOptions{MaxGap: 100 * time.Millisecond})

	require.Eventually(t, func() bool {
		snap, err := s.Snapshot(ctx, pools[0])
		return err == nil && len(snap.Pods) == 1 && snap.Pods[0].State == PodLost
	}, 30*time.Second, 50*time.Millisecond, "the silent pod was never judged lost: the reaper stayed in grace")
}

// A decision whose reply is lost is resent (by go-redis itself when the
// connection broke, or by the caller). Regression: the resent approve found
// the task already running its apply and answered ErrNotReserved: the
// approver was told no while the apply ran.
func TestADecisionWhoseReplyWasLostIsAnsweredLikeTheFirst(t *testing.T) {
	e, proxy := proxiedEnv(t)
	s, ctx := e.s, e.ctx
	uid := e.pod("agent-0")
	reserve := func(id string) {
		e.submit(id, PlanAndApply)
		require.Equal(t, StateReserved, e.complete(e.take("agent-0", uid), OutcomeSuccess))
	}
	// The approve's last arguments: task, approver, note.
	lastArgs := func(a, b string) func([]string) bool {
		return func(args []string) bool { n := len(args); return n > 3 && args[n-3] == a && args[n-2] == b }
	}

	reserve("pa")
	cut := proxy.Add(faultproxy.Rule{Command: "EVALSHA", Match: lastArgs("pa", "alice"), Times: 1, Action: faultproxy.CutAfterForward})
	ep, err := s.Approve(ctx, e.pool, "pa", "alice")
	require.NoError(t, err, "the approval landed: its resend is answered as approved")
	require.Equal(t, 1, cut.Acted(), "the first reply was lost")
	tk := e.task("pa")
	assert.Equal(t, ep, tk.Epoch)
	assert.Equal(t, PhaseApply, tk.Phase)
	again, err := s.Approve(ctx, e.pool, "pa", "alice")
	require.NoError(t, err)
	assert.Equal(t, ep, again, "the same approver again: the same apply, not a second one")
	_, err = s.Approve(ctx, e.pool, "pa", "mallory")
	require.ErrorIs(t, err, ErrNotReserved, "someone else's approval is still refused")
	e.complete(e.take("agent-0", uid), OutcomeSuccess)

	reserve("pr")
	cut = proxy.Add(faultproxy.Rule{Command: "EVALSHA", Match: func(args []string) bool {
		n := len(args) // ... task, who, mode, reason, note
		return n > 5 && args[n-5] == "pr" && args[n-4] == "bob" && args[n-3] == "reject"
	}, Times: 1, Action: faultproxy.CutAfterForward})
	require.NoError(t, s.Reject(ctx, e.pool, "pr", "bob"))
	require.Equal(t, 1, cut.Acted())
	assert.Equal(t, StateRejected, e.task("pr").State)
	require.ErrorIs(t, s.Reject(ctx, e.pool, "pr", "carol"), ErrNotReserved)
}

// Regression: a BLMOVE whose connection broke after Redis moved the entry
// is sent again by go-redis, which moves the next entry (or none): the first
// entry sat in the processing list where no Take looked, and its task stayed
// assigned and never ran.
func TestAnInboxEntryWhoseMoveReplyWasLostIsStillTaken(t *testing.T) {
	e, proxy := proxiedEnv(t)
	s, ctx := e.s, e.ctx
	uid := e.pod("agent-0")
	m, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil) // has looked at the empty processing list
	require.NoError(t, err)
	require.Nil(t, m)
	e.submit("a", Plan)
	e.submit("b", Plan)
	cut := proxy.Add(faultproxy.Rule{Command: "BLMOVE", Times: 1, Action: faultproxy.CutAfterForward})
	got := map[string]bool{}
	for range 10 {
		m, err := s.Take(ctx, e.pool, "agent-0", uid, time.Second, nil)
		if err != nil || m == nil || m.Kind != MsgAssignment {
			continue
		}
		got[m.Task] = true
		if len(got) == 2 {
			break
		}
	}
	require.Equal(t, 1, cut.Acted(), "a move's reply was lost")
	assert.Equal(t, map[string]bool{"a": true, "b": true}, got, "both assignments reached the agent")
	assert.Empty(t, e.inbox("agent-0"))
	n, err := e.rdb.LLen(ctx, s.base(e.pool)+keyProc+"agent-0").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "nothing left in the processing list")
}

// proxiedEnv is a pool on a private real redis-server that the store
// reaches through a fault proxy (go-redis's own retries left on, as in
// production).
func proxiedEnv(t *testing.T) (*env, *faultproxy.Proxy) {
	t.Helper()
	srv := redistest.Start(t)
	ctx := context.Background()
	proxy := faultproxy.Start(t, srv.Addr())
	conn, err := redisconn.Open(ctx, proxy.URL(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	s, err := New(ctx, conn.Client, Options{Prefix: redistest.Prefix(t), Logger: quietLogger()})
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, s: s, rdb: conn.Client, pool: PoolID{Namespace: "ns", Name: "p"}, cfg: DefaultPoolConfig()}
	_, err = s.DeclarePool(ctx, e.pool, e.cfg)
	require.NoError(t, err)
	return e, proxy
}
