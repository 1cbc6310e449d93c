//go:build screenshot

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// TestWriteScreenshot writes a picture of a busy pool page (make screenshot)
// to $SCREENSHOT_OUT (default docs/dashboard.png at the repo root).
func TestWriteScreenshot(t *testing.T) {
	out := os.Getenv("SCREENSHOT_OUT")
	if out == "" {
		out = filepath.Join("..", "docs", "dashboard.png")
	}
	f := newFixture(t)
	type pod struct{ name, uid string }
	var pods []pod
	for range 6 {
		n, u := f.addPod()
		pods = append(pods, pod{n, u})
	}
	// Two reservations waiting for approval, one apply running.
	for i, p := range pods[:3] {
		f.reserve(fmt.Sprintf("tf-%d", i+1), p.name, p.uid)
	}
	_, err := f.store.Approve(f.ctx, f.pool, "tf-1", "alice")
	require.NoError(t, err)
	// Plans: some running, some assigned, some queued; the history chart
	// shows the queue growing over the last minutes.
	rec := f.recorder(10*time.Second, 90)
	rec.tick(90, func(i int) {
		if i%4 == 0 && i/4 < 22 {
			f.submit(fmt.Sprintf("plan-%02d", i/4+1), slots.Plan)
		}
	})
	for _, p := range pods[:2] {
		msg, err := f.store.Take(f.ctx, f.pool, p.name, p.uid, time.Second, nil)
		require.NoError(t, err)
		require.NotNil(t, msg) // taken: running
	}
	require.NoError(t, f.store.Cordon(f.ctx, f.pool, pods[5].name, pods[5].uid))
	_, err = f.store.Cancel(f.ctx, f.pool, "plan-22", "bob")
	require.NoError(t, err)

	// What the janitor would say of it: the cordoned pod waits to be idle.
	now := time.Now().UTC()
	require.NoError(t, janitorreport.NewStore(f.rdb, f.prefix).Write(f.ctx, f.pool, janitorreport.Report{
		At: now, Changed: now.Add(-40 * time.Second), StaleAfter: now.Add(3 * time.Minute),
		Content: janitorreport.Content{Pool: f.pool.String(), Janitor: "slotscaler-janitor-7d9f", Replicas: 5, Live: 5,
			Summary: "At the desired size (5 pods), with more to do.",
			Waiting: []janitorreport.Wait{{Kind: janitorreport.WaitBusy, Pods: 1,
				Text: "1 surplus pod is busy: cordoned, it goes once idle."}},
			Actions: []janitorreport.Action{
				{At: now.Add(-40 * time.Second), Kind: janitorreport.ActionCordoned, Pods: []string{pods[5].name}, Count: 1, Reason: "surplus, busy"},
				{At: now.Add(-9 * time.Minute), Kind: janitorreport.ActionCreated, Pods: []string{pods[4].name, pods[5].name}, Count: 2, Reason: "6 desired, 4 live"},
			}},
	}))

	ctx := newBrowser(t)
	var png []byte
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1400, 900),
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="grid"]`),
	))
	png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	require.NoError(t, os.WriteFile(out, png, 0o644))
	t.Logf("wrote %s (%d bytes)", out, len(png))
}
