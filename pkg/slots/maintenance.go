package slots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ReapOptions bound one reaper pass.
type ReapOptions struct {
	// Batch caps how many items of each kind one pass handles (default 100),
	// so one script never blocks Redis for long.
	Batch int
	// MaxGap: if the previous pass is older than this, the reaper assumes an
	// outage (nobody could heartbeat or approve) and grants one heartbeat
	// timeout of grace before expiring anything. Default 30 s.
	MaxGap time.Duration
}

// ReapResult counts what one pass did.
type ReapResult struct {
	Heartbeats   int  // pods whose heartbeat expired (lost, or removed in static pools)
	Reservations int  // reservations expired
	Queued       int  // queued tasks expired by max queue age
	Forgotten    int  // finished tasks dropped by retention
	Grace        bool // expiry is suspended after an outage
}

// More reports whether a batch was full, so the caller should run again now.
func (r ReapResult) More(batch int) bool {
	return r.Heartbeats >= batch || r.Reservations >= batch || r.Queued >= batch || r.Forgotten >= batch
}

// Reap runs one bounded pass of deadline expiry and retention for a pool,
// on Redis TIME.
func (s *Store) Reap(ctx context.Context, pool PoolID, opts ReapOptions) (ReapResult, error) {
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.MaxGap <= 0 {
		opts.MaxGap = 30 * time.Second
	}
	res, err := s.run(ctx, "reap", pool, opts.Batch, opts.MaxGap.Milliseconds())
	if err != nil {
		return ReapResult{}, fmt.Errorf("reaping pool %s: %w", pool, err)
	}
	arr, _ := res.([]any)
	if len(arr) != 5 {
		return ReapResult{}, fmt.Errorf("reaping pool %s: unexpected reply %v", pool, res)
	}
	r := ReapResult{
		Heartbeats:   int(asInt(arr[0])),
		Reservations: int(asInt(arr[1])),
		Queued:       int(asInt(arr[2])),
		Forgotten:    int(asInt(arr[3])),
		Grace:        asInt(arr[4]) == 1,
	}
	if r.Heartbeats+r.Reservations+r.Queued > 0 {
		s.log.Info("reaped", "pool", pool, "heartbeats", r.Heartbeats, "reservations", r.Reservations, "queued", r.Queued, "forgotten", r.Forgotten)
	}
	return r, nil
}

// Stats are a pool's counters, read in O(1).
type Stats struct {
	Pool         PoolID
	Pods         map[PodState]int
	TotalPods    int
	BusyPods     int   // pods with any running, reserved or orphan slot, any state
	IdlePods     int   // active pods with every slot idle
	IdleSlots    []int // per slot class, on active pods
	RunningSlots []int // per slot class
	Reserved     int
	Queued       map[TaskType]int
	OldestQueued time.Time // zero when nothing is queued
	Now          time.Time // Redis TIME when read
	// HPATolerance is the pool config's (PoolConfig.HPATolerance), read
	// with the counters: the scaler needs it on every poll, fresh.
	HPATolerance HPATolerance
}

// QueuedTotal sums the queue over types.
func (st Stats) QueuedTotal() int {
	n := 0
	for _, v := range st.Queued {
		n += v
	}
	return n
}

// PoolStats is one pool's answer in a Stats call.
type PoolStats struct {
	Stats
	Err error // ErrPoolNotFound for an unknown pool
}

