package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// page fetches a path and parses the HTML.
func (f *fixture) page(path string, wantStatus int) *goquery.Document {
	f.t.Helper()
	resp := f.do("GET", path, "", "")
	require.Equal(f.t, wantStatus, resp.StatusCode)
	require.True(f.t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html"))
	doc, err := goquery.NewDocumentFromReader(resp.Body)
	require.NoError(f.t, err)
	return doc
}

func testid(id string) string { return `[data-testid="` + id + `"]` }

func TestOverviewShowsEachPoolsCounters(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	f.submit("p1", slots.Plan)
	f.submit("p2", slots.Plan)
	f.submit("q1", slots.Plan)
	f.submit("q2", slots.PlanAndApply)
	f.declare(slots.PoolID{Namespace: "ci", Name: "empty"}, nil)

	doc := f.page("/", http.StatusOK)
	rows := doc.Find(testid("pool-row"))
	require.Equal(t, 2, rows.Length())
	row := doc.Find(testid("pool-row") + `[data-pool="ci/terraform"]`)
	require.Equal(t, 1, row.Length())
	link, _ := row.Find(testid("pool-link")).Attr("href")
	assert.Equal(t, "/pools/ci/terraform", link)
	assert.Equal(t, "active 1", row.Find(testid("pods-active")).Text())
	assert.Equal(t, "cordoned 0", row.Find(testid("pods-cordoned")).Text())
	assert.Equal(t, "0", row.Find(testid("slots-idle")).Text())
	assert.Equal(t, "2", row.Find(testid("slots-running")).Text())
	assert.Equal(t, "1", row.Find(testid("slots-reserved")).Text())
	assert.Equal(t, "2", row.Find(testid("queued-total")).Text())
	assert.Equal(t, "plan 1", row.Find(testid("queued-plan")).Text())
	assert.Equal(t, "plan_and_apply 1", row.Find(testid("queued-plan_and_apply")).Text())
	assert.Regexp(t, `^\d+(s|m\d\ds)$`, strings.TrimSpace(row.Find(testid("oldest-queued")).Text()))
	assert.Equal(t, "2", row.Find(testid("desired-pods")).Text())
	assert.Equal(t, "1", row.Find(testid("live-pods")).Text())
	assert.Equal(t, "100%", row.Find(testid("utilisation")).Text())

	empty := doc.Find(testid("pool-row") + `[data-pool="ci/empty"]`)
	assert.Equal(t, "0", empty.Find(testid("desired-pods")).Text())
	assert.Equal(t, "—", strings.TrimSpace(empty.Find(testid("oldest-queued")).Text()))
}

func TestPoolPageShowsEverySlotWithStateTaskAndQueue(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	f.submit("p1", slots.Plan)
	f.submit("p2", slots.Plan)
	f.submit("q1", slots.Plan)
	pod2, uid2 := f.addPod() // takes q1 at registration
	require.NoError(t, f.store.Cordon(f.ctx, f.pool, pod2, uid2))
	f.submit("q2", slots.Plan) // nowhere to run: queued

	doc := f.page("/pools/ci/terraform", http.StatusOK)
	assert.Equal(t, "ci/terraform", doc.Find(testid("pool-name")).Text())
	grid := doc.Find(testid("grid"))
	require.Equal(t, 1, grid.Length())
	live := doc.Find(testid("live"))
	assert.Equal(t, "sse", live.AttrOr("hx-ext", ""))
	assert.Equal(t, "/pools/ci/terraform/live", live.AttrOr("sse-connect", ""))
	assert.Equal(t, "grid", doc.Find(testid("grid-target")).AttrOr("sse-swap", ""))

	pods := doc.Find(testid("pod"))
	require.Equal(t, 2, pods.Length())
	first := doc.Find(testid("pod") + `[data-pod="` + pod + `"]`)
	assert.Equal(t, "active", first.Find(testid("pod-state")).Text())
	assert.False(t, first.HasClass("flagged"))
	slot0 := first.Find(testid("slot") + `[data-slot="0"]`)
	assert.Equal(t, "reserved", slot0.Find(testid("slot-state")).Text(), "state as text")
	assert.True(t, slot0.HasClass("slot-reserved"), "state as colour")
	assert.Equal(t, "r1", slot0.Find(testid("slot-task")).Text())
	assert.Equal(t, "plan_and_apply", slot0.Find(testid("slot-type")).Text())
	assert.Equal(t, "plan", slot0.Find(testid("slot-phase")).Text())
	assert.Regexp(t, `^\d+s$`, slot0.Find(testid("slot-age")).Text())
	slot1 := first.Find(testid("slot") + `[data-slot="1"]`)
	assert.Equal(t, "assigned", slot1.Find(testid("slot-state")).Text())
	assert.Equal(t, "p1", slot1.Find(testid("slot-task")).Text())

	second := doc.Find(testid("pod") + `[data-pod="` + pod2 + `"]`)
	assert.Equal(t, "cordoned", second.Find(testid("pod-state")).Text())
	assert.True(t, second.HasClass("flagged"), "a cordoned pod is marked")
	assert.Equal(t, 2, second.Find(testid("slot")+`[data-state="idle"]`).Length())
	assert.Equal(t, "q1", second.Find(testid("slot")+`[data-slot="1"]`).Find(testid("slot-task")).Text())

	assert.Equal(t, "1", doc.Find(testid("queue-length")).Text())
	queued := doc.Find(testid("queued-task"))
	require.Equal(t, 1, queued.Length())
	assert.Equal(t, "q2", queued.AttrOr("data-task", ""))
}

func TestPoolPageMarksExpectedPods(t *testing.T) {
	f := newFixture(t)
	f.pool = slots.PoolID{Namespace: "ci", Name: "managed"}
	f.declare(f.pool, func(c *slots.PoolConfig) { c.Managed = true })
	require.NoError(t, f.store.ExpectPod(f.ctx, f.pool, "agent-x", "uid-x"))
	doc := f.page("/pools/ci/managed", http.StatusOK)
	pod := doc.Find(testid("pod") + `[data-pod="agent-x"]`)
	require.Equal(t, 1, pod.Length())
	assert.Equal(t, "expected", pod.Find(testid("pod-state")).Text())
	assert.True(t, pod.HasClass("flagged"))
	assert.Equal(t, 1, doc.Find(testid("queue-empty")).Length())
}

func TestPoolPageOfUnknownPoolIsNotFound(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/nope", http.StatusNotFound)
	assert.Contains(t, doc.Find(testid("error")).Text(), "pool not found")
	f.page("/pools/ci/nope/grid", http.StatusNotFound)
}

func TestGridFragmentIsTheGridAlone(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	f.submit("p1", slots.Plan)
	resp := f.do("GET", "/pools/ci/terraform/grid", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body := readAll(t, resp)
	assert.NotContains(t, body, "<html", "a fragment, not a page")
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	grid := doc.Find(testid("grid"))
	require.Equal(t, 1, grid.Length())
	assert.Equal(t, "p1", doc.Find(testid("slot")+`[data-slot="1"]`).Find(testid("slot-task")).Text())
}

func TestStaticFilesAreServed(t *testing.T) {
	f := newFixture(t)
	for path, ctype := range map[string]string{"/static/style.css": "text/css", "/static/htmx.min.js": "javascript"} {
		resp := f.do("GET", path, "", "")
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Contains(t, resp.Header.Get("Content-Type"), ctype, path)
	}
}
