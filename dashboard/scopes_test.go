package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The scoped tokens of these tests; admin comes from --api-tokens.
const scopedTokensYAML = `
tokens:
  - name: submitter
    secret: submitter-secret
    scopes:
      - verbs: [submit, read]
        pools: ["ci/*"]
  - name: approver
    secret: approver-secret
    scopes:
      - verbs: [read]
        pools: ["*"]
      - verbs: [approve]
        pools: ["ci/terraform"]
  - name: canceller
    secret: canceller-secret
    scopes:
      - verbs: [read, cancel]
        pools: ["*/terraform"]
  - name: reader
    secret: reader-secret
    scopes:
      - verbs: [read]
        pools: ["ci/terraform"]
  - name: team-b
    secret: team-b-secret
    scopes:
      - verbs: [read, submit, approve, cancel]
        pools: ["team-b/*"]
`

var teamB = slots.PoolID{Namespace: "team-b", Name: "infra"}

func withTokens(ts *tokenSet) fixtureOption { return func(s *server) { s.tokens = ts } }

func withLog(l *slog.Logger) fixtureOption { return func(s *server) { s.log = l } }

func withSeparateApprover(globs ...string) fixtureOption {
	return func(s *server) {
		for _, g := range globs {
			pg, err := parsePoolGlob(g)
			if err != nil {
				panic(err)
			}
			s.separateApprover = append(s.separateApprover, pg)
		}
	}
}

func scopedTokens(t *testing.T) *tokenSet {
	t.Helper()
	ts, err := loadTokens(tokens{"admin": "admin-secret"}, writeTokensFile(t, "tokens.yaml", scopedTokensYAML), noEnv)
	require.NoError(t, err)
	return ts
}

// scopedFixture: read auth on, the scoped tokens, pools ci/terraform and
// team-b/infra, each with one pod; its audit lines go to the returned buffer.
func scopedFixture(t *testing.T, opts ...fixtureOption) (*fixture, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	opts = append([]fixtureOption{withReadAuth, withTokens(scopedTokens(t)), withLog(slog.New(slog.NewJSONHandler(logs, nil)))}, opts...)
	f := newFixture(t, opts...)
	f.declare(teamB, nil)
	return f, logs
}

// podIn registers pod in pool.
func (f *fixture) podIn(pool slots.PoolID, pod string) string {
	f.t.Helper()
	uid := "uid-" + pod
	_, err := f.store.RegisterPod(f.ctx, pool, pod, uid)
	require.NoError(f.t, err)
	return uid
}

// planIn runs the plan of a submitted plan_and_apply on pod to its
// reservation.
func (f *fixture) planIn(pool slots.PoolID, pod, uid, id string) {
	f.t.Helper()
	msg, err := f.store.Take(f.ctx, pool, pod, uid, time.Second, nil)
	require.NoError(f.t, err)
	require.NotNil(f.t, msg)
	require.Equal(f.t, id, msg.Task)
	st, err := f.store.Complete(f.ctx, pool, slots.Result{Task: id, Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess, Output: []byte("Plan: 1 to add, 0 to change, 0 to destroy.")})
	require.NoError(f.t, err)
	require.Equal(f.t, slots.StateReserved, st)
}

// reserveIn submits a plan_and_apply to pool as the store would for a
// submitter, and runs its plan to the reservation.
func (f *fixture) reserveIn(pool slots.PoolID, pod, uid, id, submitter string) {
	f.t.Helper()
	_, err := f.store.Submit(f.ctx, pool, slots.TaskSpec{ID: id, Type: slots.PlanAndApply, SubmittedBy: submitter})
	require.NoError(f.t, err)
	f.planIn(pool, pod, uid, id)
}

// auditLines are the audit lines logged so far.
func auditLines(t *testing.T, logs *testutil.SyncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		if m["audit"] == true {
			out = append(out, m)
		}
	}
	return out
}