// Stats reads the counters of many pools in one pipelined round trip per
// Redis node. A connection failure fails the call; an unknown pool sets
// that pool's Err.
func (s *Store) Stats(ctx context.Context, pools ...PoolID) ([]PoolStats, error) {
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	read := func() (Pending[[]PoolStats], error) {
		pipe := s.rdb.Pipeline()
		p := s.QueueStats(ctx, pipe, pools...)
		_, err := pipe.Exec(ctx)
		return p, err
	}
	p, err := read()
	if isNoScript(err) {
		// A node lost its script cache (restart, failover): load and retry once.
		if lerr := s.loadScripts(ctx); lerr != nil {
			return nil, lerr
		}
		p, _ = read()
	}
	// Every command carries its own error (a connection failure fails each
	// one): Result reports them, and tells an unknown pool from a failure.
	return p.Result()
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

func parseStats(p PoolID, f []string) Stats {
	st := Stats{Pool: p, Pods: map[PodState]int{}, Queued: map[TaskType]int{}}
	for i := 0; i+1 < len(f); i += 2 {
		k, v := f[i], f[i+1]
		n, _ := strconv.Atoi(v)
		switch {
		case strings.HasPrefix(k, "pods:"):
			st.Pods[PodState(k[5:])] = n
		case k == "pods":
			st.TotalPods = n
		case k == "busy":
			st.BusyPods = n
		case k == "idlepods":
			st.IdlePods = n
		case k == "reserved":
			st.Reserved = n
		case strings.HasPrefix(k, "idle:"):
			st.IdleSlots = setAt(st.IdleSlots, k[5:], n)
		case strings.HasPrefix(k, "run:"):
			st.RunningSlots = setAt(st.RunningSlots, k[4:], n)
		case strings.HasPrefix(k, "queued:"):
			st.Queued[TaskType(k[7:])] = n
		case k == "oldest_queued":
			st.OldestQueued = msTime(v)
		case k == "now":
			st.Now = msTime(v)
		case k == cfgHPATolerance:
			st.HPATolerance = parseHPATolerance(v)
		}
	}
	if len(st.RunningSlots) < len(st.IdleSlots) {
		st.RunningSlots = append(st.RunningSlots, make([]int, len(st.IdleSlots)-len(st.RunningSlots))...)
	}
	return st
}

func setAt(s []int, idx string, v int) []int {
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i >= MaxSlots {
		return s
	}
	for len(s) <= i {
		s = append(s, 0)
	}
	s[i] = v
	return s
}

// Reconcile recounts every counter and rebuilds the idle sets from the pod
// records, then dispatches queued work that an idle slot could run. With
// fix false nothing is written. It returns one line per mismatch found
// ("<what>|<stored>|<recounted>"); none means the counters were right.
//
// It is an offline maintenance operation, and nothing in production calls
// it: a recount must see every pod at one instant (a count taken over
// pages would mix moments and "repair" counters that were right), so it
// is one script, O(pods), some 15 ms at 1,000 busy pods during which Redis
// serves no one else (BenchmarkSlowestScript). Run it on a quiet pool,
// never on a schedule.
func (s *Store) Reconcile(ctx context.Context, pool PoolID, fix bool) ([]string, error) {
	mode := "check"
	if fix {
		mode = "fix"
	}
	res, err := s.run(ctx, "reconcile", pool, mode)
	if err != nil {
		return nil, fmt.Errorf("reconciling pool %s: %w", pool, err)
	}
	diffs := toStrings(res)
	if fix && len(diffs) > 0 {
		s.log.Warn("reconcile repaired counters", "pool", pool, "mismatches", len(diffs), "first", diffs[0])
	}
	return diffs, nil
}

// RunReaper reaps every declared pool each interval until ctx ends. It is
// safe to run in several processes at once (each pass is one atomic script
// per pool); MaxGap defaults to three intervals, so a reaper that was down
// longer does not expire agents that could not report during the outage.
//
// A pool is reaped once per sweep over all pools, so the gap between two
// reaps of one pool is at least a sweep's length. The gap a pass tolerates
// is therefore MaxGap plus twice the previous sweep's length: with a fixed
// MaxGap, a sweep longer than it (many pools, a slow Redis) would find a
// gap at every pool, grant grace again each time, and nothing would ever
// expire. An outage still shows: nothing is reaped during one, so the gap
// it leaves exceeds what the sweeps before it took.
func (s *Store) RunReaper(ctx context.Context, interval time.Duration, opts ReapOptions) {
	if opts.MaxGap <= 0 {
		opts.MaxGap = 3 * interval
	}
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	base := opts.MaxGap
	var lastSweep time.Duration
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		start := time.Now()
		pools, err := s.Pools(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reaper: listing pools", "err", err)
			}
			continue
		}
		opts.MaxGap = base + 2*lastSweep
		for _, p := range pools {
			for {
				r, err := s.Reap(ctx, p, opts)
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, ErrPoolNotFound) {
						s.log.Warn("reaper: reaping pool", "pool", p, "err", err)
					}
					break
				}
				if !r.More(opts.Batch) || ctx.Err() != nil {
					break
				}
			}
		}
		wasSlow := lastSweep > base
		lastSweep = time.Since(start)
		switch slow := lastSweep > base; {
		case slow && !wasSlow: // said once per slow spell, not every sweep
			s.log.Warn("reaper: a sweep over all pools took longer than the max gap; tolerating gaps as long as two sweeps",
				"sweep", lastSweep, "pools", len(pools), "max_gap", base)
		case !slow && wasSlow:
			s.log.Info("reaper: sweeps are within the max gap again", "sweep", lastSweep, "max_gap", base)
		}
	}
}
