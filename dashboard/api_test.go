package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

const poolPath = "/api/v1/pools/ci/terraform"

func TestAPIAnswersEachOutcomeWithItsStatus(t *testing.T) {
	tests := map[string]struct {
		setup    func(f *fixture)
		method   string
		path     string
		body     string
		token    string
		want     int
		wantCode string
	}{
		"submit creates a task": {
			method: "POST", path: poolPath + "/tasks", token: testToken,
			body: `{"id":"t1","type":"plan","payload":{"dir":"infra"}}`, want: http.StatusCreated,
		},
		"submit of an existing id is idempotent": {
			setup:  func(f *fixture) { f.submit("t1", slots.Plan) },
			method: "POST", path: poolPath + "/tasks", token: testToken,
			body: `{"id":"t1","type":"plan"}`, want: http.StatusOK,
		},
		"submit without a token is unauthorized": {
			method: "POST", path: poolPath + "/tasks", body: `{"id":"t1","type":"plan"}`,
			want: http.StatusUnauthorized, wantCode: "unauthorized",
		},
		"submit with a wrong token is unauthorized": {
			method: "POST", path: poolPath + "/tasks", token: "nope", body: `{"id":"t1","type":"plan"}`,
			want: http.StatusUnauthorized, wantCode: "unauthorized",
		},
		"malformed JSON is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken, body: `{"id":"t1",`,
			want: http.StatusBadRequest, wantCode: "bad_json",
		},
		"an unknown field is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken, body: `{"id":"t1","type":"plan","priority":1}`,
			want: http.StatusBadRequest, wantCode: "unknown_field",
		},
		"a body over the payload limit plus 64 KiB is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken,
			body: `{"id":"t1","type":"plan","payload":"` + strings.Repeat("x", testMaxPayload+65<<10) + `"}`,
			want: http.StatusBadRequest, wantCode: "body_too_large",
		},
		"a payload over the limit is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken,
			body: `{"id":"t1","type":"plan","payload":"` + strings.Repeat("x", testMaxPayload+1) + `"}`,
			want: http.StatusBadRequest, wantCode: "payload_too_large",
		},
		"a payload that is neither string nor object is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken, body: `{"id":"t1","type":"plan","payload":[1]}`,
			want: http.StatusBadRequest, wantCode: "invalid_payload",
		},
		"an invalid task id is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken, body: `{"id":"-bad id","type":"plan"}`,
			want: http.StatusBadRequest, wantCode: "invalid_task",
		},
		"an unknown task type is a bad request": {
			method: "POST", path: poolPath + "/tasks", token: testToken, body: `{"id":"t1","type":"destroy"}`,
			want: http.StatusBadRequest, wantCode: "invalid_task",
		},
		"an invalid pool name is a bad request": {
			method: "POST", path: "/api/v1/pools/CI/terraform/tasks", token: testToken, body: `{"id":"t1","type":"plan"}`,
			want: http.StatusBadRequest, wantCode: "invalid_pool",
		},
		"submit to an unknown pool is not found": {
			method: "POST", path: "/api/v1/pools/ci/nope/tasks", token: testToken, body: `{"id":"t1","type":"plan"}`,
			want: http.StatusNotFound, wantCode: "pool_not_found",
		},
		"submit to a full queue is too many requests": {
			setup: func(f *fixture) {
				f.declare(slots.PoolID{Namespace: "ci", Name: "tiny"}, func(c *slots.PoolConfig) { c.QueueLimit = 1 })
				_, err := f.store.Submit(f.ctx, slots.PoolID{Namespace: "ci", Name: "tiny"}, slots.TaskSpec{ID: "first", Type: slots.Plan})
				require.NoError(f.t, err)
			},
			method: "POST", path: "/api/v1/pools/ci/tiny/tasks", token: testToken, body: `{"id":"t2","type":"plan"}`,
			want: http.StatusTooManyRequests, wantCode: "queue_full",
		},
		"get task": {
			setup:  func(f *fixture) { f.submit("t1", slots.Plan) },
			method: "GET", path: poolPath + "/tasks/t1", want: http.StatusOK,
		},
		"get unknown task is not found": {
			method: "GET", path: poolPath + "/tasks/nope", want: http.StatusNotFound, wantCode: "task_not_found",
		},
		"get task with an invalid id is a bad request": {
			method: "GET", path: poolPath + "/tasks/.bad", want: http.StatusBadRequest, wantCode: "invalid_task",
		},
		"cancel a queued task": {
			setup:  func(f *fixture) { f.submit("t1", slots.Plan) },
			method: "POST", path: poolPath + "/tasks/t1/cancel", token: testToken, want: http.StatusOK,
		},
		"cancel an unknown task is not found": {
			method: "POST", path: poolPath + "/tasks/nope/cancel", token: testToken, want: http.StatusNotFound, wantCode: "task_not_found",
		},
		"cancel a finished task is a conflict": {
			setup: func(f *fixture) {
				f.submit("t1", slots.Plan)
				_, err := f.store.Cancel(f.ctx, f.pool, "t1", "test")
				require.NoError(f.t, err)
			},
			method: "POST", path: poolPath + "/tasks/t1/cancel", token: testToken, want: http.StatusConflict, wantCode: "task_finished",
		},
		"cancel without a token is unauthorized": {
			setup:  func(f *fixture) { f.submit("t1", slots.Plan) },
			method: "POST", path: poolPath + "/tasks/t1/cancel", want: http.StatusUnauthorized, wantCode: "unauthorized",
		},
		"approve a reserved task": {
			setup:  func(f *fixture) { pod, uid := f.addPod(); f.reserve("t1", pod, uid) },
			method: "POST", path: poolPath + "/tasks/t1/approve", token: testToken, body: `{"note":"CHG-1"}`, want: http.StatusOK,
		},
		"approve a task that is not reserved is a conflict": {
			setup:  func(f *fixture) { f.submit("t1", slots.PlanAndApply) },
			method: "POST", path: poolPath + "/tasks/t1/approve", token: testToken, want: http.StatusConflict, wantCode: "not_reserved",
		},
		"approve a lost reservation is a conflict": {
			setup: func(f *fixture) {
				pod, uid := f.addPod()
				f.reserve("t1", pod, uid)
				require.NoError(f.t, f.store.RemovePod(f.ctx, f.pool, pod, uid, "test"))
			},
			method: "POST", path: poolPath + "/tasks/t1/approve", token: testToken, want: http.StatusConflict, wantCode: "reservation_lost",
		},
		"approve with an unknown body field is a bad request": {
			method: "POST", path: poolPath + "/tasks/t1/approve", token: testToken, body: `{"who":"alice"}`,
			want: http.StatusBadRequest, wantCode: "unknown_field",
		},
		"approve without a token is unauthorized": {
			method: "POST", path: poolPath + "/tasks/t1/approve", want: http.StatusUnauthorized, wantCode: "unauthorized",
		},
		"reject a reserved task": {
			setup:  func(f *fixture) { pod, uid := f.addPod(); f.reserve("t1", pod, uid) },
			method: "POST", path: poolPath + "/tasks/t1/reject", token: testToken, want: http.StatusOK,
		},
		"reject a task that is not reserved is a conflict": {
			setup:  func(f *fixture) { f.submit("t1", slots.PlanAndApply) },
			method: "POST", path: poolPath + "/tasks/t1/reject", token: testToken, want: http.StatusConflict, wantCode: "not_reserved",
		},
		"reject an unknown task is not found": {
			method: "POST", path: poolPath + "/tasks/nope/reject", token: testToken, want: http.StatusNotFound, wantCode: "task_not_found",
		},
		"list pools": {
			method: "GET", path: "/api/v1/pools", want: http.StatusOK,
		},
		"pool snapshot": {
			method: "GET", path: poolPath, want: http.StatusOK,
		},
		"snapshot of an unknown pool is not found": {
			method: "GET", path: "/api/v1/pools/ci/nope", want: http.StatusNotFound, wantCode: "pool_not_found",
		},
		"events": {
			method: "GET", path: poolPath + "/events", want: http.StatusOK,
		},
		"events of an unknown pool are not found": {
			method: "GET", path: "/api/v1/pools/ci/nope/events", want: http.StatusNotFound, wantCode: "pool_not_found",
		},
		"events with a malformed cursor are a bad request": {
			method: "GET", path: poolPath + "/events?cursor=nope", want: http.StatusBadRequest, wantCode: "invalid_cursor",
		},
		"events with a wait over 30s are a bad request": {
			method: "GET", path: poolPath + "/events?wait=31", want: http.StatusBadRequest, wantCode: "invalid_wait",
		},
		// Regression: wait*time.Second overflowed to a negative wait that
		// passed the bound.
		"events with a huge wait are a bad request": {
			method: "GET", path: poolPath + "/events?wait=9223372037", want: http.StatusBadRequest, wantCode: "invalid_wait",
		},
		"events with a wait beyond int64 are a bad request": {
			method: "GET", path: poolPath + "/events?wait=99999999999999999999", want: http.StatusBadRequest, wantCode: "invalid_wait",
		},
		"events with a limit of 0 are a bad request": {
			method: "GET", path: poolPath + "/events?limit=0", want: http.StatusBadRequest, wantCode: "invalid_limit",
		},
		"an unknown API route is not found as JSON": {
			method: "GET", path: "/api/v1/nope", want: http.StatusNotFound, wantCode: "not_found",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			resp := f.do(tc.method, tc.path, tc.body, tc.token)
			body := decode(t, resp)
			require.Equal(t, tc.want, resp.StatusCode, "body: %v", body)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			if tc.want >= 400 {
				assert.NotEmpty(t, body["error"], "an error names the problem")
				assert.NotEmpty(t, body["code"])
			}
			if tc.wantCode != "" {
				assert.Equal(t, tc.wantCode, body["code"], "body: %v", body)
			}
			if tc.want == http.StatusTooManyRequests {
				assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			}
		})
	}
}

