package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A real notifier delivers the pool's events to a receiver that takes them
// and one that always fails; the pool page and the API show each
// webhook's status, the receiver's host only.
func TestPoolShowsWebhookDeliveryStatus(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/terraform", http.StatusOK)
	assert.Equal(t, "none", doc.Find(testid("pool-webhooks")).AttrOr("data-state", ""))

	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer down.Close()
	hook := func(name, url string, attempts int) notify.Webhook {
		return notify.Webhook{Name: name, Pools: []string{"ci/*"}, Events: notify.Events, Format: notify.FormatJSON, URL: url,
			SigningSecret: []byte("SIGNINGSECRET"), Timeout: time.Second, MaxAttempts: attempts, MaxAge: time.Hour,
			InitialBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	}
	n, err := notify.New(f.store, f.rdb, notify.Config{Webhooks: []notify.Webhook{
		hook("chatops", ok.URL+"/services/PATHSECRET", 5),
		hook("pager", down.URL+"/hook?token=QUERYSECRET", 2),
	}}, notify.Options{Consumer: "scaler-0", PollInterval: 10 * time.Millisecond, SyncInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	err = n.Sync(f.ctx)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pod, uid := f.addPod()
	_, err = f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: "t1", Type: slots.Plan})
	require.NoError(t, err)
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	_, err = f.store.Complete(f.ctx, f.pool, slots.Result{Task: "t1", Epoch: msg.Epoch, Outcome: slots.OutcomeFailure, ExitCode: 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := notify.ReadStatus(f.ctx, f.rdb, f.prefix, f.pool)
		return err == nil && len(st) == 2 && st[0].Delivered == 1 && st[1].DeadLetters == 1
	}, 10*time.Second, 20*time.Millisecond)

	doc = f.page("/pools/ci/terraform", http.StatusOK)
	w := doc.Find(testid("pool-webhooks"))
	assert.Equal(t, "ok", w.AttrOr("data-state", ""))
	rows := w.Find(testid("webhook"))
	require.Equal(t, 2, rows.Length())
	chat, pager := rows.Eq(0), rows.Eq(1)
	assert.Equal(t, "chatops", chat.AttrOr("data-webhook", ""))
	assert.Equal(t, "false", chat.AttrOr("data-failing", ""))
	assert.Equal(t, ok.Listener.Addr().String(), chat.Find(testid("webhook-host")).Text())
	assert.Equal(t, "1", chat.Find(testid("webhook-delivered")).Text())
	assert.Equal(t, "0", chat.Find(testid("webhook-dead-letters")).Text())
	assert.NotEqual(t, "never", chat.Find(testid("webhook-last-success")).Text())
	assert.Equal(t, "pager", pager.AttrOr("data-webhook", ""))
	assert.Equal(t, "true", pager.AttrOr("data-failing", ""))
	assert.Equal(t, "1", pager.Find(testid("webhook-dead-letters")).Text())
	assert.Equal(t, "failing (2 in a row)", pager.Find(testid("webhook-failing")).Text())
	assert.Contains(t, pager.Find(testid("webhook-last-error")).Text(), "503")
	html, err := doc.Html()
	require.NoError(t, err)
	for _, secret := range []string{"PATHSECRET", "QUERYSECRET", "SIGNINGSECRET"} {
		assert.NotContains(t, html, secret)
	}

	resp := f.do("GET", "/api/v1/pools/ci/terraform", "", testToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body := readAll(t, resp)
	var v struct {
		Webhooks []notify.Status `json:"webhooks"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &v))
	require.Len(t, v.Webhooks, 2)
	assert.Equal(t, "chatops", v.Webhooks[0].Webhook)
	assert.Equal(t, int64(1), v.Webhooks[0].Delivered)
	assert.Equal(t, int64(1), v.Webhooks[1].DeadLetters)
	assert.Equal(t, int64(2), v.Webhooks[1].ConsecutiveFailures)
	for _, secret := range []string{"PATHSECRET", "QUERYSECRET", "SIGNINGSECRET"} {
		assert.NotContains(t, body, secret)
	}
}
