package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestTaskPageShowsHistoryPlacementOutputAndWhoApproved(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	_, err := f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: "t1", Type: slots.PlanAndApply, Payload: []byte(`{"dir":"infra"}`)})
	require.NoError(t, err)
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, msg)
	st, err := f.store.Complete(f.ctx, f.pool, slots.Result{Task: "t1", Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess,
		Output: []byte("Plan: 1 to add\n<script>alert(1)</script>\n")})
	require.NoError(t, err)
	require.Equal(t, slots.StateReserved, st)

	// The slot cell links to the task page.
	grid := f.page("/pools/ci/terraform", http.StatusOK)
	link := grid.Find(testid("pod") + `[data-pod="` + pod + `"]`).Find(testid("slot") + `[data-slot="0"]`).Find(testid("slot-task"))
	require.Equal(t, "/pools/ci/terraform/tasks/t1", link.AttrOr("href", ""))

	_, err = f.store.Approve(f.ctx, f.pool, "t1", "alice")
	require.NoError(t, err)
	want, err := f.store.Task(f.ctx, f.pool, "t1")
	require.NoError(t, err)

	doc := f.page("/pools/ci/terraform/tasks/t1", http.StatusOK)
	assert.Equal(t, "t1", doc.Find(testid("task-id")).Text())
	assert.Equal(t, string(want.State), doc.Find(testid("task-state")).Text())
	assert.Equal(t, "plan_and_apply", doc.Find(testid("task-type")).Text())
	assert.Equal(t, pod, doc.Find(testid("task-pod")).Text())
	assert.Equal(t, "0", doc.Find(testid("task-slot")).Text())
	assert.Equal(t, "alice", doc.Find(testid("task-by")).Text(), "who approved")
	assert.Equal(t, "15 bytes", doc.Find(testid("task-payload-size")).Text())
	assert.Equal(t, "/pools/ci/terraform", doc.Find(testid("pool-link")).AttrOr("href", ""))
	assert.Contains(t, doc.Find("pre"+testid("output")).Text(), "<script>alert(1)</script>", "output shown as text")
	assert.Equal(t, 0, doc.Find("pre script").Length())

	rows := doc.Find(testid("history-row"))
	require.Equal(t, len(want.History), rows.Length())
	require.GreaterOrEqual(t, rows.Length(), 3, "queued, reserved, approved at least")
	for i, h := range want.History {
		row := rows.Eq(i)
		assert.Equal(t, h.State, row.Find(testid("history-state")).Text())
		assert.Equal(t, h.Detail, row.Find(testid("history-detail")).Text())
		assert.NotEmpty(t, row.Find(testid("history-at")).Text())
	}
}

func TestTaskPageShowsWhoRejected(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	require.NoError(t, f.store.Reject(f.ctx, f.pool, "r1", "bob"))
	doc := f.page("/pools/ci/terraform/tasks/r1", http.StatusOK)
	assert.Equal(t, "rejected", doc.Find(testid("task-state")).Text())
	assert.Equal(t, "bob", doc.Find(testid("task-by")).Text())
	assert.Equal(t, 1, doc.Find(testid("no-output")).Length())
	assert.Equal(t, 0, doc.Find(testid("task-exit-code")).Length(), "a rejected apply never ran: no exit code")
}

func TestTaskPageShowsTheExitCodeOfAFailedRun(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.submit("t1", slots.Plan)
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, msg)
	_, err = f.store.Complete(f.ctx, f.pool, slots.Result{Task: "t1", Epoch: msg.Epoch, Outcome: slots.OutcomeFailure, ExitCode: 3,
		Output: []byte("Error: boom")})
	require.NoError(t, err)
	doc := f.page("/pools/ci/terraform/tasks/t1", http.StatusOK)
	assert.Equal(t, "failed", doc.Find(testid("task-state")).Text())
	assert.Equal(t, "3", doc.Find(testid("task-exit-code")).Text())
	assert.Equal(t, "exit-code", doc.Find(testid("task-reason")).Text())
	assert.Equal(t, "Error: boom", doc.Find(testid("output")).Text())
}

