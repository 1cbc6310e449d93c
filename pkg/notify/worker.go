package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// worker delivers one webhook's events of one pool: one goroutine, so a
// receiver that is down or slow holds back only its own queue.
type worker struct {
	n       *Notifier
	pool    slots.PoolID
	wh      Webhook
	streams []string // the pool's event stream, the notifier's own
	group   string
	log     *slog.Logger
	ctx     context.Context
	stop    context.CancelFunc
	done    chan struct{} // closed when run returned
	// news: the pool's stream moved (watch) or a notice was queued; claims:
	// a group holds pending entries (checkPending). Buffered by one: a
	// signal while the worker is busy is kept, and one is enough.
	news   chan struct{}
	claims chan struct{}
	// used: the group was read at least once; when it is then missing the
	// stream was purged (pool deleted and declared again, Redis lost its
	// data) and everything in the new stream is news (start "0").
	used bool
}

func (n *Notifier) newWorker(ctx context.Context, p pair) *worker {
	ctx, cancel := context.WithCancel(ctx)
	wh := p.wh
	return &worker{
		n: n, pool: p.pool, wh: wh, group: Group(wh.Name),
		streams: []string{n.store.EventStreamKey(p.pool), StreamKey(n.prefix, p.pool)},
		log:     n.log.With("pool", p.pool.String(), "webhook", wh.Name, "host", wh.Host()),
		ctx:     ctx, stop: cancel, done: make(chan struct{}),
		news: make(chan struct{}, 1), claims: make(chan struct{}, 1),
	}
}

// wake has the worker read its groups.
func (w *worker) wake() {
	select {
	case w.news <- struct{}{}:
	default:
	}
}

// claimSoon has the worker take over what a dead replica left pending.
func (w *worker) claimSoon() {
	select {
	case w.claims <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	ctx := w.ctx
	// First this consumer's own pending entries (id "0"): a replica
	// restarted under the same name resumes them at once.
	pending := true
	// Claim once at start (a replica that died before this one started
	// left its entries), then when checkPending asks.
	claim := true
	for ctx.Err() == nil {
		if claim {
			claim = false
			w.claim(ctx)
		}
		id := ">"
		if pending {
			id = "0"
		}
		res, err := w.n.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: w.group, Consumer: w.n.opts.Consumer,
			Streams: []string{w.streams[0], w.streams[1], id, id}, Count: 16, Block: -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return
			}
			if strings.HasPrefix(err.Error(), "NOGROUP") {
				if _, _, perr := w.n.store.Pool(ctx, w.pool); errors.Is(perr, slots.ErrPoolNotFound) {
					// The pool was deleted (its stream with it): no stream
					// is made again; the next sync stops this worker.
					w.sleep(ctx, w.n.opts.PollInterval)
					continue
				}
				start := "$"
				if w.used {
					start = "0"
				}
				if err := w.n.ensureGroups(ctx, w.pool, w.wh.Name, start); err != nil {
					w.log.Warn("recreating consumer groups", "err", err)
				}
			} else {
				w.log.Warn("reading pool events", "err", err)
			}
			w.sleep(ctx, w.n.opts.PollInterval)
			continue
		}
		w.used = true
		got := 0
		for _, s := range res {
			for _, m := range s.Messages {
				got++
				w.handle(ctx, s.Stream, m)
			}
		}
		if got == 0 {
			if pending {
				pending = false
				continue
			}
			claim = w.idle(ctx)
		}
	}
}

// idle waits for news, a claim request or the safety poll (jittered, so
// workers started together do not poll together); true when asked to claim.
func (w *worker) idle(ctx context.Context) bool {
	safety := w.n.opts.SafetyPollInterval
	t := time.NewTimer(safety/2 + rand.N(safety/2+1))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-w.news:
	case <-w.claims:
		return true
	case <-t.C:
	}
	return false
}

// claim takes over the entries another consumer left pending longer than
// ClaimIdle (its replica died mid-delivery) and delivers them.
func (w *worker) claim(ctx context.Context) {
	for _, stream := range w.streams {
		start := "0-0"
		for ctx.Err() == nil {
			msgs, next, err := w.n.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: stream, Group: w.group, Consumer: w.n.opts.Consumer,
				MinIdle: w.n.opts.ClaimIdle, Start: start, Count: 16,
			}).Result()
			if err != nil {
				if ctx.Err() == nil && !strings.HasPrefix(err.Error(), "NOGROUP") {
					w.log.Warn("claiming pending events", "err", err)
				}
				break
			}
			if len(msgs) > 0 {
				w.log.Info("took over pending events", "count", len(msgs))
			}
			for _, m := range msgs {
				w.handle(ctx, stream, m)
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
	}
}

