// Package scale is the sizing run behind docs/sizing.md (make bench-scale):
// 1,000 pools and 100,000 pods (one pool of 10,000 among them), 300,000
// slots, 100,000 queued tasks and a sample of finished tasks, on a real
// three-node Redis Cluster, through the production code — the slot store's
// calls, the scaler and dashboard binaries (built from this tree) — and
// simulated agents heartbeating at the agent's default interval.
//
// SLOTSCALER_SCALE (default 1) scales pools, pods and tasks together, so a
// run that cannot finish on a small machine reports the same per-unit costs
// (bytes per pod, slot and task; Redis CPU per heartbeat, poll, reap and
// snapshot), which extrapolate linearly. The test is skipped unless
// SLOTSCALER_SCALE_RUN=1: it is a benchmark, not part of the test suite.
//
// Other knobs: SLOTSCALER_SCALE_PHASE_SECONDS (each measured window, 30),
// SLOTSCALER_SCALE_FINISHED (the finished-task sample, at most 100,000 by
// default), SLOTSCALER_SCALE_JANITOR (phase C's janitor: "rest", the
// default, sweeps every pool as the janitor does at rest, its change token
// and a snapshot only where it moved; "full" a snapshot of every pool every
// sweep, as a janitor in which every pool changed; "off" none),
// SLOTSCALER_SCALE_REPORT (a file to write the report to).
package scale

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Full-scale figures (SLOTSCALER_SCALE=1).
const (
	fullPools    = 1000
	fullPods     = 100_000
	fullBigPods  = 10_000 // the one big pool
	fullQueued   = 100_000
	fullFinished = 1_000_000
	// finishedSampleCap: finished tasks are made by real submit→take→
	// complete cycles (three scripts each); 1M of them would take longer
	// than the run may. The bytes per finished task are measured on up to
	// this many and extrapolated (they are independent keys).
	finishedSampleCap = 100_000

	slotsPerPod   = 3 // slots.DefaultPolicy: slot 0 any type, slots 1-2 plans
	hbInterval    = 5 * time.Second
	payloadBytes  = 200         // of every task
	outputBytes   = 500         // of every finished task
	reapInterval  = time.Second // the scaler's --reap-interval default
	syncInterval  = 5 * time.Second
	janitorWorker = 4 // the janitor's --workers default
	pollEvery     = 15 * time.Second
)

// params is the size of one run: SLOTSCALER_SCALE times the full figures.
type params struct {
	scale                                  float64
	pools, pods, bigPods, queued, finished int
	phase                                  time.Duration // each measured window with heartbeats
	janitor                                string        // phase C's janitor: rest, full or off
	workers                                int           // heartbeat goroutines
	bigPool                                slots.PoolID
	ids                                    []slots.PoolID
	podsOf                                 []int
}

// envFloat reads a positive number from the environment; a value that is
// not one fails the run rather than silently running another size.
func envFloat(t *testing.T, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

func newParams(t *testing.T) params {
	s := envFloat(t, "SLOTSCALER_SCALE", 1)
	p := params{scale: s}
	p.pools = max(2, int(fullPools*s+0.5))
	p.pods = max(p.pools, int(fullPods*s+0.5))
	p.bigPods = max(1, int(fullBigPods*s+0.5))
	p.queued = int(fullQueued*s + 0.5)
	p.finished = min(int(fullFinished*s+0.5), int(envFloat(t, "SLOTSCALER_SCALE_FINISHED", finishedSampleCap)))
	p.phase = time.Duration(envFloat(t, "SLOTSCALER_SCALE_PHASE_SECONDS", 30) * float64(time.Second))
	p.janitor = cmp.Or(os.Getenv("SLOTSCALER_SCALE_JANITOR"), "rest")
	if p.janitor != "rest" && p.janitor != "full" && p.janitor != "off" {
		t.Fatalf("SLOTSCALER_SCALE_JANITOR=%q: want rest, full or off", p.janitor)
	}
	// A worker heartbeats its agents one after the other: 100 agents per
	// 5 s leaves each call 50 ms before the worker falls behind.
	p.workers = max(16, p.pods/100)
	p.bigPool = slots.PoolID{Namespace: "big", Name: "pool-0000"}
	p.ids = append(p.ids, p.bigPool)
	p.podsOf = append(p.podsOf, p.bigPods)
	rest := p.pods - p.bigPods
	for i := 1; i < p.pools; i++ {
		p.ids = append(p.ids, slots.PoolID{Namespace: fmt.Sprintf("team-%02d", i%50), Name: fmt.Sprintf("pool-%04d", i)})
		p.podsOf = append(p.podsOf, rest/(p.pools-1)+b2i(i-1 < rest%(p.pools-1)))
	}
	t.Logf("scale %.3g: %d pools, %d pods (big pool %d), %d slots, %d queued, %d finished (sample of %d at full scale), phases of %v, %d heartbeat goroutines",
		s, p.pools, p.pods, p.bigPods, p.pods*slotsPerPod, p.queued, p.finished, int(fullFinished*s+0.5), p.phase, p.workers)
	return p
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// agent is one simulated agent pod: what it reports in its heartbeats.
type agent struct {
	pool    slots.PoolID
	name    string
	uid     string
	seq     int64
	running []slots.RunningPhase
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	p      params
	addrs  []string
	rdb    *redis.ClusterClient
	nodes  []*redis.Client // one per node, for INFO
	store  *slots.Store
	prefix string
	agents []*agent
	byPool [][]*agent
	report *strings.Builder
}

func TestScale(t *testing.T) {
	if os.Getenv("SLOTSCALER_SCALE_RUN") != "1" {
		t.Skip("the sizing run: make bench-scale (SLOTSCALER_SCALE_RUN=1)")
	}
	h := &harness{t: t, ctx: context.Background(), p: newParams(t), prefix: "scale", report: &strings.Builder{}}
	began := time.Now()
	h.addrs = redistest.ClusterAddrs(t)
	h.rdb = redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: h.addrs, PoolSize: max(256, h.p.workers), ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		DisableIdentity: true, ContextTimeoutEnabled: true,
	})
	defer h.rdb.Close()
	for _, a := range h.addrs {
		c := redis.NewClient(&redis.Options{Addr: a, PoolSize: 2, DisableIdentity: true})
		defer c.Close()
		h.nodes = append(h.nodes, c)
	}
	var err error
	h.store, err = slots.New(h.ctx, h.rdb, slots.Options{Prefix: h.prefix, Logger: quiet})
	if err != nil {
		t.Fatalf("slot store: %v", err)
	}
	bins := h.buildBinaries()

	h.linef("## Sizing run, scale %.3g (%s, %d CPUs, GOMAXPROCS %d, %s)", h.p.scale, runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), redisVersion(h))
	h.linef("")
	h.perSlot()
	base := h.info()
	h.setup(base)
	achieved := h.phaseA()
	h.phaseB(bins)
	h.phaseC(bins, achieved)
	h.linef("")
	h.linef("whole run: %v", time.Since(began).Round(time.Second))
	fmt.Println(h.report.String())
	if out := os.Getenv("SLOTSCALER_SCALE_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(h.report.String()), 0o644); err != nil {
			t.Errorf("writing the report: %v", err)
		}
	}
}

