package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// ReadInfo reads a real server's account of the commands a client ran: the
// deltas benchmarks report come from it.
func TestReadInfoCountsTheCommandsRun(t *testing.T) {
	ctx := context.Background()
	opt, err := redis.ParseURL(Standalone(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	key := Prefix(t) + ":info"
	t.Cleanup(func() { c.Del(context.Background(), key) })
	before, err := ReadInfo(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	script := redis.NewScript("return redis.call('INCR', KEYS[1])")
	for range 5 {
		if err := script.Run(ctx, c, []string{key}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := ReadInfo(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests of this binary may share the server: at least ours.
	if got := after.Scripts().Calls - before.Scripts().Calls; got < 5 {
		t.Errorf("script calls grew by %d, want ≥ 5", got)
	}
	if got := after.Commands["incr"].Calls - before.Commands["incr"].Calls; got < 5 {
		t.Errorf("INCR calls inside scripts grew by %d, want ≥ 5", got)
	}
	if after.AllCalls() <= before.AllCalls() || after.CPU <= 0 || after.Keys < 1 || after.Clients < 1 || after.DataMemory() <= 0 {
		t.Errorf("implausible INFO: before %+v after %+v", before, after)
	}
}

func TestParseInfo(t *testing.T) {
	info := ParseInfo("# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.25\r\n# Memory\r\nused_memory:1000\r\nmem_clients_normal:300\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=1,usec=5,usec_per_call=5.00\r\ncmdstat_info:calls=9,usec=90\r\n# Keyspace\r\ndb0:keys=42,expires=0,avg_ttl=0\r\n")
	if info.CPU.Seconds() != 1.75 || info.DataMemory() != 700 || info.Keys != 42 {
		t.Errorf("cpu %v data %d keys %d", info.CPU, info.DataMemory(), info.Keys)
	}
	if s := info.Scripts(); s.Calls != 8 || s.Usec != 75 {
		t.Errorf("scripts %+v, want 8 calls, 75 µs", s)
	}
	if n := info.AllCalls(); n != 8 {
		t.Errorf("all calls %d, want 8 (INFO left out)", n)
	}
}

// Calls is pure counting around go-redis's hook calls (a live client would
// also count its connection's set-up commands, which go-redis sends through
// the hooks too).
func TestCallsCountsRoundTripsAndCommands(t *testing.T) {
	ctx := context.Background()
	calls := &Calls{}
	var ran int
	process := calls.ProcessHook(func(context.Context, redis.Cmder) error { ran++; return nil })
	pipeline := calls.ProcessPipelineHook(func(context.Context, []redis.Cmder) error { ran++; return nil })
	_ = process(ctx, redis.NewStatusCmd(ctx, "ping"))
	_ = pipeline(ctx, []redis.Cmder{redis.NewStatusCmd(ctx, "ping"), redis.NewStatusCmd(ctx, "ping"), redis.NewStatusCmd(ctx, "ping")})
	if rt, n := calls.RoundTrips.Load(), calls.Commands.Load(); rt != 2 || n != 4 || ran != 2 {
		t.Errorf("%d round trips, %d commands, %d calls through; want 2, 4 and 2", rt, n, ran)
	}
}
