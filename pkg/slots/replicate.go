package slots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated means a write was applied on the primary but no replica
// acknowledged it in time: a failover now could lose it.
var ErrNotReplicated = errors.New("write not acknowledged by a replica")

// DrainReplicated drains a pod like Drain and, when the Redis primary has
// replicas, waits (WAIT) until they acknowledged the drain (see
// replicatedRun for how many), so a failover
// right after cannot bring the pod back to active while its pod object is
// being deleted. It reports how many replicas acknowledged (0 when none
// are needed). ErrNotReplicated: the drain stands on the primary but reached no
// replica within wait; the caller must not delete the pod yet (draining again
// is idempotent).
//
// WAIT covers the writes of the connection it runs on, so the drain and the
// WAIT share one connection. Cluster clients are not covered: their WAIT
// cannot be routed to the pool's node through go-redis, so there the drain
// is as durable as the cluster's asynchronous replication.
func (s *Store) DrainReplicated(ctx context.Context, pool PoolID, pod, uid string, wait time.Duration) (int, error) {
	if err := validatePod(pod, uid); err != nil {
		return 0, err
	}
	_, acked, err := s.replicatedRun(ctx, wait, "drain", pool, pod, uid)
	if err != nil {
		return 0, fmt.Errorf("draining pod %s in %s: %w", pod, pool, err)
	}
	return acked, nil
}

// connectedReplicas reads connected_slaves from INFO replication. A pool's
// Redis user may run INFO with the replication section first and nothing
// else of @dangerous (PoolACL): WAIT 0 0 cannot stand in for it, since it
// counts only the replicas that acknowledged the master's offset at the
// connection's previous command, so under writes it answers 0 while
// replicas stream, and claims would skip the wait exactly when it matters.
func connectedReplicas(ctx context.Context, c *redis.Client) (int, error) {
	info, err := c.Info(ctx, "replication").Result()
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(rerr.Error(), "not supported") {
		// The server has no replication section (the embedded miniredis):
		// it has no replicas either. Any other error reply (WRONGPASS while
		// the janitor has not set a pool's user again, NOPERM, LOADING) is
		// no answer: read as "no replicas" and cached, it would let claims
		// skip their WAIT for a second, and a failover then could lose them.
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, nil
}

// replicatedRun runs a script and, when the primary has replicas, waits
// (WAIT) until enough of them acknowledged it, on the same connection (WAIT
// covers that connection's writes). A claim is made durable this way before
// its phase starts: an asynchronous failover that lost it would otherwise
// hand the same phase out again while it runs — a plan twice at once, an
// apply twice. The script's writes stand on the primary either way;
// ErrNotReplicated says no replica has them yet (the caller retries: claim
// and drain are idempotent). acked is how many replicas acknowledged (0
// when none are needed). Cluster clients run the script as is: go-redis
// cannot route WAIT to the pool's node.
//
// How many must acknowledge is replicaCount's answer, and it does not drop
// to none when the replicas do: a primary restarted a moment ago, or
// promoted a moment ago, has no replica connected until its old one
// reconnects, and a claim it took alone in that gap is lost if it fails
// over before the replica caught up (found by the fault soak, seed
// 20261209: a restarted primary took an apply's claim unacknowledged,
// failed over, and the task planned and applied again on another pod).
func (s *Store) replicatedRun(ctx context.Context, wait time.Duration, name string, pool PoolID, args ...any) (res any, acked int, err error) {
	client, ok := s.rdb.(*redis.Client)
	if !ok {
		res, err = s.run(ctx, name, pool, args...)
		return res, 0, err
	}
	need, err := s.replicas.need(ctx, client)
	if err != nil {
		return nil, 0, fmt.Errorf("reading replication info: %w", err)
	}
	if need == 0 {
		res, err = s.run(ctx, name, pool, args...)
		return res, 0, err
	}
	if err := pool.Validate(); err != nil {
		return nil, 0, err
	}
	conn := client.Conn()
	defer conn.Close()
	res, err = s.scripts[name].Run(ctx, conn, []string{s.cfgKey(pool)}, args...).Result()
	if errors.Is(err, redis.Nil) {
		res, err = nil, nil
	}
	if err != nil {
		return nil, 0, mapScriptError(err)
	}
	n, err := conn.Wait(ctx, need, wait).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("waiting for a replica: %w", err)
	}
	if n < int64(need) {
		return nil, 0, fmt.Errorf("%w (%d of %d acknowledged within %v)", ErrNotReplicated, n, need, wait)
	}
	return res, int(n), nil
}

// replicaCount decides how many replicas must acknowledge a write. Fixed
// (Options.ReplicaAcks) it is that number. Automatic it is one from the
// first time the primary reports a replica connected (INFO replication,
// read at most once a second until then), for the life of the Store: a
// replica seen once is a deployment with replicas, and a moment without
// one (a restart, a failover, a replica resyncing) is exactly when a write
// taken alone can be lost.
type replicaCount struct {
	fixed int
	mu    sync.Mutex
	seen  bool
	until time.Time
}

func (r *replicaCount) need(ctx context.Context, c *redis.Client) (int, error) {
	if r.fixed > 0 {
		return r.fixed, nil
	}
	r.mu.Lock()
	if r.seen || time.Now().Before(r.until) {
		seen := r.seen
		r.mu.Unlock()
		if seen {
			return 1, nil
		}
		return 0, nil
	}
	r.mu.Unlock()
	n, err := connectedReplicas(ctx, c)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = r.seen || n > 0
	r.until = time.Now().Add(time.Second)
	if r.seen {
		return 1, nil
	}
	return 0, nil
}
