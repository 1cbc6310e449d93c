package history

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

//go:embed record.lua
var recordLua string

var recordScript = redis.NewScript(recordLua)

// DefaultInterval is how often the scaler records every pool.
const DefaultInterval = 10 * time.Second

// configTTL is how long the recorder uses a pool's slot policy (for its
// desired count) before reading it again, in a later tick's pipeline.
const configTTL = 30 * time.Second

// Options tune a Recorder.
type Options struct {
	Prefix   string        // the installation's key prefix; slots.DefaultPrefix when empty
	Interval time.Duration // DefaultInterval when 0
	Layout   Layout        // DefaultLayout when zero
	// Clock stamps samples; nil stamps each with Redis TIME when its pool
	// was read (one clock for every recorder). Tests inject theirs.
	Clock  func() time.Time
	Logger *slog.Logger
}

// Recorder samples every declared pool once per interval. Each tick is one
// pipeline (one round trip per Redis node): it writes the samples read in
// the previous tick, reads the counters for the next ones, and reads the
// pool registry and the slot policies it lacks. Samples so land one tick
// after they were read, stamped with the time they were read.
//
// Several recorders may run at once (the scaler's replicas): the record
// script keeps the first sample of each interval and refuses the others,
// so a pool's history has one writer per interval.
type Recorder struct {
	store    *slots.Store
	rdb      redis.UniversalClient
	prefix   string
	interval time.Duration
	layout   Layout
	clock    func() time.Time
	log      *slog.Logger
	args     recordArgs

	pools   []slots.PoolID
	configs map[slots.PoolID]cachedPolicy
	pending []pendingSample
	// failing is the error of the last tick that failed, so an outage is
	// logged when it starts and ends, not on every tick.
	failing error

	// latest is the last tick's read of the pools' counters, lent to the
	// scaler's metrics collector (LatestStats) so a scrape need not run the
	// stats script of every pool again.
	mu       sync.Mutex
	latest   []slots.PoolStats
	latestAt time.Time
}

type cachedPolicy struct {
	cfg  slots.PoolConfig
	read time.Time
}

type pendingSample struct {
	pool    slots.PoolID
	encoded string
}

// recordArgs are the record script's arguments after the sample.
type recordArgs []any

// NewRecorder returns a recorder over the store's Redis (rdb, the client
// the store was opened with) and loads its script on every master.
func NewRecorder(ctx context.Context, store *slots.Store, rdb redis.UniversalClient, opts Options) (*Recorder, error) {
	if opts.Prefix == "" {
		opts.Prefix = slots.DefaultPrefix
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Layout == (Layout{}) {
		opts.Layout = DefaultLayout
	}
	if err := opts.Layout.Validate(); err != nil {
		return nil, err
	}
	if opts.Interval < 0 || opts.Interval > opts.Layout.CoarseInterval {
		return nil, fmt.Errorf("history interval %v: want more than 0 and at most the coarse interval %v", opts.Interval, opts.Layout.CoarseInterval)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Recorder{store: store, rdb: rdb, prefix: opts.Prefix, interval: opts.Interval, layout: opts.Layout,
		clock: opts.Clock, log: opts.Logger.With("component", "history"), configs: map[slots.PoolID]cachedPolicy{},
		args: recordArgs{opts.Interval.Milliseconds(), opts.Layout.fineCap(opts.Interval), opts.Layout.CoarseInterval.Milliseconds(),
			opts.Layout.coarseCap(), opts.Layout.ttl().Milliseconds(), aggregation()}}
	if err := loadOnMasters(ctx, rdb, recordScript); err != nil {
		return nil, err
	}
	return r, nil
}

// loadOnMasters loads the script on every master: a pipeline does not
// fall back to EVAL on NOSCRIPT.
func loadOnMasters(ctx context.Context, rdb redis.UniversalClient, sc *redis.Script) error {
	load := func(ctx context.Context, c *redis.Client) error {
		if err := sc.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("loading the history script on %s: %w", c.Options().Addr, err)
		}
		return nil
	}
	if c, ok := rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, load)
	}
	if err := sc.Load(ctx, rdb).Err(); err != nil {
		return fmt.Errorf("loading the history script: %w", err)
	}
	return nil
}

// TickResult is what one tick did.
type TickResult struct {
	Pools      int // pools read for the next tick's samples
	Written    int // samples written
	Duplicates int // samples refused: their interval had one already
}

