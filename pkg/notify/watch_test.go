package notify

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// counted is a client of the env's Redis whose commands are counted.
func (e *env) counted() (*redis.Client, *commandCounter) {
	rdb := redis.NewClient(e.rdb.Options())
	e.t.Cleanup(func() { _ = rdb.Close() })
	c := &commandCounter{}
	rdb.AddHook(c)
	return rdb, c
}

func (rc *receiver) gotTask(task string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, p := range rc.bodies {
		if p.Task == task {
			return true
		}
	}
	return false
}

func TestWorkersAtRestDoNotRead(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	rdb, calls := e.counted()
	// No safety poll and no group check within the test: only the watch
	// can wake a worker.
	e.notifierOn(rdb, "n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, nil)}},
		Options{SafetyPollInterval: time.Hour, ClaimIdle: time.Hour, GroupGrace: 2 * time.Hour})
	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeSuccess)
	require.Eventually(t, func() bool { return rc.gotTask("t1") }, wait, tick)
	// The watch goes on; after a few rounds nothing moves any more.
	watched := func(n int) func() bool {
		from := calls.named("xread")
		return func() bool { return calls.named("xread") >= from+n }
	}
	require.Eventually(t, watched(3), wait, tick)
	reads := calls.named("xreadgroup")
	require.Eventually(t, watched(5), wait, tick)
	assert.Equal(t, reads, calls.named("xreadgroup"), "no worker reads while its stream does not move")

	e.run("t2", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return rc.gotTask("t2") }, wait, tick, "the watch wakes the worker")
}

func TestNoticeAnotherReplicaQueuedIsDelivered(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	// Groups checked every 100ms, no safety poll within the test.
	rdb, calls := e.counted()
	e.notifierOn(rdb, "n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, func(w *Webhook) { w.Timeout = 100 * time.Millisecond })}},
		Options{SafetyPollInterval: time.Hour, ClaimIdle: 300 * time.Millisecond})
	// At rest (the watch went round a few times)…
	from := calls.named("xread")
	require.Eventually(t, func() bool { return calls.named("xread") >= from+3 }, wait, tick)
	// …another replica's checkExpiring queued a notice: nobody here was told.
	dl := time.Now().Add(10 * time.Minute).UnixMilli()
	require.NoError(t, e.rdb.XAdd(e.ctx, &redis.XAddArgs{Stream: StreamKey(e.prefix, e.pool), Values: []string{
		"event", EventReservationExpiring, "task", "pa", "deadline", strconv.FormatInt(dl, 10), "at", strconv.FormatInt(time.Now().UnixMilli(), 10),
	}}).Err())
	require.Eventually(t, func() bool { return len(rc.byEvent()[EventReservationExpiring]) == 1 }, wait, tick,
		"the group's lag wakes the worker")
}

// On a Redis Cluster the pools' streams are in different slots: the watch
// reads each one's last entry (pipelined per node) and still wakes only the
// pool that moved.
func TestWatchOnACluster(t *testing.T) {
	addrs := redistest.ClusterAddrs(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	calls := &commandCounter{}
	rdb.AddHook(calls)
	prefix := redistest.Prefix(t)
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	e := &env{t: t, ctx: t.Context(), store: store, prefix: prefix, pool: slots.PoolID{Namespace: "team-a", Name: "infra"}}
	for _, name := range []string{"infra", "web", "data"} {
		_, err := store.DeclarePool(e.ctx, slots.PoolID{Namespace: "team-a", Name: name}, slots.DefaultPoolConfig())
		require.NoError(t, err)
	}
	rc := newReceiver(t, signingSecret)
	e.notifierOn(rdb, "n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, nil)}},
		Options{SafetyPollInterval: time.Hour, ClaimIdle: time.Hour, GroupGrace: 2 * time.Hour})
	watched := func(n int) func() bool {
		from := calls.named("xrevrange")
		return func() bool { return calls.named("xrevrange") >= from+3*n }
	}
	require.Eventually(t, watched(3), wait, tick)
	reads := calls.named("xreadgroup")
	require.Eventually(t, watched(5), wait, tick)
	assert.Equal(t, reads, calls.named("xreadgroup"), "no worker reads while its stream does not move")

	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return rc.gotTask("t1") }, wait, tick, "the watch wakes the worker")
}
