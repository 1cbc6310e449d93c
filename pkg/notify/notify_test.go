package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var signingSecret = []byte("sig-secret-do-not-log")

// receiver is a real HTTP receiver: it verifies every request's signature
// with Verify and records what it accepted. respond decides each answer
// (nil: 204); it gets the request number (1-based).
type receiver struct {
	t   testing.TB
	srv *httptest.Server

	mu        sync.Mutex
	requests  int
	respond   func(n int, r *http.Request) int
	accepted  map[string]int // event id -> how many times answered 2xx
	bodies    map[string]Payload
	raw       []string
	badSigs   int
	headerIDs map[string]string
}

func newReceiver(t testing.TB, secret []byte) *receiver {
	rc := &receiver{t: t, accepted: map[string]int{}, bodies: map[string]Payload{}, headerIDs: map[string]string{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		rc.mu.Lock()
		rc.requests++
		n, respond := rc.requests, rc.respond
		rc.mu.Unlock()
		code := http.StatusNoContent
		if respond != nil {
			code = respond(n, r)
		}
		if code == 0 { // the request's context ended while "hanging"
			return
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if secret != nil {
			if err := Verify(secret, r.Header.Get(SignatureHeader), body, 5*time.Minute); err != nil {
				rc.badSigs++
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		if code >= 200 && code < 300 {
			var p Payload
			_ = json.Unmarshal(body, &p)
			id := r.Header.Get(EventIDHeader)
			rc.accepted[id]++
			rc.bodies[id] = p
			rc.headerIDs[id] = p.ID
			rc.raw = append(rc.raw, string(body))
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) setRespond(f func(n int, r *http.Request) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = f
}

// hang answers nothing until the sender gives up (its timeout).
func hang(r *http.Request) int {
	<-r.Context().Done()
	return 0
}

func (rc *receiver) byEvent() map[string][]Payload {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]Payload{}
	for _, p := range rc.bodies {
		out[p.Event] = append(out[p.Event], p)
	}
	return out
}

func (rc *receiver) counts() (accepted map[string]int, requests, badSigs int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	accepted = map[string]int{}
	for k, v := range rc.accepted {
		accepted[k] = v
	}
	return accepted, rc.requests, rc.badSigs
}

type env struct {
	t      testing.TB
	ctx    context.Context
	rdb    *redis.Client
	store  *slots.Store
	prefix string
	pool   slots.PoolID
	pods   int
}

func newEnv(t testing.TB, mutate func(*slots.PoolConfig)) *env {
	t.Helper()
	opt, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix(t)
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	e := &env{t: t, ctx: t.Context(), rdb: rdb, store: store, prefix: prefix, pool: slots.PoolID{Namespace: "team-a", Name: "infra"}}
	cfg := slots.DefaultPoolConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	_, err = store.DeclarePool(e.ctx, e.pool, cfg)
	require.NoError(t, err)
	return e
}

func (e *env) addPod() (string, string) {
	e.t.Helper()
	e.pods++
	name, uid := "agent-"+string(rune('a'+e.pods-1)), "uid-"+string(rune('a'+e.pods-1))
	_, err := e.store.RegisterPod(e.ctx, e.pool, name, uid)
	require.NoError(e.t, err)
	return name, uid
}

// run submits a task, lets the pod take it and completes it with outcome.
func (e *env) run(id string, typ slots.TaskType, pod, uid string, outcome slots.Outcome) slots.TaskState {
	e.t.Helper()
	_, err := e.store.Submit(e.ctx, e.pool, slots.TaskSpec{ID: id, Type: typ})
	require.NoError(e.t, err)
	msg, err := e.store.Take(e.ctx, e.pool, pod, uid, time.Second, nil)
	require.NoError(e.t, err)
	require.NotNil(e.t, msg)
	require.Equal(e.t, id, msg.Task)
	st, err := e.store.Complete(e.ctx, e.pool, slots.Result{Task: id, Epoch: msg.Epoch, Outcome: outcome, ExitCode: 1})
	require.NoError(e.t, err)
	return st
}

func (e *env) webhook(name, url string, mutate func(*Webhook)) Webhook {
	w := Webhook{
		Name: name, Pools: []string{"team-a/*"}, Events: Events, Format: FormatJSON, URL: url,
		// A generous timeout: a slow answer under a loaded machine must not
		// read as a timeout (a retry, a duplicate) where a test counts.
		SigningSecret: signingSecret, Timeout: 3 * time.Second, MaxAttempts: 50, MaxAge: time.Hour,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&w)
	}
	return w
}

// notifier starts a notifier named consumer; the returned stop ends it and
// waits until it stopped. Groups exist when it returns (Sync).
func (e *env) notifier(consumer string, cfg Config, opts Options) (*Notifier, func()) {
	e.t.Helper()
	return e.notifierOn(e.rdb, consumer, cfg, opts)
}

// notifierOn is notifier sending its own commands through rdb.
func (e *env) notifierOn(rdb redis.UniversalClient, consumer string, cfg Config, opts Options) (*Notifier, func()) {
	e.t.Helper()
	opts.Consumer = consumer
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.PollInterval = 10 * time.Millisecond
	opts.SyncInterval = 50 * time.Millisecond
	opts.ExpiringInterval = 20 * time.Millisecond
	if cfg.ExpiringLead == 0 {
		cfg.ExpiringLead = time.Hour
	}
	if cfg.DashboardURL == "" {
		cfg.DashboardURL = "https://dash.example"
	}
	n, err := New(e.store, rdb, cfg, opts)
	require.NoError(e.t, err)
	// A webhook that does not resolve is an error of Sync; the others'
	// groups exist anyway.
	_ = n.Sync(e.ctx)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	stop := func() { cancel(); <-done }
	e.t.Cleanup(stop)
	return n, stop
}

func (e *env) status(webhook string) Status {
	e.t.Helper()
	st, err := ReadStatus(e.ctx, e.rdb, e.prefix, e.pool)
	require.NoError(e.t, err)
	for _, s := range st {
		if s.Webhook == webhook {
			return s
		}
	}
	return Status{}
}

const wait, tick = 10 * time.Second, 10 * time.Millisecond

func TestDeliversEachEventKind(t *testing.T) {
	// Long enough for the expiring check to see the reservation before its
	// deadline on a loaded machine; the test waits that long for expired.
	e := newEnv(t, func(c *slots.PoolConfig) { c.ReservationTTL = 2 * time.Second })
	rc := newReceiver(t, signingSecret)
	e.notifier("n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL+"/hook", nil)}}, Options{})
	pod, uid := e.addPod()
	require.Equal(t, slots.StateSucceeded, e.run("ok", slots.Plan, pod, uid, slots.OutcomeSuccess))
	require.Equal(t, slots.StateFailed, e.run("bad", slots.Plan, pod, uid, slots.OutcomeFailure))
	require.Equal(t, slots.StateReserved, e.run("pa", slots.PlanAndApply, pod, uid, slots.OutcomeSuccess))
	// awaiting-approval, then reservation-expiring (lead 1h: at once).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ev := rc.byEvent()
		assert.Len(c, ev[EventAwaitingApproval], 1)
		assert.Len(c, ev[EventReservationExpiring], 1)
	}, wait, tick)
	// The reservation runs out: expired.
	require.Eventually(t, func() bool {
		_, err := e.store.Reap(e.ctx, e.pool, slots.ReapOptions{})
		require.NoError(t, err)
		tk, err := e.store.Task(e.ctx, e.pool, "pa")
		require.NoError(t, err)
		return tk.State == slots.StateExpired
	}, wait, 50*time.Millisecond)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ev := rc.byEvent()
		for _, k := range Events {
			assert.Len(c, ev[k], 1, k)
		}
	}, wait, tick)

	ev := rc.byEvent()
	ok := ev[EventSucceeded][0]
	assert.Equal(t, "team-a/infra", ok.Pool)
	assert.Equal(t, "ok", ok.Task)
	assert.Equal(t, "plan", ok.Type)
	assert.Equal(t, "succeeded", ok.State)
	assert.Equal(t, "https://dash.example/pools/team-a/infra/tasks/ok", ok.URL)
	assert.False(t, ok.At.IsZero())
	bad := ev[EventFailed][0]
	assert.Equal(t, "bad", bad.Task)
	assert.Equal(t, slots.ReasonExitCode, bad.Reason)
	aw := ev[EventAwaitingApproval][0]
	assert.Equal(t, "pa", aw.Task)
	assert.Equal(t, "plan_and_apply", aw.Type)
	assert.Equal(t, "reserved", aw.State)
	require.NotNil(t, aw.Deadline)
	ex := ev[EventReservationExpiring][0]
	require.NotNil(t, ex.Deadline)
	assert.Equal(t, aw.Deadline.UnixMilli(), ex.Deadline.UnixMilli())
	exp := ev[EventExpired][0]
	assert.Equal(t, "pa", exp.Task)
	assert.Equal(t, slots.ReasonReservationTTL, exp.Reason)

	accepted, _, badSigs := rc.counts()
	assert.Zero(t, badSigs, "every signature verifies")
	for id, n := range accepted {
		assert.Equal(t, 1, n, "event %s delivered once", id)
	}
	rc.mu.Lock()
	for hid, bid := range rc.headerIDs {
		assert.Equal(t, hid, bid, "the header's event id is the body's")
	}
	rc.mu.Unlock()
	// reservation-expiring is queued once however often the check runs.
	time.Sleep(100 * time.Millisecond)
	assert.Len(t, rc.byEvent()[EventReservationExpiring], 1)

	st := e.status("ops")
	assert.Equal(t, int64(5), st.Delivered)
	assert.Equal(t, rc.srv.Listener.Addr().String(), st.Host)
	assert.Zero(t, st.ConsecutiveFailures)
	assert.False(t, st.LastSuccess.IsZero())
}

func TestWebhookGetsOnlyItsEventsAndPools(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	other := newReceiver(t, signingSecret)
	e.notifier("n1", Config{Webhooks: []Webhook{
		e.webhook("failures", rc.srv.URL, func(w *Webhook) { w.Events = []string{EventFailed} }),
		e.webhook("elsewhere", other.srv.URL, func(w *Webhook) { w.Pools = []string{"team-b/*"} }),
	}}, Options{})
	pod, uid := e.addPod()
	e.run("ok", slots.Plan, pod, uid, slots.OutcomeSuccess)
	e.run("bad", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return len(rc.byEvent()[EventFailed]) == 1 }, wait, tick)
	e.run("bad2", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return len(rc.byEvent()[EventFailed]) == 2 }, wait, tick)
	assert.Empty(t, rc.byEvent()[EventSucceeded])
	_, requests, _ := other.counts()
	assert.Zero(t, requests, "a webhook of another namespace hears nothing")
	assert.Equal(t, "", e.status("elsewhere").Webhook, "no status for a pool the webhook does not match")
}

