package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// chromiumPath is Debian's chromium, which scripts/test.sh installs.
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts a headless chromium for the test and returns a tab's
// context. A missing chromium fails the test: it is never skipped.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found: run `make test` (it installs it) or apt-get install chromium", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first Run starts the browser; no timeout on this context (it
	// would stop the browser), each wait below has its own.
	require.NoError(t, chromedp.Do(ctx))
	return ctx
}

// waitFor polls a JavaScript predicate in the page until it is true.
func waitFor(t testing.TB, ctx context.Context, what, predicate string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(20*time.Millisecond)))
	require.NoError(t, err, "waiting for %s", what)
}

func slotJS(pod string, slot int) string {
	return fmt.Sprintf(`document.querySelector('[data-testid="pod"][data-pod="%s"] [data-testid="slot"][data-slot="%d"]')`, pod, slot)
}

// agentRuns plays the agent: takes the next message of pod and completes it.
func (f *fixture) agentRuns(pod, uid, task string, output string) slots.TaskState {
	f.t.Helper()
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(f.t, err)
	require.NotNil(f.t, msg)
	require.Equal(f.t, task, msg.Task)
	st, err := f.store.Complete(f.ctx, f.pool, slots.Result{Task: task, Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess, Output: []byte(output)})
	require.NoError(f.t, err)
	return st
}

func TestBrowserSeesSlotsChangeWithoutReload(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	ctx := newBrowser(t)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="grid"]`),
	))
	// A marker on the window: it disappears if the page reloads.
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`))
	require.NoError(t, err)
	waitFor(t, ctx, "slot 0 idle", slotJS(pod, 0)+`?.dataset.state === "idle"`)

	resp := f.do("POST", "/api/v1/pools/ci/terraform/tasks", `{"id":"tf1","type":"plan_and_apply"}`, testToken)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	resp = f.do("POST", "/api/v1/pools/ci/terraform/tasks", `{"id":"pl1","type":"plan"}`, testToken)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	waitFor(t, ctx, "the plan_and_apply assigned to slot 0",
		slotJS(pod, 0)+`?.dataset.state === "assigned" && `+slotJS(pod, 0)+`.querySelector('[data-testid="slot-task"]').textContent === "tf1"`)
	waitFor(t, ctx, "the plan assigned to slot 1", slotJS(pod, 1)+`?.dataset.state === "assigned"`)

	require.Equal(t, slots.StateReserved, f.agentRuns(pod, uid, "tf1", "Plan: 1 to add"))
	waitFor(t, ctx, "slot 0 reserved", slotJS(pod, 0)+`?.dataset.state === "reserved"`)

	resp = f.do("POST", "/api/v1/pools/ci/terraform/tasks/tf1/approve", "", testToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	waitFor(t, ctx, "the apply assigned to the reserved slot",
		slotJS(pod, 0)+`?.dataset.state === "assigned" && `+slotJS(pod, 0)+`.querySelector('[data-testid="slot-phase"]').textContent === "apply"`)
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, msg)
	if msg.Task != "tf1" { // the plan came first: finish it, then the apply
		_, err = f.store.Complete(f.ctx, f.pool, slots.Result{Task: msg.Task, Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess})
		require.NoError(t, err)
		msg, err = f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
		require.NoError(t, err)
		require.NotNil(t, msg)
	}
	require.Equal(t, "tf1", msg.Task)
	st, err := f.store.Complete(f.ctx, f.pool, slots.Result{Task: "tf1", Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	require.Equal(t, slots.StateSucceeded, st)
	waitFor(t, ctx, "slot 0 released after the approved apply", slotJS(pod, 0)+`?.dataset.state === "idle"`)

	noReload, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload === true`))
	require.NoError(t, err)
	require.True(t, noReload, "the page changed without a reload")
}

// TestPagesFitAPhoneViewport: at 375 px wide no page scrolls sideways as a
// whole (wide tables scroll inside themselves).
func TestPagesFitAPhoneViewport(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("tf-wide-task-id-0001", pod, uid)
	ctx := newBrowser(t)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(375, 812)))
	for _, path := range []string{"/", "/pools/ci/terraform", "/pools/ci/terraform/tasks/tf-wide-task-id-0001"} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(f.http.URL+path), chromedp.WaitReady("body")))
		width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		require.NoError(t, err)
		require.LessOrEqual(t, width, 375, "%s overflows a phone-sized viewport", path)
	}
}
