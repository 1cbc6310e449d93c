package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// snapshotReader is what the hub needs of the slot store: the whole pool
// (O(pods)) and its change token (O(1)).
type snapshotReader interface {
	Snapshot(ctx context.Context, pool slots.PoolID) (slots.Snapshot, error)
	Version(ctx context.Context, pool slots.PoolID) (slots.Version, error)
}

// liveFullReadEvery bounds how long the hub goes on the change token
// alone: a watched pool is read in full at least this often, whatever the
// token says. The token moves with every change the grid shows, but not
// with the clock: the grid's ages and its "snapshot at" stamp are
// rendered from the snapshot's time, and they stand still on viewers'
// screens while the pool is at rest. 30 s keeps them at most half a
// minute behind (the stamp says how far) and still spares a pool at rest
// 14 of every 15 full reads at the default 2 s --live-interval: for a
// 1,000-pod pool, 34 snapshot pages a tick become one O(1) script. It is
// also the safety net for a change that moved no token.
const liveFullReadEvery = 30 * time.Second

// fullReadTicks is how many ticks of interval make liveFullReadEvery
// (at least 1: every tick a full read).
func fullReadTicks(interval time.Duration) int {
	if interval <= 0 {
		return 1
	}
	return max(1, int((liveFullReadEvery+interval-1)/interval))
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
//
// A tick first reads the pool's change token (slots.Store.Version, O(1)):
// when it is the one the last snapshot began with, nothing the grid shows
// has changed, and the tick reads no snapshot and sends viewers nothing
// (they already show it). Every fullEvery-th tick reads the snapshot
// anyway (liveFullReadEvery says why), and so does any doubt: no
// snapshot yet, a token that failed to read or a snapshot without one.
type poolHub struct {
	store    snapshotReader
	interval time.Duration
	// fullEvery: a full read at least every fullEvery ticks (1: every
	// tick, no token reads).
	fullEvery int
	tick      ticker
	log       *slog.Logger
	onViewer  func(delta int)   // viewers gauge; may be nil
	onTick    func(read string) // live_ticks_total: liveReadSnapshot or liveReadToken; may be nil

	mu    sync.Mutex
	pools map[slots.PoolID]*poolFeed
}

// poolFeed is one watched pool.
type poolFeed struct {
	subs   map[*subscription]struct{}
	latest *slots.Snapshot // last good snapshot, nil before the first
	cancel context.CancelFunc
	done   chan struct{} // closed when the poller has stopped
	// Only the poller touches these. generation and changes are the change
	// token the last good snapshot began with ("" before one); skipped
	// counts the ticks since it that read only the token.
	generation, changes string
	skipped             int
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
	return &poolHub{store: store, interval: interval, fullEvery: fullReadTicks(interval), tick: realTicker, log: log,
		pools: map[slots.PoolID]*poolFeed{}}
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

// read is one tick of pool's poller: the snapshot, fanned out, unless the
// change token says the viewers already show it.
func (h *poolHub) read(ctx context.Context, pool slots.PoolID, f *poolFeed) {
	if h.unchanged(ctx, pool, f) {
		h.ticked(liveReadToken)
		return
	}
	if ctx.Err() != nil { // the last viewer left meanwhile
		return
	}
	h.ticked(liveReadSnapshot)
	rctx, cancel := context.WithTimeout(ctx, h.readTimeout())
	snap, err := h.store.Snapshot(rctx, pool)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			// Viewers keep the last grid on screen through an outage.
			h.log.Warn("reading pool for live viewers", "pool", pool.String(), "err", err)
		}
		return
	}
	f.generation, f.changes, f.skipped = snap.Generation, snap.Changes, 0
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

// What a tick of the live hub read (live_ticks_total's read label).
const (
	liveReadSnapshot = "snapshot"
	liveReadToken    = "token"
)

func (h *poolHub) ticked(read string) {
	if h.onTick != nil {
		h.onTick(read)
	}
}

// unchanged reads pool's change token and reports whether it is the one
// the last snapshot began with, so the tick may skip the snapshot. Any
// doubt answers false: the tick reads in full.
func (h *poolHub) unchanged(ctx context.Context, pool slots.PoolID, f *poolFeed) bool {
	if f.changes == "" || f.skipped+1 >= h.fullEvery {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, h.readTimeout())
	v, err := h.store.Version(rctx, pool)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			h.log.Debug("reading the pool's change token for live viewers; reading it in full", "pool", pool.String(), "err", err)
		}
		return false
	}
	if v.Generation != f.generation || v.Changes != f.changes {
		return false
	}
	f.skipped++
	h.mu.Lock()
	defer h.mu.Unlock()
	if f.latest != nil && v.At.After(f.latest.At) {
		// The pool shows at v.At what it showed when read: a viewer who
		// joins now gets its ages as of now. (Heartbeat deadlines may have
		// moved meanwhile; the grid does not show them.) Those already
		// watching get nothing: they show the same pods, slots and queue.
		latest := *f.latest
		latest.At = v.At
		f.latest = &latest
	}
	return true
}

func (h *poolHub) readTimeout() time.Duration { return max(h.interval, 5*time.Second) }

// watching reports how many pools have a running poller (tests, metrics).
func (h *poolHub) watching() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pools)
}
