package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Info is what the benchmarks read from a redis-server's INFO: the
// server's own account of its work, taken before and after a measured
// phase. Its figures are only the benchmark's when nothing else uses the
// server meanwhile.
type Info struct {
	CPU          time.Duration // used_cpu_user + used_cpu_sys
	UsedMemory   int64         // used_memory
	ClientMemory int64         // mem_clients_normal: connections' buffers, not data
	Clients      int64         // connected_clients
	Keys         int64         // keys in db0
	// Commands is INFO commandstats by command name ("evalsha", "hset"):
	// a script's own calls count under their names too.
	Commands map[string]CommandStat
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct{ Calls, Usec int64 }

// DataMemory is the memory of the data, without the connections' buffers.
func (i Info) DataMemory() int64 { return i.UsedMemory - i.ClientMemory }

// Scripts is the calls and time of EVAL and EVALSHA together.
func (i Info) Scripts() CommandStat {
	a, b := i.Commands["evalsha"], i.Commands["eval"]
	return CommandStat{Calls: a.Calls + b.Calls, Usec: a.Usec + b.Usec}
}

// AllCalls counts every command the server ran, INFO itself left out.
func (i Info) AllCalls() int64 {
	var n int64
	for name, c := range i.Commands {
		if name != "info" {
			n += c.Calls
		}
	}
	return n
}

// ReadInfo reads the sections Info covers from one server (with a cluster
// client, from whichever node it picks: read each node with its own client).
func ReadInfo(ctx context.Context, c redis.Cmdable) (Info, error) {
	s, err := c.Info(ctx, "memory", "cpu", "commandstats", "keyspace", "clients").Result()
	if err != nil {
		return Info{}, fmt.Errorf("reading INFO: %w", err)
	}
	return ParseInfo(s), nil
}

// ParseInfo reads INFO's text; lines it does not know are skipped.
func ParseInfo(s string) Info {
	info := Info{Commands: map[string]CommandStat{}}
	num := func(v string) int64 { n, _ := strconv.ParseInt(v, 10, 64); return n }
	var cpu float64
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		case k == "used_memory":
			info.UsedMemory = num(v)
		case k == "mem_clients_normal":
			info.ClientMemory = num(v)
		case k == "connected_clients":
			info.Clients = num(v)
		case k == "db0":
			kv, _, _ := strings.Cut(v, ",")
			info.Keys = num(strings.TrimPrefix(kv, "keys="))
		case strings.HasPrefix(k, "cmdstat_"):
			var c CommandStat
			for kv := range strings.SplitSeq(v, ",") {
				f, val, _ := strings.Cut(kv, "=")
				switch f {
				case "calls":
					c.Calls = num(val)
				case "usec":
					c.Usec = num(val)
				}
			}
			info.Commands[strings.TrimPrefix(k, "cmdstat_")] = c
		}
	}
	info.CPU = time.Duration(cpu * float64(time.Second))
	return info
}

// Calls is a go-redis hook that counts what a client sends: one round trip
// per command outside a pipeline and one per pipeline (a single node
// answers a pipeline in one), and every command either way.
type Calls struct{ RoundTrips, Commands atomic.Int64 }

func (c *Calls) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *Calls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.RoundTrips.Add(1)
		c.Commands.Add(1)
		return next(ctx, cmd)
	}
}

func (c *Calls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.RoundTrips.Add(1)
		c.Commands.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// CPU is the server's CPU time so far (used_cpu_user + used_cpu_sys); a
// failed read fails the test.
func CPU(tb testing.TB, c redis.Cmdable) time.Duration {
	tb.Helper()
	info, err := ReadInfo(context.Background(), c)
	if err != nil {
		tb.Fatal(err)
	}
	return info.CPU
}