func TestQueuedTaskLinksToItsPage(t *testing.T) {
	f := newFixture(t)
	f.submit("q.1_x", slots.Plan) // no pods: queued
	doc := f.page("/pools/ci/terraform", http.StatusOK)
	href := doc.Find(testid("queued-task-link")).AttrOr("href", "")
	require.Equal(t, "/pools/ci/terraform/tasks/q.1_x", href)
	task := f.page(href, http.StatusOK)
	assert.Equal(t, "q.1_x", task.Find(testid("task-id")).Text())
	assert.Equal(t, "queued", task.Find(testid("task-state")).Text())
	assert.Equal(t, "—", strings.TrimSpace(task.Find(testid("task-pod")).Text()))
}

func TestTaskPageOfUnknownTaskIsNotFound(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/terraform/tasks/nope", http.StatusNotFound)
	assert.Contains(t, doc.Find(testid("error")).Text(), "task not found")
	f.page("/pools/ci/unknown/tasks/nope", http.StatusNotFound)
}

func TestPagesNeedATokenWithReadAuth(t *testing.T) {
	f := newFixture(t, withReadAuth)
	f.submit("t1", slots.Plan)
	for _, path := range []string{"/", "/pools/ci/terraform", "/pools/ci/terraform/grid", "/pools/ci/terraform/live", "/pools/ci/terraform/tasks/t1"} {
		t.Run(path, func(t *testing.T) {
			for name, token := range map[string]string{"no token": "", "wrong token": "nope"} {
				resp := f.do("GET", path, "", token)
				require.Equal(t, http.StatusUnauthorized, resp.StatusCode, name)
				assert.Equal(t, `Bearer realm="slotscaler"`, resp.Header.Get("WWW-Authenticate"))
				assert.Contains(t, readAll(t, resp), `data-testid="unauthorized"`, name)
			}
		})
	}
	resp := f.do("GET", "/pools/ci/terraform/tasks/t1", "", testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a bearer token opens the pages")
	assert.Equal(t, http.StatusOK, f.do("GET", "/static/style.css", "", "").StatusCode, "static files stay open")
	assert.Equal(t, http.StatusOK, f.do("GET", "/healthz", "", "").StatusCode)
}

func TestPagesAreOpenWithoutReadAuth(t *testing.T) {
	f := newFixture(t)
	f.submit("t1", slots.Plan)
	assert.Equal(t, http.StatusOK, f.do("GET", "/pools/ci/terraform/tasks/t1", "", "").StatusCode)
}

// postForm posts a form and shows a redirect instead of following it.
func (f *fixture) postForm(path string, form url.Values) *http.Response {
	f.t.Helper()
	client := *f.http.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.PostForm(f.http.URL+path, form)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestLoginExistsOnlyWithReadAuth(t *testing.T) {
	f := newFixture(t)
	resp := f.postForm("/login", url.Values{"token": {testToken}})
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// The plan's workspace digest, kept with the task, is on the task page and
// in the API's task object; a task without one shows none.
func TestTaskPageAndAPIShowThePlansWorkspaceDigest(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.submit("pa", slots.PlanAndApply)
	msg, err := f.store.Take(f.ctx, f.pool, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, msg)
	const digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	_, err = f.store.Complete(f.ctx, f.pool, slots.Result{Task: "pa", Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess, WorkspaceDigest: digest})
	require.NoError(t, err)

	doc := f.page("/pools/ci/terraform/tasks/pa", http.StatusOK)
	assert.Equal(t, digest, doc.Find(testid("workspace-digest")).Text())
	resp := f.do("GET", "/api/v1/pools/ci/terraform/tasks/pa", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, digest, decode(t, resp)["workspace_digest"])

	f.submit("p", slots.Plan)
	doc = f.page("/pools/ci/terraform/tasks/p", http.StatusOK)
	assert.Equal(t, 0, doc.Find(testid("workspace-digest")).Length())
	resp = f.do("GET", "/api/v1/pools/ci/terraform/tasks/p", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotContains(t, decode(t, resp), "workspace_digest")
}
