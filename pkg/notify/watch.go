package notify

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// At rest a worker sends nothing: the notifier watches for it. Every
// PollInterval one pipeline reads the last entry of every watched pool's
// event stream (one round trip per Redis node, whatever the number of
// pools and webhooks), and only the workers of a pool whose last entry
// changed read their groups. The notifier's own stream is not watched:
// only the notifiers add to it (checkExpiring), and the one that adds
// wakes its workers. Every ClaimIdle/3 one pipeline reads the groups of
// every watched stream (checkGroups): only workers whose group has pending
// entries run XAUTOCLAIM, and a worker whose group lags behind its stream
// (a notice another replica queued, a change watch missed) is woken. A
// worker still reads every SafetyPollInterval on its own, the last resort.

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
	pipe := n.rdb.Pipeline()
	cmds := make(map[slots.PoolID]*redis.XMessageSliceCmd, len(pools))
	for p := range pools {
		cmds[p] = pipe.XRevRangeN(ctx, n.store.EventStreamKey(p), "+", "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
		// Nobody is woken; the workers' safety polls go on.
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
	type state struct{ found, pending, news bool }
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
			st.found = true
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
			if st.news || !st.found {
				w.wake()
			}
		}
	}
}