// quiet drops the store's info logs (a line per declared pool).
var quiet = slog.New(slog.DiscardHandler)

func (h *harness) linef(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	h.t.Log(line)
	h.report.WriteString(line + "\n")
}

func redisVersion(h *harness) string {
	s, err := h.nodes[0].Info(h.ctx, "server").Result()
	if err != nil {
		return "redis ?"
	}
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return "redis " + v + ", 3-node cluster"
		}
	}
	return "redis ?"
}

// clusterInfo is each node's INFO, in node order.
type clusterInfo []redistest.Info

func (h *harness) info() clusterInfo {
	var ci clusterInfo
	for _, n := range h.nodes {
		ni, err := redistest.ReadInfo(h.ctx, n)
		if err != nil {
			h.t.Fatalf("node %s: %v", n, err)
		}
		ci = append(ci, ni)
	}
	return ci
}

func (c clusterInfo) mem() (n int64) {
	for _, x := range c {
		n += x.DataMemory()
	}
	return n
}

func (c clusterInfo) cpu() (s float64) {
	for _, x := range c {
		s += x.CPU.Seconds()
	}
	return s
}

func (c clusterInfo) evalUsec() (n int64) {
	for _, x := range c {
		n += x.Commands["evalsha"].Usec
	}
	return n
}

func (c clusterInfo) keys() (n int64) {
	for _, x := range c {
		n += x.Keys
	}
	return n
}

// cost is the Redis-side difference between two INFO readings.
type cost struct {
	cpuUS, scriptUS float64 // µs summed over the nodes
	perNodeCPU      []float64
}

