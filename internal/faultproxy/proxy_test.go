package faultproxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/faultproxy"
	"github.com/slotscaler/slotscaler/internal/redistest"
)

// waitTimeout only keeps a broken test from hanging; nothing is measured.
const waitTimeout = 10 * time.Second

// client connects through addr. Retries are off: a fault must reach the
// caller, not be papered over by a second attempt.
func client(t *testing.T, addr string, opts ...func(*redis.Options)) *redis.Client {
	t.Helper()
	o := &redis.Options{Addr: addr, MaxRetries: -1}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func protocol(n int) func(*redis.Options) { return func(o *redis.Options) { o.Protocol = n } }

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatalf("no %s within %v", what, waitTimeout)
	}
}

func result[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("no result within %v", waitTimeout)
		panic("unreachable")
	}
}

// waitBlocked waits until n clients of the server behind direct are blocked
// (BLMOVE waiting for an element).
func waitBlocked(t *testing.T, direct *redis.Client, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		info, err := direct.Info(context.Background(), "clients").Result()
		return err == nil && strings.Contains(info, "blocked_clients:"+strconv.Itoa(n)+"\r\n")
	}, waitTimeout, 10*time.Millisecond)
}

func goResult[T any](f func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return ch
}

// setup starts a private redis-server, a proxy in front of it, and a client
// straight to Redis (to see what really ran).
func setup(t *testing.T) (*faultproxy.Proxy, *redis.Client) {
	srv := redistest.Start(t)
	return faultproxy.Start(t, srv.Addr()), client(t, srv.Addr())
}

func TestPlainTraffic(t *testing.T) {
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			ctx := context.Background()
			p, direct := setup(t)
			rdb := client(t, p.Addr(), protocol(proto))

			require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
			assert.Equal(t, "v", rdb.Get(ctx, "k").Val())
			assert.ErrorIs(t, rdb.Get(ctx, "missing").Err(), redis.Nil)
			assert.ErrorContains(t, rdb.Do(ctx, "NOSUCHCOMMAND").Err(), "unknown command")
			assert.Empty(t, rdb.HGetAll(ctx, "nokey").Val()) // an empty map (RESP3) or array (RESP2)
			require.NoError(t, rdb.HSet(ctx, "h", "f", "1").Err())
			assert.Equal(t, map[string]string{"f": "1"}, rdb.HGetAll(ctx, "h").Val())

			// Pipelines: 100 commands in one write, 100 replies in order.
			cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for i := range 100 {
					pipe.Set(ctx, fmt.Sprintf("p%d", i), i, 0)
				}
				return nil
			})
			require.NoError(t, err)
			require.Len(t, cmds, 100)
			cmds, err = rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for i := range 100 {
					pipe.Get(ctx, fmt.Sprintf("p%d", i))
				}
				return nil
			})
			require.NoError(t, err)
			for i, c := range cmds {
				assert.Equal(t, strconv.Itoa(i), c.(*redis.StringCmd).Val())
			}

			// MULTI/EXEC: one reply per queued command, then EXEC's.
			_, err = rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Incr(ctx, "tx")
				pipe.Incr(ctx, "tx")
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, "2", direct.Get(ctx, "tx").Val())

			sha, err := rdb.ScriptLoad(ctx, "return redis.call('INCRBY', KEYS[1], ARGV[1])").Result()
			require.NoError(t, err)
			assert.EqualValues(t, 5, rdb.EvalSha(ctx, sha, []string{"n"}, 5).Val())

			// A blocking command answered much later.
			moved := goResult(func() *redis.StringCmd { return rdb.BLMove(ctx, "src", "dst", "LEFT", "RIGHT", waitTimeout) })
			waitBlocked(t, direct, 1)
			require.NoError(t, direct.LPush(ctx, "src", "job").Err())
			m := result(t, moved)
			require.NoError(t, m.Err())
			assert.Equal(t, "job", m.Val())

			// Pub/sub: confirmations and messages (pushes in RESP3,
			// arrays in RESP2), and a PING on the subscribed connection.
			sub := rdb.Subscribe(ctx, "ch")
			t.Cleanup(func() { sub.Close() })
			_, err = sub.Receive(ctx)
			require.NoError(t, err)
			require.NoError(t, direct.Publish(ctx, "ch", "hello").Err())
			msg := result(t, sub.Channel())
			assert.Equal(t, "hello", msg.Payload)
			require.NoError(t, sub.Ping(ctx))
			require.NoError(t, direct.Publish(ctx, "ch", "again").Err())
			assert.Equal(t, "again", result(t, sub.Channel()).Payload)

			// The client still works after all that.
			assert.Equal(t, "v", rdb.Get(ctx, "k").Val())
		})
	}
}