func (f *fixture) submit(id string, typ slots.TaskType) slots.SubmitResult {
	f.t.Helper()
	res, err := f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: id, Type: typ})
	require.NoError(f.t, err)
	return res
}

func TestSubmitStoresStringPayloadAsTextAndObjectAsJSON(t *testing.T) {
	f := newFixture(t)
	resp := f.do("POST", poolPath+"/tasks", `{"id":"s","type":"plan","payload":"hello \"world\""}`, testToken)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	resp = f.do("POST", poolPath+"/tasks", `{"id":"o","type":"plan","payload":{ "dir" : "infra" }}`, testToken)
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	ts, err := f.store.Task(f.ctx, f.pool, "s")
	require.NoError(t, err)
	assert.Equal(t, `hello "world"`, string(ts.Payload))
	to, err := f.store.Task(f.ctx, f.pool, "o")
	require.NoError(t, err)
	assert.JSONEq(t, `{"dir":"infra"}`, string(to.Payload))

	got := decode(t, f.do("GET", poolPath+"/tasks/o", "", ""))
	assert.Equal(t, "queued", got["state"])
	assert.JSONEq(t, `{"dir":"infra"}`, got["payload"].(string))
}

// Who decided is the authenticated identity, never the body's word: a
// body "by" naming the identity itself is accepted (older clients send
// it), naming anyone else is refused; the note goes in its own field.
func TestDecisionsRecordTheAuthenticatedIdentity(t *testing.T) {
	tests := map[string]struct {
		action, body, token, wantBy, wantNote string
		wantState                             slots.TaskState
		wantStatus                            int
		wantCode                              string
	}{
		"approve records the token's name":          {action: "approve", token: testToken, wantBy: testTokenName, wantState: slots.StateRunning, wantStatus: http.StatusOK},
		"approve keeps the note apart":              {action: "approve", body: `{"note":"CHG-42"}`, token: testToken, wantBy: testTokenName, wantNote: "CHG-42", wantState: slots.StateRunning, wantStatus: http.StatusOK},
		"reject records the token's name":           {action: "reject", body: `{"note":"destroys prod"}`, token: "other-token", wantBy: "other", wantNote: "destroys prod", wantState: slots.StateRejected, wantStatus: http.StatusOK},
		"cancel records the token's name":           {action: "cancel", token: testToken, wantBy: testTokenName, wantState: slots.StateCancelled, wantStatus: http.StatusOK},
		"a by naming the identity is accepted":      {action: "approve", body: `{"by":"ci"}`, token: testToken, wantBy: testTokenName, wantState: slots.StateRunning, wantStatus: http.StatusOK},
		"approve refuses a by naming another":       {action: "approve", body: `{"by":"alice"}`, token: testToken, wantState: slots.StateReserved, wantStatus: http.StatusBadRequest, wantCode: "by_mismatch"},
		"reject refuses a by naming another":        {action: "reject", body: `{"by":"bob"}`, token: "other-token", wantState: slots.StateReserved, wantStatus: http.StatusBadRequest, wantCode: "by_mismatch"},
		"cancel refuses a by naming another":        {action: "cancel", body: `{"by":"carol"}`, token: testToken, wantState: slots.StateReserved, wantStatus: http.StatusBadRequest, wantCode: "by_mismatch"},
		"a note over the limit is refused":          {action: "approve", body: `{"note":"` + strings.Repeat("x", slots.MaxNoteLen+1) + `"}`, token: testToken, wantState: slots.StateReserved, wantStatus: http.StatusBadRequest, wantCode: "invalid_task"},
		"a note with control characters is refused": {action: "reject", body: `{"note":"a\u001b[2Jb"}`, token: testToken, wantState: slots.StateReserved, wantStatus: http.StatusBadRequest, wantCode: "invalid_task"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			pod, uid := f.addPod()
			f.reserve("t1", pod, uid)
			resp := f.do("POST", poolPath+"/tasks/t1/"+tc.action, tc.body, tc.token)
			body := decode(t, resp)
			require.Equal(t, tc.wantStatus, resp.StatusCode, "body: %v", body)
			task, err := f.store.Task(f.ctx, f.pool, "t1")
			require.NoError(t, err)
			assert.Equal(t, tc.wantState, task.State)
			if tc.wantCode != "" {
				assert.Equal(t, tc.wantCode, body["code"])
				assert.Empty(t, task.By, "nothing was decided")
				return
			}
			assert.Equal(t, tc.wantBy, body["by"])
			assert.Equal(t, tc.wantBy, task.By)
			assert.Equal(t, tc.wantNote, task.Note)
			if tc.wantNote != "" {
				assert.Equal(t, tc.wantNote, body["note"])
			}
		})
	}
}