func diff(a, b clusterInfo) cost {
	c := cost{cpuUS: (b.cpu() - a.cpu()) * 1e6, scriptUS: float64(b.evalUsec() - a.evalUsec())}
	for i := range a {
		c.perNodeCPU = append(c.perNodeCPU, float64((b[i].CPU - a[i].CPU).Microseconds()))
	}
	return c
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parallel runs fn(i) for i in [0, n) on g goroutines; the first error fails the run.
func (h *harness) parallel(what string, n, g int, fn func(i int) error) {
	h.t.Helper()
	if err := parallel(n, g, fn); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
}

// parallel runs fn(i) for i in [0, n) on g goroutines and returns the first error.
func parallel(n, g int, fn func(i int) error) error {
	eg, ctx := errgroup.WithContext(context.Background())
	eg.SetLimit(g)
	for i := range n {
		if ctx.Err() != nil { // an error stops the rest
			break
		}
		eg.Go(func() error { return fn(i) })
	}
	return eg.Wait()
}

func poolConfig(p params) slots.PoolConfig {
	cfg := slots.DefaultPoolConfig()
	// Long enough that no pod expires while the run sets up or pauses its
	// heartbeats between phases; the timeout changes no cost measured here.
	cfg.HeartbeatTimeout = 15 * time.Minute
	cfg.QueueLimit = max(cfg.QueueLimit, 2*p.bigPods+1000)
	return cfg
}

func bytesPer(b int64, n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatInt(b/int64(n), 10)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// perSlot separates what a pod costs from what each of its slots costs: the
// same number of pods registered in a one-slot and in an eight-slot pool.
func (h *harness) perSlot() {
	const n = 5000
	prefix := "scale-slots"
	st, err := slots.New(h.ctx, h.rdb, slots.Options{Prefix: prefix, Logger: quiet})
	if err != nil {
		h.t.Fatalf("slot store: %v", err)
	}
	measure := func(name string, nslots int) int64 {
		id := slots.PoolID{Namespace: "slots", Name: name}
		cfg := poolConfig(h.p)
		pol := make([][]slots.TaskType, nslots)
		for i := range pol {
			pol[i] = []slots.TaskType{slots.Plan}
		}
		pol[0] = []slots.TaskType{slots.Plan, slots.PlanAndApply}
		cfg.Policy = slots.SlotPolicy{Slots: pol}
		if _, err := st.DeclarePool(h.ctx, id, cfg); err != nil {
			h.t.Fatalf("declare %s: %v", id, err)
		}
		before := h.info().mem()
		h.parallel("register", n, 64, func(i int) error {
			_, err := st.RegisterPod(h.ctx, id, fmt.Sprintf("agent-%05d", i), fmt.Sprintf("uid-%05d", i))
			return err
		})
		return h.info().mem() - before
	}
	measure("warm-up", 2) // the first pool pays for script caches and the like
	one, eight := measure("one-slot", 1), measure("eight-slots", 8)
	perSlot := (eight - one) / (7 * n)
	h.linef("### Memory")
	h.linef("")
	h.linef("| what | bytes each | measured on |")
	h.linef("|---|---:|---|")
	h.linef("| a slot (idle) | %d | %d pods of 8 slots vs %d of 1 slot |", perSlot, n, n)
	h.linef("| a pod without its slots (idle) | %d | %d pods of 1 slot, minus one slot each |", one/n-perSlot, n)
	for _, a := range h.addrs { // drop the experiment's keys
		c := redis.NewClient(&redis.Options{Addr: a, DisableIdentity: true})
		iter := c.Scan(h.ctx, 0, prefix+":*", 10000).Iterator()
		var keys []string
		for iter.Next(h.ctx) {
			keys = append(keys, iter.Val())
		}
		for _, k := range keys {
			c.Unlink(h.ctx, k)
		}
		c.Close()
	}
}

// setup declares the pools, registers the pods, makes the finished-task
// sample, fills every slot with a claimed task and queues the rest,
// measuring the memory each step adds.
func (h *harness) setup(base clusterInfo) {
	p := h.p
	t0 := time.Now()
	cfg := poolConfig(p)
	h.parallel("declare", p.pools, 64, func(i int) error {
		_, err := h.store.DeclarePool(h.ctx, p.ids[i], cfg)
		return err
	})
	afterDeclare := h.info()
	h.byPool = make([][]*agent, p.pools)
	for i, id := range p.ids {
		for j := range p.podsOf[i] {
			a := &agent{pool: id, name: fmt.Sprintf("agent-%05d", j), uid: fmt.Sprintf("uid-%04d-%05d", i, j)}
			h.agents = append(h.agents, a)
			h.byPool[i] = append(h.byPool[i], a)
		}
	}
	h.parallel("register", len(h.agents), 256, func(i int) error {
		a := h.agents[i]
		st, err := h.store.RegisterPod(h.ctx, a.pool, a.name, a.uid)
		if err == nil && st != slots.PodActive {
			err = fmt.Errorf("pod %s/%s registered as %s", a.pool, a.name, st)
		}
		return err
	})
	afterRegister := h.info()
	tReg := time.Since(t0)

	// Finished tasks: real cycles; one goroutine per pool at a time, so two
	// cycles never share a pod's inbox.
	t1 := time.Now()
	payload := []byte(strings.Repeat("p", payloadBytes))
	output := []byte(strings.Repeat("o", outputBytes))
	h.parallel("finished tasks", p.pools, 256, func(i int) error {
		n := p.finished/p.pools + b2i(i < p.finished%p.pools)
		for k := range n {
			id := fmt.Sprintf("f-%06d", k)
			r, err := h.store.Submit(h.ctx, p.ids[i], slots.TaskSpec{ID: id, Type: slots.Plan, Payload: payload})
			if err != nil {
				return err
			}
			a := h.byPool[i][slices.IndexFunc(h.byPool[i], func(a *agent) bool { return a.name == r.Pod })]
			m, err := h.store.Take(h.ctx, a.pool, a.name, a.uid, time.Second, nil)
			if err != nil || m == nil || m.Assignment == nil {
				return fmt.Errorf("take of %s on %s: %v %v", id, a.name, m, err)
			}
			if _, err := h.store.Complete(h.ctx, a.pool, slots.Result{Task: m.Task, Epoch: m.Epoch, Outcome: slots.OutcomeSuccess, Output: output}); err != nil {
				return err
			}
		}
		return nil
	})
	afterFinished := h.info()
	tFin := time.Since(t1)

	// Every slot busy: three plans per pod, each claimed by its pod as the
	// agent would, so heartbeats report three running phases.
	t2 := time.Now()
	fill := h.tasksOf(func(i int) int { return p.podsOf[i] * slotsPerPod })
	h.parallel("fill", len(fill), 256, func(j int) error {
		i, k := fill[j][0], fill[j][1]
		_, err := h.store.Submit(h.ctx, p.ids[i], slots.TaskSpec{ID: fmt.Sprintf("r-%06d", k), Type: slots.Plan, Payload: payload})
		return err
	})
	h.parallel("claim", len(h.agents), 256, func(i int) error {
		a := h.agents[i]
		for range slotsPerPod {
			m, err := h.store.Take(h.ctx, a.pool, a.name, a.uid, time.Second, nil)
			if err != nil || m == nil || m.Assignment == nil {
				return fmt.Errorf("claim on %s/%s: %v %v", a.pool, a.name, m, err)
			}
			a.running = append(a.running, slots.RunningPhase{Slot: m.Assignment.Slot, Task: m.Task, Epoch: m.Epoch})
		}
		return nil
	})
	afterFill := h.info()
	tFill := time.Since(t2)

	t3 := time.Now()
	queue := h.tasksOf(func(i int) int { return p.queued * p.podsOf[i] / p.pods })
	h.parallel("queue", len(queue), 256, func(j int) error {
		i, k := queue[j][0], queue[j][1]
		r, err := h.store.Submit(h.ctx, p.ids[i], slots.TaskSpec{ID: fmt.Sprintf("q-%06d", k), Type: slots.Plan, Payload: payload})
		if err == nil && r.State != slots.StateQueued {
			err = fmt.Errorf("task q-%06d of %s is %s, want queued", k, p.ids[i], r.State)
		}
		return err
	})
	afterQueue := h.info()
	tQueue := time.Since(t3)
	queued := len(queue)

	slotsN := p.pods * slotsPerPod
	h.linef("| a declared pool (config, counters, empty structures) | %s | %d pools |", bytesPer(afterDeclare.mem()-base.mem(), p.pools), p.pools)
	h.linef("| a registered idle pod with its %d slots | %s | %d pods |", slotsPerPod, bytesPer(afterRegister.mem()-afterDeclare.mem(), p.pods), p.pods)
	h.linef("| a finished task (%d B payload, %d B output; hash, history, retention index, events) | %s | %d tasks |", payloadBytes, outputBytes, bytesPer(afterFinished.mem()-afterRegister.mem(), p.finished), p.finished)
	h.linef("| a running (claimed) task, %d B payload | %s | %d tasks, one per slot |", payloadBytes, bytesPer(afterFill.mem()-afterFinished.mem(), slotsN), slotsN)
	h.linef("| a queued task, %d B payload | %s | %d tasks |", payloadBytes, bytesPer(afterQueue.mem()-afterFill.mem(), queued), queued)
	h.linef("")
	perFinished := (afterFinished.mem() - afterRegister.mem()) / int64(max(1, p.finished))
	total := afterQueue.mem() - base.mem()
	fullFin := int64(fullFinished*p.scale + 0.5)
	h.linef("used_memory over the 3 nodes: %s in %d keys with %d finished tasks; with %d finished tasks (extrapolated): %s",
		mib(total), afterQueue.keys(), p.finished, fullFin, mib(total+perFinished*(fullFin-int64(p.finished))))
	var per []string
	for i, n := range afterQueue {
		per = append(per, fmt.Sprintf("%s: %s, %d keys", h.addrs[i], mib(n.DataMemory()), n.Keys))
	}
	h.linef("per node (the big pool lives on one): %s", strings.Join(per, "; "))
	h.linef("setup: declare+register %v, %d finished cycles %v, fill+claim %d slots %v, queue %d %v",
		tReg.Round(time.Millisecond), p.finished, tFin.Round(time.Millisecond), slotsN, tFill.Round(time.Millisecond), queued, tQueue.Round(time.Millisecond))
	h.linef("")
}

// tasksOf lists (pool, k) for k < n(pool), pools interleaved, so the
// tasks of the big pool are submitted by many goroutines at once.
func (h *harness) tasksOf(n func(i int) int) [][2]int {
	var out [][2]int
	for i := range h.p.pools {
		for k := range n(i) {
			out = append(out, [2]int{i, k})
		}
	}
	return out
}

// heartbeats runs every agent's heartbeat each hbInterval, spread evenly
// over the interval, until stop closes; each agent heartbeats itself (one
// HeartbeatNumbered call reporting its running phases), as the agent does.
type heartbeats struct {
	calls, errs atomic.Int64
	mu          sync.Mutex
	lat         []time.Duration
	firstErr    atomic.Value
	wg          sync.WaitGroup
}

func (h *harness) startHeartbeats(stop <-chan struct{}, every time.Duration) *heartbeats {
	hb := &heartbeats{}
	n := len(h.agents)
	W := h.p.workers
	start := time.Now()
	for w := range W {
		hb.wg.Go(func() {
			var lat []time.Duration
			defer func() {
				hb.mu.Lock()
				hb.lat = append(hb.lat, lat...)
				hb.mu.Unlock()
			}()
			for k := 0; ; k++ {
				for i := w; i < n; i += W {
					due := start.Add(time.Duration(k)*every + time.Duration(int64(every)*int64(i)/int64(n)))
					select {
					case <-stop:
						return
					case <-time.After(time.Until(due)):
					}
					a := h.agents[i]
					a.seq++
					t0 := time.Now()
					_, err := h.store.HeartbeatNumbered(h.ctx, a.pool, a.name, a.uid, a.seq, a.running)
					lat = append(lat, time.Since(t0))
					hb.calls.Add(1)
					if err != nil {
						hb.errs.Add(1)
						hb.firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			}
		})
	}
	return hb
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// phaseA: heartbeats alone, at the real rate, after an idle window that
// gives Redis's own background CPU (cluster bus, cron) to subtract.
func (h *harness) phaseA() (achieved float64) {
	idle := 5 * time.Second
	i0 := h.info()
	time.Sleep(idle)
	i1 := h.info()
	idlePerSec := diff(i0, i1).cpuUS / idle.Seconds()

	stop := make(chan struct{})
	hb := h.startHeartbeats(stop, hbInterval)
	time.Sleep(hbInterval) // one whole round before measuring
	c0, a0, p0 := hb.calls.Load(), h.info(), processCPU()
	t0 := time.Now()
	time.Sleep(h.p.phase)
	c1, a1, p1 := hb.calls.Load(), h.info(), processCPU()
	el := time.Since(t0)
	close(stop)
	hb.wg.Wait()
	if hb.errs.Load() > 0 {
		h.t.Fatalf("%d heartbeats failed, first: %v", hb.errs.Load(), hb.firstErr.Load())
	}
	n := float64(c1 - c0)
	d := diff(a0, a1)
	net := d.cpuUS - idlePerSec*el.Seconds()
	h.linef("### Heartbeats (phase A: heartbeats alone, %v)", el.Round(time.Second))
	h.linef("")
	h.linef("| figure | value |")
	h.linef("|---|---:|")
	h.linef("| agents, each heartbeating every %v with its %d running phases | %d |", hbInterval, slotsPerPod, len(h.agents))
	h.linef("| target rate | %.0f /s |", float64(len(h.agents))/hbInterval.Seconds())
	h.linef("| achieved rate | %.0f /s |", n/el.Seconds())
	h.linef("| latency p50 / p99 (whole run of the phase) | %s / %s |", ms(pct(hb.lat, 0.5)), ms(pct(hb.lat, 0.99)))
	h.linef("| Redis CPU per heartbeat, 3 nodes summed, idle baseline (%.0f µs/s) subtracted | %.1f µs |", idlePerSec, net/n)
	h.linef("| time inside the script (commandstats evalsha: wall time, inflated when the machine is oversubscribed) | %.1f µs |", d.scriptUS/n)
	h.linef("| Redis CPU at the achieved rate, per node | %s |", cores(d.perNodeCPU, el))
	h.linef("| Redis CPU the target rate takes, 3 nodes summed (per-heartbeat cost × target rate) | %.2f cores |", net/n*float64(len(h.agents))/hbInterval.Seconds()/1e6)
	h.linef("| client CPU per heartbeat (this process: go-redis + simulated agents) | %.1f µs |", float64((p1-p0).Microseconds())/n)
	h.serialFloor(idlePerSec)
	h.linef("")
	return n / el.Seconds()
}

// serialFloor: one heartbeat at a time (a busy pod reporting its phases)
// and, for scale, a trivial one-command script on the same node: what a
// heartbeat costs Redis without the event loop juggling a thousand
// connections.
func (h *harness) serialFloor(idlePerSec float64) {
	const n = 3000
	a := h.byPool[1][0]
	trivial := redis.NewScript("return redis.call('EXISTS', KEYS[1])")
	key := fmt.Sprintf("%s:v1:{%s}:n", h.prefix, a.pool)
	measure := func(fn func() error) float64 {
		i0, t0 := h.info(), time.Now()
		for range n {
			if err := fn(); err != nil {
				h.t.Fatalf("serial: %v", err)
			}
		}
		return (diff(i0, h.info()).cpuUS - idlePerSec*time.Since(t0).Seconds()) / n
	}
	tr := measure(func() error { return trivial.Run(h.ctx, h.rdb, []string{key}).Err() })
	hbc := measure(func() error {
		a.seq++
		_, err := h.store.HeartbeatNumbered(h.ctx, a.pool, a.name, a.uid, a.seq, a.running)
		return err
	})
	h.linef("| one at a time (%d calls): Redis CPU per heartbeat / per trivial one-command EVALSHA | %.1f µs / %.1f µs |", n, hbc, tr)
}

func cores(perNode []float64, el time.Duration) string {
	var s []string
	for _, us := range perNode {
		s = append(s, fmt.Sprintf("%.0f%%", us/el.Seconds()/1e4))
	}
	return strings.Join(s, " / ") + " of a core"
}

type binaries struct{ scaler, dashboard string }

// buildBinaries builds the scaler and the dashboard from this tree, as
// make binaries does.
func (h *harness) buildBinaries() binaries {
	dir := h.t.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./scaler", "./dashboard")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("building the scaler and dashboard: %v\n%s", err, out)
	}
	return binaries{scaler: filepath.Join(dir, "scaler"), dashboard: filepath.Join(dir, "dashboard")}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (h *harness) clusterURL() string {
	u := "redis+cluster://" + h.addrs[0] + "?"
	for _, a := range h.addrs[1:] {
		u += "addr=" + a + "&"
	}
	return strings.TrimSuffix(u, "&")
}

// start runs a binary until the test ends; its output goes to the log on failure.
func (h *harness) start(bin string, args ...string) {
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(h.t.TempDir(), filepath.Base(bin)+".log"))
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("starting %s: %v", bin, err)
	}
	h.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if h.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			h.t.Logf("%s log:\n%s", bin, b)
		}
	})
}