// handle delivers one entry (or only acknowledges it when the webhook does
// not want it). On return the entry is acknowledged, except when ctx ended:
// then it stays pending for this consumer's restart or another replica.
func (w *worker) handle(ctx context.Context, stream string, m redis.XMessage) {
	p, ok := w.payload(ctx, stream, m)
	if !ok {
		w.ack(ctx, stream, m.ID, nil)
		return
	}
	body, err := p.Body(w.wh.Format)
	if err != nil { // cannot happen with these types; never retry it
		w.log.Error("rendering webhook body", "event_id", p.ID, "err", err)
		w.ack(ctx, stream, m.ID, nil)
		return
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval: w.wh.InitialBackoff, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: w.wh.MaxBackoff,
	}
	b.Reset()
	first := time.Now()
	for attempt := 1; ; attempt++ {
		if attempt > 1 && !w.touch(ctx, stream, m.ID) {
			return // another replica took it over (ours looked dead) or ctx ended
		}
		err := w.post(ctx, p, body)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			w.ack(ctx, stream, m.ID, func(pipe redis.Pipeliner, key string) {
				pipe.HIncrBy(ctx, key, fDelivered, 1)
				pipe.HSet(ctx, key, fLastOK, ms(time.Now()), fConsecutive, 0)
			})
			w.log.Debug("delivered", "event", p.Event, "event_id", p.ID, "task", p.Task, "attempt", attempt)
			return
		}
		if attempt >= w.wh.MaxAttempts || time.Since(first) >= w.wh.MaxAge {
			w.n.metrics.deadLetters.WithLabelValues(w.pool.String(), w.wh.Name).Inc()
			w.log.Error("webhook delivery given up: dead letter", "event", p.Event, "event_id", p.ID, "task", p.Task,
				"attempts", attempt, "err", err)
			w.ack(ctx, stream, m.ID, func(pipe redis.Pipeliner, key string) {
				pipe.HIncrBy(ctx, key, fDead, 1)
				pipe.HIncrBy(ctx, key, fConsecutive, 1)
				pipe.HSet(ctx, key, fLastFail, ms(time.Now()), fLastErr, err.Error(), fLastDead, ms(time.Now()), fLastDeadID, p.ID)
			})
			return
		}
		wait := b.NextBackOff()
		w.log.Warn("webhook delivery failed; retrying", "event", p.Event, "event_id", p.ID, "attempt", attempt, "retry_in", wait, "err", err)
		w.status(ctx, func(pipe redis.Pipeliner, key string) {
			pipe.HIncrBy(ctx, key, fConsecutive, 1)
			pipe.HSet(ctx, key, fLastFail, ms(time.Now()), fLastErr, err.Error())
		})
		// Sleep in steps, touching the entry, so a long back-off is not
		// mistaken for a dead replica.
		for deadline := time.Now().Add(wait); ctx.Err() == nil; {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			w.sleep(ctx, min(left, w.n.opts.ClaimIdle/3))
			if time.Until(deadline) > 0 && !w.touch(ctx, stream, m.ID) {
				return
			}
		}
	}
}

// payload builds the body of an entry; false when the webhook does not
// want it (pod events, queued, running, cancelled…, kinds not subscribed).
func (w *worker) payload(ctx context.Context, stream string, m redis.XMessage) (Payload, bool) {
	f := func(k string) string { s, _ := m.Values[k].(string); return s }
	atMs, _ := strconv.ParseInt(f("at"), 10, 64)
	p := Payload{Pool: w.pool.String(), Task: f("task"), At: time.UnixMilli(atMs).UTC()}
	if p.Task == "" {
		return p, false
	}
	if stream == w.streams[0] {
		p.Event = eventOf(f("st"))
		p.State, p.Reason = f("st"), f("reason")
		// The entry's id restarts at 0-1 when the stream is purged; with
		// its time it names the event for good.
		p.ID = w.pool.String() + "/" + strings.TrimPrefix(m.ID, "0-") + "-" + f("at")
	} else {
		p.Event = f("event")
		p.State = string(slots.StateReserved)
		dl, _ := strconv.ParseInt(f("deadline"), 10, 64)
		d := time.UnixMilli(dl).UTC()
		p.Deadline = &d
		p.ID = w.pool.String() + "/" + p.Event + "-" + p.Task + "-" + f("deadline")
	}
	if p.Event == "" || !w.wh.Wants(p.Event) {
		return p, false
	}
	p.URL = TaskURL(w.n.cfg.DashboardURL, w.pool, p.Task)
	if t, err := w.n.store.Task(ctx, w.pool, p.Task); err == nil {
		p.Type = string(t.Type)
	} else if !errors.Is(err, slots.ErrTaskNotFound) {
		w.log.Debug("reading the event's task", "task", p.Task, "err", err)
	}
	if p.Event == EventAwaitingApproval {
		if rs, _, err := w.n.store.Reservations(ctx, w.pool); err == nil {
			for _, r := range rs {
				if r.Task == p.Task {
					d := r.Until.UTC()
					p.Deadline = &d
				}
			}
		}
	}
	return p, true
}