func TestSlackFormat(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	e.notifier("n1", Config{Webhooks: []Webhook{e.webhook("slack", rc.srv.URL, func(w *Webhook) {
		w.Format, w.SigningSecret = FormatSlack, nil
	})}}, Options{})
	pod, uid := e.addPod()
	e.run("bad", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.raw) == 1 }, wait, tick)
	var body map[string]string
	require.NoError(t, json.Unmarshal([]byte(rc.raw[0]), &body))
	assert.Len(t, body, 1, "only text: %s", rc.raw[0])
	assert.Equal(t, "Task <https://dash.example/pools/team-a/infra/tasks/bad|bad> (plan) in pool team-a/infra failed: exit-code", body["text"])
}

func TestReceiverFailsTimesOutAndRecovers(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	// 3 server errors, 2 timeouts, then fine.
	rc.setRespond(func(n int, r *http.Request) int {
		switch {
		case n <= 3:
			return http.StatusInternalServerError
		case n <= 5:
			return hang(r)
		}
		return http.StatusOK
	})
	reg := prometheus.NewRegistry()
	// The hanging answers time out after a second.
	e.notifier("n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, func(w *Webhook) { w.Timeout = time.Second })}}, Options{Registerer: reg})
	pod, uid := e.addPod()
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		e.run(id, slots.Plan, pod, uid, slots.OutcomeSuccess)
	}
	require.Eventually(t, func() bool { return len(rc.byEvent()[EventSucceeded]) == 5 }, wait, tick)
	accepted, _, badSigs := rc.counts()
	assert.Zero(t, badSigs)
	assert.Len(t, accepted, 5, "nothing lost")
	for id, n := range accepted {
		assert.Equal(t, 1, n, "event %s accepted once", id)
	}
	st := e.status("ops")
	assert.Equal(t, int64(5), st.Delivered)
	assert.Zero(t, st.DeadLetters)
	assert.Zero(t, st.ConsecutiveFailures, "recovered")
	assert.False(t, st.LastFailure.IsZero())
	assert.NotEmpty(t, st.LastError)
	pool := e.pool.String()
	assert.Equal(t, 3.0, counter(t, reg, "slotscaler_notify_deliveries_total", pool, "ops", ResultHTTPError))
	assert.Equal(t, 2.0, counter(t, reg, "slotscaler_notify_deliveries_total", pool, "ops", ResultTimeout))
	assert.Equal(t, 5.0, counter(t, reg, "slotscaler_notify_deliveries_total", pool, "ops", ResultSuccess))
}

