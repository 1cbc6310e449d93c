package slots

// Benchmarks of the slot store on a REAL redis-server (redistest.Standalone),
// through the production Store methods (no pipelining on the hot path).
//
//	go test -run '^$' -bench . -benchtime 3s ./pkg/slots/
//
// BenchmarkCycle measures submit→take→complete cycles per second with
// benchClients concurrent goroutines sharing one go-redis client, and, in the
// same run, the rate of a trivial one-command EVALSHA script on that client
// with the same concurrency, so the cost of a cycle is also reported as a
// number of trivial round trips ("ratio"). Sub-benchmarks vary only the pool
// size (pods=10, 1000, 10000); the slot policy is the same for all of them.
//
// BenchmarkLatencyUnderLoad (latency_bench_test.go) runs the same cycle load
// beside one agent-like probe and reports the probe's claim and complete
// latencies.
//
// BenchmarkStats1000Pools measures one Store.Stats call over 1,000 pools and
// counts its round trips with a go-redis hook (1 on a single node).
//
// The redis-cpu and redis-script metrics come from INFO cpu / INFO
// commandstats deltas: they are only meaningful when nothing else uses the
// same redis-server during the run (true for the server redistest starts per
// test binary; not necessarily when SLOTSCALER_TEST_REDIS_URL points at a
// server shared with other test binaries).
//
// Setup (declaring pools, registering pods) happens once per sub-benchmark,
// outside the timer; the keys of each sub-benchmark are deleted when it ends.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// benchClients is the number of concurrent clients (goroutines) of the cycle
// benchmark, all sharing one go-redis client.
const benchClients = 64

// benchPlanSlotsPerPod: every sub-benchmark uses a policy of 8 plan-only
// slots per pod, so even pods=10 has 80 slots for 64 clients and a submit
// never queues. The policy is identical for every pod count, so the only
// variable between sub-benchmarks is the pool size (idle set of 80 to 80,000
// members, 10 to 10,000 pod records).
const benchPlanSlotsPerPod = 8

func benchPolicy() SlotPolicy {
	slots := make([][]TaskType, benchPlanSlotsPerPod)
	for i := range slots {
		slots[i] = []TaskType{Plan}
	}
	return SlotPolicy{Slots: slots}
}

// benchStore is a Store on its own key prefix with a round-trip counter, and
// a second client for INFO and cleanup that the counter does not see.
type benchStore struct {
	ctx    context.Context
	s      *Store
	rdb    *redis.Client
	admin  *redis.Client
	hook   *redistest.Calls
	prefix string
}

// newBenchStore connects to the shared real redis-server. Its lifetime is
// managed by the caller (close), not by tb's cleanups: a benchmark's
// cleanups run after every b.N round, and the fixture must outlive them.
func newBenchStore(tb testing.TB, url, prefix string) *benchStore {
	tb.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("parsing redis url: %v", err)
	}
	opts.PoolSize = 2 * benchClients // ≥ 128: a blocked BLMOVE holds a connection
	opts.MinIdleConns = benchClients
	bs := &benchStore{ctx: context.Background(), rdb: redis.NewClient(opts), hook: &redistest.Calls{}, prefix: prefix}
	adminOpts := *opts
	adminOpts.PoolSize, adminOpts.MinIdleConns = 4, 0
	bs.admin = redis.NewClient(&adminOpts)
	bs.rdb.AddHook(bs.hook)
	bs.s, err = New(bs.ctx, bs.rdb, Options{Prefix: prefix, Logger: quietLogger()})
	if err != nil {
		bs.close()
		tb.Fatalf("new store: %v", err)
	}
	return bs
}

