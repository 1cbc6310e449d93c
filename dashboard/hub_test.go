package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// hubOn is a pool hub on the fixture's real store, counted, ticked by hand,
// reading in full at least every fullEvery ticks.
type hubOn struct {
	t      *testing.T
	hub    *poolHub
	store  *countingStore
	ticker *manualTicker
}

func newHubOn(f *fixture, t *testing.T, fullEvery int) *hubOn {
	store := &countingStore{Store: f.store}
	ticker := &manualTicker{ticks: make(chan time.Time)}
	h := newPoolHub(store, time.Second, quiet())
	h.tick, h.fullEvery = ticker.tick, fullEvery
	return &hubOn{t: t, hub: h, store: store, ticker: ticker}
}

// tick lets n intervals pass; each send returns once the poller has taken
// it (and so finished the read before).
func (h *hubOn) tick(n int) {
	for range n {
		h.ticker.ticks <- time.Time{}
	}
}

// stop closes sub, the pool's only viewer, and waits for the poller to
// stop: every read it began has been counted.
func (h *hubOn) stop(sub *subscription) {
	h.t.Helper()
	sub.close()
	require.Eventually(h.t, func() bool { return h.ticker.stopped.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
}

// receive waits for the snapshot the viewer is sent next.
func receive(t *testing.T, sub *subscription) slots.Snapshot {
	t.Helper()
	select {
	case snap := <-sub.C:
		return snap
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the viewer was sent no snapshot")
		return slots.Snapshot{}
	}
}

func TestLiveHubDoesNotReadAPoolAtRestAgain(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	f.addPod()
	h := newHubOn(f, t, 100)
	sub := h.hub.subscribe(f.pool)
	first := receive(t, sub)
	require.Len(t, first.Pods, 2)

	h.tick(5)
	// A viewer who joins the pool at rest is sent its last snapshot at once.
	late := h.hub.subscribe(f.pool)
	require.Len(t, late.C, 1, "a new viewer gets the latest snapshot on subscribing")
	assert.Len(t, (<-late.C).Pods, 2)
	late.close()
	h.stop(sub)

	assert.EqualValues(t, 1, h.store.snapshots.Load(), "the pool at rest is read in full only on the first viewer's arrival")
	assert.EqualValues(t, 5, h.store.versions.Load(), "each tick reads the change token")
	assert.Empty(t, sub.C, "viewers are sent nothing while the pool rests: they show it already")
}

// A pool at rest shows at the token's time what it showed when read, so a
// viewer who joins gets the grid's ages as of the last tick, not of the
// last full read (the stream would otherwise take the page's fresh ages
// back by up to liveFullReadEvery).
func TestLiveHubSendsANewViewerTheAgesOfTheLastTick(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	h := newHubOn(f, t, 100)
	h.store.clockAhead = time.Minute // the token is read a minute after the snapshot
	sub := h.hub.subscribe(f.pool)
	first := receive(t, sub)
	h.tick(2) // the first tick's read is over once the second is taken
	late := h.hub.subscribe(f.pool)
	require.Len(t, late.C, 1)
	got := <-late.C
	assert.False(t, got.At.Before(first.At.Add(time.Minute)), "snapshot at %v, then at rest at %v", first.At, got.At)
	assert.Equal(t, first.Pods, got.Pods)
	late.close()
	h.stop(sub)
	assert.EqualValues(t, 1, h.store.snapshots.Load())
	assert.Empty(t, sub.C)
}

func TestLiveHubSeesAChangeOnTheNextTick(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, f *fixture, pod, uid string)
		seen   func(t *testing.T, snap slots.Snapshot, pod string)
	}{
		{"task submitted", func(_ *testing.T, f *fixture, _, _ string) { f.submit("p1", slots.Plan) },
			func(t *testing.T, snap slots.Snapshot, pod string) {
				require.Len(t, snap.Pods, 1)
				var tasks []string
				for _, sl := range snap.Pods[0].Slots {
					tasks = append(tasks, sl.Task)
				}
				assert.Contains(t, tasks, "p1", "the task is on one of the pod's slots")
			}},
		{"pod cordoned", func(t *testing.T, f *fixture, pod, uid string) {
			require.NoError(t, f.store.Cordon(f.ctx, f.pool, pod, uid))
		},
			func(t *testing.T, snap slots.Snapshot, pod string) {
				require.Len(t, snap.Pods, 1)
				assert.Equal(t, slots.PodCordoned, snap.Pods[0].State)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			pod, uid := f.addPod()
			h := newHubOn(f, t, 100)
			sub := h.hub.subscribe(f.pool)
			receive(t, sub)
			h.tick(3) // at rest

			tc.change(t, f, pod, uid)
			h.tick(1)
			tc.seen(t, receive(t, sub), pod)
			h.tick(2) // at rest again, with the new token
			h.stop(sub)

			assert.EqualValues(t, 2, h.store.snapshots.Load(), "the change alone is read in full")
			assert.EqualValues(t, 6, h.store.versions.Load())
			assert.Empty(t, sub.C)
		})
	}
}

func TestLiveHubReadsInFullEveryFullEveryTicksAnyway(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	h := newHubOn(f, t, 3)
	sub := h.hub.subscribe(f.pool)
	receive(t, sub)
	for round := 1; round <= 2; round++ {
		h.tick(2)
		assert.Empty(t, sub.C, "round %d: the pool rests", round)
		h.tick(1)
		receive(t, sub) // the third tick reads in full and sends it
	}
	h.stop(sub)
	assert.EqualValues(t, 3, h.store.snapshots.Load(), "the first read and every third tick")
	assert.EqualValues(t, 4, h.store.versions.Load(), "the token on the ticks between")
}

func TestLiveHubReadsInFullWhenTheChangeTokenFails(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	h := newHubOn(f, t, 100)
	h.store.failVersion = true
	sub := h.hub.subscribe(f.pool)
	receive(t, sub)
	for range 3 {
		h.tick(1)
		receive(t, sub)
	}
	h.stop(sub)
	assert.EqualValues(t, 4, h.store.snapshots.Load(), "every tick reads in full")
	assert.EqualValues(t, 3, h.store.versions.Load())
}

func TestFullReadTicks(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     int
	}{
		{2 * time.Second, 15},
		{100 * time.Millisecond, 300},
		{7 * time.Second, 5}, // rounded up: never longer than liveFullReadEvery... by less than a tick
		{30 * time.Second, 1},
		{time.Minute, 1},
		{0, 1},
	} {
		assert.Equal(t, tc.want, fullReadTicks(tc.interval), "%v", tc.interval)
	}
}

// live_ticks_total says what each tick read: the whole pool, or only its
// unchanged change token.
func TestLiveTicksAreCountedByWhatTheyRead(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	h := newHubOn(f, t, 100)
	m := newMetrics(h.hub)
	sub := h.hub.subscribe(f.pool)
	receive(t, sub) // the first viewer's read: the whole pool
	h.tick(3)       // at rest: the token only
	f.submit("p1", slots.Plan)
	h.tick(1) // changed: the whole pool
	receive(t, sub)
	h.stop(sub)
	assert.EqualValues(t, 2, testutil.ToFloat64(m.ticks.WithLabelValues(liveReadSnapshot)))
	assert.EqualValues(t, 3, testutil.ToFloat64(m.ticks.WithLabelValues(liveReadToken)))
	assert.EqualValues(t, h.store.snapshots.Load(), testutil.ToFloat64(m.ticks.WithLabelValues(liveReadSnapshot)),
		"one count per snapshot read")
}
