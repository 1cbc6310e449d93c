package slots

// BenchmarkLatencyUnderLoad: what one agent sees while the store is busy.
//
//	go test -run '^$' -bench LatencyUnderLoad -benchtime 3s ./pkg/slots/
//
// The load is BenchmarkCycle's (benchClients goroutines running
// submit→take→complete cycles on a pool of 10 pods, one shared go-redis
// client). Beside it, one probe acts as an agent: its own pod in its own
// pool, its own go-redis client, one task at a time. Each probe round
// submits a plan (not timed), then times
//
//   - claim: Take with the assignment already in the pod's inbox, from the
//     call until the phase is claimed (running): the BLMOVE and the claim;
//   - complete: Complete of that phase, from the executor's exit until the
//     slot is free again (the call returns once the script freed it).
//
// The probe runs for as long as the load does. p50/p99 of both are
// reported, with the load's cycles/s; there is no timing assertion (the
// machine's other work moves them).

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// latencyProbe is one agent-like client: its own go-redis client and Store,
// one registered pod in a pool of its own (so the load never places work
// on it and it never takes the load's slots).
type latencyProbe struct {
	rdb  *redis.Client
	s    *Store
	pool PoolID
	pod  string
	uid  string
	seq  int
}

func newLatencyProbe(b *testing.B, url, prefix string) *latencyProbe {
	b.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatalf("parsing redis url: %v", err)
	}
	ctx := context.Background()
	p := &latencyProbe{rdb: redis.NewClient(opts), pool: PoolID{Namespace: "bench", Name: "probe"}, pod: "probe-0", uid: "uid-probe-0"}
	p.s, err = New(ctx, p.rdb, Options{Prefix: prefix, Logger: quietLogger()})
	if err == nil {
		cfg := DefaultPoolConfig()
		cfg.Policy = benchPolicy()
		_, err = p.s.DeclarePool(ctx, p.pool, cfg)
	}
	if err == nil {
		_, err = p.s.RegisterPod(ctx, p.pool, p.pod, p.uid)
	}
	if err != nil {
		_ = p.rdb.Close()
		b.Fatalf("probe setup: %v", err)
	}
	return p
}

// round submits one plan and times its claim and its completion.
func (p *latencyProbe) round(ctx context.Context, payload []byte) (claim, complete time.Duration, err error) {
	p.seq++
	id := "probe-" + strconv.Itoa(p.seq)
	r, err := p.s.Submit(ctx, p.pool, TaskSpec{ID: id, Type: Plan, Payload: payload})
	if err != nil {
		return 0, 0, err
	}
	if r.State != StateRunning || r.Pod != p.pod {
		return 0, 0, fmt.Errorf("probe submit %s: state %s on pod %q, want running on %s", id, r.State, r.Pod, p.pod)
	}
	t0 := time.Now()
	m, err := p.s.Take(ctx, p.pool, p.pod, p.uid, time.Second, nil)
	claim = time.Since(t0)
	if err != nil {
		return 0, 0, err
	}
	if m == nil || m.Kind != MsgAssignment || m.Task != id {
		return 0, 0, fmt.Errorf("probe take: got %+v, want the assignment of %s", m, id)
	}
	t1 := time.Now()
	st, err := p.s.Complete(ctx, p.pool, Result{Task: id, Epoch: m.Epoch, Outcome: OutcomeSuccess, Output: []byte("ok")})
	complete = time.Since(t1)
	if err != nil {
		return 0, 0, err
	}
	if st != StateSucceeded {
		return 0, 0, fmt.Errorf("probe complete %s: state %s", id, st)
	}
	return claim, complete, nil
}

func BenchmarkLatencyUnderLoad(b *testing.B) {
	url := redistest.Standalone(b)
	const pods = 10
	var f *cycleFixture
	var p *latencyProbe
	b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
		if f == nil { // first b.N round: set up once for every round
			b.StopTimer()
			prefix := redistest.Prefix(b)
			f = newCycleFixture(b, url, prefix, pods)
			p = newLatencyProbe(b, url, prefix)
			b.StartTimer()
		}
		runLatencyUnderLoad(b, f, p)
	})
	if p != nil {
		_ = p.rdb.Close()
	}
	if f != nil {
		f.close() // the probe's pool shares the prefix: deleted with it
	}
}

func runLatencyUnderLoad(b *testing.B, f *cycleFixture, p *latencyProbe) {
	payload := []byte(strings.Repeat("p", 64))
	output := []byte("ok")
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()

	var next atomic.Int64
	var first error
	var once sync.Once
	fail := func(err error) { once.Do(func() { first = err; cancel() }) }

	// The probe runs until the load is done.
	loadDone := make(chan struct{})
	var claims, completes []time.Duration
	var probeWG sync.WaitGroup
	probeWG.Go(func() {
		for {
			select {
			case <-loadDone:
				return
			default:
			}
			cl, co, err := p.round(ctx, payload)
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("probe: %w", err))
				}
				return
			}
			claims = append(claims, cl)
			completes = append(completes, co)
		}
	})

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := f.cycle(ctx, payload, output); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(loadDone)
	probeWG.Wait()
	if first != nil {
		b.Fatalf("%v", first)
	}

	pct := func(d []time.Duration, q float64) float64 {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cycles/s")
	b.ReportMetric(float64(len(claims)), "probes")
	b.ReportMetric(pct(claims, 0.50), "claim-p50-µs")
	b.ReportMetric(pct(claims, 0.99), "claim-p99-µs")
	b.ReportMetric(pct(completes, 0.50), "complete-p50-µs")
	b.ReportMetric(pct(completes, 0.99), "complete-p99-µs")
}