// Each verb is allowed only to the tokens holding it in the request's
// pool; a refusal is a 403 naming the missing scope and the pool, never a
// secret, checked before the pool or task is even looked up.
func TestScopesAllowEachVerbOnlyInTheirPools(t *testing.T) {
	const ci = "/api/v1/pools/ci/terraform"
	const tb = "/api/v1/pools/team-b/infra"
	tests := []struct {
		name, method, path, token string
		want                      int
		wantScope, wantPool       string
	}{
		{name: "submit in its pool", method: "POST", path: ci + "/tasks", token: "submitter-secret", want: http.StatusCreated},
		{name: "submit elsewhere", method: "POST", path: tb + "/tasks", token: "submitter-secret", want: http.StatusForbidden, wantScope: "submit", wantPool: "team-b/infra"},
		{name: "submit without the verb", method: "POST", path: ci + "/tasks", token: "approver-secret", want: http.StatusForbidden, wantScope: "submit", wantPool: "ci/terraform"},
		{name: "submit with every verb in the pool", method: "POST", path: tb + "/tasks", token: "team-b-secret", want: http.StatusCreated},
		{name: "submit with full access", method: "POST", path: tb + "/tasks", token: "admin-secret", want: http.StatusCreated},

		{name: "read a pool", method: "GET", path: ci, token: "reader-secret", want: http.StatusOK},
		{name: "read a task", method: "GET", path: ci + "/tasks/res", token: "reader-secret", want: http.StatusOK},
		{name: "read events", method: "GET", path: ci + "/events", token: "reader-secret", want: http.StatusOK},
		{name: "read history", method: "GET", path: ci + "/history", token: "reader-secret", want: http.StatusOK},
		{name: "read another pool", method: "GET", path: tb, token: "reader-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "team-b/infra"},
		{name: "read another pool's task", method: "GET", path: tb + "/tasks/tb-res", token: "reader-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "team-b/infra"},
		{name: "read another pool's events", method: "GET", path: tb + "/events", token: "reader-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "team-b/infra"},
		{name: "read another pool's history", method: "GET", path: tb + "/history", token: "reader-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "team-b/infra"},
		{name: "an unknown pool outside the scope is forbidden, not missing", method: "GET", path: "/api/v1/pools/team-b/nope", token: "reader-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "team-b/nope"},
		{name: "read without the verb", method: "GET", path: ci + "/tasks/res", token: "team-b-secret", want: http.StatusForbidden, wantScope: "read", wantPool: "ci/terraform"},

		{name: "approve in its pool", method: "POST", path: ci + "/tasks/res/approve", token: "approver-secret", want: http.StatusOK},
		{name: "reject in its pool", method: "POST", path: ci + "/tasks/res/reject", token: "approver-secret", want: http.StatusOK},
		{name: "approve elsewhere", method: "POST", path: tb + "/tasks/tb-res/approve", token: "approver-secret", want: http.StatusForbidden, wantScope: "approve", wantPool: "team-b/infra"},
		{name: "reject elsewhere", method: "POST", path: tb + "/tasks/tb-res/reject", token: "approver-secret", want: http.StatusForbidden, wantScope: "approve", wantPool: "team-b/infra"},
		{name: "approve without the verb", method: "POST", path: ci + "/tasks/res/approve", token: "canceller-secret", want: http.StatusForbidden, wantScope: "approve", wantPool: "ci/terraform"},
		{name: "reject without the verb", method: "POST", path: ci + "/tasks/res/reject", token: "submitter-secret", want: http.StatusForbidden, wantScope: "approve", wantPool: "ci/terraform"},
		{name: "approve with the verb in another pool", method: "POST", path: ci + "/tasks/res/approve", token: "team-b-secret", want: http.StatusForbidden, wantScope: "approve", wantPool: "ci/terraform"},
		{name: "approve in team-b", method: "POST", path: tb + "/tasks/tb-res/approve", token: "team-b-secret", want: http.StatusOK},

		{name: "cancel in its pools", method: "POST", path: ci + "/tasks/res/cancel", token: "canceller-secret", want: http.StatusOK},
		{name: "cancel without the verb", method: "POST", path: ci + "/tasks/res/cancel", token: "approver-secret", want: http.StatusForbidden, wantScope: "cancel", wantPool: "ci/terraform"},
		{name: "cancel elsewhere", method: "POST", path: tb + "/tasks/tb-res/cancel", token: "canceller-secret", want: http.StatusForbidden, wantScope: "cancel", wantPool: "team-b/infra"},

		{name: "no token", method: "POST", path: ci + "/tasks/res/approve", want: http.StatusUnauthorized},
		{name: "a wrong token", method: "GET", path: ci, token: "approver-secret-x", want: http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, logs := scopedFixture(t)
			pod, uid := f.addPod()
			f.reserveIn(f.pool, pod, uid, "res", "submitter")
			tbUID := f.podIn(teamB, "tb-0")
			f.reserveIn(teamB, "tb-0", tbUID, "tb-res", "team-b")
			body := ""
			if strings.HasSuffix(tc.path, "/tasks") {
				body = `{"id":"new","type":"plan"}`
			}
			resp := f.do(tc.method, tc.path, body, tc.token)
			raw := readAll(t, resp)
			require.Equal(t, tc.want, resp.StatusCode, raw)
			assert.NotContains(t, raw, "-secret", "no secret in an answer")
			if tc.want != http.StatusForbidden {
				return
			}
			var e apiError
			require.NoError(t, json.Unmarshal([]byte(raw), &e))
			assert.Equal(t, "forbidden", e.Code)
			assert.Equal(t, tc.wantScope, e.Scope)
			assert.Equal(t, tc.wantPool, e.Pool)
			assert.Contains(t, e.Error, fmt.Sprintf("has no %s scope on pool %s", tc.wantScope, tc.wantPool))
			lines := auditLines(t, logs)
			require.Len(t, lines, 1, "a refusal is audited")
			assert.Equal(t, "forbidden", lines[0]["result"])
			assert.Equal(t, tc.wantScope, lines[0]["verb"])
			assert.Equal(t, tc.wantPool, lines[0]["pool"])
			for _, task := range []string{"res", "tb-res"} {
				pool := f.pool
				if task == "tb-res" {
					pool = teamB
				}
				tk, err := f.store.Task(f.ctx, pool, task)
				require.NoError(t, err)
				assert.Equal(t, slots.StateReserved, tk.State, "a refused decision changes nothing")
			}
		})
	}
}

// The pool list, the overview and the approvals page show only the pools
// the identity may read.
func TestReadsShowOnlyReadablePools(t *testing.T) {
	f, _ := scopedFixture(t)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "res", "submitter")
	tbUID := f.podIn(teamB, "tb-0")
	f.reserveIn(teamB, "tb-0", tbUID, "tb-res", "team-b")
	f.declare(slots.PoolID{Namespace: "ci", Name: "other"}, nil)

	tests := map[string][]string{
		"reader-secret":    {"ci/terraform"},
		"submitter-secret": {"ci/other", "ci/terraform"},
		"team-b-secret":    {"team-b/infra"},
		"approver-secret":  {"ci/other", "ci/terraform", "team-b/infra"},
		"admin-secret":     {"ci/other", "ci/terraform", "team-b/infra"},
	}
	for token, want := range tests {
		t.Run(token, func(t *testing.T) {
			body := decode(t, f.do("GET", "/api/v1/pools", "", token))
			var got []string
			for _, p := range body["pools"].([]any) {
				got = append(got, p.(map[string]any)["pool"].(string))
			}
			assert.ElementsMatch(t, want, got, "the API's pool list")

			doc := f.pageAs("/", token, http.StatusOK)
			got = nil
			doc.Find(testid("pool-row")).Each(func(_ int, s *goquery.Selection) { got = append(got, s.AttrOr("data-pool", "")) })
			assert.ElementsMatch(t, want, got, "the overview")
			awaiting := 0
			for _, p := range want {
				if p != "ci/other" {
					awaiting++
				}
			}
			assert.Equal(t, fmt.Sprint(awaiting), doc.Find(testid("awaiting-approval-count")).Text(), "the overview counts what awaits approval in those pools")

			doc = f.pageAs("/approvals", token, http.StatusOK)
			got = nil
			doc.Find(testid("approval")).Each(func(_ int, s *goquery.Selection) { got = append(got, s.AttrOr("data-pool", "")) })
			var wantApprovals []string
			for _, p := range want {
				if p != "ci/other" {
					wantApprovals = append(wantApprovals, p)
				}
			}
			assert.ElementsMatch(t, wantApprovals, got, "the approvals page")
		})
	}
}

// pageAs fetches a page with a bearer token and parses it.
func (f *fixture) pageAs(path, token string, wantStatus int) *goquery.Document {
	f.t.Helper()
	resp := f.do("GET", path, "", token)
	require.Equal(f.t, wantStatus, resp.StatusCode, path)
	doc, err := goquery.NewDocumentFromReader(resp.Body)
	require.NoError(f.t, err)
	return doc
}

// Pages refuse a pool the identity may not read, with a 403 page.
func TestPagesOfAnUnreadablePoolAreForbidden(t *testing.T) {
	f, _ := scopedFixture(t)
	tbUID := f.podIn(teamB, "tb-0")
	f.reserveIn(teamB, "tb-0", tbUID, "tb-res", "team-b")
	for _, path := range []string{"/pools/team-b/infra", "/pools/team-b/infra/grid", "/pools/team-b/infra/chart", "/pools/team-b/infra/live", "/pools/team-b/infra/tasks/tb-res"} {
		doc := f.pageAs(path, "reader-secret", http.StatusForbidden)
		assert.Contains(t, doc.Find(testid("error")).Text(), `token "reader" has no read scope on pool team-b/infra`, path)
	}
	f.pageAs("/pools/team-b/infra/tasks/tb-res", "team-b-secret", http.StatusOK)
}

// The approve, reject and cancel forms are shown only to identities
// allowed that verb in the task's pool.
func TestDecisionFormsAreShownOnlyToWhoMayUseThem(t *testing.T) {
	f, _ := scopedFixture(t)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "res", "submitter")
	type forms struct{ approve, reject, cancel bool }
	tests := map[string]forms{
		"admin-secret":     {true, true, true},
		"approver-secret":  {true, true, false},
		"canceller-secret": {false, false, true},
		"reader-secret":    {false, false, false},
		"submitter-secret": {false, false, false},
	}
	for token, want := range tests {
		t.Run(token, func(t *testing.T) {
			for _, path := range []string{"/pools/ci/terraform/tasks/res", "/pools/ci/terraform", "/approvals"} {
				doc := f.pageAs(path, token, http.StatusOK)
				got := forms{
					approve: doc.Find(testid("approve-form")).Length() == 1,
					reject:  doc.Find(testid("reject-form")).Length() == 1,
					cancel:  doc.Find(testid("cancel-form")).Length() == 1,
				}
				assert.Equal(t, want, got, path)
				if got.approve {
					form := doc.Find(testid("approve-form"))
					assert.Equal(t, "/pools/ci/terraform/tasks/res/approve", form.AttrOr("hx-post", ""))
					assert.Equal(t, "/pools/ci/terraform/tasks/res/approve", form.AttrOr("action", ""), "works without JS too")
				}
				if got.reject {
					_, required := doc.Find(testid("reject-form") + ` input[name="note"]`).Attr("required")
					assert.True(t, required, "a reject asks for its reason")
				}
			}
		})
	}
	// Once decided, nothing is left to decide.
	require.Equal(t, http.StatusOK, f.do("POST", poolPath+"/tasks/res/reject", "", "admin-secret").StatusCode)
	doc := f.pageAs("/pools/ci/terraform/tasks/res", "admin-secret", http.StatusOK)
	assert.Zero(t, doc.Find(testid("decisions")).Length())
}

// A page decision records the session's identity, never a form field; it
// is refused from another origin (CSRF) and without the scope.
func TestPageDecisionsActAsTheSessionIdentity(t *testing.T) {
	f, logs := scopedFixture(t)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "res", "submitter")
	approver := f.login(f.http.URL, "approver-secret", "/")
	reader := f.login(f.http.URL, "reader-secret", "/")

	post := func(path string, form url.Values, cookie *http.Cookie, header map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(f.ctx, "POST", f.http.URL+path, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		req.AddCookie(cookie)
		client := *f.http.Client()
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := client.Do(req)
		require.NoError(t, err)
		t.Cleanup(func() { _ = resp.Body.Close() })
		return resp
	}
	const approve = "/pools/ci/terraform/tasks/res/approve"
	browser := map[string]string{"Sec-Fetch-Site": "same-origin", "HX-Request": "true"}

	resp := post(approve, url.Values{"note": {"lgtm"}, "by": {"mallory"}}, reader, browser)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "a read-only session may not approve")
	assert.Contains(t, readAll(t, resp), `data-testid="decision-refused"`, "htmx gets a fragment to swap into the form")

	resp = post(approve, url.Values{"note": {"lgtm"}}, approver, map[string]string{"Sec-Fetch-Site": "cross-site"})
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "a post from another site is refused")
	resp = post(approve, url.Values{"note": {"lgtm"}}, approver, map[string]string{"Origin": "https://evil.example"})
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "an Origin other than the host is refused")
	tk, err := f.store.Task(f.ctx, f.pool, "res")
	require.NoError(t, err)
	require.Equal(t, slots.StateReserved, tk.State, "nothing was decided yet")

	resp = post(approve, url.Values{"note": {"lgtm"}, "by": {"mallory"}}, approver, browser)
	require.Equal(t, http.StatusOK, resp.StatusCode, readAll(t, resp))
	assert.Equal(t, "/pools/ci/terraform/tasks/res", resp.Header.Get("HX-Redirect"), "htmx goes on to the task page")
	tk, err = f.store.Task(f.ctx, f.pool, "res")
	require.NoError(t, err)
	assert.Equal(t, slots.StateRunning, tk.State)
	assert.Equal(t, slots.PhaseApply, tk.Phase)
	assert.Equal(t, "approver", tk.By, "the session's identity, not a form field")
	assert.Equal(t, "lgtm", tk.Note)

	// Without JS: a plain post and a redirect (a repeat of the same
	// approval is answered like the first); a refusal is an error page.
	resp = post(approve, nil, approver, map[string]string{"Sec-Fetch-Site": "same-origin"})
	assert.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, "/pools/ci/terraform/tasks/res", resp.Header.Get("Location"))
	resp = post("/pools/ci/terraform/tasks/res/reject", url.Values{"note": {"too late"}}, approver, map[string]string{"Sec-Fetch-Site": "same-origin"})
	assert.Equal(t, http.StatusConflict, resp.StatusCode, "approved already")
	assert.Contains(t, readAll(t, resp), `data-testid="error"`)

	lines := auditLines(t, logs)
	var results []string
	for _, l := range lines {
		results = append(results, fmt.Sprintf("%s %s %s %s", l["identity"], l["action"], l["task"], l["result"]))
	}
	assert.Equal(t, []string{"reader approve res forbidden", "approver approve res approved", "approver approve res approved", "approver reject res not_reserved"}, results)
}