// counter reads one counter series of reg: name{pool, webhook[, result]}.
func counter(t testing.TB, reg *prometheus.Registry, name, pool, webhook string, result ...string) float64 {
	t.Helper()
	want := map[string]string{"pool": pool, "webhook": webhook}
	if len(result) > 0 {
		want["result"] = result[0]
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if assert.ObjectsAreEqual(want, got) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	var down sync.Mutex
	failing := true
	rc.setRespond(func(int, *http.Request) int {
		down.Lock()
		defer down.Unlock()
		if failing {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	var logs bytes.Buffer
	var logMu sync.Mutex
	reg := prometheus.NewRegistry()
	e.notifier("n1", Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL+"/hook/T0KEN-IN-PATH", func(w *Webhook) { w.MaxAttempts = 3 })}},
		Options{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	pod, uid := e.addPod()
	e.run("lost", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return e.status("ops").DeadLetters == 1 }, wait, tick)
	_, requests, _ := rc.counts()
	assert.Equal(t, 3, requests, "max attempts")
	st := e.status("ops")
	assert.Equal(t, int64(3), st.ConsecutiveFailures)
	assert.Contains(t, st.LastError, "502")
	assert.NotEmpty(t, st.LastDeadLetterEvent)
	assert.Equal(t, 1.0, counter(t, reg, "slotscaler_notify_dead_letters_total", e.pool.String(), "ops"))

	// The receiver is back: the next event is delivered, the dead one is not again.
	down.Lock()
	failing = false
	down.Unlock()
	e.run("next", slots.Plan, pod, uid, slots.OutcomeSuccess)
	require.Eventually(t, func() bool { return e.status("ops").Delivered == 1 }, wait, tick)
	accepted, requests, _ := rc.counts()
	assert.Equal(t, 4, requests)
	assert.Len(t, accepted, 1)
	assert.Zero(t, e.status("ops").ConsecutiveFailures)

	logMu.Lock()
	defer logMu.Unlock()
	assert.Contains(t, logs.String(), "dead letter")
	assert.NotContains(t, logs.String(), "T0KEN-IN-PATH", "logs never hold the URL's path")
	assert.NotContains(t, logs.String(), string(signingSecret))
}

// lockedBuffer collects logs written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestNetworkErrorsDoNotLeakTheURL(t *testing.T) {
	e := newEnv(t, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL + "/services/T0KEN-IN-PATH?key=QUERYSECRET"
	dead.Close() // connection refused from now on
	var logs bytes.Buffer
	var logMu sync.Mutex
	e.notifier("n1", Config{Webhooks: []Webhook{e.webhook("ops", url, func(w *Webhook) { w.MaxAttempts = 2 })}},
		Options{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	pod, uid := e.addPod()
	e.run("x", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return e.status("ops").DeadLetters == 1 }, wait, tick)
	st := e.status("ops")
	assert.Contains(t, st.LastError, "refused")
	for _, s := range []string{st.LastError, st.Host} {
		assert.NotContains(t, s, "T0KEN")
		assert.NotContains(t, s, "QUERYSECRET")
	}
	logMu.Lock()
	defer logMu.Unlock()
	assert.Contains(t, logs.String(), "refused")
	assert.NotContains(t, logs.String(), "T0KEN")
	assert.NotContains(t, logs.String(), "QUERYSECRET")
}

func TestTwoNotifiersDeliverEachEventOnce(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	cfg := Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, nil)}}
	e.notifier("replica-a", cfg, Options{})
	e.notifier("replica-b", cfg, Options{})
	pod, uid := e.addPod()
	const n = 30
	for i := range n {
		e.run(fmt.Sprintf("t%d", i), slots.Plan, pod, uid, slots.OutcomeSuccess)
	}
	require.Eventually(t, func() bool { return len(rc.byEvent()[EventSucceeded]) == n }, wait, tick)
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	accepted, requests, _ := rc.counts()
	assert.Len(t, accepted, n)
	assert.Equal(t, n, requests, "one request per event across both replicas")
	for id, c := range accepted {
		assert.Equal(t, 1, c, "event %s", id)
	}
}