type scalerClient struct {
	pb.ExternalScalerClient
	conn *grpc.ClientConn
}

// startScaler runs the scaler binary; history and reap intervals as given.
func (h *harness) startScaler(bin string, history, reap time.Duration) *scalerClient {
	addr := freeAddr(h.t)
	h.start(bin, "--redis-url", h.clusterURL(), "--key-prefix", h.prefix, "--listen-address", addr,
		"--health-address", freeAddr(h.t), "--metrics-address", freeAddr(h.t),
		"--reap-interval", reap.String(), "--history-interval", history.String(), "--log-level", "warn")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	c := &scalerClient{ExternalScalerClient: pb.NewExternalScalerClient(conn), conn: conn}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.poll(h.ctx, h.p.ids[1]); err == nil {
			return c
		} else if time.Now().After(deadline) {
			h.t.Fatalf("the scaler did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// poll is what KEDA sends for one ScaledObject: the metric spec, the
// metric (for the HPA) and whether it is active.
func (c *scalerClient) poll(ctx context.Context, p slots.PoolID) (time.Duration, error) {
	ref := &pb.ScaledObjectRef{Name: p.Name, Namespace: p.Namespace, ScalerMetadata: map[string]string{"pool": p.Name}}
	t0 := time.Now()
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil {
		return 0, err
	}
	if len(spec.MetricSpecs) == 0 {
		return 0, fmt.Errorf("no metric spec for %s", p)
	}
	if _, err := c.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.MetricSpecs[0].MetricName}); err != nil {
		return 0, err
	}
	if _, err := c.IsActive(ctx, ref); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// sweep is one reaper sweep, the calls Store.RunReaper makes each
// interval: list the pools, reap each (again while a batch was full).
func (h *harness) sweep(maxGap time.Duration) (time.Duration, error) {
	t0 := time.Now()
	pools, err := h.store.Pools(h.ctx)
	if err != nil {
		return 0, err
	}
	opts := slots.ReapOptions{Batch: 100, MaxGap: maxGap}
	for _, p := range pools {
		for {
			r, err := h.store.Reap(h.ctx, p, opts)
			if err != nil {
				return 0, err
			}
			if r.Heartbeats > 0 {
				return 0, fmt.Errorf("the reaper expired %d pods of %s: the run is too slow for its heartbeat timeout", r.Heartbeats, p)
			}
			if !r.More(opts.Batch) {
				break
			}
		}
	}
	return time.Since(t0), nil
}

// janitorSweep is the Redis side of one janitor resync of every pool: a
// snapshot each, janitorWorker at a time (a steady pass declares nothing).
// It records each pool's change token in tokens, as a full pass does.
func (h *harness) janitorSweep(tokens []string) (time.Duration, time.Duration, error) {
	t0 := time.Now()
	var mu sync.Mutex
	var slowest time.Duration
	err := parallel(len(h.p.ids), janitorWorker, func(i int) error {
		s0 := time.Now()
		snap, err := h.store.Snapshot(h.ctx, h.p.ids[i])
		if err == nil && len(snap.Pods) != h.p.podsOf[i] {
			err = fmt.Errorf("snapshot of %s: %d pods, want %d", h.p.ids[i], len(snap.Pods), h.p.podsOf[i])
		}
		d := time.Since(s0)
		mu.Lock()
		slowest = max(slowest, d)
		tokens[i] = snap.Generation + "/" + snap.Changes
		mu.Unlock()
		return err
	})
	return time.Since(t0), slowest, err
}

// janitorRestSweep is the Redis side of a resync at rest, as the janitor
// runs it (pkg/janitor/rest.go): each pool's change token (slots.Version,
// O(1)), and a snapshot only of a pool whose token moved since tokens was
// recorded. It returns how many pools needed their snapshot.
func (h *harness) janitorRestSweep(tokens []string) (time.Duration, int, error) {
	t0 := time.Now()
	var moved atomic.Int64
	err := parallel(len(h.p.ids), janitorWorker, func(i int) error {
		v, err := h.store.Version(h.ctx, h.p.ids[i])
		if err != nil {
			return err
		}
		if v.Generation+"/"+v.Changes == tokens[i] {
			return nil
		}
		moved.Add(1)
		snap, err := h.store.Snapshot(h.ctx, h.p.ids[i])
		tokens[i] = snap.Generation + "/" + snap.Changes
		return err
	})
	return time.Since(t0), int(moved.Load()), err
}

// overview fetches the dashboard's overview page and checks every pool is on it.
func (h *harness) overview(addr string) (time.Duration, int, error) {
	t0 := time.Now()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("overview: %s: %.300s", resp.Status, body)
	}
	if n := strings.Count(string(body), `data-testid="pool-row"`); n != h.p.pools {
		return 0, 0, fmt.Errorf("overview shows %d pools, want %d", n, h.p.pools)
	}
	return d, len(body), nil
}

func (h *harness) startDashboard(bin string) string {
	addr := freeAddr(h.t)
	h.start(bin, "--redis-url", h.clusterURL(), "--key-prefix", h.prefix, "--listen-address", addr,
		"--metrics-address", "", "--read-auth=false", "--log-level", "warn")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the dashboard is not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// phaseB: each reader alone (no heartbeats), for its Redis CPU per call.
func (h *harness) phaseB(bins binaries) {
	p := h.p
	sc := h.startScaler(bins.scaler, 0, 0)
	dash := h.startDashboard(bins.dashboard)
	h.linef("### Each reader alone (phase B: no heartbeats)")
	h.linef("")
	h.linef("| what | wall time | Redis CPU, 3 nodes summed | per unit |")
	h.linef("|---|---:|---:|---:|")

	// Reaper: the first sweep finds no previous pass (grace); time the rest.
	if _, err := h.sweep(3 * reapInterval); err != nil {
		h.t.Fatalf("reaper: %v", err)
	}
	const sweeps = 5
	var worst time.Duration
	i0 := h.info()
	for range sweeps {
		d, err := h.sweep(3 * reapInterval)
		if err != nil {
			h.t.Fatalf("reaper: %v", err)
		}
		worst = max(worst, d)
		time.Sleep(200 * time.Millisecond)
	}
	c := diff(i0, h.info())
	h.linef("| reaper sweep over %d pools (slowest of %d) | %s | %.0f µs / sweep | %.1f µs / pool |", p.pools, sweeps, ms(worst), c.cpuUS/sweeps, c.cpuUS/sweeps/float64(p.pools))

	// KEDA polls: every pool twice, 16 callers.
	var mu sync.Mutex
	var lat []time.Duration
	i0 = h.info()
	h.parallel("polls", 2*p.pools, 16, func(i int) error {
		d, err := sc.poll(h.ctx, p.ids[i%p.pools])
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return err
	})
	c = diff(i0, h.info())
	h.linef("| KEDA poll (GetMetricSpec + GetMetrics + IsActive), %d polls, 16 callers | p50 %s, p99 %s | %.0f µs / poll | |",
		2*p.pools, ms(pct(lat, 0.5)), ms(pct(lat, 0.99)), c.cpuUS/float64(2*p.pools))

	// Janitor: a snapshot of every pool, then the big pool alone.
	i0 = h.info()
	tokens := make([]string, p.pools)
	d, slowest, err := h.janitorSweep(tokens)
	if err != nil {
		h.t.Fatalf("janitor: %v", err)
	}
	c = diff(i0, h.info())
	h.linef("| janitor resync of %d pools, every pool changed (a snapshot each, %d workers) | %s (slowest snapshot %s) | %.0f µs / sweep | %.0f µs / pool |",
		p.pools, janitorWorker, ms(d), ms(slowest), c.cpuUS, c.cpuUS/float64(p.pools))
	i0 = h.info()
	d, moved, err := h.janitorRestSweep(tokens)
	if err != nil {
		h.t.Fatalf("janitor at rest: %v", err)
	}
	c = diff(i0, h.info())
	h.linef("| janitor resync of %d pools at rest (the change token each; %d snapshots) | %s | %.0f µs / sweep | %.1f µs / pool |",
		p.pools, moved, ms(d), c.cpuUS, c.cpuUS/float64(p.pools))
	i0 = h.info()
	t0 := time.Now()
	for range 3 {
		if _, err := h.store.Snapshot(h.ctx, p.bigPool); err != nil {
			h.t.Fatalf("snapshot: %v", err)
		}
	}
	c = diff(i0, h.info())
	h.linef("| snapshot of the big pool (%d pods, %d queued) | %s | %.0f µs | %.1f µs / pod |",
		p.bigPods, p.queued*p.bigPods/p.pods, ms(time.Since(t0)/3), c.cpuUS/3, c.cpuUS/3/float64(p.bigPods))

	// Dashboard overview.
	var olat []time.Duration
	var size int
	i0 = h.info()
	const renders = 5
	for range renders {
		d, n, err := h.overview(dash)
		if err != nil {
			h.t.Fatalf("%v", err)
		}
		olat = append(olat, d)
		size = n
	}
	c = diff(i0, h.info())
	h.linef("| dashboard overview of %d pools (%d KiB of HTML), %d renders | p50 %s, max %s | %.0f µs / render | %.1f µs / pool |",
		p.pools, size/1024, renders, ms(pct(olat, 0.5)), ms(pct(olat, 1)), c.cpuUS/renders, c.cpuUS/renders/float64(p.pools))
	h.linef("")
}

// phaseC: everything at once: heartbeats, the scaler's own reaper every
// second, a KEDA poll of every pool every 15 s, a janitor snapshot of every
// pool every 5 s, the scaler's history recorder, the overview every 5 s.
//
// This machine cannot make the target heartbeat rate and run the rest too
// (its cores are shared with the simulated agents), so heartbeats run at a
// quarter of the rate phase A achieved when that fell short of the target,
// every agent at a longer interval; what each heartbeat costs Redis is
// phase A's figure. The janitor sweeps every pool every sync interval as it
// does at rest (SLOTSCALER_SCALE_JANITOR=rest, the default): a snapshot of
// every pool every sweep ("full") keeps a small machine's cores busy (phase
// B measures one), and the scaler's figures would then say more about the
// machine than about the scaler.
func (h *harness) phaseC(bins binaries, achievedA float64) {
	p := h.p
	target := float64(len(h.agents)) / hbInterval.Seconds()
	rate := target
	if achievedA < 0.95*target {
		rate = achievedA / 4
	}
	interval := time.Duration(float64(len(h.agents)) / rate * float64(time.Second))
	sc := h.startScaler(bins.scaler, 10*time.Second, reapInterval)
	dash := h.startDashboard(bins.dashboard)
	stop := make(chan struct{})
	hb := h.startHeartbeats(stop, interval)
	time.Sleep(hbInterval)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var polls, overviews, janitorSweeps []time.Duration
	var pollErrs, overviewErrs, janitorErrs int
	var firstErrs []string
	fail := func(n *int, err error) {
		mu.Lock()
		*n++
		if len(firstErrs) < 3 {
			firstErrs = append(firstErrs, err.Error())
		}
		mu.Unlock()
	}
	every := func(d time.Duration, fn func()) {
		wg.Go(func() {
			tk := time.NewTicker(d)
			defer tk.Stop()
			for {
				fn()
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		})
	}
	// The scaler's reaper: each pass writes Redis TIME into the pool's
	// reap_last (reap.lua); the gap between two passes over a pool is what
	// MaxGap bounds.
	gaps := h.watchReaps(stop, &wg)
	// KEDA: every pool every pollEvery, spread over the interval.
	for w := range 16 {
		wg.Go(func() {
			start := time.Now()
			for k := 0; ; k++ {
				for i := w; i < p.pools; i += 16 {
					due := start.Add(time.Duration(k)*pollEvery + pollEvery*time.Duration(i)/time.Duration(p.pools))
					select {
					case <-stop:
						return
					case <-time.After(time.Until(due)):
					}
					d, err := sc.poll(h.ctx, p.ids[i])
					if err != nil {
						fail(&pollErrs, err)
						continue
					}
					mu.Lock()
					polls = append(polls, d)
					mu.Unlock()
				}
			}
		})
	}
	janitor := p.janitor
	var snapshots atomic.Int64
	tokens := make([]string, p.pools)
	switch janitor {
	case "rest", "full":
		if janitor == "rest" { // the janitor's first pass over each pool is full
			if _, _, err := h.janitorSweep(tokens); err != nil {
				h.t.Fatalf("janitor: %v", err)
			}
		}
		every(syncInterval, func() {
			var d time.Duration
			var err error
			if janitor == "full" {
				d, _, err = h.janitorSweep(tokens)
				snapshots.Add(int64(p.pools))
			} else {
				var moved int
				d, moved, err = h.janitorRestSweep(tokens)
				snapshots.Add(int64(moved))
			}
			if err != nil {
				fail(&janitorErrs, err)
				return
			}
			mu.Lock()
			janitorSweeps = append(janitorSweeps, d)
			mu.Unlock()
		})
	}
	every(5*time.Second, func() {
		d, _, err := h.overview(dash)
		if err != nil {
			fail(&overviewErrs, err)
			return
		}
		mu.Lock()
		overviews = append(overviews, d)
		mu.Unlock()
	})
	c0, i0 := hb.calls.Load(), h.info()
	t0 := time.Now()
	time.Sleep(p.phase)
	c1, i1 := hb.calls.Load(), h.info()
	el := time.Since(t0)
	close(stop)
	wg.Wait()
	hb.wg.Wait()
	d := diff(i0, i1)
	worstGap, reaps := gaps()
	h.linef("### Everything at once (phase C, %v)", el.Round(time.Second))
	h.linef("")
	jan := "no janitor (SLOTSCALER_SCALE_JANITOR=off)"
	switch janitor {
	case "rest":
		jan = fmt.Sprintf("a janitor resync of every pool every %v as at rest (its change token; a snapshot where it moved; %d workers)", syncInterval, janitorWorker)
	case "full":
		jan = fmt.Sprintf("a janitor snapshot of every pool every %v (%d workers)", syncInterval, janitorWorker)
	}
	h.linef("Heartbeats of every agent every %v (when phase A fell short of the target: a quarter of the rate it achieved, since this machine's cores also run the simulated agents), the scaler's reaper every %v, a KEDA poll of every pool every %v, %s, the scaler's history recorder every 10s, the overview every 5s.",
		interval.Round(100*time.Millisecond), reapInterval, pollEvery, jan)
	h.linef("")
	h.linef("| figure | value |")
	h.linef("|---|---:|")
	h.linef("| heartbeats achieved (target at full rate) | %.0f /s (%.0f /s) |", float64(c1-c0)/el.Seconds(), target)
	h.linef("| heartbeat latency p50 / p99 | %s / %s |", ms(pct(hb.lat, 0.5)), ms(pct(hb.lat, 0.99)))
	h.linef("| KEDA poll latency p50 / p99 (%d polls, %d failed) | %s / %s |", len(polls), pollErrs, ms(pct(polls, 0.5)), ms(pct(polls, 0.99)))
	h.linef("| reaper: longest gap between two passes over a pool (%d passes seen on %d pools); MaxGap %v | %s |", reaps, len(p.ids)/50+1, 3*reapInterval, ms(worstGap))
	if janitor != "off" {
		h.linef("| janitor resync of every pool: p50 / slowest (%d, %d failed; %d snapshots in all) | %s / %s |",
			len(janitorSweeps), janitorErrs, snapshots.Load(), ms(pct(janitorSweeps, 0.5)), ms(pct(janitorSweeps, 1)))
	}
	h.linef("| dashboard overview p50 / slowest (%d, %d failed) | %s / %s |", len(overviews), overviewErrs, ms(pct(overviews, 0.5)), ms(pct(overviews, 1)))
	h.linef("| Redis CPU per node | %s |", cores(d.perNodeCPU, el))
	var conns []string
	for _, n := range i1 {
		conns = append(conns, fmt.Sprintf("%d", n.Clients))
	}
	h.linef("| client connections per node (this run) | %s |", strings.Join(conns, " / "))
	if len(firstErrs) > 0 {
		h.linef("")
		h.linef("first errors: %s", strings.Join(firstErrs, "; "))
	}
}

// watchReaps samples reap_last of every 50th pool (and the big pool) every
// 100 ms until stop, and returns a function giving the longest gap between
// two passes over one pool and how many passes were seen.
func (h *harness) watchReaps(stop <-chan struct{}, wg *sync.WaitGroup) func() (time.Duration, int) {
	var watched []slots.PoolID
	for i := 0; i < len(h.p.ids); i += 50 {
		watched = append(watched, h.p.ids[i])
	}
	last := map[slots.PoolID]int64{}
	changes := map[slots.PoolID]int{}
	var worst time.Duration
	var passes int
	var mu sync.Mutex
	wg.Go(func() {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			pipe := h.rdb.Pipeline()
			cmds := make([]*redis.StringCmd, len(watched))
			for i, id := range watched {
				cmds[i] = pipe.HGet(h.ctx, fmt.Sprintf("%s:v1:{%s}:n", h.prefix, id), "reap_last")
			}
			_, _ = pipe.Exec(h.ctx)
			mu.Lock()
			for i, c := range cmds {
				v, err := c.Int64()
				if err != nil {
					continue
				}
				prev, seen := last[watched[i]]
				if seen && v != prev {
					passes++
					changes[watched[i]]++
					// The scaler's first pass follows phase B's: not a gap of its own.
					if changes[watched[i]] > 1 {
						worst = max(worst, time.Duration(v-prev)*time.Millisecond)
					}
				}
				last[watched[i]] = v
			}
			mu.Unlock()
		}
	})
	return func() (time.Duration, int) {
		mu.Lock()
		defer mu.Unlock()
		return worst, passes
	}
}