func TestCutAfterForward(t *testing.T) {
	const incr = "return redis.call('INCR', KEYS[1])"
	tests := []struct {
		name string
		rule func(sha string) faultproxy.Rule
		do   func(ctx context.Context, t *testing.T, rdb, direct *redis.Client, sha string) error
		// ran checks in Redis directly that the command ran (and nothing
		// after it).
		ran func(ctx context.Context, t *testing.T, direct *redis.Client)
	}{
		{
			name: "SET",
			rule: func(string) faultproxy.Rule { return faultproxy.Rule{Command: "SET"} },
			do: func(ctx context.Context, t *testing.T, rdb, _ *redis.Client, _ string) error {
				return rdb.Set(ctx, "k", "v", 0).Err()
			},
			ran: func(ctx context.Context, t *testing.T, direct *redis.Client) {
				assert.Equal(t, "v", direct.Get(ctx, "k").Val())
			},
		},
		{
			name: "EVALSHA of one script",
			rule: func(sha string) faultproxy.Rule {
				return faultproxy.Rule{Command: "evalsha", Match: faultproxy.Arg(1, sha)}
			},
			do: func(ctx context.Context, t *testing.T, rdb, _ *redis.Client, sha string) error {
				// Another script passes.
				require.NoError(t, rdb.Eval(ctx, "return 1", nil).Err())
				return rdb.EvalSha(ctx, sha, []string{"n"}).Err()
			},
			ran: func(ctx context.Context, t *testing.T, direct *redis.Client) {
				assert.Equal(t, "1", direct.Get(ctx, "n").Val())
			},
		},
		{
			name: "BLMOVE woken",
			rule: func(string) faultproxy.Rule { return faultproxy.Rule{Command: "BLMOVE"} },
			do: func(ctx context.Context, t *testing.T, rdb, direct *redis.Client, _ string) error {
				moved := goResult(func() error { return rdb.BLMove(ctx, "src", "dst", "LEFT", "RIGHT", waitTimeout).Err() })
				waitBlocked(t, direct, 1)
				require.NoError(t, direct.LPush(ctx, "src", "job").Err())
				return result(t, moved)
			},
			ran: func(ctx context.Context, t *testing.T, direct *redis.Client) {
				assert.Equal(t, []string{"job"}, direct.LRange(ctx, "dst", 0, -1).Val())
				assert.Zero(t, direct.LLen(ctx, "src").Val())
			},
		},
		{
			name: "in a pipeline",
			rule: func(string) faultproxy.Rule { return faultproxy.Rule{Command: "SET", Match: faultproxy.Arg(1, "b")} },
			do: func(ctx context.Context, t *testing.T, rdb, _ *redis.Client, _ string) error {
				_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					pipe.Set(ctx, "a", "1", 0)
					pipe.Set(ctx, "b", "2", 0)
					pipe.Set(ctx, "c", "3", 0)
					return nil
				})
				return err
			},
			ran: func(ctx context.Context, t *testing.T, direct *redis.Client) {
				assert.Equal(t, "1", direct.Get(ctx, "a").Val())
				assert.Equal(t, "2", direct.Get(ctx, "b").Val())
				assert.Zero(t, direct.Exists(ctx, "c").Val(), "a command after the cut one was forwarded")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p, direct := setup(t)
			sha, err := direct.ScriptLoad(ctx, incr).Result()
			require.NoError(t, err)
			rule := tt.rule(sha)
			rule.Action, rule.Times = faultproxy.CutAfterForward, 1
			f := p.Add(rule)
			rdb := client(t, p.Addr())
			require.NoError(t, rdb.Ping(ctx).Err())

			err = tt.do(ctx, t, rdb, direct, sha)
			require.Error(t, err, "the reply was cut")
			waitFor(t, f.Fired(1), "cut")
			tt.ran(ctx, t, direct)
			assert.Equal(t, 1, f.Matched())
			assert.False(t, f.Armed())
			require.NoError(t, rdb.Ping(ctx).Err(), "a new connection works")
		})
	}
}

func TestDrop(t *testing.T) {
	ctx := context.Background()
	p, direct := setup(t)
	f := p.Add(faultproxy.Rule{Command: "SET", Times: 1, Action: faultproxy.Drop})
	rdb := client(t, p.Addr())

	require.Error(t, rdb.Set(ctx, "k", "v", 0).Err())
	waitFor(t, f.Fired(1), "drop")
	assert.Zero(t, direct.Exists(ctx, "k").Val(), "a dropped command reached Redis")

	require.NoError(t, rdb.Set(ctx, "k", "v2", 0).Err(), "the rule disarmed after one match")
	assert.Equal(t, "v2", direct.Get(ctx, "k").Val())
}