func TestPendingOfADeadReplicaIsTakenOver(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	cfg := Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, func(w *Webhook) { w.Timeout = 200 * time.Millisecond })}}
	// The groups exist (as a replica made them); a replica reads the two
	// events and dies before delivering them.
	n, err := New(e.store, e.rdb, cfg, Options{Consumer: "setup"})
	require.NoError(t, err)
	err = n.Sync(e.ctx)
	require.NoError(t, err)
	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeSuccess)
	e.run("t2", slots.Plan, pod, uid, slots.OutcomeFailure)
	read, err := e.rdb.XReadGroup(e.ctx, &redis.XReadGroupArgs{Group: Group("ops"), Consumer: "dead-replica",
		Streams: []string{e.store.EventStreamKey(e.pool), ">"}, Count: 100, Block: -1}).Result()
	require.NoError(t, err)
	require.NotEmpty(t, read[0].Messages)

	e.notifier("survivor", cfg, Options{ClaimIdle: 500 * time.Millisecond})
	require.Eventually(t, func() bool { return len(rc.byEvent()) == 2 }, wait, tick)
	accepted, _, _ := rc.counts()
	assert.Len(t, accepted, 2)
	// The receiver has it before the sender reads the 2xx and acknowledges.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		pend, err := e.rdb.XPending(e.ctx, e.store.EventStreamKey(e.pool), Group("ops")).Result()
		require.NoError(c, err)
		assert.Zero(c, pend.Count, "every entry acknowledged")
	}, wait, tick)
}