// post makes one attempt. Its error never holds the URL (url.Error's
// message does: Slack's URLs carry their credential in the path).
func (w *worker) post(ctx context.Context, p Payload, body []byte) error {
	actx, cancel := context.WithTimeout(ctx, w.wh.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, w.wh.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("building the request failed") // the URL was checked at load; never quote it
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "slotscaler-notify")
	req.Header.Set(EventIDHeader, p.ID)
	req.Header.Set(EventHeader, p.Event)
	if len(w.wh.SigningSecret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.wh.SigningSecret, body, time.Now()))
	}
	start := time.Now()
	resp, err := w.n.opts.Client.Do(req)
	w.n.metrics.duration.WithLabelValues(w.pool.String(), w.wh.Name).Observe(time.Since(start).Seconds())
	result := ResultSuccess
	defer func() { w.n.metrics.deliveries.WithLabelValues(w.pool.String(), w.wh.Name, result).Inc() }()
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		result = ResultNetworkError
		if errors.Is(err, context.DeadlineExceeded) || (ue != nil && ue.Timeout()) {
			result = ResultTimeout
			return fmt.Errorf("POST %s: no answer within %v", w.wh.Host(), w.wh.Timeout)
		}
		return fmt.Errorf("POST %s: %s", w.wh.Host(), redact(err.Error(), w.wh.URL))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		result = ResultHTTPError
		return fmt.Errorf("POST %s: %s", w.wh.Host(), resp.Status)
	}
	return nil
}

// redact removes the URL, should an error quote it after all.
func redact(msg, u string) string {
	if u == "" {
		return msg
	}
	return strings.ReplaceAll(msg, u, "<url>")
}

// touch resets the entry's idle time (XCLAIM to this consumer), so no
// other replica takes over an entry being retried. False when ctx ended or
// the entry is no longer this consumer's: another replica took it over
// (ours looked dead) or acknowledged it; that one delivers it.
func (w *worker) touch(ctx context.Context, stream, id string) bool {
	pend, err := w.n.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: w.group, Start: id, End: id, Count: 1,
	}).Result()
	if err != nil {
		return ctx.Err() == nil // Redis down: keep trying to deliver; the ack will tell
	}
	if len(pend) == 0 || pend[0].Consumer != w.n.opts.Consumer {
		return false
	}
	err = w.n.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: stream, Group: w.group, Consumer: w.n.opts.Consumer, MinIdle: 0, Messages: []string{id},
	}).Err()
	return err == nil || ctx.Err() == nil
}

// ack acknowledges an entry and updates the status in one transaction.
func (w *worker) ack(ctx context.Context, stream, id string, update func(redis.Pipeliner, string)) {
	pipe := w.n.rdb.TxPipeline()
	pipe.XAck(ctx, stream, w.group, id)
	if update != nil {
		key := StatusKey(w.n.prefix, w.pool, w.wh.Name)
		update(pipe, key)
		pipe.Expire(ctx, key, StatusTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
		// Left pending: delivered again after ClaimIdle (at least once).
		w.log.Warn("acknowledging event", "entry", id, "err", err)
	}
}

func (w *worker) status(ctx context.Context, update func(redis.Pipeliner, string)) {
	pipe := w.n.rdb.TxPipeline()
	key := StatusKey(w.n.prefix, w.pool, w.wh.Name)
	update(pipe, key)
	pipe.Expire(ctx, key, StatusTTL)
	if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
		w.log.Warn("writing webhook status", "err", err)
	}
}

func (w *worker) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
