package notify

import (
	"context"
	"strconv"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// queueExpiringLua queues one reservation-expiring notice, once: the
// marker (SET NX, living until after the deadline) and the entry are
// written together, so replicas checking at the same time queue it once
// and a crash between the two cannot lose it.
// KEYS[1] the marker (SentKey), KEYS[2] the notifier's stream of the pool
// ARGV[1] marker TTL (ms), ARGV[2] task, ARGV[3] deadline (ms), ARGV[4] now (ms), ARGV[5] stream TTL (ms)
const queueExpiringLua = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'event', 'reservation-expiring', 'task', ARGV[2], 'deadline', ARGV[3], 'at', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
`

// streamTTL: the notifier's own stream of a pool goes this long after its
// last notice (a deleted pool's goes by itself).
const streamTTL = 7 * 24 * time.Hour

// checkExpiring queues reservation-expiring for every reservation of a
// pool some webhook wants it for, once it ends within the lead time.
func (n *Notifier) checkExpiring(ctx context.Context) {
	if n.cfg.ExpiringLead <= 0 {
		return
	}
	n.mu.Lock()
	seen := map[slots.PoolID]bool{}
	var pools []slots.PoolID
	for k, w := range n.workers {
		if !seen[k.pool] && w.wh.Wants(EventReservationExpiring) {
			seen[k.pool] = true
			pools = append(pools, k.pool)
		}
	}
	n.mu.Unlock()
	if len(pools) == 0 {
		return
	}
	rs, now, err := n.store.Reservations(ctx, pools...)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("checking reservations for reservation-expiring", "err", err)
		}
		return
	}
	for _, r := range rs {
		left := r.Until.Sub(now)
		if left <= 0 || left > n.cfg.ExpiringLead {
			continue
		}
		dl := r.Until.UnixMilli()
		ttl := left + time.Hour
		queued, err := n.script.Run(ctx, n.rdb, []string{SentKey(n.prefix, r.Pool, r.Task, dl), StreamKey(n.prefix, r.Pool)},
			ttl.Milliseconds(), r.Task, strconv.FormatInt(dl, 10), now.UnixMilli(), streamTTL.Milliseconds()).Int64()
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("queueing reservation-expiring", "pool", r.Pool.String(), "task", r.Task, "err", err)
			}
			continue
		}
		if queued == 1 {
			// Nobody watches this stream: the replica that queued the
			// notice wakes its workers (the others' read it at their
			// safety poll, if this one's have not delivered it by then).
			n.mu.Lock()
			for k, w := range n.workers {
				if k.pool == r.Pool {
					w.wake()
				}
			}
			n.mu.Unlock()
		}
	}
}