// Every decision writes one audit line: who, what, where, how it ended.
func TestEachDecisionWritesOneAuditLine(t *testing.T) {
	f, logs := scopedFixture(t)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "a1", "submitter")
	resp := f.do("POST", poolPath+"/tasks/a1/approve", `{"note":"CHG-7"}`, "approver-secret")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp = f.do("POST", poolPath+"/tasks/a1/approve", `{"by":"someone"}`, "approver-secret")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	lines := auditLines(t, logs)
	require.Len(t, lines, 2)
	first := lines[0]
	for k, v := range map[string]any{"audit": true, "identity_kind": "token", "identity": "approver", "action": "approve", "verb": "approve",
		"pool": "ci/terraform", "task": "a1", "result": "approved", "note": "CHG-7"} {
		assert.Equal(t, v, first[k], k)
	}
	assert.Equal(t, "by_mismatch", lines[1]["result"])
	assert.Equal(t, "someone", lines[1]["body_by"])
	assert.NotContains(t, logs.String(), "approver-secret", "no secret in the logs")
}

// In a pool listed in --separate-approver-pools, the identity that
// submitted a task may not approve it; anyone else with the scope may.
func TestSeparateApproverPoolsRefuseTheSubmittersOwnApproval(t *testing.T) {
	f, logs := scopedFixture(t, withSeparateApprover("team-b/*"))
	uid := f.podIn(teamB, "tb-0")
	const tb = "/api/v1/pools/team-b/infra"

	resp := f.do("POST", tb+"/tasks", `{"id":"own","type":"plan_and_apply"}`, "team-b-secret")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	f.planIn(teamB, "tb-0", uid, "own")
	doc := f.pageAs("/pools/team-b/infra/tasks/own", "team-b-secret", http.StatusOK)
	assert.Zero(t, doc.Find(testid("approve-form")).Length(), "no approve button for the submitter")
	assert.Equal(t, 1, doc.Find(testid("reject-form")).Length(), "they may still reject")
	assert.Contains(t, doc.Find(testid("approve-blocked")).Text(), "You submitted this task")
	resp = f.do("POST", tb+"/tasks/own/approve", "", "team-b-secret")
	body := decode(t, resp)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	assert.Equal(t, "own_task", body["code"])
	assert.Contains(t, body["error"], "--separate-approver-pools")
	lines := auditLines(t, logs)
	require.NotEmpty(t, lines)
	assert.Equal(t, "own_task", lines[len(lines)-1]["result"])
	assert.Equal(t, "team-b", lines[len(lines)-1]["submitter"])

	resp = f.do("POST", tb+"/tasks/own/approve", "", "admin-secret")
	require.Equal(t, http.StatusOK, resp.StatusCode, "another identity approves")
	f.agentRuns2(teamB, "tb-0", uid, "own")

	_, err := f.store.Submit(f.ctx, teamB, slots.TaskSpec{ID: "anon", Type: slots.PlanAndApply}) // no recorded submitter
	require.NoError(t, err)
	f.planIn(teamB, "tb-0", uid, "anon")
	resp = f.do("POST", tb+"/tasks/anon/approve", "", "admin-secret")
	body = decode(t, resp)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	assert.Equal(t, "submitter_unknown", body["code"], "unknown submitter: refused, the rule cannot be checked")

	// Elsewhere the rule does not apply.
	pod, puid := f.addPod()
	resp = f.do("POST", poolPath+"/tasks", `{"id":"mine","type":"plan_and_apply"}`, "admin-secret")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	f.planIn(f.pool, pod, puid, "mine")
	resp = f.do("POST", poolPath+"/tasks/mine/approve", "", "admin-secret")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "ci/terraform is not a separate-approver pool")
}

// agentRuns2 plays the agent of pod in pool: takes its next message (an
// apply) and completes it.
func (f *fixture) agentRuns2(pool slots.PoolID, pod, uid, task string) {
	f.t.Helper()
	msg, err := f.store.Take(f.ctx, pool, pod, uid, time.Second, nil)
	require.NoError(f.t, err)
	require.NotNil(f.t, msg)
	require.Equal(f.t, task, msg.Task)
	_, err = f.store.Complete(f.ctx, pool, slots.Result{Task: task, Epoch: msg.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(f.t, err)
}

// A decision posted by htmx after the login ended gets a line for its
// form, not the login page.
func TestADecisionAfterTheLoginEndedAsksToLogInAgain(t *testing.T) {
	f, _ := scopedFixture(t)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "res", "submitter")
	req, err := http.NewRequestWithContext(f.ctx, "POST", f.http.URL+"/pools/ci/terraform/tasks/res/approve", nil)
	require.NoError(t, err)
	req.Header.Set("HX-Request", "true")
	resp, err := f.http.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	body := readAll(t, resp)
	assert.Contains(t, body, `data-testid="decision-refused"`)
	assert.NotContains(t, body, "<html", "a fragment, not a page")
}