// close deletes every key of the prefix and closes the clients.
func (bs *benchStore) close() {
	ctx := context.Background()
	var cursor uint64
	for {
		keys, next, err := bs.admin.Scan(ctx, cursor, bs.prefix+":*", 10000).Result()
		if err != nil {
			break
		}
		if len(keys) > 0 {
			bs.admin.Unlink(ctx, keys...)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	_ = bs.rdb.Close()
	_ = bs.admin.Close()
}

// benchParallel runs fn(i) for i in [0, n) on benchClients goroutines and
// returns the first error.
func benchParallel(n int, fn func(i int) error) error {
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(benchClients)
	for i := range n {
		if ctx.Err() != nil { // an error stops the rest
			break
		}
		g.Go(func() error { return fn(i) })
	}
	return g.Wait()
}

// redisCounters reads the server's INFO (see redistest.Info).
func (bs *benchStore) redisCounters() (redistest.Info, error) {
	return redistest.ReadInfo(bs.ctx, bs.admin)
}

// processCPU is the CPU time (user + system) of this test binary: the Go
// client side of the benchmark.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cycleFixture is one pool of a BenchmarkCycle sub-benchmark.
type cycleFixture struct {
	*benchStore
	pool PoolID
	uids map[string]string // pod -> uid
	// readers: one Take at a time per pod, as an agent has one inbox reader.
	// Clients of the same pod share it (a pod's processing list is its
	// reader's alone: two readers could claim one entry between them and
	// strand another).
	readers map[string]*sync.Mutex
	taskSeq atomic.Int64 // task ids stay unique across b.N rounds
	trivial *redis.Script
}

func newCycleFixture(b *testing.B, url string, prefix string, pods int) *cycleFixture {
	b.Helper()
	f := &cycleFixture{
		benchStore: newBenchStore(b, url, prefix),
		pool:       PoolID{Namespace: "bench", Name: "cycle"},
		uids:       make(map[string]string, pods),
		readers:    make(map[string]*sync.Mutex, pods),
		trivial:    redis.NewScript("return redis.call('INCR', KEYS[1])"),
	}
	cfg := DefaultPoolConfig()
	cfg.Policy = benchPolicy()
	// Retention: with the default RetentionCount (10,000) and no reaper
	// running here, every finished task (hash + history list) stays in Redis
	// until the sub-benchmark's keys are deleted at its end. That is fine for
	// a benchmark (a few hundred MB at most), but it means the keyspace grows
	// during the run, as it would in production only between reaper passes.
	if _, err := f.s.DeclarePool(f.ctx, f.pool, cfg); err != nil {
		f.close()
		b.Fatalf("declare pool: %v", err)
	}
	names := make([]string, pods)
	for i := range names {
		names[i] = fmt.Sprintf("agent-%05d", i)
		f.uids[names[i]] = "uid-" + names[i]
		f.readers[names[i]] = &sync.Mutex{}
	}
	// Registered through the Store API, 64 at a time.
	err := benchParallel(pods, func(i int) error {
		st, err := f.s.RegisterPod(f.ctx, f.pool, names[i], f.uids[names[i]])
		if err == nil && st != PodActive {
			err = fmt.Errorf("pod %s registered as %s", names[i], st)
		}
		return err
	})
	if err == nil {
		err = f.trivial.Load(f.ctx, f.rdb).Err()
	}
	if err == nil {
		var st []PoolStats
		st, err = f.s.Stats(f.ctx, f.pool)
		if err == nil && (st[0].Stats.TotalPods != pods || st[0].Stats.IdleSlots[0] != pods*benchPlanSlotsPerPod) {
			err = fmt.Errorf("after setup: %d pods, idle slots %v; want %d pods, %d idle slots",
				st[0].Stats.TotalPods, st[0].Stats.IdleSlots, pods, pods*benchPlanSlotsPerPod)
		}
	}
	if err != nil {
		f.close()
		b.Fatalf("setup of %d pods: %v", pods, err)
	}
	return f
}

// cycle runs one submit→take→complete cycle and returns how many Takes came
// back empty (another client of the same pod claimed the entry first).
func (f *cycleFixture) cycle(ctx context.Context, payload, output []byte) (nilTakes int, err error) {
	id := "c-" + strconv.FormatInt(f.taskSeq.Add(1), 10)
	r, err := f.s.Submit(ctx, f.pool, TaskSpec{ID: id, Type: Plan, Payload: payload})
	if err != nil {
		return 0, err
	}
	if !r.Created || r.State != StateRunning {
		return 0, fmt.Errorf("submit %s: created=%v state=%s: the pool should never queue", id, r.Created, r.State)
	}
	uid := f.uids[r.Pod]
	for {
		// The entry is already in the pod's inbox. Another client whose task
		// went to the same pod may take it first: then we complete whatever
		// assignment we get, and a nil Take (a claim lost to another client
		// through the shared processing list) is retried.
		f.readers[r.Pod].Lock()
		m, err := f.s.Take(ctx, f.pool, r.Pod, uid, time.Second, nil)
		f.readers[r.Pod].Unlock()
		if err != nil {
			return nilTakes, err
		}
		if m == nil {
			nilTakes++
			if ctx.Err() != nil {
				return nilTakes, ctx.Err()
			}
			continue
		}
		if m.Kind != MsgAssignment {
			return nilTakes, fmt.Errorf("take on %s: unexpected message kind %d for task %s", r.Pod, m.Kind, m.Task)
		}
		st, err := f.s.Complete(ctx, f.pool, Result{Task: m.Task, Epoch: m.Epoch, Outcome: OutcomeSuccess, Output: output})
		if err != nil {
			return nilTakes, err
		}
		if st != StateSucceeded {
			return nilTakes, fmt.Errorf("complete %s: state %s", m.Task, st)
		}
		return nilTakes, nil
	}
}

// trivialRate runs the trivial one-command EVALSHA script on benchClients
// goroutines sharing the store's client for d and returns calls per second.
func (f *cycleFixture) trivialRate(d time.Duration) (float64, error) {
	key := f.prefix + ":trivial"
	var calls atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range benchClients {
		wg.Go(func() {
			n := int64(0)
			for time.Now().Before(deadline) {
				if err := f.trivial.Run(f.ctx, f.rdb, []string{key}).Err(); err != nil {
					once.Do(func() { first = err })
					break
				}
				n++
			}
			calls.Add(n)
		})
	}
	wg.Wait()
	return float64(calls.Load()) / time.Since(start).Seconds(), first
}

func BenchmarkCycle(b *testing.B) {
	url := redistest.Standalone(b)
	for _, pods := range []int{10, 1000, 10000} {
		var f *cycleFixture
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			if f == nil { // first b.N round: set up once for every round
				b.StopTimer()
				f = newCycleFixture(b, url, redistest.Prefix(b), pods)
				b.StartTimer()
			}
			runCycles(b, f)
		})
		if f != nil {
			f.close()
		}
	}
}

