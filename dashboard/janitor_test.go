package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
)

// redisNow is Redis's clock, the clock of the reports and of the page's
// "now".
func (f *fixture) redisNow() time.Time {
	f.t.Helper()
	now, err := f.rdb.Time(f.ctx).Result()
	require.NoError(f.t, err)
	return now.UTC().Truncate(time.Second)
}

// writeReport writes the pool's janitor report as the janitor does, written
// two hours ago (ages shown stay the same while the test runs) and fresh
// until staleIn from now.
func (f *fixture) writeReport(staleIn time.Duration) (janitorreport.Report, time.Time) {
	f.t.Helper()
	now := f.redisNow()
	at := now.Add(-2 * time.Hour)
	until := now.Add(2*time.Hour + 30*time.Second) // "in 2h00m" for the next 30 s
	r := janitorreport.Report{At: at, Changed: at.Add(-time.Hour), StaleAfter: now.Add(staleIn), Content: janitorreport.Content{
		Pool: f.pool.String(), Janitor: "janitor-7f9c", Replicas: 3, Live: 3,
		Summary: "At the desired size (3 pods), with more to do.",
		Waiting: []janitorreport.Wait{
			{Kind: janitorreport.WaitBusy, Pods: 2, Text: "2 surplus pods are busy: cordoned, they go once idle."},
			{Kind: janitorreport.WaitIdleFor, Pods: 1, Until: &until, Text: "1 surplus pod is idle, not yet for idleFor 5h0m0s."},
		},
		Actions: []janitorreport.Action{
			{At: at, Kind: janitorreport.ActionCordoned, Pods: []string{"terraform-aaaaa", "terraform-bbbbb"}, Count: 2, Reason: "surplus, busy"},
			{At: at.Add(-time.Hour), Kind: janitorreport.ActionCreated, Pods: []string{"terraform-1", "terraform-2", "terraform-3", "terraform-4", "terraform-5"},
				Count: 7, Reason: "7 desired, 0 live"},
		},
	}}
	require.NoError(f.t, janitorreport.NewStore(f.rdb, f.prefix).Write(f.ctx, f.pool, r))
	return r, now
}

func texts(s *goquery.Selection) []string {
	var out []string
	s.Each(func(_ int, e *goquery.Selection) { out = append(out, strings.Join(strings.Fields(e.Text()), " ")) })
	return out
}

func TestPoolPageShowsWhatTheJanitorWaitsForAndDid(t *testing.T) {
	f := newFixture(t)
	_, now := f.writeReport(time.Hour)

	doc := f.page("/pools/ci/terraform", http.StatusOK)
	j := doc.Find(testid("pool-janitor"))
	require.Equal(t, 1, j.Length())
	assert.Equal(t, "fresh", j.AttrOr("data-state", ""))
	assert.Equal(t, 1, doc.Find(".pool-head "+testid("scaling")+" + "+testid("pool-janitor")).Length(), "next to the Scaling block")
	assert.Equal(t, "At the desired size (3 pods), with more to do.", j.Find(testid("janitor-summary")).Text())
	assert.Equal(t, "2h00m", j.Find(testid("janitor-age")).Text())
	assert.Equal(t, "(as of 2h00m ago, at "+stamp(now.Add(-2*time.Hour))+", by janitor-7f9c)", j.Find(testid("janitor-as-of")).Text())
	assert.Equal(t, 0, j.Find(testid("janitor-stale")).Length())

	assert.Equal(t, []string{
		"2 surplus pods are busy: cordoned, they go once idle.",
		"1 surplus pod is idle, not yet for idleFor 5h0m0s. until " + stamp(now.Add(2*time.Hour+30*time.Second)) + " (in 2h00m)",
	}, texts(j.Find(testid("janitor-wait"))))
	assert.Equal(t, "idle-for", j.Find(testid("janitor-wait")).Eq(1).AttrOr("data-kind", ""))

	rows := j.Find(testid("janitor-action"))
	require.Equal(t, 2, rows.Length())
	assert.Equal(t, "cordoned", rows.Eq(0).Find(testid("janitor-action-kind")).Text())
	assert.Equal(t, "terraform-aaaaa, terraform-bbbbb", rows.Eq(0).Find(testid("janitor-action-pods")).Text())
	assert.Equal(t, "surplus, busy", rows.Eq(0).Find(testid("janitor-action-reason")).Text())
	assert.Equal(t, "created", rows.Eq(1).Find(testid("janitor-action-kind")).Text())
	assert.Equal(t, "terraform-1, terraform-2, terraform-3, terraform-4, terraform-5 and 2 more",
		rows.Eq(1).Find(testid("janitor-action-pods")).Text())
	assert.Contains(t, rows.Eq(1).Text(), "(3h00m ago)")
}

