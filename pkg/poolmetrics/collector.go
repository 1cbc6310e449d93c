// Package poolmetrics exports every pool of the slot store to Prometheus:
// queues, approvals, pods, slots, queue waits, phase durations and
// outcomes, one series set per pool, read from Redis once per scrape.
//
// # Where the numbers come from
//
// Gauges (queued tasks, pods by state, slots, reservations) are the
// counters the scaler reads for KEDA (slots.Stats, the stats script, O(1)
// per pool). Histograms and outcome counters are kept by the slot store's
// scripts in each pool's metrics hash, counted inside the script that
// makes the transition (slots.PoolMetrics): exact, the same for every
// replica that exports them, kept across restarts, and with no state per
// task in the exporter. Tailing each pool's event stream instead would
// need the exporter to remember when every task queued and started, miss
// what happened while it was down or past the stream's cap, and count
// every event once per replica.
//
// # Cost
//
// A scrape is one pipeline, one round trip per Redis node, for every pool:
// the pool registry, the stats script, the metrics hash and the first
// reservation deadline of each pool known from the previous read. Only
// when the registry names pools that read did not cover is there a second
// pipeline, for those. Reads are cached for a short time (Options.CacheFor),
// so several Prometheus servers scraping together cost one read.
//
// The stats script is most of that cost (about 20 of 21 ms of Redis CPU
// per scrape at 1,000 pools, BenchmarkScrape), and the scaler's history
// recorder runs it for every pool each interval already. Options.Stats
// lends the collector such a read: a pool's counters come from it while
// it is younger than Options.StatsMaxAge, and the stats script runs only
// for the pools it lacks (declared since). Without a lent read young enough (no recorder,
// none yet, its last tick failed, or it fell behind) the scrape reads
// every pool itself, as before. The registry, metrics hash and reservation
// deadline are always read by the scrape: the registry decides which
// pools have series (a pool purged after the lent read has none), and a
// reservation's expiry counts from the Redis time of the scrape's read.
// The gauges from lent counters are as of the lent read; the scaler
// bounds its age (scaler/metrics.go, lentStatsMaxAge).
//
// # Pools that go
//
// The series are made afresh from each read (const metrics), so a deleted
// pool's series go with the first scrape after its purge. OnPools lets the
// caller forget its own per-pool series at the same moment.
package poolmetrics

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DefaultCacheFor is how long a read answers scrapes before the next one.
const DefaultCacheFor = 5 * time.Second

// DefaultTimeout bounds one read.
const DefaultTimeout = 5 * time.Second

// StatsSource is another reader's latest read of every pool's counters:
// the scaler's history recorder (history.Recorder) reads them every
// interval already.
type StatsSource interface {
	// LatestStats returns the pools' counters of the latest read and when
	// it began; ok is false when there is none to use (none yet, or the
	// last read failed).
	LatestStats() (stats []slots.PoolStats, readAt time.Time, ok bool)
}

// Options tune a Collector.
type Options struct {
	CacheFor time.Duration // DefaultCacheFor when 0
	Timeout  time.Duration // DefaultTimeout when 0
	// Stats lends the collector another reader's counters: a read takes a
	// pool's from Stats when they are younger than StatsMaxAge and runs
	// the stats script only for the others (and for every pool when
	// Stats has no read, or an older one). Nil, or StatsMaxAge 0: every
	// read runs the stats script of every pool.
	Stats       StatsSource
	StatsMaxAge time.Duration
	// OnPools is called after each successful read with the pools that
	// exist, so the caller can drop its own series of pools that went.
	OnPools func([]slots.PoolID)
	Logger  *slog.Logger
}

// Collector is a prometheus.Collector of every pool of a store.
type Collector struct {
	store *slots.Store
	rdb   redis.UniversalClient
	opts  Options
	now   func() time.Time

	mu      sync.Mutex
	last    reading
	readAt  time.Time
	known   []slots.PoolID
	reads   map[string]float64 // result -> count
	failing bool
}

// reading is one read of every pool.
type reading struct {
	pools []poolReading
	err   error
}

type poolReading struct {
	id      slots.PoolID
	stats   slots.Stats
	metrics slots.PoolMetrics
	// metricsAt is the Redis time of the metrics read, which a
	// reservation's expiry is counted from: stats.Now for the pools whose
	// counters were read with them, later for lent ones.
	metricsAt time.Time
}

// New returns a collector of the store's pools; rdb is the client the
// store was opened with.
func New(store *slots.Store, rdb redis.UniversalClient, opts Options) *Collector {
	if opts.CacheFor <= 0 {
		opts.CacheFor = DefaultCacheFor
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Collector{store: store, rdb: rdb, opts: opts, now: time.Now,
		reads: map[string]float64{"success": 0, "error": 0}}
}

// Describe sends the descriptors of every metric the collector exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every pool (or reuses a read younger than CacheFor) and
// sends its series. A failed read sends none of the pools' series, only
// the read counter: a gap, never numbers from an older read.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	r := c.reading()
	c.mu.Lock()
	for _, res := range []string{"success", "error"} {
		ch <- prometheus.MustNewConstMetric(descReads, prometheus.CounterValue, c.reads[res], res)
	}
	c.mu.Unlock()
	if r.err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descPools, prometheus.GaugeValue, float64(len(r.pools)))
	for _, p := range r.pools {
		emitPool(ch, p)
	}
}

