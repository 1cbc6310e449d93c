package kube

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/faultproxy"
	"github.com/slotscaler/slotscaler/internal/redistest"
)

// The components of a fault run, each reaching Redis through its own proxy
// so a fault can hit one at a time.
const (
	compJanitor = "janitor"
	compAgents  = "agents"
	compScaler  = "scaler"
	compDriver  = "driver" // the platform: submits, approves (and the checks' last look)
)

var components = []string{compJanitor, compAgents, compScaler, compDriver}

// faultRedis is a primary with AOF and a replica that replicates through a
// proxy of its own (so it can be made to miss writes), behind one proxy per
// component. A failover promotes the replica and points every proxy at it;
// the old primary becomes the new replica.
type faultRedis struct {
	t       testing.TB
	mu      sync.Mutex
	primary *redistest.Server
	replica *redistest.Server
	repl    *faultproxy.Proxy // the replica's link to the primary
	proxies map[string]*faultproxy.Proxy
}

func startFaultRedis(t testing.TB) *faultRedis {
	t.Helper()
	f := &faultRedis{t: t, proxies: map[string]*faultproxy.Proxy{}}
	f.primary = redistest.Start(t, redistest.WithAppendOnly())
	f.replica = redistest.Start(t, redistest.WithAppendOnly())
	f.repl = faultproxy.Start(t, f.primary.Addr())
	for _, c := range components {
		f.proxies[c] = faultproxy.Start(t, f.primary.Addr())
	}
	f.follow(f.replica)
	return f
}

func (f *faultRedis) client(s *redistest.Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
}

// follow makes s a replica of the primary, through the replication proxy.
func (f *faultRedis) follow(s *redistest.Server) {
	f.t.Helper()
	host, port, err := net.SplitHostPort(f.repl.Addr())
	require.NoError(f.t, err)
	c := f.client(s)
	defer c.Close()
	require.NoError(f.t, c.Do(context.Background(), "REPLICAOF", host, port).Err())
}

// do runs one command on the current primary, directly.
func (f *faultRedis) do(args ...any) error {
	f.mu.Lock()
	p := f.primary
	f.mu.Unlock()
	c := f.client(p)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Err()
}

// restart crashes the primary and starts it again (AOF with fsync always:
// nothing is lost).
func (f *faultRedis) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.primary.Kill(f.t)
	f.primary.Restart(f.t)
}

// wipe restarts the primary without its data (a disk lost, a restart with
// no persistence): everything is gone, the replica resyncs to nothing.
func (f *faultRedis) wipe() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.primary.Wipe(f.t)
}

// failover makes the replica miss the writes of the last stall, promotes
// it and sends every component to it: an asynchronous failover that loses
// recent writes. The old primary then follows the new one.
func (f *faultRedis) failover(stall time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.repl.Stall(true)
	time.Sleep(stall) // writes reach the primary, not the replica
	c := f.client(f.replica)
	err := c.Do(context.Background(), "REPLICAOF", "NO", "ONE").Err()
	c.Close()
	require.NoError(f.t, err, "promoting the replica")
	for _, p := range f.proxies {
		require.NoError(f.t, p.SetUpstream(f.replica.Addr()))
	}
	f.repl.Stall(false)
	f.primary, f.replica = f.replica, f.primary
	require.NoError(f.t, f.repl.SetUpstream(f.primary.Addr()))
	f.follow(f.replica)
}

// heal removes every fault from every proxy.
func (f *faultRedis) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.proxies {
		p.Clear()
	}
	f.repl.Clear()
}

func (f *faultRedis) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("primary %s, replica %s", f.primary.Addr(), f.replica.Addr())
}