func runCycles(b *testing.B, f *cycleFixture) {
	payload := []byte(strings.Repeat("p", 64))
	output := []byte("ok")
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()

	lat := make([][]time.Duration, benchClients)
	nilTakes := make([]int, benchClients)
	var next atomic.Int64
	var first error
	var once sync.Once

	rc0, err := f.redisCounters()
	if err != nil {
		b.Fatalf("INFO: %v", err)
	}
	rt0, cpu0 := f.hook.RoundTrips.Load(), processCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range benchClients {
		lat[g] = make([]time.Duration, 0, b.N/benchClients+1)
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				n, err := f.cycle(ctx, payload, output)
				nilTakes[g] += n
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if first != nil {
		b.Fatalf("cycle: %v", first)
	}
	rt1, cpu1 := f.hook.RoundTrips.Load(), processCPU()
	rc1, err := f.redisCounters()
	if err != nil {
		b.Fatalf("INFO: %v", err)
	}

	// The trivial script, same client, same concurrency, in the same run: as
	// long as the cycle phase, clamped to [200ms, 2s].
	evalRate, err := f.trivialRate(min(max(elapsed, 200*time.Millisecond), 2*time.Second))
	if err != nil {
		b.Fatalf("trivial script: %v", err)
	}

	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds())
	}
	totalNil := 0
	for _, n := range nilTakes {
		totalNil += n
	}
	n := float64(b.N)
	cycles := n / elapsed.Seconds()
	b.ReportMetric(cycles, "cycles/s")
	b.ReportMetric(evalRate, "evalsha/s")
	b.ReportMetric(evalRate/cycles, "ratio")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(rt1-rt0)/n, "roundtrips/cycle")
	b.ReportMetric(float64(totalNil)/n, "nil-takes/cycle")
	b.ReportMetric(float64((rc1.CPU-rc0.CPU).Microseconds())/n, "redis-cpu-µs/cycle")
	b.ReportMetric(float64(rc1.Commands["evalsha"].Usec-rc0.Commands["evalsha"].Usec)/n, "redis-script-µs/cycle")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/n, "client-cpu-µs/cycle")
}