func TestDelays(t *testing.T) {
	ctx := context.Background()
	t.Run("DelayReply outlasting the client's timeout: the command ran", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "INCR", Action: faultproxy.DelayReply(time.Hour)})
		rdb := client(t, p.Addr(), func(o *redis.Options) { o.ReadTimeout = 200 * time.Millisecond })

		err := rdb.Incr(ctx, "n").Err()
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout(), "want a read timeout, got %v", err)
		waitFor(t, f.Fired(1), "held reply")
		assert.Equal(t, "1", direct.Get(ctx, "n").Val())
	})
	t.Run("Delay outlasting the client's timeout: the command runs late", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "SET", Action: faultproxy.Delay(time.Second)})
		rdb := client(t, p.Addr(), func(o *redis.Options) { o.ReadTimeout = 100 * time.Millisecond })

		require.Error(t, rdb.Set(ctx, "k", "v", 0).Err())
		waitFor(t, f.Fired(1), "held command")
		require.Eventually(t, func() bool { return direct.Get(ctx, "k").Val() == "v" }, waitTimeout, 10*time.Millisecond,
			"the command the client gave up on still reaches Redis")
	})
	t.Run("a held command is discarded when the proxy cuts the connection", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "SET", Action: faultproxy.Delay(time.Hour)})
		rdb := client(t, p.Addr())
		set := goResult(func() error { return rdb.Set(ctx, "k", "v", 0).Err() })
		waitFor(t, f.Fired(1), "held command")
		p.CutAll()
		require.Error(t, result(t, set))
		require.Eventually(t, func() bool { return p.Conns() == 0 }, waitTimeout, 5*time.Millisecond)
		assert.Zero(t, direct.Exists(ctx, "k").Val())
	})
	for _, act := range []faultproxy.Action{faultproxy.Delay(20 * time.Millisecond), faultproxy.DelayReply(20 * time.Millisecond)} {
		t.Run(act.String()+" keeps a pipeline in order", func(t *testing.T) {
			p, _ := setup(t)
			f := p.Add(faultproxy.Rule{Command: "INCR", Action: act})
			rdb := client(t, p.Addr())
			var get1, get2 *redis.StringCmd
			var incr *redis.IntCmd
			_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, "n", 41, 0)
				get1 = pipe.Get(ctx, "n")
				incr = pipe.Incr(ctx, "n")
				get2 = pipe.Get(ctx, "n")
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, "41", get1.Val())
			assert.EqualValues(t, 42, incr.Val())
			assert.Equal(t, "42", get2.Val())
			assert.Equal(t, 1, f.Acted())
		})
	}
}

func TestStall(t *testing.T) {
	ctx := context.Background()
	p, direct := setup(t)
	rdb := client(t, p.Addr(), func(o *redis.Options) { o.PoolSize = 2 })
	require.NoError(t, rdb.Ping(ctx).Err()) // connected before the stall

	t.Run("commands are held", func(t *testing.T) {
		p.Stall(true)
		set := goResult(func() error { return rdb.Set(ctx, "k", "v", 0).Err() })
		require.Eventually(t, func() bool { return p.Held() == 1 }, waitTimeout, 5*time.Millisecond)
		assert.Zero(t, direct.Exists(ctx, "k").Val(), "a stalled command reached Redis")
		p.Stall(false)
		require.NoError(t, result(t, set))
		assert.Equal(t, "v", direct.Get(ctx, "k").Val())
		assert.Zero(t, p.Held())
	})
	t.Run("replies are held", func(t *testing.T) {
		moved := goResult(func() *redis.StringCmd { return rdb.BLMove(ctx, "src", "dst", "LEFT", "RIGHT", waitTimeout) })
		waitBlocked(t, direct, 1)
		p.Stall(true)
		require.NoError(t, direct.LPush(ctx, "src", "job").Err())
		require.Eventually(t, func() bool { return p.Held() == 1 }, waitTimeout, 5*time.Millisecond)
		assert.Equal(t, []string{"job"}, direct.LRange(ctx, "dst", 0, -1).Val(), "Redis ran the command")
		select {
		case m := <-moved:
			t.Fatalf("a stalled reply reached the client: %v", m)
		default:
		}
		p.Stall(false)
		m := result(t, moved)
		require.NoError(t, m.Err())
		assert.Equal(t, "job", m.Val())
	})
}