// Run ticks every interval until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		tctx, cancel := context.WithTimeout(ctx, r.interval)
		_, err := r.Tick(tctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && r.failing == nil:
			r.log.Warn("recording pool history", "err", err)
		case err == nil && r.failing != nil:
			r.log.Info("recording pool history again")
		}
		r.failing = err
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick runs one pipeline: it writes the samples of the previous tick and
// reads the pools for the next. A failed read leaves its pools without a
// sample for that interval (a gap in the chart), never a made-up one.
func (r *Recorder) Tick(ctx context.Context) (TickResult, error) {
	var (
		registry slots.Pending[[]slots.PoolID]
		configs  map[slots.PoolID]slots.Pending[slots.PoolConfig]
		stats    slots.Pending[[]slots.PoolStats]
		writes   []*redis.Cmd
	)
	now := time.Now()
	exec := func() error {
		pipe := r.rdb.Pipeline()
		writes = writes[:0]
		for _, p := range r.pending {
			k := keysOf(r.prefix, p.pool)
			writes = append(writes, recordScript.EvalSha(ctx, pipe, []string{k.fine, k.coarse}, append([]any{p.encoded}, r.args...)...))
		}
		registry = r.store.QueuePools(ctx, pipe)
		configs = map[slots.PoolID]slots.Pending[slots.PoolConfig]{}
		for _, p := range r.pools {
			if c, ok := r.configs[p]; !ok || now.Sub(c.read) >= configTTL {
				configs[p] = r.store.QueuePoolConfig(ctx, pipe, p)
			}
		}
		stats = r.store.QueueStats(ctx, pipe, r.pools...)
		cmds, _ := pipe.Exec(ctx)
		// Exec reports only the first failed command: a NOSCRIPT behind
		// another failure (a pool deleted since the registry was read)
		// must still reload the scripts.
		for _, c := range cmds {
			if slots.IsNoScript(c.Err()) {
				return c.Err()
			}
		}
		return nil
	}
	if err := exec(); slots.IsNoScript(err) {
		// A node lost its scripts (restart, failover): load them and run
		// the tick again. Writes that landed the first time are refused
		// as duplicates the second.
		if lerr := errors.Join(r.store.LoadScripts(ctx), loadOnMasters(ctx, r.rdb, recordScript)); lerr != nil {
			r.keepLatest(nil, lerr, now)
			return TickResult{}, lerr
		}
		_ = exec() // every command's own answer is checked below
	}
	var res TickResult
	var errs failures
	for i, w := range writes {
		n, werr := w.Int()
		switch {
		case werr != nil:
			errs.add(fmt.Errorf("recording pool %s: %w", r.pending[i].pool, werr))
		case n == 1:
			res.Written++
		default:
			res.Duplicates++
		}
	}
	r.pending = r.pending[:0]

	for p, c := range configs {
		cfg, cerr := c.Result()
		if cerr != nil {
			if !errors.Is(cerr, slots.ErrPoolNotFound) {
				errs.add(cerr)
			}
			continue
		}
		r.configs[p] = cachedPolicy{cfg: cfg, read: now}
	}
	st, serr := stats.Result()
	r.keepLatest(st, serr, now)
	if serr != nil {
		errs.add(serr)
	} else {
		for _, ps := range st {
			if ps.Err != nil {
				continue // deleted since the registry was read
			}
			c, ok := r.configs[ps.Pool]
			if !ok {
				continue
			}
			s, serr := r.sample(c.cfg, ps.Stats)
			if serr != nil {
				errs.add(serr)
				continue
			}
			enc, eerr := encode(s)
			if eerr != nil {
				errs.add(fmt.Errorf("pool %s: %w", ps.Pool, eerr))
				continue
			}
			r.pending = append(r.pending, pendingSample{pool: ps.Pool, encoded: enc})
		}
		res.Pools = len(st)
	}
	if pools, perr := registry.Result(); perr != nil {
		errs.add(perr)
	} else {
		r.pools = pools
		known := make(map[slots.PoolID]bool, len(pools))
		for _, p := range pools {
			known[p] = true
		}
		for p := range r.configs {
			if !known[p] {
				delete(r.configs, p)
			}
		}
	}
	// The pipeline's own error is its first failed command's, and every
	// command's answer was checked above.
	return res, errs.err()
}

// keepLatest keeps a tick's read of the counters for LatestStats, or
// forgets the previous one when this read failed: a reader then reads for
// itself rather than take numbers older than the tick that failed.
func (r *Recorder) keepLatest(st []slots.PoolStats, err error, began time.Time) {
	var found []slots.PoolStats
	if err == nil {
		found = make([]slots.PoolStats, 0, len(st))
		for _, ps := range st {
			if ps.Err == nil { // a pool deleted since the registry was read has none
				found = append(found, ps)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latest, r.latestAt = found, began
}

// LatestStats returns the counters of the pools the last tick read and
// when that tick began (the local clock, earlier than the read itself, so
// an age computed from it errs old); ok is false before the first tick
// and after a tick whose read failed. The pools are those of the registry
// one tick earlier: a pool declared since is missing, one purged since is
// still there. Safe to call while the recorder runs; the slice is shared,
// not to be modified.
func (r *Recorder) LatestStats() (stats []slots.PoolStats, readAt time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest, r.latestAt, r.latest != nil
}

// failures keeps the first of a tick's failures and counts the rest: a
// Redis outage fails every pool's read and write at once.
type failures struct {
	first error
	n     int
}

func (f *failures) add(err error) {
	if f.first == nil {
		f.first = err
	}
	f.n++
}

func (f failures) err() error {
	switch f.n {
	case 0:
		return nil
	case 1:
		return f.first
	}
	return fmt.Errorf("%w (and %d more failures this tick)", f.first, f.n-1)
}

// sample turns a pool's counters into its sample.
func (r *Recorder) sample(cfg slots.PoolConfig, st slots.Stats) (Sample, error) {
	res, err := capacity.Desired(slots.CapacityInput(cfg, st, 0))
	if err != nil {
		return Sample{}, fmt.Errorf("desired pods of pool %s: %w", st.Pool, err)
	}
	s := Sample{At: st.Now, DesiredPods: float64(res.Desired), LivePods: float64(st.LivePods()),
		BusyPods: float64(st.BusyPods), IdlePods: float64(st.IdlePods),
		CordonedPods: float64(st.Pods[slots.PodCordoned]), DrainingPods: float64(st.Pods[slots.PodDraining]),
		ReservedSlots: float64(st.Reserved), Queued: make(map[string]float64, len(st.Queued))}
	if r.clock != nil {
		s.At = r.clock()
	}
	for t, n := range st.Queued {
		s.Queued[string(t)] = float64(n)
	}
	if !st.OldestQueued.IsZero() {
		s.OldestQueuedSeconds = max(0, st.Now.Sub(st.OldestQueued)).Round(time.Millisecond).Seconds()
	}
	return s, nil
}