// The API's submit records the token's name as the submitter.
func TestSubmitRecordsTheSubmitter(t *testing.T) {
	f := newFixture(t)
	resp := f.do("POST", poolPath+"/tasks", `{"id":"s1","type":"plan"}`, "other-token")
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	got := decode(t, f.do("GET", poolPath+"/tasks/s1", "", ""))
	assert.Equal(t, "other", got["submitted_by"])
}

func TestReadsNeedATokenWithReadAuth(t *testing.T) {
	f := newFixture(t, withReadAuth)
	for _, path := range []string{"/api/v1/pools", poolPath, poolPath + "/events", poolPath + "/tasks/t1"} {
		resp := f.do("GET", path, "", "")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
	}
	resp := f.do("GET", "/api/v1/pools", "", testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp = f.do("GET", "/api/v1/openapi.json", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the API description stays open")
}

func TestReadsAreOpenWithoutReadAuth(t *testing.T) {
	f := newFixture(t)
	resp := f.do("GET", "/api/v1/pools", "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestListPoolsShowsCountersAndDesiredPods(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	f.submit("p1", slots.Plan) // plan-only slot 1
	f.submit("p2", slots.Plan) // plan-only slot 2
	f.submit("q1", slots.Plan) // queued: every plan slot is taken
	f.submit("q2", slots.PlanAndApply)

	body := decode(t, f.do("GET", "/api/v1/pools", "", ""))
	pools := body["pools"].([]any)
	require.Len(t, pools, 1)
	p := pools[0].(map[string]any)
	assert.Equal(t, "ci/terraform", p["pool"])
	assert.EqualValues(t, 1, p["pods"].(map[string]any)["active"])
	assert.EqualValues(t, 1, p["slots_reserved"])
	assert.EqualValues(t, 2, p["slots_running"], "assigned plans count as running")
	assert.EqualValues(t, 0, p["slots_idle"])
	assert.EqualValues(t, 2, p["queued_total"])
	assert.EqualValues(t, 1, p["queued"].(map[string]any)["plan"])
	assert.EqualValues(t, 1, p["queued"].(map[string]any)["plan_and_apply"])
	assert.NotNil(t, p["oldest_queued"])
	assert.EqualValues(t, 1, p["live_pods"])
	assert.EqualValues(t, 2, p["desired_pods"], "one busy pod plus one new pod fits both queued tasks")
	assert.EqualValues(t, 1, p["utilisation"])
}

func TestPoolSnapshotShowsSlotsAndQueue(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	f.submit("p1", slots.Plan)
	body := decode(t, f.do("GET", poolPath, "", ""))
	pods := body["pods"].([]any)
	require.Len(t, pods, 1)
	sl := pods[0].(map[string]any)["slots"].([]any)
	require.Len(t, sl, 3)
	s0 := sl[0].(map[string]any)
	assert.Equal(t, "reserved", s0["state"])
	assert.Equal(t, "r1", s0["task"])
	assert.Equal(t, "assigned", sl[1].(map[string]any)["state"])
	assert.Equal(t, "p1", sl[1].(map[string]any)["task"])
	assert.Equal(t, "idle", sl[2].(map[string]any)["state"])
	assert.Empty(t, body["queue"])
}

func TestEventsResumeFromCursor(t *testing.T) {
	f := newFixture(t)
	first := decode(t, f.do("GET", poolPath+"/events", "", ""))
	f.submit("t1", slots.Plan)
	page := decode(t, f.do("GET", poolPath+"/events?cursor="+first["next"].(string), "", ""))
	evs := page["events"].([]any)
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1].(map[string]any)
	assert.Equal(t, "task", last["kind"])
	assert.Equal(t, "t1", last["subject"])
	assert.Equal(t, false, page["gap"])
	again := decode(t, f.do("GET", poolPath+"/events?cursor="+page["next"].(string), "", ""))
	assert.Empty(t, again["events"], "nothing after the last cursor")
	assert.Equal(t, page["next"], again["next"], "the cursor stays when nothing is new")
}

func TestEventsLongPollReturnsAnEventThatArrivesWhileWaiting(t *testing.T) {
	f := newFixture(t)
	cursor := decode(t, f.do("GET", poolPath+"/events", "", ""))["next"].(string)
	var wg sync.WaitGroup
	var page map[string]any
	var status int
	wg.Go(func() {
		resp := f.do("GET", poolPath+"/events?wait=30&cursor="+cursor, "", "")
		status = resp.StatusCode
		page = decode(t, resp)
	})
	// Whether the request is already waiting or not, the event is after cursor.
	f.submit("late", slots.Plan)
	wg.Wait()
	require.Equal(t, http.StatusOK, status)
	evs := page["events"].([]any)
	require.NotEmpty(t, evs)
	assert.Equal(t, "late", evs[0].(map[string]any)["subject"])
}

func TestEventsReportAGapWhenTheCapDroppedEvents(t *testing.T) {
	f := newFixture(t)
	f.pool = slots.PoolID{Namespace: "ci", Name: "capped"}
	f.declare(f.pool, func(c *slots.PoolConfig) { c.EventCap = 2 })
	cursor := decode(t, f.do("GET", "/api/v1/pools/ci/capped/events?limit=1", "", ""))["next"].(string)
	// The store trims its stream approximately (XADD MAXLEN ~): whole
	// stream nodes (100 entries by default) go at once, so write well past one.
	for i := range 250 {
		f.submit(fmt.Sprintf("t%d", i), slots.Plan)
	}
	page := decode(t, f.do("GET", "/api/v1/pools/ci/capped/events?cursor="+cursor, "", ""))
	assert.Equal(t, true, page["gap"])
}

func TestStoreUnavailableIsServiceUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	f := newFixtureOn(t, srv.URL())
	f.submit("t1", slots.Plan)
	srv.Stop(t)
	tests := map[string]struct{ method, path, body, token string }{
		"submit":    {"POST", poolPath + "/tasks", `{"id":"t2","type":"plan"}`, testToken},
		"get task":  {"GET", poolPath + "/tasks/t1", "", ""},
		"cancel":    {"POST", poolPath + "/tasks/t1/cancel", "", testToken},
		"approve":   {"POST", poolPath + "/tasks/t1/approve", "", testToken},
		"list":      {"GET", "/api/v1/pools", "", ""},
		"snapshot":  {"GET", poolPath, "", ""},
		"events":    {"GET", poolPath + "/events", "", ""},
		"readiness": {"GET", "/readyz", "", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp := f.do(tc.method, tc.path, tc.body, tc.token)
			body := decode(t, resp)
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "body: %v", body)
			assert.Equal(t, "redis_unavailable", body["code"])
		})
	}
	for _, path := range []string{"/", "/pools/ci/terraform"} {
		resp := f.do("GET", path, "", "")
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, path)
		assert.Contains(t, readAll(t, resp), "unavailable", path)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t)
	assert.Equal(t, http.StatusOK, f.do("GET", "/healthz", "", "").StatusCode)
	assert.Equal(t, http.StatusOK, f.do("GET", "/readyz", "", "").StatusCode)
}

func TestEventsLongPollAnswersEmptyWhenNothingArrives(t *testing.T) {
	f := newFixture(t)
	cursor := decode(t, f.do("GET", poolPath+"/events", "", ""))["next"].(string)
	resp := f.do("GET", poolPath+"/events?wait=1&cursor="+cursor, "", "")
	page := decode(t, resp)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, page["events"])
	assert.Equal(t, cursor, page["next"])
	assert.Equal(t, false, page["gap"])
}

func TestEventsLongPollAnswersAtOnceWhenTheServerStops(t *testing.T) {
	f := newFixture(t)
	stopping := make(chan struct{})
	f.srv.stopping = stopping
	cursor := decode(t, f.do("GET", poolPath+"/events", "", ""))["next"].(string)
	close(stopping)
	// With wait=30 this would hold a graceful shutdown; stopping ends the wait.
	resp := f.do("GET", poolPath+"/events?wait=30&cursor="+cursor, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, decode(t, resp)["events"])
}