func TestDown(t *testing.T) {
	ctx := context.Background()
	p, _ := setup(t)
	rdb := client(t, p.Addr())
	require.NoError(t, rdb.Ping(ctx).Err())
	require.Equal(t, 1, p.Conns())

	p.Down(true)
	assert.Zero(t, p.Conns(), "connections were closed")
	require.Error(t, rdb.Ping(ctx).Err())
	// A new connection is accepted and closed at once.
	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write([]byte("PING\r\n"))
	if err == nil {
		_, err = bufio.NewReader(nc).ReadString('\n')
	}
	require.Error(t, err)

	p.Down(false)
	require.NoError(t, rdb.Ping(ctx).Err())
}

func TestSetUpstream(t *testing.T) {
	ctx := context.Background()
	a, b := redistest.Start(t), redistest.Start(t)
	p := faultproxy.Start(t, a.URL()) // a URL works as well as an address
	directA, directB := client(t, a.Addr()), client(t, b.Addr())
	rdb := client(t, p.Addr())
	require.NoError(t, rdb.Set(ctx, "k", "on a", 0).Err())
	cn := rdb.Conn()
	defer cn.Close()
	require.NoError(t, cn.Ping(ctx).Err())

	require.NoError(t, p.SetUpstream(b.Addr()))
	assert.Equal(t, b.Addr(), p.Upstream())
	require.Error(t, cn.Ping(ctx).Err(), "existing connections are cut")

	require.Eventually(t, func() bool { return errors.Is(rdb.Get(ctx, "k").Err(), redis.Nil) }, waitTimeout, 10*time.Millisecond,
		"new connections reach b, which has no k")
	require.NoError(t, rdb.Set(ctx, "k2", "on b", 0).Err())
	assert.Equal(t, "on b", directB.Get(ctx, "k2").Val())
	assert.Zero(t, directA.Exists(ctx, "k2").Val())
	assert.Equal(t, "on a", directA.Get(ctx, "k").Val())
}

func TestRules(t *testing.T) {
	ctx := context.Background()
	t.Run("disarms after Times", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "INCR", Times: 2, Action: faultproxy.Drop})
		rdb := client(t, p.Addr())
		require.Error(t, rdb.Incr(ctx, "n").Err())
		require.Error(t, rdb.Incr(ctx, "n").Err())
		require.NoError(t, rdb.Incr(ctx, "n").Err())
		assert.Equal(t, "1", direct.Get(ctx, "n").Val())
		assert.Equal(t, 2, f.Matched())
		assert.Equal(t, 2, f.Acted())
		assert.False(t, f.Armed())
		waitFor(t, f.Fired(2), "second drop")
	})
	t.Run("argument predicate", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "SET", Match: faultproxy.ArgContains("victim"), Action: faultproxy.Drop})
		rdb := client(t, p.Addr())
		require.NoError(t, rdb.Set(ctx, "bystander", "v", 0).Err())
		require.Error(t, rdb.Set(ctx, "the-victim", "v", 0).Err())
		require.Error(t, rdb.Set(ctx, "k", "a victim too", 0).Err()) // a value is an argument too
		assert.Equal(t, 2, f.Matched())
		assert.Zero(t, direct.Exists(ctx, "the-victim").Val())
	})
	t.Run("Remove", func(t *testing.T) {
		p, _ := setup(t)
		f := p.Add(faultproxy.Rule{Command: "GET", Action: faultproxy.Drop})
		rdb := client(t, p.Addr())
		require.Error(t, rdb.Get(ctx, "k").Err())
		assert.True(t, f.Armed())
		f.Remove()
		assert.False(t, f.Armed())
		require.ErrorIs(t, rdb.Get(ctx, "k").Err(), redis.Nil)
	})
	t.Run("the first matching rule acts", func(t *testing.T) {
		p, _ := setup(t)
		first := p.Add(faultproxy.Rule{Command: "PING", Times: 1, Action: faultproxy.Delay(time.Millisecond)})
		second := p.Add(faultproxy.Rule{Command: "PING", Action: faultproxy.Delay(time.Millisecond)})
		rdb := client(t, p.Addr())
		require.NoError(t, rdb.Ping(ctx).Err())
		require.NoError(t, rdb.Ping(ctx).Err())
		assert.Equal(t, 1, first.Matched())
		assert.Equal(t, 1, second.Matched())
	})
	t.Run("concurrent clients: a dropped command never runs", func(t *testing.T) {
		p, direct := setup(t)
		f := p.Add(faultproxy.Rule{Command: "INCR", Times: 50, Action: faultproxy.Drop})
		rdb := client(t, p.Addr(), func(o *redis.Options) { o.PoolSize = 8 })
		var ok, failed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 100 {
					if rdb.Incr(ctx, "n").Err() == nil {
						ok.Add(1)
					} else {
						failed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		assert.EqualValues(t, 50, failed.Load())
		assert.Equal(t, strconv.FormatInt(ok.Load(), 10), direct.Get(ctx, "n").Val())
		assert.Equal(t, 50, f.Matched())
	})
}

func TestInlineCommands(t *testing.T) {
	ctx := context.Background()
	p, direct := setup(t)
	f := p.Add(faultproxy.Rule{Command: "SET", Action: faultproxy.CutAfterForward})
	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer nc.Close()
	r := bufio.NewReader(nc)

	_, err = nc.Write([]byte("PING\r\n"))
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "+PONG\r\n", line)

	_, err = nc.Write([]byte("SET inline v\r\n"))
	require.NoError(t, err)
	_, err = r.ReadString('\n')
	require.ErrorIs(t, err, io.EOF, "the reply was cut")
	waitFor(t, f.Fired(1), "cut")
	assert.Equal(t, "v", direct.Get(ctx, "inline").Val())
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	direct := client(t, srv.Addr())
	p, err := faultproxy.New(srv.Addr())
	require.NoError(t, err)
	f := p.Add(faultproxy.Rule{Command: "SET", Action: faultproxy.Delay(time.Hour)})
	rdb := client(t, p.Addr(), func(o *redis.Options) { o.ReadTimeout = -1 }) // wait forever
	moved := goResult(func() error { return rdb.BLMove(ctx, "src", "dst", "LEFT", "RIGHT", 0).Err() })
	held := goResult(func() error { return rdb.Set(ctx, "k", "v", 0).Err() })
	waitBlocked(t, direct, 1)
	waitFor(t, f.Fired(1), "held SET")

	require.NoError(t, p.Close()) // returns although a command is held and one blocks
	require.Error(t, result(t, moved))
	require.Error(t, result(t, held))
	require.Error(t, rdb.Ping(ctx).Err())
}

