package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

const (
	testToken      = "s3cret-token"
	testTokenName  = "ci"
	testMaxPayload = 4 << 10
)

// fixture is a dashboard server on a real Redis with one declared pool.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	store *slots.Store
	srv   *server
	http  *httptest.Server
	pool  slots.PoolID
	pods  int
	rdb   *redis.Client
	// prefix is the key prefix of the store and the login sessions.
	prefix string
}

type fixtureOption func(*server)

func withReadAuth(s *server) { s.readAuth = true }

// TestMain silences go-redis' own dial-failure logging (the Redis-down tests).
func TestMain(m *testing.M) {
	redis.SetLogger(discardRedisLog{})
	m.Run()
}

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newFixtureOn(t testing.TB, url string, opts ...fixtureOption) *fixture {
	t.Helper()
	ctx := t.Context()
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	// Fail fast once Redis is gone (the Redis-down tests).
	opt.DialerRetries, opt.MaxRetries = 1, -1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix(t)
	store, err := slots.New(ctx, rdb, slots.Options{Prefix: prefix, MaxPayload: testMaxPayload, Logger: quiet()})
	require.NoError(t, err)
	f := &fixture{t: t, ctx: ctx, store: store, pool: slots.PoolID{Namespace: "ci", Name: "terraform"}, rdb: rdb, prefix: prefix}
	f.declare(f.pool, nil)
	f.srv, f.http = f.newReplica(opts...)
	return f
}

// newReplica starts one more dashboard server on the fixture's Redis, key
// prefix and slot store (the fixture's own is the first).
func (f *fixture) newReplica(opts ...fixtureOption) (*server, *httptest.Server) {
	f.t.Helper()
	rdb := f.rdb
	s := &server{store: f.store, log: quiet(), tokens: fullAccessTokens(tokens{testTokenName: testToken, "other": "other-token"}),
		maxPayload: testMaxPayload, pollInterval: 20 * time.Millisecond, maxWait: maxWait, stopping: make(chan struct{}),
		ping: func(ctx context.Context) error { return redisconn.Ping(ctx, rdb, 2*time.Second) }}
	s.hub = newPoolHub(f.store, 20*time.Millisecond, quiet())
	s.configs = slots.NewConfigCache(f.store.Pool, time.Minute)
	s.history = history.NewReader(rdb, f.prefix, history.DefaultLayout)
	s.janitor = janitorreport.NewStore(rdb, f.prefix)
	s.webhooks = notify.NewStatusReader(rdb, f.prefix)
	s.sessions = newSessionManager(newRedisSessionStore(rdb, f.prefix), sessionSettings{Secure: true, Lifetime: 12 * time.Hour, IdleTimeout: time.Hour})
	for _, o := range opts {
		o(s)
	}
	h := httptest.NewServer(s.routes())
	f.t.Cleanup(h.Close)
	return s, h
}

func newFixture(t testing.TB, opts ...fixtureOption) *fixture {
	t.Helper()
	return newFixtureOn(t, redistest.Standalone(t), opts...)
}

// declare declares a pool with the default config changed by mutate.
func (f *fixture) declare(p slots.PoolID, mutate func(*slots.PoolConfig)) {
	f.t.Helper()
	cfg := slots.DefaultPoolConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	_, err := f.store.DeclarePool(f.ctx, p, cfg)
	require.NoError(f.t, err)
}

// addPod registers a new agent pod in the fixture's pool.
func (f *fixture) addPod() (name, uid string) {
	f.t.Helper()
	f.pods++
	name, uid = "agent-"+string(rune('a'+f.pods-1)), "uid-"+string(rune('a'+f.pods-1))
	_, err := f.store.RegisterPod(f.ctx, f.pool, name, uid)
	require.NoError(f.t, err)
	return name, uid
}

// reserve submits a plan_and_apply, runs its plan on pod and completes it,
// leaving slot 0 reserved.
func (f *fixture) reserve(id, pod, uid string) {
	f.t.Helper()
	res, err := f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: id, Type: slots.PlanAndApply})
	require.NoError(f.t, err)
	require.Equal(f.t, pod, res.Pod, "the plan must be assigned to the pod")
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(f.t, err)
	require.NotNil(f.t, msg)
	require.Equal(f.t, id, msg.Task)
	st, err := f.store.Complete(f.ctx, f.pool, slots.Result{Task: id, Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(f.t, err)
	require.Equal(f.t, slots.StateReserved, st)
}

// do sends a request; token "" sends none.
func (f *fixture) do(method, path, body, token string) *http.Response {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(f.ctx, method, f.http.URL+path, rd)
	require.NoError(f.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.http.Client().Do(req)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// decode reads a JSON response body into a map.
func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "body: %s", b)
	return m
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	var buf bytes.Buffer
	_, err := io.Copy(&buf, resp.Body)
	require.NoError(t, err)
	return buf.String()
}
