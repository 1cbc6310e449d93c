package main

import (
	"context"
	"log/slog"
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

// retrier is the state of one store call the agent repeats until it
// succeeds: its backoff, and whether it is failing. A call that fails for
// minutes (Redis down) logs one warning when it starts failing and one line
// when it works again, not a line per attempt.
type retrier struct {
	log *slog.Logger
	m   *metrics // nil: failures are not counted
	op  string   // the call: redis_errors_total's op label, and named in debug lines
	// warn is logged, with attrs and the error, at the first failure of a
	// run of failures; without it every failure is a debug line.
	warn  string
	attrs []any
	// again is logged at the first success after failures, if set.
	again string

	bo      backoff
	failing bool
}

// failed counts a failure and logs it if it starts a run of failures.
func (r *retrier) failed(err error) {
	if r.m != nil {
		r.m.redisErrors.WithLabelValues(r.op).Inc()
	}
	switch {
	case r.warn == "":
		r.log.Debug("retrying", "op", r.op, "err", err)
	case !r.failing:
		r.log.Warn(r.warn, append([]any{"err", err}, r.attrs...)...)
	}
	r.failing = true
}

// succeeded ends a run of failures: the next failure is logged again and
// waits the shortest delay.
func (r *retrier) succeeded() {
	if r.failing && r.again != "" {
		r.log.Info(r.again)
	}
	r.failing = false
	r.bo.reset()
}

// pause waits before the next attempt; false when ctx ended first.
func (r *retrier) pause(ctx context.Context) bool { return sleepCtx(ctx, r.bo.next()) }

// lateError is a retried call's last error once the deadline passed.
type lateError struct{ last error }

func (e lateError) Error() string { return "deadline passed: " + e.last.Error() }
func (e lateError) Unwrap() error { return e.last }

// do calls fn until it returns nil, or an error final says a retry will not
// change (returned as is), or ctx ends (fn's last error, or ctx's if it
// ended between attempts), or until passes (zero: never) after a failure
// (a lateError wrapping it).
func (r *retrier) do(ctx context.Context, until time.Time, final func(error) bool, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			r.succeeded()
			return nil
		}
		if final(err) || ctx.Err() != nil {
			return err
		}
		if !until.IsZero() && time.Now().After(until) {
			return lateError{err}
		}
		r.failed(err)
		if !r.pause(ctx) {
			return ctx.Err()
		}
	}
}

// storeCall runs one store call under --redis-timeout.
func (a *agent) storeCall(ctx context.Context, call func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.RedisTimeout)
	defer cancel()
	return call(cctx)
}

// retryStore repeats a store call until it succeeds, the store answers no,
// or ctx ends.
func (a *agent) retryStore(ctx context.Context, op string, call func(ctx context.Context) error) error {
	r := retrier{log: a.log, m: a.m, op: op}
	return r.do(ctx, time.Time{}, refused, func() error { return a.storeCall(ctx, call) })
}
