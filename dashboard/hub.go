package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// snapshotReader is what the hub needs of the slot store.
type snapshotReader interface {
	Snapshot(ctx context.Context, pool slots.PoolID) (slots.Snapshot, error)
}

// ticker yields ticks until stop is called (a time.Ticker; tests tick by hand).
type ticker func(d time.Duration) (c <-chan time.Time, stop func())

func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// poolHub reads each watched pool once per interval and fans the snapshot
// out to every viewer of that pool, so N viewers cost one Redis read per
// interval instead of N. A pool's poller runs only while it has viewers.
type poolHub struct {
	store    snapshotReader
	interval time.Duration
	tick     ticker
	log      *slog.Logger
	onViewer func(delta int) // viewers gauge; may be nil

	mu    sync.Mutex
	pools map[slots.PoolID]*poolFeed
}

// poolFeed is one watched pool.
type poolFeed struct {
	subs   map[*subscription]struct{}
	latest *slots.Snapshot // last good snapshot, nil before the first
	cancel context.CancelFunc
	done   chan struct{} // closed when the poller has stopped
}

// subscription receives the newest snapshot; a slow viewer skips the ones
// it had no time for (the channel holds one, newest wins).
type subscription struct {
	C    chan slots.Snapshot
	hub  *poolHub
	pool slots.PoolID
	once sync.Once
}

func newPoolHub(store snapshotReader, interval time.Duration, log *slog.Logger) *poolHub {
	return &poolHub{store: store, interval: interval, tick: realTicker, log: log, pools: map[slots.PoolID]*poolFeed{}}
}

// subscribe adds a viewer of pool, starting the pool's poller for the first
// one. The viewer gets the last snapshot at once when there is one.
func (h *poolHub) subscribe(pool slots.PoolID) *subscription {
	sub := &subscription{C: make(chan slots.Snapshot, 1), hub: h, pool: pool}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.pools[pool]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &poolFeed{subs: map[*subscription]struct{}{}, cancel: cancel, done: make(chan struct{})}
		h.pools[pool] = f
		go h.poll(ctx, pool, f)
	}
	f.subs[sub] = struct{}{}
	if f.latest != nil {
		sub.C <- *f.latest
	}
	if h.onViewer != nil {
		h.onViewer(1)
	}
	return sub
}

// close removes the viewer; the last one out stops the pool's poller.
func (s *subscription) close() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		f := h.pools[s.pool]
		delete(f.subs, s)
		if h.onViewer != nil {
			h.onViewer(-1)
		}
		if len(f.subs) == 0 {
			f.cancel()
			delete(h.pools, s.pool)
		}
	})
}

// poll reads the pool now and then once per tick until cancelled.
func (h *poolHub) poll(ctx context.Context, pool slots.PoolID, f *poolFeed) {
	defer close(f.done)
	c, stop := h.tick(h.interval)
	defer stop()
	for {
		h.read(ctx, pool, f)
		select {
		case <-ctx.Done():
			return
		case <-c:
		}
	}
}

func (h *poolHub) read(ctx context.Context, pool slots.PoolID, f *poolFeed) {
	rctx, cancel := context.WithTimeout(ctx, max(h.interval, 5*time.Second))
	snap, err := h.store.Snapshot(rctx, pool)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			// Viewers keep the last grid on screen through an outage.
			h.log.Warn("reading pool for live viewers", "pool", pool.String(), "err", err)
		}
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f.latest = &snap
	for sub := range f.subs {
		select { // newest wins: drop the one the viewer has not taken
		case <-sub.C:
		default:
		}
		sub.C <- snap
	}
}

// watching reports how many pools have a running poller (tests, metrics).
func (h *poolHub) watching() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pools)
}
