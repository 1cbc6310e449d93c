package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// addPods registers n more pods named agent-0000, agent-0001, … .
func (f *fixture) addPods(n int) {
	f.t.Helper()
	for i := range n {
		_, err := f.store.RegisterPod(f.ctx, f.pool, fmt.Sprintf("agent-%04d", f.pods+i), fmt.Sprintf("uid-%04d", f.pods+i))
		require.NoError(f.t, err)
	}
	f.pods += n
}

func podNames(doc *goquery.Document) []string {
	var names []string
	doc.Find(testid("pod")).Each(func(_ int, s *goquery.Selection) { names = append(names, s.AttrOr("data-pod", "")) })
	return names
}

func TestPoolPageOfAThousandPodsIsPagedAndFiltered(t *testing.T) {
	f := newFixture(t)
	f.addPods(1000)
	for i := range 7 {
		f.submit(fmt.Sprintf("p%d", i), slots.Plan)
	}
	for _, i := range []int{3, 500, 999} {
		require.NoError(t, f.store.Cordon(f.ctx, f.pool, fmt.Sprintf("agent-%04d", i), fmt.Sprintf("uid-%04d", i)))
	}
	snap, err := f.store.Snapshot(f.ctx, f.pool)
	require.NoError(t, err)
	busy := map[string]bool{}
	for _, p := range snap.Pods {
		if p.Busy() {
			busy[p.Name] = true
		}
	}
	require.NotEmpty(t, busy)

	doc := f.page("/pools/ci/terraform", http.StatusOK)
	assert.Equal(t, 100, doc.Find(testid("pod")).Length(), "100 pods per page")
	assert.Equal(t, "100", doc.Find(testid("pods-shown")).Text())
	assert.Equal(t, "1000", doc.Find(testid("pods-matching")).Text())
	assert.Equal(t, "1000", doc.Find(testid("pods-total")).Text())
	links := doc.Find(testid("page-link"))
	require.Equal(t, 10, links.Length())
	assert.True(t, links.First().HasClass("current"))
	assert.Equal(t, "/pools/ci/terraform?page=10", links.Last().AttrOr("href", ""))
	assert.True(t, doc.Find(testid("filter")+`[data-filter="all"]`).HasClass("current"))
	assert.Equal(t, "0", doc.Find(testid("queue-length")).Text(), "seven plans found slots; the queue is still shown")

	seen := map[string]bool{}
	for page := 1; page <= 10; page++ {
		d := f.page(fmt.Sprintf("/pools/ci/terraform?page=%d", page), http.StatusOK)
		names := podNames(d)
		require.Len(t, names, 100, "page %d", page)
		for _, n := range names {
			require.False(t, seen[n], "pod %s on two pages", n)
			seen[n] = true
		}
	}
	assert.Len(t, seen, 1000, "the pages together show every pod once")

	d := f.page("/pools/ci/terraform?page=99", http.StatusOK)
	assert.Len(t, podNames(d), 100, "a page past the end shows the last page")

	d = f.page("/pools/ci/terraform?state=busy", http.StatusOK)
	names := podNames(d)
	assert.Len(t, names, len(busy))
	for _, n := range names {
		assert.True(t, busy[n], "%s is busy", n)
	}
	assert.Equal(t, 0, d.Find(testid("pages")).Length(), "one page: no page links")
	assert.True(t, d.Find(testid("filter")+`[data-filter="busy"]`).HasClass("current"))

	d = f.page("/pools/ci/terraform?state=idle&page=2", http.StatusOK)
	assert.Equal(t, fmt.Sprint(1000-len(busy)), d.Find(testid("pods-matching")).Text())
	assert.Equal(t, "/pools/ci/terraform?page=3&state=idle", d.Find(testid("page-link")+`[data-page="3"]`).AttrOr("href", ""), "paging keeps the filter")

	d = f.page("/pools/ci/terraform?state=cordoned", http.StatusOK)
	assert.ElementsMatch(t, []string{"agent-0003", "agent-0500", "agent-0999"}, podNames(d))

	d = f.page("/pools/ci/terraform?state=bogus&page=x", http.StatusOK)
	assert.Len(t, podNames(d), 100, "unknown filter and page fall back to all, page 1")
}

func TestMetricsCountRequestsByRoutePattern(t *testing.T) {
	f := newFixture(t)
	f.page("/pools/ci/terraform", http.StatusOK)
	f.page("/pools/ci/terraform", http.StatusOK)
	f.page("/pools/ci/terraform/tasks/nope", http.StatusNotFound)
	rec := httptest.NewRecorder()
	f.srv.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	assert.Contains(t, body, `slotscaler_dashboard_requests_total{code="200",method="GET",route="/pools/{ns}/{name}"} 2`)
	assert.Contains(t, body, `slotscaler_dashboard_requests_total{code="404",method="GET",route="/pools/{ns}/{name}/tasks/{id}"} 1`)
	assert.Contains(t, body, "slotscaler_dashboard_live_viewers 0")
	assert.Contains(t, body, "slotscaler_dashboard_watched_pools 0")
	assert.Contains(t, body, "slotscaler_dashboard_request_duration_seconds_bucket")
	assert.False(t, strings.Contains(body, "/pools/ci/terraform"), "raw paths never become labels")
}

// BenchmarkPoolPageRender measures serving the pool page (snapshot read on
// real Redis, filter, page, render) with 10, 100 and 1,000 busy pods.
func BenchmarkPoolPageRender(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			f := newFixture(b)
			f.addPods(n)
			for i := range n {
				f.submit(fmt.Sprintf("p%d", i), slots.Plan)
			}
			client := f.http.Client()
			for b.Loop() {
				resp, err := client.Get(f.http.URL + "/pools/ci/terraform")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
					b.Fatal(resp.StatusCode, err)
				}
				resp.Body.Close()
			}
		})
	}
}
