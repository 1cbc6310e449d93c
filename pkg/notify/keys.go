package notify

import (
	"strconv"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// keySpace is the notifier's namespace under the installation's prefix:
// outside the pools' own key spaces (see the package doc).
const keySpace = "notify:v1"

func base(prefix string, pool slots.PoolID) string {
	if prefix == "" {
		prefix = slots.DefaultPrefix
	}
	return prefix + ":" + keySpace + ":{" + pool.String() + "}:"
}

// StreamKey is the notifier's own stream of a pool (reservation-expiring).
func StreamKey(prefix string, pool slots.PoolID) string { return base(prefix, pool) + "ev" }

// SentKey marks that the expiring notice of one reservation (a task and its
// deadline) was queued.
func SentKey(prefix string, pool slots.PoolID, task string, deadlineMs int64) string {
	return base(prefix, pool) + "sent:" + task + ":" + strconv.FormatInt(deadlineMs, 10)
}

// WebhooksKey is the set of the names of the webhooks delivering a pool's events.
func WebhooksKey(prefix string, pool slots.PoolID) string { return base(prefix, pool) + "webhooks" }

// StatusKey is the delivery status of one webhook of a pool.
func StatusKey(prefix string, pool slots.PoolID, webhook string) string {
	return base(prefix, pool) + "wh:" + webhook
}

// Group is the consumer group of a webhook on a pool's streams. The prefix
// keeps it apart from any other reader's group on the pool's event stream.
func Group(webhook string) string { return "notify:" + webhook }