// reading returns the cached read, or reads again when it is too old.
// Scrapes arriving together wait for one read.
func (c *Collector) reading() reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && c.now().Sub(c.readAt) < c.opts.CacheFor {
		return c.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	pools, err := c.read(ctx)
	c.last, c.readAt = reading{pools: pools, err: err}, c.now()
	switch {
	case err != nil:
		c.reads["error"]++
		if !c.failing {
			c.opts.Logger.Warn("reading the pools for metrics", "err", err)
		}
		c.failing = true
	default:
		c.reads["success"]++
		if c.failing {
			c.opts.Logger.Info("reading the pools for metrics again")
		}
		c.failing = false
		if c.opts.OnPools != nil {
			ids := make([]slots.PoolID, len(pools))
			for i, p := range pools {
				ids[i] = p.id
			}
			c.opts.OnPools(ids)
		}
	}
	return c.last
}

// pending is one pool's queued reads.
type pending struct {
	id      slots.PoolID
	metrics slots.Pending[slots.PoolMetrics]
}

// lentStats returns the pools' counters from Options.Stats when they are
// young enough, else nil.
func (c *Collector) lentStats() map[slots.PoolID]slots.Stats {
	if c.opts.Stats == nil || c.opts.StatsMaxAge <= 0 {
		return nil
	}
	st, at, ok := c.opts.Stats.LatestStats()
	if !ok || c.now().Sub(at) >= c.opts.StatsMaxAge {
		return nil
	}
	lent := make(map[slots.PoolID]slots.Stats, len(st))
	for _, ps := range st {
		if ps.Err == nil {
			lent[ps.Pool] = ps.Stats
		}
	}
	return lent
}

// read reads the registry and every pool: one pipeline for the pools the
// last read knew, a second only for pools that are new since. A pool's
// counters come from the lent read when it has them, else from the stats
// script in the same pipeline.
func (c *Collector) read(ctx context.Context) ([]poolReading, error) {
	lent := c.lentStats()
	var (
		registry slots.Pending[[]slots.PoolID]
		stats    slots.Pending[[]slots.PoolStats]
		clock    *redis.TimeCmd
		per      []pending
	)
	queue := func(pipe redis.Pipeliner, pools []slots.PoolID) {
		per = per[:0]
		var own []slots.PoolID
		for _, p := range pools {
			per = append(per, pending{id: p, metrics: c.store.QueuePoolMetrics(ctx, pipe, p)})
			if _, ok := lent[p]; !ok {
				own = append(own, p)
			}
		}
		stats = c.store.QueueStats(ctx, pipe, own...)
		clock = nil
		if len(own) < len(pools) {
			clock = pipe.Time(ctx) // the lent counters carry an older time
		}
	}
	out := []poolReading{}
	collect := func() error {
		st, err := stats.Result()
		if err != nil {
			return err
		}
		read := make(map[slots.PoolID]slots.PoolStats, len(st))
		for _, ps := range st {
			read[ps.Pool] = ps
		}
		var now time.Time
		if clock != nil {
			if now, err = clock.Result(); err != nil {
				return fmt.Errorf("reading the Redis time: %w", err)
			}
		}
		for _, p := range per {
			r := poolReading{id: p.id}
			if s, ok := lent[p.id]; ok {
				r.stats, r.metricsAt = s, now
			} else if ps := read[p.id]; ps.Err != nil {
				continue // deleted since the registry was read
			} else {
				r.stats, r.metricsAt = ps.Stats, ps.Now
			}
			if r.metrics, err = p.metrics.Result(); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	}

	if err := c.exec(ctx, func(pipe redis.Pipeliner) {
		registry = c.store.QueuePools(ctx, pipe)
		queue(pipe, c.known)
	}); err != nil {
		return nil, err
	}
	pools, err := registry.Result()
	if err != nil {
		return nil, err
	}
	if err := collect(); err != nil {
		return nil, err
	}
	read := make(map[slots.PoolID]bool, len(c.known))
	for _, p := range c.known {
		read[p] = true
	}
	var fresh []slots.PoolID
	exists := make(map[slots.PoolID]bool, len(pools))
	for _, p := range pools {
		exists[p] = true
		if !read[p] {
			fresh = append(fresh, p)
		}
	}
	if len(fresh) > 0 {
		if err := c.exec(ctx, func(pipe redis.Pipeliner) { queue(pipe, fresh) }); err != nil {
			return nil, err
		}
		if err := collect(); err != nil {
			return nil, err
		}
	}
	// A pool read but no longer in the registry was purged between the
	// reads (its stats read failed already, unless it was declared again),
	// or since the lent read of its counters.
	kept := out[:0]
	for _, p := range out {
		if exists[p.id] {
			kept = append(kept, p)
		}
	}
	c.known = pools
	return kept, nil
}

// exec runs a pipeline of queued reads, loading the scripts once when a
// node lost them (restart, failover).
func (c *Collector) exec(ctx context.Context, fill func(redis.Pipeliner)) error {
	run := func() error {
		pipe := c.rdb.Pipeline()
		fill(pipe)
		cmds, _ := pipe.Exec(ctx)
		for _, cmd := range cmds {
			if slots.IsNoScript(cmd.Err()) {
				return cmd.Err()
			}
		}
		return nil
	}
	if err := run(); slots.IsNoScript(err) {
		if lerr := c.store.LoadScripts(ctx); lerr != nil {
			return lerr
		}
		_ = run()
	}
	// Every other failure (and a NOSCRIPT again) is in the commands' own
	// answers, which the Pending results report.
	return nil
}
