package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// approvalJS selects a task's entry on the approvals page.
func approvalJS(task string) string {
	return `document.querySelector('[data-testid="approval"][data-task="` + task + `"]')`
}

// browserLogin logs in through the 401 page's form at path.
func browserLogin(t *testing.T, ctx context.Context, base, path, token, waitFor string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+path),
		chromedp.WaitVisible(`[data-testid="login"]`),
		chromedp.SendKeys(`input[name="token"]`, token),
		chromedp.Submit(`[data-testid="login"]`),
		chromedp.WaitVisible(waitFor),
	))
}

// An approver signs in, finds the plan on the approvals page (with its
// output), approves it there and lands on the task page with the apply
// running, recorded as theirs; a refused decision shows in its form. A
// read-only identity sees no buttons, and a post forged from its page is
// a 403. The browser reports no CSP violation, error or exception.
func TestBrowserApprovesFromTheApprovalsPage(t *testing.T) {
	f, _ := scopedFixture(t)
	pod, uid := f.addPod()
	resp := f.do("POST", poolPath+"/tasks", `{"id":"tf1","type":"plan_and_apply"}`, "submitter-secret")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	f.planIn(f.pool, pod, uid, "tf1")
	ctx := newBrowser(t)
	watch := watchBrowser(t, ctx)

	browserLogin(t, ctx, f.http.URL, "/", "approver-secret", `[data-testid="pools"]`)
	count, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="awaiting-approval-count"]').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "1", count, "the overview counts the plan awaiting approval")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(`[data-testid="awaiting-approval"] a`),
		chromedp.WaitVisible(`[data-testid="approval"][data-task="tf1"] [data-testid="approve"]`),
	))
	output, err := chromedp.Run(ctx, chromedp.Evaluate[string](approvalJS("tf1")+`.querySelector('[data-testid="approval-output"]').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "Plan: 1 to add, 0 to change, 0 to destroy.", output, "the approver sees what they approve")
	submitter, err := chromedp.Run(ctx, chromedp.Evaluate[string](approvalJS("tf1")+`.querySelector('[data-testid="approval-submitter"]').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "submitter", submitter)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(`[data-testid="approval"][data-task="tf1"] [data-testid="approve-form"] input[name="note"]`, "CHG-1234"),
		chromedp.Click(`[data-testid="approval"][data-task="tf1"] [data-testid="approve"]`),
		// htmx follows the answer's HX-Redirect: a navigation (a poll would
		// lose its page), so wait for an element of the task page.
		chromedp.WaitVisible(`[data-testid="task-phase"]`),
	))
	path, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
	require.NoError(t, err)
	assert.Equal(t, "/pools/ci/terraform/tasks/tf1", path, "on the task page")
	for id, want := range map[string]string{"task-state": "running", "task-phase": "apply", "task-by": "approver", "task-note": "CHG-1234", "task-submitter": "submitter"} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="`+id+`"]').textContent`))
		require.NoError(t, err)
		assert.Equal(t, want, got, id)
	}
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, msg)
	require.NotNil(t, msg.Assignment)
	assert.Equal(t, slots.PhaseApply, msg.Assignment.Phase, "the agent got the apply")

	// A plan decided elsewhere while the page was open: the refusal shows
	// in the form that tried.
	st, err := f.store.Complete(f.ctx, f.pool, slots.Result{Task: "tf1", Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	require.Equal(t, slots.StateSucceeded, st)
	resp = f.do("POST", poolPath+"/tasks", `{"id":"tf2","type":"plan_and_apply"}`, "submitter-secret")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	f.planIn(f.pool, pod, uid, "tf2")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/approvals"),
		chromedp.WaitVisible(`[data-testid="approval"][data-task="tf2"] [data-testid="reject"]`),
	))
	require.Equal(t, http.StatusOK, f.do("POST", poolPath+"/tasks/tf2/reject", `{"note":"by the API"}`, "admin-secret").StatusCode)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(`[data-testid="approval"][data-task="tf2"] [data-testid="reject-form"] input[name="note"]`, "too late"),
		chromedp.Click(`[data-testid="approval"][data-task="tf2"] [data-testid="reject"]`),
	))
	waitFor(t, ctx, "the refusal in the reject form",
		approvalJS("tf2")+`?.querySelector('[data-testid="reject-form"] [data-testid="decision-refused"]')?.textContent.includes("rejected")`)

	// A read-only identity: no buttons anywhere, and a forged post is refused.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(`[data-testid="logout"] button`),
		chromedp.WaitVisible(`[data-testid="login"]`),
	))
	_, err = f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: "tf3", Type: slots.PlanAndApply, SubmittedBy: "submitter"})
	require.NoError(t, err)
	f.planIn(f.pool, pod, uid, "tf3")
	browserLogin(t, ctx, f.http.URL, "/approvals", "reader-secret", `[data-testid="approval"][data-task="tf3"]`)
	forms, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="decisions"], form[hx-post]').length`))
	require.NoError(t, err)
	assert.Zero(t, forms, "no decision forms on the approvals page")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform/tasks/tf3"),
		chromedp.WaitVisible(`[data-testid="task-state"]`),
	))
	forms, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="decisions"], form[hx-post]').length`))
	require.NoError(t, err)
	assert.Zero(t, forms, "nor on the task page")
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](
		`fetch("/pools/ci/terraform/tasks/tf3/approve", {method: "POST", headers: {"HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"}, body: "note=forged"}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, status, "the session may not approve, whatever the page sends")
	tk, err := f.store.Task(f.ctx, f.pool, "tf3")
	require.NoError(t, err)
	assert.Equal(t, slots.StateReserved, tk.State)

	time.Sleep(200 * time.Millisecond) // let late reports arrive
	assert.Empty(t, watch.seen(), "the browser reported problems (CSP violations, errors)")
}
