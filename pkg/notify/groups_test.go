package notify

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// groups lists the group names on a stream (none when it does not exist).
func (e *env) groups(key string) []string {
	e.t.Helper()
	gs, err := e.rdb.XInfoGroups(e.ctx, key).Result()
	if err != nil {
		require.ErrorContains(e.t, err, "no such key")
		return nil
	}
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	return names
}

// removals reads slotscaler_notify_group_removals_total{result}.
func removals(t testing.TB, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "slotscaler_notify_group_removals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// groupOptions make the grace short (the test syncs every 50ms).
func groupOptions(reg *prometheus.Registry, logs *lockedBuffer) Options {
	o := Options{Logger: logs.logger(), GroupGrace: 300 * time.Millisecond}
	if reg != nil { // a nil *Registry is not a nil Registerer
		o.Registerer = reg
	}
	return o
}

func TestRemovedWebhooksGroupsAreDestroyed(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	keep, gone := e.webhook("keep", rc.srv.URL, nil), e.webhook("gone", rc.srv.URL, nil)
	evKey, ownKey := e.store.EventStreamKey(e.pool), StreamKey(e.prefix, e.pool)

	// A replica delivered both webhooks; another reader has its own group on
	// the pool's stream, and a declared webhook's group exists (this replica
	// reads no declarations: not its to judge).
	_, stopOld := e.notifier("old", Config{Webhooks: []Webhook{keep, gone}}, groupOptions(nil, &lockedBuffer{}))
	require.NoError(t, e.rdb.XGroupCreateMkStream(e.ctx, evKey, "audit", "0").Err())
	require.NoError(t, e.rdb.XGroupCreateMkStream(e.ctx, evKey, Group(PoolWebhookPrefix+"chat"), "$").Err())
	require.ElementsMatch(t, []string{Group("keep"), Group("gone"), "audit", Group("pool:chat")}, e.groups(evKey))
	require.ElementsMatch(t, []string{Group("keep"), Group("gone")}, e.groups(ownKey))
	stopOld()
	// Two events "gone" never delivered: read by a replica that died.
	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeSuccess)
	read, err := e.rdb.XReadGroup(e.ctx, &redis.XReadGroupArgs{Group: Group("gone"), Consumer: "dead",
		Streams: []string{evKey, ">"}, Count: 100, Block: -1}).Result()
	require.NoError(t, err)
	pendingGone := len(read[0].Messages)
	require.Positive(t, pendingGone)

	// The new configuration has "keep" only.
	reg := prometheus.NewRegistry()
	var logs lockedBuffer
	e.notifier("new", Config{Webhooks: []Webhook{keep}}, groupOptions(reg, &logs))
	require.Eventually(t, func() bool { return removals(t, reg, RemovalDestroyed) == 1 }, wait, tick)
	assert.ElementsMatch(t, []string{Group("keep"), "audit", Group("pool:chat")}, e.groups(evKey))
	assert.ElementsMatch(t, []string{Group("keep")}, e.groups(ownKey))
	assert.Contains(t, logs.String(), "removed the consumer groups of a removed webhook")
	assert.Contains(t, logs.String(), "webhook=gone")
	assert.Contains(t, logs.String(), "pool=team-a/infra")
	assert.Contains(t, logs.String(), "pending_dropped="+strconv.Itoa(pendingGone))
	// Its delivery status went with its groups: the pool page lists "keep" only.
	assert.Zero(t, e.rdb.Exists(e.ctx, StatusKey(e.prefix, e.pool, "gone")).Val())
	assert.False(t, e.rdb.SIsMember(e.ctx, WebhooksKey(e.prefix, e.pool), "gone").Val())
	statuses, err := ReadStatus(e.ctx, e.rdb, e.prefix, e.pool)
	require.NoError(t, err)
	var listed []string
	for _, st := range statuses {
		listed = append(listed, st.Webhook)
	}
	assert.Equal(t, []string{"keep"}, listed)

	// "keep" still delivers.
	e.run("t2", slots.Plan, pod, uid, slots.OutcomeSuccess)
	require.Eventually(t, func() bool {
		for _, p := range rc.byEvent()[EventSucceeded] {
			if p.Task == "t2" {
				return true
			}
		}
		return false
	}, wait, tick)
	assert.Zero(t, removals(t, reg, RemovalError))
}

func TestGroupsInUseByAnotherReplicaStay(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	keep, gone := e.webhook("keep", rc.srv.URL, nil), e.webhook("gone", rc.srv.URL, nil)
	evKey := e.store.EventStreamKey(e.pool)

	// A rollout: the old replica still delivers "gone", the new one does
	// not have it.
	_, stopOld := e.notifier("old", Config{Webhooks: []Webhook{keep, gone}}, groupOptions(nil, &lockedBuffer{}))
	reg := prometheus.NewRegistry()
	var logs lockedBuffer
	e.notifier("new", Config{Webhooks: []Webhook{keep}}, groupOptions(reg, &logs))
	ok := assert.Eventually(t, func() bool { return removals(t, reg, RemovalInUse) >= 2 }, wait, tick)
	if !ok {
		t.Fatalf("destroyed %v, errors %v, logs %s", removals(t, reg, RemovalDestroyed), removals(t, reg, RemovalError), logs.String())
	}
	assert.Contains(t, e.groups(evKey), Group("gone"), "the old replica reads it")
	assert.Zero(t, removals(t, reg, RemovalDestroyed))
	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeSuccess)
	require.Eventually(t, func() bool { _, requests, _ := rc.counts(); return requests == 2 }, wait, tick, "both webhooks deliver")

	// The rollout ends: once nobody reads it for the grace, it goes.
	stopOld()
	require.Eventually(t, func() bool { return removals(t, reg, RemovalDestroyed) == 1 }, wait, tick)
	assert.NotContains(t, e.groups(evKey), Group("gone"))
	assert.Contains(t, e.groups(evKey), Group("keep"))
}

func TestGroupGraceMustCoverSyncs(t *testing.T) {
	e := newEnv(t, nil)
	_, err := New(e.store, e.rdb, Config{}, Options{Consumer: "x", SyncInterval: time.Minute, GroupGrace: time.Minute})
	require.ErrorContains(t, err, "group grace")
}
