package slots

// BenchmarkCycleFloor measures what a submit→take→claim→complete cycle
// costs before the slot store does anything of its own, on the same
// redis-server, client and concurrency as BenchmarkCycle, with the same
// trivial-EVALSHA yardstick ("ratio"). It is not the store's code: it is
// the floor under it, to read BenchmarkCycle's ratio against.
//
//   - shape: the cycle's four round trips with one command each (a script
//     pushes the inbox entry, BLMOVE takes it, a script drops it from the
//     processing list, a script counts the completion);
//   - writes: the same, plus only the writes the store's guarantees make
//     per cycle — the task record at each of its three transitions, an
//     event and a history entry for each, the epoch counter, the retention
//     index and the slot's return to its idle set — with no read, check or
//     counter of any kind.

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// floorScripts are the three script steps of one floor cycle. KEYS: inbox,
// processing list, task, history, events, counters, done, idle. ARGV: the
// entry (task id), the time.
type floorScripts struct{ submit, claim, complete *redis.Script }

var floorVariants = map[string]floorScripts{
	"shape": {
		submit:   redis.NewScript(`return redis.call('RPUSH', KEYS[1], ARGV[1])`),
		claim:    redis.NewScript(`return redis.call('LREM', KEYS[2], 1, ARGV[1])`),
		complete: redis.NewScript(`return redis.call('INCR', KEYS[6])`),
	},
	"writes": {
		submit: redis.NewScript(`
local ep = redis.call('HINCRBY', KEYS[6], 'seq', '1')
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'type', 'plan', 'payload', ARGV[3], 'st', 'running', 'phase', 'plan', 'ep', ep, 'upd', ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[2] .. '|submitted|plan', ARGV[2] .. '|assigned|plan')
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '10000', '*', 'at', ARGV[2], 'task', ARGV[1], 'st', 'running')
return ep`),
		claim: redis.NewScript(`
redis.call('LREM', KEYS[2], 1, ARGV[1])
redis.call('HSET', KEYS[3], 'started', '1', 'sat', ARGV[2])
redis.call('RPUSH', KEYS[4], ARGV[2] .. '|started|plan')
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '10000', '*', 'at', ARGV[2], 'task', ARGV[1], 'st', 'started')
return 1`),
		complete: redis.NewScript(`
redis.call('HSET', KEYS[3], 'st', 'succeeded', 'fin', ARGV[2], 'out', 'ok')
redis.call('RPUSH', KEYS[4], ARGV[2] .. '|succeeded|')
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '10000', '*', 'at', ARGV[2], 'task', ARGV[1], 'st', 'succeeded')
redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[8], '1', 'pod#' .. ARGV[1])
return 1`),
	},
}

func BenchmarkCycleFloor(b *testing.B) {
	url := redistest.Standalone(b)
	for _, name := range []string{"shape", "writes"} {
		b.Run(name, func(b *testing.B) {
			bs := newBenchStore(b, url, redistest.Prefix(b))
			defer bs.close()
			runFloor(b, bs, floorVariants[name])
		})
	}
}

func runFloor(b *testing.B, bs *benchStore, sc floorScripts) {
	ctx := bs.ctx
	trivial := redis.NewScript("return redis.call('INCR', KEYS[1])")
	for _, s := range []*redis.Script{sc.submit, sc.claim, sc.complete, trivial} {
		if err := s.Load(ctx, bs.rdb).Err(); err != nil {
			b.Fatalf("loading script: %v", err)
		}
	}
	// One hash tag for every key, as a pool's keys share one.
	k := func(name string) string { return bs.prefix + ":{floor}:" + name }
	payload := make([]byte, 64)
	var next, seq atomic.Int64
	var first error
	var once sync.Once
	i0, err := redistest.ReadInfo(ctx, bs.admin)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range benchClients {
		inbox, proc := k(keyInbox+strconv.Itoa(g)), k(keyProc+strconv.Itoa(g))
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				id := "t" + strconv.FormatInt(seq.Add(1), 10)
				keys := []string{inbox, proc, k(keyTask + id), k(keyHistory + id), k(keyEvents), k(keyCounters), k(keyDone), k(keyIdle + "0")}
				now := strconv.FormatInt(time.Now().UnixMilli(), 10)
				err := sc.submit.EvalSha(ctx, bs.rdb, keys, id, now, payload).Err()
				if err == nil {
					err = bs.rdb.BLMove(ctx, inbox, proc, "LEFT", "RIGHT", time.Second).Err()
				}
				if err == nil {
					err = sc.claim.EvalSha(ctx, bs.rdb, keys, id, now).Err()
				}
				if err == nil {
					err = sc.complete.EvalSha(ctx, bs.rdb, keys, id, now).Err()
				}
				if err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if first != nil {
		b.Fatalf("floor cycle: %v", first)
	}
	i1, err := redistest.ReadInfo(ctx, bs.admin)
	if err != nil {
		b.Fatal(err)
	}
	f := &cycleFixture{benchStore: bs, trivial: trivial}
	evalRate, err := f.trivialRate(min(max(elapsed, 200*time.Millisecond), 2*time.Second))
	if err != nil {
		b.Fatalf("trivial script: %v", err)
	}
	n := float64(b.N)
	cycles := n / elapsed.Seconds()
	b.ReportMetric(cycles, "cycles/s")
	b.ReportMetric(evalRate, "evalsha/s")
	b.ReportMetric(evalRate/cycles, "ratio")
	b.ReportMetric(float64((i1.CPU-i0.CPU).Microseconds())/n, "redis-cpu-µs/cycle")
	b.ReportMetric(float64(i1.Scripts().Usec-i0.Scripts().Usec)/n, "redis-script-µs/cycle")
}
