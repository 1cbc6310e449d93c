package slots

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// BenchmarkSlowestScript: the longest single call of each script, in Redis's
// own measure (SLOWLOG with a threshold of 0, so every command is logged with
// its execution time, network excluded), on a big busy pool: 1,000 pods of
// the default policy (3 slots each), every slot running, 10,000 tasks queued.
// Redis runs one script at a time, so the slowest call of a script is how
// long every other pool's agents may wait behind it.
//
//	go test -run '^$' -bench SlowestScript -benchtime 3x ./pkg/slots/
//
// Each round calls every production operation that a pool of this size
// meets (submit into a full pool, take, complete, which refills the slot
// from the queue, heartbeat, cordon, uncordon, snapshot (a page per call),
// stats, reap, reconcile, an events page, the janitor's change token); the
// metrics are the maximum microseconds per script over all rounds
// ("max-us-<script>"). On a loaded machine a call the OS paused midway
// counts whole: the log gives each script's median beside its slowest.
func BenchmarkSlowestScript(b *testing.B) {
	const pods, queued = 1000, 10000
	bs := newBenchStore(b, redistest.Standalone(b), "slowest")
	defer bs.close()
	pool := PoolID{Namespace: "bench", Name: "big"}
	cfg := DefaultPoolConfig()
	cfg.QueueLimit = 2*queued + 3*pods // each round queues one more
	if _, err := bs.s.DeclarePool(bs.ctx, pool, cfg); err != nil {
		b.Fatalf("declare pool: %v", err)
	}
	names := make([]string, pods)
	for i := range names {
		names[i] = fmt.Sprintf("agent-%04d", i)
	}
	uid := func(pod string) string { return "uid-" + pod }
	err := benchParallel(pods, func(i int) error {
		_, err := bs.s.RegisterPod(bs.ctx, pool, names[i], uid(names[i]))
		return err
	})
	if err != nil {
		b.Fatalf("registering %d pods: %v", pods, err)
	}
	// 3,000 tasks fill every slot (plan_and_apply first: only slot 0 takes
	// them), then 10,000 more queue, a plan_and_apply in ten.
	submit := func(id string, tt TaskType) error {
		_, err := bs.s.Submit(bs.ctx, pool, TaskSpec{ID: id, Type: tt, Payload: []byte("x")})
		return err
	}
	err = benchParallel(3*pods+queued, func(i int) error {
		tt := Plan
		if i < pods || i%10 == 0 {
			tt = PlanAndApply
		}
		return submit(fmt.Sprintf("t-%05d", i), tt)
	})
	if err != nil {
		b.Fatalf("submitting: %v", err)
	}
	st, err := bs.s.Stats(bs.ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	if got := st[0].Stats.QueuedTotal(); got < queued {
		b.Fatalf("after setup: %d queued, want ≥ %d", got, queued)
	}

	old, err := bs.admin.ConfigGet(bs.ctx, "slowlog-*").Result()
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for k, v := range old {
			bs.admin.ConfigSet(bs.ctx, k, v)
		}
	}()
	if err := bs.admin.ConfigSet(bs.ctx, "slowlog-log-slower-than", "0").Err(); err != nil {
		b.Fatal(err)
	}
	if err := bs.admin.ConfigSet(bs.ctx, "slowlog-max-len", "100000").Err(); err != nil {
		b.Fatal(err)
	}
	names256 := map[string]string{}
	for name, sc := range bs.s.scripts {
		names256[sc.Hash()] = name
	}
	slowest := map[string]time.Duration{}
	calls := map[string][]time.Duration{}

	b.ResetTimer()
	for round := range b.N {
		bs.admin.SlowLogReset(bs.ctx)
		pod := names[round%pods]
		if err := submit(fmt.Sprintf("r%d", round), Plan); err != nil {
			b.Fatalf("submit: %v", err)
		}
		m, err := bs.s.Take(bs.ctx, pool, pod, uid(pod), time.Second, nil)
		if err != nil || m == nil {
			b.Fatalf("take on %s: %v %v", pod, m, err)
		}
		if _, err := bs.s.Complete(bs.ctx, pool, Result{Task: m.Task, Epoch: m.Epoch, Outcome: OutcomeSuccess}); err != nil {
			b.Fatalf("complete %s: %v", m.Task, err)
		}
		if _, err := bs.s.Heartbeat(bs.ctx, pool, pod, uid(pod), nil); err != nil {
			b.Fatalf("heartbeat: %v", err)
		}
		if err := bs.s.Cordon(bs.ctx, pool, pod, uid(pod)); err != nil {
			b.Fatalf("cordon: %v", err)
		}
		if err := bs.s.Uncordon(bs.ctx, pool, pod, uid(pod)); err != nil {
			b.Fatalf("uncordon: %v", err)
		}
		if _, err := bs.s.Snapshot(bs.ctx, pool); err != nil {
			b.Fatalf("snapshot: %v", err)
		}
		if _, err := bs.s.Version(bs.ctx, pool); err != nil {
			b.Fatalf("version: %v", err)
		}
		if _, err := bs.s.Stats(bs.ctx, pool); err != nil {
			b.Fatalf("stats: %v", err)
		}
		if _, err := bs.s.Reap(bs.ctx, pool, ReapOptions{}); err != nil {
			b.Fatalf("reap: %v", err)
		}
		if _, err := bs.s.Reconcile(bs.ctx, pool, false); err != nil {
			b.Fatalf("reconcile: %v", err)
		}
		if _, err := bs.s.Events(bs.ctx, pool, "", 100); err != nil {
			b.Fatalf("events: %v", err)
		}
		b.StopTimer()
		entries, err := bs.admin.SlowLogGet(bs.ctx, -1).Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range entries {
			if len(e.Args) == 0 {
				continue
			}
			name := strings.ToLower(e.Args[0])
			if name == "evalsha" && len(e.Args) > 1 {
				if n, ok := names256[e.Args[1]]; ok {
					name = n
				}
			}
			if name == "slowlog" || name == "config" {
				continue
			}
			calls[name] = append(calls[name], e.Duration)
			slowest[name] = max(slowest[name], e.Duration)
		}
		b.StartTimer()
	}
	b.StopTimer()
	keys := make([]string, 0, len(slowest))
	for k := range slowest {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int { return int(slowest[y] - slowest[x]) })
	for _, k := range keys {
		b.ReportMetric(float64(slowest[k].Microseconds()), "max-us-"+k)
		// The median says what a call usually costs: on a loaded machine
		// the slowest may be a call the OS paused midway.
		slices.Sort(calls[k])
		b.Logf("%-12s %8d µs (slowest of %d calls; median %d µs)", k, slowest[k].Microseconds(), len(calls[k]),
			calls[k][len(calls[k])/2].Microseconds())
	}
}