func TestRestartResumesFromTheGroup(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, signingSecret)
	release := make(chan struct{})
	var once sync.Once
	hanging := make(chan struct{})
	rc.setRespond(func(n int, r *http.Request) int {
		if n == 2 { // the second event is in delivery when the notifier stops
			once.Do(func() { close(hanging) })
			select {
			case <-release:
			case <-r.Context().Done():
				return 0
			}
		}
		return http.StatusOK
	})
	cfg := Config{Webhooks: []Webhook{e.webhook("ops", rc.srv.URL, func(w *Webhook) { w.Timeout = 5 * time.Second })}}
	_, stop := e.notifier("scaler-0", cfg, Options{})
	pod, uid := e.addPod()
	e.run("t1", slots.Plan, pod, uid, slots.OutcomeSuccess)
	e.run("t2", slots.Plan, pod, uid, slots.OutcomeSuccess)
	<-hanging
	stop() // mid-delivery of t2: it stays pending
	close(release)
	// Events while no notifier runs.
	e.run("t3", slots.Plan, pod, uid, slots.OutcomeSuccess)
	e.run("t4", slots.Plan, pod, uid, slots.OutcomeFailure)
	rc.setRespond(nil)
	e.notifier("scaler-0", cfg, Options{}) // the same pod name back
	require.Eventually(t, func() bool {
		accepted, _, _ := rc.counts()
		return len(accepted) == 4
	}, wait, tick)
	for _, task := range []string{"t1", "t2", "t3", "t4"} {
		found := false
		for _, ps := range rc.byEvent() {
			for _, p := range ps {
				found = found || p.Task == task
			}
		}
		assert.True(t, found, "task %s delivered", task)
	}
	// Only the event in delivery at the stop may arrive twice (the
	// receiver may have taken it as the sender gave up): at least once.
	accepted, _, _ := rc.counts()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for id, c := range accepted {
		if rc.bodies[id].Task == "t2" {
			assert.LessOrEqual(t, c, 2, "event %s", id)
			continue
		}
		assert.Equal(t, 1, c, "event %s", id)
	}
}
