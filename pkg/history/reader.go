package history

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Reader reads pools' history (the dashboard). It needs only read access
// to the history keys.
type Reader struct {
	rdb    redis.UniversalClient
	prefix string
	layout Layout
}

// NewReader reads the history the recorders of the installation with this
// key prefix write under layout (DefaultLayout when zero).
func NewReader(rdb redis.UniversalClient, prefix string, layout Layout) *Reader {
	if prefix == "" {
		prefix = slots.DefaultPrefix
	}
	if layout == (Layout{}) {
		layout = DefaultLayout
	}
	return &Reader{rdb: rdb, prefix: prefix, layout: layout}
}

// Layout is the layout the reader reads.
func (r *Reader) Layout() Layout { return r.layout }

// Window returns the pool's samples of the window ending at now, oldest
// first: for Hour every sample, for Day one per coarse interval (the
// interval still being recorded is aggregated here, the way the record
// script will). One round trip.
func (r *Reader) Window(ctx context.Context, pool slots.PoolID, w Window, now time.Time) ([]Sample, error) {
	if err := pool.Validate(); err != nil {
		return nil, err
	}
	k := keysOf(r.prefix, pool)
	since := now.Add(-r.layout.Span(w))
	if w != Day {
		raw, err := r.rdb.LRange(ctx, k.fine, 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("reading the history of pool %s: %w", pool, err)
		}
		return decodeSince(pool, raw, since)
	}
	pipe := r.rdb.Pipeline()
	coarseCmd := pipe.LRange(ctx, k.coarse, 0, -1)
	fineCmd := pipe.LRange(ctx, k.fine, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("reading the history of pool %s: %w", pool, err)
	}
	// A coarse sample is stamped with its interval's start: kept while
	// some of its interval is in the window.
	out, err := decodeSince(pool, coarseCmd.Val(), since.Add(-r.layout.CoarseInterval))
	if err != nil {
		return nil, err
	}
	fine, err := decodeSince(pool, fineCmd.Val(), since)
	if err != nil {
		return nil, err
	}
	// The coarse list ends with the last complete interval; the fine
	// samples after it are grouped and combined here.
	step := r.layout.CoarseInterval
	var after time.Time
	if len(out) > 0 {
		after = out[len(out)-1].At
	}
	var group []Sample
	var bucket time.Time
	flush := func() {
		if len(group) > 0 {
			out = append(out, Combine(bucket, group))
			group = nil
		}
	}
	for _, s := range fine {
		b := time.UnixMilli(s.At.UnixMilli() / step.Milliseconds() * step.Milliseconds())
		if !after.IsZero() && !b.After(after) {
			continue
		}
		if !b.Equal(bucket) {
			flush()
			bucket = b
		}
		group = append(group, s)
	}
	flush()
	return out, nil
}

// Recent returns the newest n samples of each pool, oldest first: one
// pipeline (one round trip per Redis node) for all of them (the overview's
// sparklines). A pool without history has none.
func (r *Reader) Recent(ctx context.Context, pools []slots.PoolID, n int) (map[slots.PoolID][]Sample, error) {
	if n <= 0 || len(pools) == 0 {
		return map[slots.PoolID][]Sample{}, nil
	}
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(pools))
	for i, p := range pools {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		cmds[i] = pipe.LRange(ctx, keysOf(r.prefix, p).fine, int64(-n), -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("reading pool history: %w", err)
	}
	out := make(map[slots.PoolID][]Sample, len(pools))
	for i, p := range pools {
		s, err := decodeSince(p, cmds[i].Val(), time.Time{})
		if err != nil {
			return nil, err
		}
		out[p] = s
	}
	return out, nil
}

// decodeSince decodes the samples newer than since.
func decodeSince(pool slots.PoolID, raw []string, since time.Time) ([]Sample, error) {
	out := make([]Sample, 0, len(raw))
	for _, v := range raw {
		s, err := decode(v)
		if err != nil {
			return nil, fmt.Errorf("reading the history of pool %s: %w", pool, err)
		}
		if s.At.After(since) {
			out = append(out, s)
		}
	}
	return out, nil
}