func TestPoolPageSaysWhenTheJanitorReportIsStaleMissingOrUnreadable(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/terraform", http.StatusOK)
	j := doc.Find(testid("pool-janitor"))
	assert.Equal(t, "none", j.AttrOr("data-state", ""))
	assert.Contains(t, j.Find(testid("janitor-none")).Text(), "No report from the janitor yet")

	f.writeReport(-time.Minute)
	j = f.page("/pools/ci/terraform", http.StatusOK).Find(testid("pool-janitor"))
	assert.Equal(t, "stale", j.AttrOr("data-state", ""))
	assert.Contains(t, j.Find(testid("janitor-stale")).Text(), "not working on this pool now")
	assert.Len(t, texts(j.Find(testid("janitor-wait"))), 2, "a stale report is still shown")

	require.NoError(t, f.rdb.Set(f.ctx, janitorreport.Key(f.prefix, f.pool), "{garbage", 0).Err())
	doc = f.page("/pools/ci/terraform", http.StatusOK)
	assert.Equal(t, "error", doc.Find(testid("pool-janitor")).AttrOr("data-state", ""))
	assert.Equal(t, 1, doc.Find(testid("janitor-error")).Length())
	assert.Equal(t, 1, doc.Find(testid("grid")).Length(), "the rest of the page is served")
}

func TestPoolResourceCarriesTheJanitorReport(t *testing.T) {
	f := newFixture(t)
	body := decode(t, f.do("GET", poolPath, "", ""))
	assert.Contains(t, body, "janitor")
	assert.Nil(t, body["janitor"], "no report yet: null")

	r, now := f.writeReport(time.Hour)
	body = decode(t, f.do("GET", poolPath, "", ""))
	j, ok := body["janitor"].(map[string]any)
	require.True(t, ok, "%v", body["janitor"])
	assert.Equal(t, r.At.Format(time.RFC3339Nano), j["at"])
	assert.InDelta(t, 2*3600, j["age_seconds"], 60)
	assert.Equal(t, false, j["stale"])
	assert.Equal(t, now.Add(time.Hour).Format(time.RFC3339Nano), j["stale_after"])
	assert.Equal(t, "janitor-7f9c", j["janitor"])
	assert.EqualValues(t, 3, j["replicas"])
	assert.EqualValues(t, 3, j["live"])
	assert.Equal(t, "At the desired size (3 pods), with more to do.", j["summary"])
	assert.Equal(t, []any{
		map[string]any{"kind": "busy", "pods": 2.0, "text": "2 surplus pods are busy: cordoned, they go once idle."},
		map[string]any{"kind": "idle-for", "pods": 1.0, "until": now.Add(2*time.Hour + 30*time.Second).Format(time.RFC3339Nano),
			"text": "1 surplus pod is idle, not yet for idleFor 5h0m0s."},
	}, j["waiting"])
	actions := j["actions"].([]any)
	require.Len(t, actions, 2)
	assert.Equal(t, map[string]any{"at": r.At.Format(time.RFC3339Nano), "kind": "cordoned",
		"pods": []any{"terraform-aaaaa", "terraform-bbbbb"}, "count": 2.0, "reason": "surplus, busy"}, actions[0])

	f.writeReport(-time.Second)
	j = decode(t, f.do("GET", poolPath, "", ""))["janitor"].(map[string]any)
	assert.Equal(t, true, j["stale"])

	require.NoError(t, f.rdb.Set(f.ctx, janitorreport.Key(f.prefix, f.pool), "{garbage", 0).Err())
	resp := f.do("GET", poolPath, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "an unreadable report does not fail the pool")
	assert.Nil(t, decode(t, resp)["janitor"])
}
