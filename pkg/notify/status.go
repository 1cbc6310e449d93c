package notify

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// StatusTTL: the status of a webhook lives this long after its last write.
// The notifier writes it at least every HeaderRefresh while the webhook is
// configured, so the status of a removed webhook goes by itself.
const StatusTTL = 24 * time.Hour

// Fields of a status hash.
const (
	fHost        = "host"
	fFormat      = "format"
	fEvents      = "events"
	fSeen        = "seen" // the notifier's last sync (ms)
	fDelivered   = "delivered"
	fDead        = "dead_letters"
	fConsecutive = "consecutive_failures"
	fLastOK      = "last_success"
	fLastFail    = "last_failure"
	fLastErr     = "last_error"
	fLastDead    = "last_dead_letter"
	fLastDeadID  = "last_dead_letter_event"
)

// Status is the delivery status of one webhook of a pool, as the dashboard
// shows it. It holds the receiver's host, never its URL nor any secret.
type Status struct {
	Webhook             string    `json:"webhook"`
	Host                string    `json:"host"`
	Format              string    `json:"format"`
	Events              []string  `json:"events"`
	Seen                time.Time `json:"seen"`
	Delivered           int64     `json:"delivered"`
	DeadLetters         int64     `json:"dead_letters"`
	ConsecutiveFailures int64     `json:"consecutive_failures"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastFailure         time.Time `json:"last_failure,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	LastDeadLetter      time.Time `json:"last_dead_letter,omitzero"`
	LastDeadLetterEvent string    `json:"last_dead_letter_event,omitempty"`
}

// Failing reports whether the last attempt failed.
func (s Status) Failing() bool { return s.ConsecutiveFailures > 0 }

// ReadStatus reads the status of every webhook of a pool, by name: two
// round trips, read-only. A pool without webhooks has none (no error).
func ReadStatus(ctx context.Context, rdb redis.UniversalClient, prefix string, pool slots.PoolID) ([]Status, error) {
	names, err := rdb.SMembers(ctx, WebhooksKey(prefix, pool)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading webhooks of pool %s: %w", pool, err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	slices.Sort(names)
	pipe := rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(names))
	for i, n := range names {
		cmds[i] = pipe.HGetAll(ctx, StatusKey(prefix, pool, n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading webhook status of pool %s: %w", pool, err)
	}
	var out []Status
	for i, n := range names {
		h := cmds[i].Val()
		if len(h) == 0 {
			continue // expired: the webhook is no longer configured
		}
		out = append(out, Status{
			Webhook: n, Host: h[fHost], Format: h[fFormat], Events: splitList(h[fEvents]),
			Seen: msField(h[fSeen]), Delivered: intField(h[fDelivered]), DeadLetters: intField(h[fDead]),
			ConsecutiveFailures: intField(h[fConsecutive]), LastSuccess: msField(h[fLastOK]),
			LastFailure: msField(h[fLastFail]), LastError: h[fLastErr],
			LastDeadLetter: msField(h[fLastDead]), LastDeadLetterEvent: h[fLastDeadID],
		})
	}
	return out, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func intField(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func msField(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// StatusReader reads the webhooks' delivery status of pools (the
// dashboard's pool page and API).
type StatusReader struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewStatusReader reads the status under the installation's prefix.
func NewStatusReader(rdb redis.UniversalClient, prefix string) *StatusReader {
	return &StatusReader{rdb: rdb, prefix: prefix}
}

// Read reads the status of every webhook of a pool (ReadStatus).
func (r *StatusReader) Read(ctx context.Context, pool slots.PoolID) ([]Status, error) {
	return ReadStatus(ctx, r.rdb, r.prefix, pool)
}
