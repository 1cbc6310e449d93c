package main

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// countingStore counts the pool reads that reach the slot store: whole
// snapshots and change tokens; failVersion makes every token read fail,
// and a token is read as of clockAhead later than Redis says.
type countingStore struct {
	Store
	snapshots, versions atomic.Int64
	failVersion         bool
	clockAhead          time.Duration
}

func (c *countingStore) Snapshot(ctx context.Context, pool slots.PoolID) (slots.Snapshot, error) {
	c.snapshots.Add(1)
	return c.Store.Snapshot(ctx, pool)
}

func (c *countingStore) Version(ctx context.Context, pool slots.PoolID) (slots.Version, error) {
	c.versions.Add(1)
	if c.failVersion {
		return slots.Version{}, errors.New("redis: connection refused")
	}
	v, err := c.Store.Version(ctx, pool)
	v.At = v.At.Add(c.clockAhead)
	return v, err
}

// manualTicker ticks when the test says so and reports when it is stopped.
type manualTicker struct {
	ticks   chan time.Time
	started atomic.Int64
	stopped atomic.Int64
}

func (m *manualTicker) tick(time.Duration) (<-chan time.Time, func()) {
	m.started.Add(1)
	return m.ticks, func() { m.stopped.Add(1) }
}

// sseEvent is one received event: its name and its data joined by newlines.
type sseEvent struct{ name, data string }

// viewer opens the live stream and sends each event it receives on events.
func (f *fixture) viewer(ctx context.Context, path string) <-chan sseEvent {
	f.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", f.http.URL+path, nil)
	require.NoError(f.t, err)
	resp, err := f.http.Client().Do(req)
	require.NoError(f.t, err)
	require.Equal(f.t, http.StatusOK, resp.StatusCode)
	require.Equal(f.t, "text/event-stream", resp.Header.Get("Content-Type"))
	events := make(chan sseEvent, 16)
	go func() {
		defer resp.Body.Close()
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				ev.data = strings.Join(data, "\n")
				events <- ev
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	return events
}

// liveWait bounds each wait for the live view in these tests: a view that
// stopped updating fails the test instead of hanging it until go test's
// timeout. Generous, for a loaded machine: not a latency assertion.
const liveWait = 30 * time.Second

func next(t *testing.T, events <-chan sseEvent) *goquery.Document {
	t.Helper()
	var ev sseEvent
	var ok bool
	select {
	case ev, ok = <-events:
	case <-time.After(liveWait):
		t.Fatalf("no live event within %v", liveWait)
	}
	require.True(t, ok, "stream ended")
	require.Equal(t, "grid", ev.name)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(ev.data))
	require.NoError(t, err)
	require.Equal(t, 1, doc.Find(testid("grid")).Length(), "each event is a whole grid fragment")
	return doc
}

func TestLiveViewersShareOneStoreReadPerInterval(t *testing.T) {
	const viewers = 25
	var counting *countingStore
	ticker := &manualTicker{ticks: make(chan time.Time)}
	f := newFixture(t, func(s *server) {
		counting = &countingStore{Store: s.store}
		s.hub = newPoolHub(counting, time.Second, quiet())
		s.hub.tick = ticker.tick
	})
	pod, _ := f.addPod()

	ctx, cancel := context.WithCancel(f.ctx)
	var streams []<-chan sseEvent
	for range viewers { // all stay connected: concurrent viewers
		streams = append(streams, f.viewer(ctx, "/pools/ci/terraform/live"))
	}
	for _, s := range streams {
		doc := next(t, s)
		assert.Equal(t, "idle", doc.Find(testid("slot")+`[data-slot="1"]`).AttrOr("data-state", ""))
	}
	assert.EqualValues(t, 1, counting.snapshots.Load(), "%d viewers joining cost one read", viewers)
	assert.EqualValues(t, 1, ticker.started.Load(), "one poller for the pool")
	assert.EqualValues(t, viewers, testutil.ToFloat64(f.srv.metrics.viewers))

	f.submit("p1", slots.Plan)
	select { // one interval passes
	case ticker.ticks <- time.Time{}:
	case <-time.After(liveWait):
		t.Fatalf("the pool's poller took no tick within %v", liveWait)
	}
	for _, s := range streams {
		doc := next(t, s)
		slot := doc.Find(testid("pod") + `[data-pod="` + pod + `"]`).Find(testid("slot") + `[data-slot="1"]`)
		assert.Equal(t, "p1", slot.Find(testid("slot-task")).Text(), "every viewer sees the change without a reload")
	}
	assert.EqualValues(t, 2, counting.snapshots.Load(), "one read per interval for all %d viewers", viewers)

	cancel() // every viewer leaves
	require.Eventually(t, func() bool { return f.srv.hub.watching() == 0 && ticker.stopped.Load() == 1 },
		10*time.Second, 5*time.Millisecond, "the poller stops with the last viewer")
	assert.EqualValues(t, 0, testutil.ToFloat64(f.srv.metrics.viewers))
	assert.EqualValues(t, 2, counting.snapshots.Load(), "no reads once nobody watches")
}

func TestLiveStreamHonoursTheFilterAndUnknownPoolIsNotFound(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	pod2, uid2 := f.addPod()
	require.NoError(t, f.store.Cordon(f.ctx, f.pool, pod2, uid2))
	doc := next(t, f.viewer(f.ctx, "/pools/ci/terraform/live?state=cordoned"))
	pods := doc.Find(testid("pod"))
	require.Equal(t, 1, pods.Length())
	assert.Equal(t, pod2, pods.AttrOr("data-pod", ""))

	assert.Equal(t, http.StatusNotFound, f.do("GET", "/pools/ci/nope/live", "", "").StatusCode)
}

func TestPoolPageLinksItsLiveStreamWithTheSameFilter(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/terraform?state=busy&page=2", http.StatusOK)
	assert.Equal(t, "/pools/ci/terraform/live?page=2&state=busy", doc.Find(testid("live")).AttrOr("sse-connect", ""))
}
