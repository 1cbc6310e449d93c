package notify

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Results of removing a removed webhook's consumer groups (the result
// label of slotscaler_notify_group_removals_total): bounded.
const (
	RemovalDestroyed = "destroyed" // both groups destroyed
	RemovalInUse     = "in_use"    // another notifier declared the webhook delivered within the grace: kept
	RemovalError     = "error"     // Redis failed; tried again at the next sweep
)

// DefaultGroupGrace: a webhook's groups are destroyed once it has been
// missing from this replica's configuration, and no replica has declared
// it delivered (its status header's seen), for this long.
const DefaultGroupGrace = 10 * time.Minute

// destroyGroupsLua destroys one webhook's groups on both streams of a pool,
// unless a notifier wrote the webhook's status header within the grace: a
// replica that still delivers the webhook (its config not rolled out yet,
// or another deployment's) rewrites it at least every grace/2 (see
// headerRefresh), so its groups stay. Checked and destroyed in one step,
// with the webhook's delivery status, so the pool page stops listing it.
// All keys carry the pool's hash tag.
// KEYS[1] the pool's event stream, KEYS[2] the notifier's stream of the
// pool, KEYS[3] the webhook's status (StatusKey), KEYS[4] the pool's set of
// webhooks (WebhooksKey)
// ARGV[1] the group, ARGV[2] the grace (ms), ARGV[3] the status's seen
// field, ARGV[4] the webhook's name
// Returns -1 when the webhook was seen delivered within the grace (nothing
// destroyed), else the number of pending entries dropped.
const destroyGroupsLua = `
local seen = tonumber(redis.call('HGET', KEYS[3], ARGV[3]))
if seen then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now - seen < tonumber(ARGV[2]) then return -1 end
end
local pending = 0
for k = 1, 2 do
  if redis.call('TYPE', KEYS[k]).ok == 'stream' then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[k])) do
      local name, p
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i+1] elseif g[i] == 'pending' then p = g[i+1] end
      end
      if name == ARGV[1] then
        pending = pending + p
        redis.call('XGROUP', 'DESTROY', KEYS[k], ARGV[1])
      end
    end
  end
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[4])
return pending
`

// groupRef is one webhook's groups on one pool.
type groupRef = pairKey

// ownGroup returns the webhook a group on a pool's streams belongs to when
// this replica may remove it: the notifier's naming (Group) around a name
// this replica would deliver if configured: a config-file webhook's, or,
// only when it reads AgentPools' declarations (Options.Secrets), a
// declared one's ("pool:<name>"). Any other group is another reader's.
func (n *Notifier) ownGroup(group string) (string, bool) {
	webhook, ok := strings.CutPrefix(group, Group(""))
	if !ok || webhook == "" {
		return "", false
	}
	if name, declared := strings.CutPrefix(webhook, PoolWebhookPrefix); declared {
		return webhook, n.opts.Secrets != nil && name != ""
	}
	return webhook, nameRE.MatchString(webhook)
}

// sweepGroups destroys the groups of webhooks no longer configured for a
// pool. configured holds what this replica's sync found for each pool;
// uncertain pools (a declaration or Secret that did not read) are skipped
// this time. A group is destroyed only once it has been missing from this
// replica's configuration for GroupGrace (as seen by this replica: a
// restart starts the clock again) and no notifier has written the
// webhook's status header for as long (destroyGroupsLua): during a
// rollout, a replica that still has the webhook keeps its groups; once
// every replica dropped it, they go. (Consumers' idle times cannot tell:
// before Redis 7.2 an empty XREADGROUP does not reset them, and a worker
// that never got an entry has no consumer at all.)
func (n *Notifier) sweepGroups(ctx context.Context, pools []slots.PoolID, configured map[groupRef]bool, uncertain map[slots.PoolID]bool) {
	now := time.Now()
	pipe := n.rdb.Pipeline()
	type listing struct {
		pool slots.PoolID
		cmd  *redis.XInfoGroupsCmd
	}
	var lists []listing
	for _, p := range pools {
		if uncertain[p] {
			continue
		}
		for _, key := range []string{n.store.EventStreamKey(p), StreamKey(n.prefix, p)} {
			lists = append(lists, listing{p, pipe.XInfoGroups(ctx, key)})
		}
	}
	if len(lists) == 0 {
		n.orphans = map[groupRef]time.Time{}
		return
	}
	// A stream that does not exist is an error of its own command: skipped.
	if _, err := pipe.Exec(ctx); err != nil && !isNoSuchKey(err) && ctx.Err() == nil {
		n.log.Warn("listing consumer groups of removed webhooks", "err", err)
	}
	seen := map[groupRef]bool{}
	for _, l := range lists {
		groups, err := l.cmd.Result()
		if err != nil {
			continue
		}
		for _, g := range groups {
			webhook, ok := n.ownGroup(g.Name)
			if !ok {
				continue
			}
			ref := groupRef{l.pool, webhook}
			if configured[ref] || seen[ref] {
				continue
			}
			seen[ref] = true
		}
	}
	orphans := map[groupRef]time.Time{}
	for ref := range seen {
		since, ok := n.orphans[ref]
		if !ok {
			since = now
		}
		orphans[ref] = since
		if now.Sub(since) < n.opts.GroupGrace {
			continue
		}
		if n.destroyGroups(ctx, ref) {
			delete(orphans, ref)
		}
	}
	n.orphans = orphans
}

// destroyGroups removes one removed webhook's groups; true when they are
// gone.
func (n *Notifier) destroyGroups(ctx context.Context, ref groupRef) bool {
	log := n.log.With("pool", ref.pool.String(), "webhook", ref.webhook)
	dropped, err := n.destroyScript.Run(ctx, n.rdb,
		[]string{n.store.EventStreamKey(ref.pool), StreamKey(n.prefix, ref.pool), StatusKey(n.prefix, ref.pool, ref.webhook),
			WebhooksKey(n.prefix, ref.pool)},
		Group(ref.webhook), n.opts.GroupGrace.Milliseconds(), fSeen, ref.webhook).Int64()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			n.metrics.groupRemovals.WithLabelValues(RemovalError).Inc()
			log.Warn("removing the consumer groups of a removed webhook", "err", err)
		}
		return false
	case dropped < 0:
		n.metrics.groupRemovals.WithLabelValues(RemovalInUse).Inc()
		log.Debug("kept the consumer groups of a webhook this replica does not deliver: another notifier delivers it")
		return false
	}
	n.metrics.groupRemovals.WithLabelValues(RemovalDestroyed).Inc()
	log.Info("removed the consumer groups of a removed webhook", "pending_dropped", dropped)
	return true
}

func isNoSuchKey(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && strings.Contains(err.Error(), "no such key")
}