// A client that gives up on a command waiting to be cut closes its
// connection to Redis too, so Redis cancels the blocked command instead of
// it taking an element long after.
func TestCutAfterForwardClientGivesUp(t *testing.T) {
	p, direct := setup(t)
	f := p.Add(faultproxy.Rule{Command: "BLMOVE", Action: faultproxy.CutAfterForward})
	nc, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	_, err = nc.Write([]byte("*6\r\n$6\r\nBLMOVE\r\n$3\r\nsrc\r\n$3\r\ndst\r\n$4\r\nLEFT\r\n$5\r\nRIGHT\r\n$1\r\n0\r\n"))
	require.NoError(t, err)
	waitBlocked(t, direct, 1)
	require.NoError(t, nc.Close())
	waitBlocked(t, direct, 0)
	assert.Equal(t, 1, f.Matched())
	assert.Zero(t, f.Acted(), "nothing was cut: Redis never answered")
}

// A replica can follow its primary through the proxy (the replication
// stream is copied, not parsed), and a stall makes it miss writes: the
// ingredient of a failover that loses recent writes.
func TestAReplicaFollowsThroughTheProxyAndAStallMakesItMissWrites(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t)
	p := faultproxy.Start(t, primary.Addr())
	ctx := context.Background()
	pc, rc := client(t, primary.Addr()), client(t, replica.Addr())
	require.NoError(t, pc.Set(ctx, "before", "1", 0).Err())
	host, port, _ := net.SplitHostPort(p.Addr())
	require.NoError(t, rc.Do(ctx, "REPLICAOF", host, port).Err())
	require.Eventually(t, func() bool { return rc.Get(ctx, "before").Val() == "1" }, waitTimeout, 10*time.Millisecond, "full sync through the proxy")
	require.NoError(t, pc.Set(ctx, "streamed", "1", 0).Err())
	require.Eventually(t, func() bool { return rc.Get(ctx, "streamed").Val() == "1" }, waitTimeout, 10*time.Millisecond, "the command stream")

	p.Stall(true)
	require.NoError(t, pc.Set(ctx, "missed", "1", 0).Err())
	require.NoError(t, rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	p.Stall(false)
	assert.Equal(t, redis.Nil, rc.Get(ctx, "missed").Err(), "the promoted replica missed the stalled write")
	assert.Equal(t, "1", rc.Get(ctx, "streamed").Val())
}
