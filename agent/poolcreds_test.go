package main

import (
	"context"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/poolcreds"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// poolUser creates the pool's Redis user as the janitor does and returns
// the URL its agents get.
func poolUser(t *testing.T, e *testEnv, admin *redis.Client) (*poolcreds.Manager, string) {
	t.Helper()
	key := make([]byte, poolcreds.MinKeyLen)
	_, err := rand.Read(key)
	require.NoError(t, err)
	m, err := poolcreds.New(admin, nil, poolcreds.Options{Prefix: e.prefix, Keys: poolcreds.Keys{Current: key}, AgentURL: e.url,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, m.EnsureUser(context.Background(), e.pool))
	u, err := m.URL(e.pool)
	require.NoError(t, err)
	return m, u
}

// aclDenials are Redis's records of commands and keys it refused user.
func aclDenials(t *testing.T, admin *redis.Client, user string) []string {
	t.Helper()
	entries, err := admin.ACLLog(context.Background(), 100).Result()
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if e.Username == user {
			out = append(out, e.Reason+" "+e.Object)
		}
	}
	return out
}

// The whole life of an agent — register, heartbeats, claims (waiting for a
// replica), results, an approved apply, the stop's cordon, hand-back and
// removal — as its pool's Redis user, which may touch nothing else.
func TestAnAgentDoesAllItsWorkAsItsPoolsRedisUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := redistest.Start(t)
	replica := redistest.Start(t, redistest.WithReplicaOf(primary))
	admin := redis.NewClient(&redis.Options{Addr: primary.Addr()})
	t.Cleanup(func() { admin.Close() })
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { rrdb.Close() })
	require.Eventually(t, func() bool {
		info, err := rrdb.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, patience, 50*time.Millisecond, "replica never in sync")

	e := newEnv(t, primary.URL())
	_, agentURL := poolUser(t, e, admin)
	user := poolcreds.UserName(e.prefix, e.pool)
	r := e.start(t, map[string]string{"REDIS_URL": agentURL}, hooks{})
	r.waitReady(t)
	clients, err := admin.ClientList(ctx).Result()
	require.NoError(t, err)
	assert.Contains(t, clients, "user="+user+" ", "the agent is connected as its pool's user")

	e.submit(t, "p1", slots.Plan, "echo planned")
	assert.Equal(t, slots.StateSucceeded, e.waitTask(t, "p1", slots.StateSucceeded, slots.StateFailed).State)
	e.submit(t, "pa", slots.PlanAndApply, `echo "$TASK_PHASE done"`)
	e.waitTask(t, "pa", slots.StateReserved)
	_, err = e.store.Approve(ctx, e.pool, "pa", "alice") // the control plane approves
	require.NoError(t, err)
	pa := e.waitTask(t, "pa", slots.StateSucceeded, slots.StateFailed)
	assert.Equal(t, slots.StateSucceeded, pa.State)
	assert.Contains(t, pa.Output, "apply done")

	r.stop() // SIGTERM: cordon, hand back, finish, remove itself (a static pool)
	require.NoError(t, r.wait(t))
	assert.Equal(t, slots.PodState(""), e.podState(t, "agent-1"), "the stopped agent removed its own record")
	assert.Contains(t, r.logs.String(), `msg=stopped`)
	assert.Empty(t, aclDenials(t, admin, user), "nothing the agent does needs more than its pool's rules")
}

// Redis restarted without its data (and its runtime users): the agent keeps
// retrying, saying why, and works again once the janitor's next pass
// declared the pool and set the user again.
func TestAnAgentWaitsForItsUserAfterRedisLostIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { admin.Close() })
	e := newEnv(t, srv.URL())
	m, agentURL := poolUser(t, e, admin)
	r := e.start(t, map[string]string{"REDIS_URL": agentURL}, hooks{})
	r.waitReady(t)

	srv.Wipe(t)
	require.Eventually(t, func() bool {
		return strings.Contains(r.logs.String(), "WRONGPASS")
	}, patience, 50*time.Millisecond, "the agent says its credentials are refused")
	time.Sleep(time.Second) // several retries
	select {
	case err := <-r.done:
		t.Fatalf("the agent gave up while its user was missing: %v", err)
	default:
	}

	// The janitor's next pass.
	_, err := e.store.DeclarePool(ctx, e.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	require.NoError(t, m.EnsureUser(ctx, e.pool))
	e.waitPodState(t, "agent-1", slots.PodActive)
	e.submit(t, "after", slots.Plan, "echo back")
	assert.Equal(t, slots.StateSucceeded, e.waitTask(t, "after", slots.StateSucceeded, slots.StateFailed).State)

	// A new pod's agent opens the store, which reads the data-model version
	// its user may not write: the declare wrote it again.
	r2 := e.start(t, map[string]string{"REDIS_URL": agentURL, "POD_NAME": "agent-2", "POD_UID": "uid-2", "REGISTER_TIMEOUT": "20s"}, hooks{})
	r2.waitReady(t)
}
