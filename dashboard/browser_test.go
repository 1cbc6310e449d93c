package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
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
	watch := watchBrowser(t, ctx)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="grid"]`),
	))
	// A marker on the window: it disappears if the page reloads.
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`))
	require.NoError(t, err)
	waitFor(t, ctx, "slot 0 idle", slotJS(pod, 0)+`?.dataset.state === "idle"`)
	waitFor(t, ctx, "the desired count explained", `document.querySelector('[data-testid="pool-explanation"]')?.textContent === "Nothing is running, reserved or queued: 0 pods."`)

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
	assert.Empty(t, watch.seen(), "the browser reported problems (CSP violations, errors)")
}

// TestPagesFitAPhoneViewport: at 375 px wide no page scrolls sideways as a
// whole (wide tables scroll inside themselves).
func TestPagesFitAPhoneViewport(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("tf-wide-task-id-0001", pod, uid)
	ctx := newBrowser(t)
	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(375, 812)))
	for _, path := range []string{"/", "/pools/ci/terraform", "/pools/ci/terraform/tasks/tf-wide-task-id-0001", "/approvals"} {
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(f.http.URL+path), chromedp.WaitReady("body")))
		width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
		require.NoError(t, err)
		require.LessOrEqual(t, width, 375, "%s overflows a phone-sized viewport", path)
	}
}

// cspWatch collects, from now on, what the browser reports against the
// pages: Content-Security-Policy violations (the securitypolicyviolation
// event of every document, and the console lines Chromium logs for them),
// console errors and uncaught exceptions.
type cspWatch struct {
	mu       sync.Mutex
	problems []string
}

// cspRecorder runs in every new document before its own scripts.
const cspRecorder = `document.addEventListener("securitypolicyviolation", (e) => {
	console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});`

func watchBrowser(t testing.TB, ctx context.Context) *cspWatch {
	t.Helper()
	w := &cspWatch{}
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		var p string
		switch e := ev.(type) {
		case *cdplog.EventEntryAdded:
			// Network lines are the 401 before the login and the favicon's
			// 404: answers the test expects, not the page misbehaving.
			if e.Entry.Source != cdplog.EntrySourceNetwork && e.Entry.Level == cdplog.EntryLevelError || strings.Contains(e.Entry.Text, "Content Security Policy") {
				p = "log: " + e.Entry.Text + " " + e.Entry.URL
			}
		case *cdpruntime.EventConsoleAPICalled:
			if e.Type == cdpruntime.ConsoleAPICalledTypeError || e.Type == cdpruntime.ConsoleAPICalledTypeWarning {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, strings.Trim(string(a.Value), `"`)+a.Description)
				}
				p = "console." + string(e.Type) + ": " + strings.Join(parts, " ")
			}
		case *cdpruntime.EventExceptionThrown:
			p = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				p += " " + e.ExceptionDetails.Exception.Description
			}
		}
		if p != "" {
			w.mu.Lock()
			w.problems = append(w.problems, p)
			w.mu.Unlock()
		}
	}))
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
		return err
	})))
	return w
}

func (w *cspWatch) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.problems)
}

// TestBrowserLogsInAndWatchesLiveUnderTheCSP: with read auth, a browser
// logs in through the form, the live grid updates over SSE (htmx and its
// sse extension under the Content-Security-Policy), the logout button ends
// the session; the browser reports no CSP violation, console error or
// exception on the way.
func TestBrowserLogsInAndWatchesLiveUnderTheCSP(t *testing.T) {
	f := newFixture(t, withReadAuth)
	pod, _ := f.addPod()
	ctx := newBrowser(t)
	watch := watchBrowser(t, ctx)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="login"]`),
		chromedp.SendKeys(`input[name="token"]`, testToken),
		chromedp.Submit(`[data-testid="login"]`),
		chromedp.WaitVisible(`[data-testid="grid"]`),
		chromedp.WaitVisible(`[data-testid="logout"]`),
	))
	url, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
	require.NoError(t, err)
	assert.Equal(t, "/pools/ci/terraform", url, "back on the page that asked for the login")
	cookieJS, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	assert.NotContains(t, cookieJS, "session", "the session cookie is HttpOnly")
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`))
	require.NoError(t, err)

	resp := f.do("POST", "/api/v1/pools/ci/terraform/tasks", `{"id":"tf1","type":"plan_and_apply"}`, testToken)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	waitFor(t, ctx, "the task on slot 0 over SSE",
		slotJS(pod, 0)+`?.dataset.state === "assigned" && `+slotJS(pod, 0)+`.querySelector('[data-testid="slot-task"]').textContent === "tf1"`)
	noReload, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload === true`))
	require.NoError(t, err)
	require.True(t, noReload, "the grid changed without a reload")
	configured, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`htmx.config.includeIndicatorStyles === false && htmx.config.allowEval === false`))
	require.NoError(t, err)
	assert.True(t, configured, "htmx took the config of the meta tag")
	styles, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("style").length`))
	require.NoError(t, err)
	assert.Zero(t, styles, "nothing injected an inline <style>")

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(`[data-testid="logout"] button`),
		chromedp.WaitVisible(`[data-testid="login"]`),
	))
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(f.http.URL+"/pools/ci/terraform"), chromedp.WaitVisible(`[data-testid="login"]`)))
	// Let late reports arrive.
	time.Sleep(200 * time.Millisecond)
	assert.Empty(t, watch.seen(), "the browser reported problems")
}
