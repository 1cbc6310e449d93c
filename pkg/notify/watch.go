package notify

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// At rest a worker sends nothing: the notifier watches for it. Every
// PollInterval one round trip per Redis node, whatever the number of pools
// and webhooks, finds the pools whose event stream moved (on a single
// Redis one XREAD of every stream after the last id seen, on a Cluster
// the last entry of each, pipelined), and only their workers read their
// groups. The notifier's own stream is not watched: only notifiers add to
// it (checkExpiring), and the one that adds wakes its workers. Every
// ClaimIdle/3 one pipeline reads the groups of every watched stream
// (checkGroups): only workers whose group has pending entries run
// XAUTOCLAIM, and a worker whose group lags behind its stream (a notice
// another replica queued, a change the watch missed) is woken. A worker
// still reads every SafetyPollInterval on its own, the last resort.

// byPool is the running workers of each pool.
func (n *Notifier) byPool() map[slots.PoolID][]*worker {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[slots.PoolID][]*worker{}
	for k, w := range n.workers {
		out[k.pool] = append(out[k.pool], w)
	}
	return out
}

// watchChunk: streams per XREAD (2 arguments each).
const watchChunk = 500

// watch wakes the workers of every pool whose event stream moved since the
// last watch (or was not seen yet).
func (n *Notifier) watch(ctx context.Context) {
	pools := n.byPool()
	for p := range n.lastIDs {
		if _, ok := pools[p]; !ok {
			delete(n.lastIDs, p)
		}
	}
	if len(pools) == 0 {
		return
	}
	look := n.moved(ctx, pools)
	if len(look) == 0 {
		return
	}
	pipe := n.rdb.Pipeline()
	cmds := make(map[slots.PoolID]*redis.XMessageSliceCmd, len(look))
	for _, p := range look {
		cmds[p] = pipe.XRevRangeN(ctx, n.store.EventStreamKey(p), "+", "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
		// Nobody is woken; checkGroups and the safety polls go on.
		n.log.Warn("reading the last events of the pools", "err", err)
	}
	for p, cmd := range cmds {
		msgs, err := cmd.Result()
		if err != nil {
			continue
		}
		last := ""
		if len(msgs) > 0 {
			last = msgs[0].ID
		}
		if seen, ok := n.lastIDs[p]; ok && seen == last {
			continue
		}
		n.lastIDs[p] = last
		for _, w := range pools[p] {
			w.wake()
		}
	}
}

// moved returns the pools whose last entry is to be read: on a single
// Redis, the pools not seen yet and those one XREAD of every known stream
// after its last id seen (one command per watchChunk pools) finds moved;
// on a Cluster, whose pools' keys are in different slots, every pool (one
// XREVRANGE each, pipelined: one round trip per node). XREAD misses a
// stream purged and started again below the last id seen; checkGroups
// catches that (its group is gone).
func (n *Notifier) moved(ctx context.Context, pools map[slots.PoolID][]*worker) []slots.PoolID {
	var look, known []slots.PoolID
	_, cluster := n.rdb.(*redis.ClusterClient)
	for p := range pools {
		if _, ok := n.lastIDs[p]; ok && !cluster {
			known = append(known, p)
		} else {
			look = append(look, p)
		}
	}
	if len(known) == 0 {
		return look
	}
	pipe := n.rdb.Pipeline()
	key := map[string]slots.PoolID{}
	var cmds []*redis.XStreamSliceCmd
	for start := 0; start < len(known); start += watchChunk {
		chunk := known[start:min(start+watchChunk, len(known))]
		args := make([]string, 2*len(chunk))
		for i, p := range chunk {
			k := n.store.EventStreamKey(p)
			key[k] = p
			args[i] = k
			args[len(chunk)+i] = n.lastIDs[p]
			if args[len(chunk)+i] == "" {
				args[len(chunk)+i] = "0-0"
			}
		}
		cmds = append(cmds, pipe.XRead(ctx, &redis.XReadArgs{Streams: args, Count: 1, Block: -1}))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil {
			n.log.Warn("reading the pools' new events", "err", err)
		}
		return look
	}
	for _, cmd := range cmds {
		streams, err := cmd.Result()
		if err != nil {
			continue
		}
		for _, st := range streams {
			if p, ok := key[st.Stream]; ok {
				look = append(look, p)
			}
		}
	}
	return look
}

// checkGroups reads the groups of every watched pool's two streams: a
// worker whose group holds pending entries is asked to claim what a dead
// replica left (XAUTOCLAIM takes only entries idle ClaimIdle); one whose
// group has entries not yet delivered (lag), or an unknown lag, or no group
// (a purged or expired stream: its read makes it again) is woken. This is
// what catches what watch cannot see, in one round trip.
func (n *Notifier) checkGroups(ctx context.Context) {
	pools := n.byPool()
	if len(pools) == 0 {
		return
	}
	pipe := n.rdb.Pipeline()
	type listing struct {
		pool slots.PoolID
		cmd  *redis.XInfoGroupsCmd
	}
	var lists []listing
	for p := range pools {
		for _, key := range []string{n.store.EventStreamKey(p), StreamKey(n.prefix, p)} {
			lists = append(lists, listing{p, pipe.XInfoGroups(ctx, key)})
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNoSuchKey(err) {
		if ctx.Err() == nil {
			n.log.Warn("reading the consumer groups of the pools", "err", err)
		}
		return // the workers' safety polls go on
	}
	type state struct {
		found         int // of the two streams
		pending, news bool
	}
	states := map[pairKey]*state{}
	for p, ws := range pools {
		for _, w := range ws {
			states[pairKey{p, w.group}] = &state{}
		}
	}
	for _, l := range lists {
		groups, err := l.cmd.Result()
		if err != nil {
			continue // no stream: no group either
		}
		for _, g := range groups {
			st, ok := states[pairKey{l.pool, g.Name}]
			if !ok {
				continue
			}
			st.found++
			st.pending = st.pending || g.Pending > 0
			st.news = st.news || g.Lag != 0
		}
	}
	for p, ws := range pools {
		for _, w := range ws {
			st := states[pairKey{p, w.group}]
			if st.pending {
				w.claimSoon()
			}
			if st.news || st.found < 2 {
				w.wake()
			}
		}
	}
}