// statsFixture is 1,000 declared pools with pods and tasks.
type statsFixture struct {
	*benchStore
	pools []PoolID
}

const (
	statsPools       = 1000
	statsPodsPerPool = 2 // default policy: 3 slots per pod (slot 0 any type, 1-2 plans)
	statsPlans       = 6 // fill all 6 slots: 4 plan-only slots, then both slot 0s
	statsApplies     = 2 // then queue: nothing left for a plan_and_apply
)

func newStatsFixture(b *testing.B, url, prefix string) *statsFixture {
	b.Helper()
	f := &statsFixture{benchStore: newBenchStore(b, url, prefix)}
	for i := range statsPools {
		f.pools = append(f.pools, PoolID{Namespace: fmt.Sprintf("team-%02d", i%50), Name: fmt.Sprintf("pool-%04d", i)})
	}
	err := benchParallel(statsPools, func(i int) error {
		p := f.pools[i]
		if _, err := f.s.DeclarePool(f.ctx, p, DefaultPoolConfig()); err != nil {
			return err
		}
		for j := range statsPodsPerPool {
			if _, err := f.s.RegisterPod(f.ctx, p, fmt.Sprintf("agent-%d", j), fmt.Sprintf("uid-%d-%d", i, j)); err != nil {
				return err
			}
		}
		for j := range statsPlans + statsApplies {
			tt := Plan
			if j >= statsPlans {
				tt = PlanAndApply
			}
			if _, err := f.s.Submit(f.ctx, p, TaskSpec{ID: fmt.Sprintf("t-%d", j), Type: tt, Payload: []byte("x")}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.close()
		b.Fatalf("setup of %d pools: %v", statsPools, err)
	}
	return f
}

func BenchmarkStats1000Pools(b *testing.B) {
	// b.Loop runs this function once, so the 1,000 pools are set up once.
	f := newStatsFixture(b, redistest.Standalone(b), redistest.Prefix(b))
	defer f.close()

	// Check the answer once, outside the timer.
	st, err := f.s.Stats(f.ctx, f.pools...)
	if err != nil {
		b.Fatalf("stats: %v", err)
	}
	if len(st) != statsPools {
		b.Fatalf("stats: %d answers, want %d", len(st), statsPools)
	}
	for _, ps := range st {
		if ps.Err != nil || ps.TotalPods != statsPodsPerPool || ps.BusyPods != statsPodsPerPool ||
			ps.Queued[PlanAndApply] != statsApplies || ps.OldestQueued.IsZero() {
			b.Fatalf("stats of %s: %+v (err %v)", ps.Pool, ps.Stats, ps.Err)
		}
	}

	rc0, err := f.redisCounters()
	if err != nil {
		b.Fatalf("INFO: %v", err)
	}
	rt0 := f.hook.RoundTrips.Load()
	for b.Loop() {
		if _, err := f.s.Stats(f.ctx, f.pools...); err != nil {
			b.Fatalf("stats: %v", err)
		}
	}
	rt1 := f.hook.RoundTrips.Load()
	rc1, err := f.redisCounters()
	if err != nil {
		b.Fatalf("INFO: %v", err)
	}
	n := float64(b.N)
	rt := float64(rt1-rt0) / n
	b.ReportMetric(rt, "roundtrips/op")
	b.ReportMetric(float64(rc1.Commands["evalsha"].Usec-rc0.Commands["evalsha"].Usec)/n, "redis-script-µs/op")
	b.ReportMetric(float64((rc1.CPU-rc0.CPU).Microseconds())/n, "redis-cpu-µs/op")
	if rt != 1 {
		b.Errorf("Stats of %d pools took %.2f round trips per call, want 1 on a single node", statsPools, rt)
	}
}
