package main

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff yields retry delays doubling from 100ms to 2s, with ±20% jitter
// so agents that lost Redis together do not come back in step.
type backoff struct{ n int }

const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 2 * time.Second
)

func (b *backoff) next() time.Duration {
	d := backoffMin << min(b.n, 10)
	d = min(d, backoffMax)
	b.n++
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (b *backoff) reset() { b.n = 0 }

// sleepCtx sleeps for d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
