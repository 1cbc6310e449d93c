package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// recorder records the fixture's pools on a clock the test moves: ticks
// are step apart and end at the current time, so every sample is in the
// hour's window.
type recorder struct {
	f     *fixture
	rec   *history.Recorder
	mu    sync.Mutex
	clock time.Time
	step  time.Duration
}

func (f *fixture) recorder(step time.Duration, ticks int) *recorder {
	f.t.Helper()
	r := &recorder{f: f, step: step, clock: time.Now().Add(-time.Duration(ticks) * step)}
	rec, err := history.NewRecorder(f.ctx, f.store, f.rdb, history.Options{Prefix: f.prefix, Interval: step, Logger: quiet(),
		Clock: func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.clock }})
	require.NoError(f.t, err)
	r.rec = rec
	return r
}

// tick records once and moves the clock on; between runs before it.
func (r *recorder) tick(n int, between func(i int)) {
	r.f.t.Helper()
	for i := range n {
		if between != nil {
			between(i)
		}
		_, err := r.rec.Tick(r.f.ctx)
		require.NoError(r.f.t, err)
		r.mu.Lock()
		r.clock = r.clock.Add(r.step)
		r.mu.Unlock()
	}
}

// recordGrowingQueue records ticks samples while the queue grows by one
// plan every other tick; the samples are what the reader returns.
func (f *fixture) recordGrowingQueue(ticks int) []history.Sample {
	f.t.Helper()
	r := f.recorder(10*time.Second, ticks)
	r.tick(ticks, func(i int) {
		if i%2 == 0 {
			f.submit(fmt.Sprintf("q%d", i), slots.Plan)
		}
	})
	samples, err := history.NewReader(f.rdb, f.prefix, history.DefaultLayout).Window(f.ctx, f.pool, history.Hour, time.Now())
	require.NoError(f.t, err)
	require.Len(f.t, samples, ticks-2, "the first tick reads the registry, the last one's sample lands next tick")
	return samples
}

func TestHistoryAPIReturnsTheRecordedSamples(t *testing.T) {
	f := newFixture(t)
	samples := f.recordGrowingQueue(12)

	resp := f.do("GET", "/api/v1/pools/ci/terraform/history", "", testToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var got poolHistoryView
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	assert.Equal(t, "ci/terraform", got.Pool)
	assert.Equal(t, "1h", got.Window)
	assert.Nil(t, got.ResolutionSeconds)
	require.Len(t, got.Samples, len(samples))
	for i, s := range samples {
		assert.Equal(t, s.At.UnixMilli(), got.Samples[i].At.UnixMilli())
		assert.Equal(t, s.Queued["plan"], got.Samples[i].Queued["plan"])
		assert.Equal(t, s.DesiredPods, got.Samples[i].DesiredPods)
	}
	assert.Greater(t, got.Samples[len(got.Samples)-1].Queued["plan"], got.Samples[0].Queued["plan"], "the queue grew")
	assert.Positive(t, got.Samples[len(got.Samples)-1].DesiredPods)

	resp = f.do("GET", "/api/v1/pools/ci/terraform/history?window=24h", "", testToken)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var day poolHistoryView
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&day))
	assert.Equal(t, "24h", day.Window)
	require.NotNil(t, day.ResolutionSeconds)
	assert.Equal(t, 300.0, *day.ResolutionSeconds)
	require.NotEmpty(t, day.Samples)
	assert.LessOrEqual(t, len(day.Samples), 2, "two minutes of samples are one or two 5-minute means")

	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/api/v1/pools/ci/terraform/history?window=7d", http.StatusBadRequest, "invalid_window"},
		{"/api/v1/pools/ci/missing/history", http.StatusNotFound, "pool_not_found"},
		{"/api/v1/pools/CI/x/history", http.StatusBadRequest, "invalid_pool"},
	} {
		resp := f.do("GET", tc.path, "", testToken)
		assert.Equal(t, tc.status, resp.StatusCode, tc.path)
		assert.Equal(t, tc.code, decode(t, resp)["code"], tc.path)
	}
}

func TestHistoryAPINeedsATokenWithReadAuth(t *testing.T) {
	f := newFixture(t, withReadAuth)
	assert.Equal(t, http.StatusUnauthorized, f.do("GET", "/api/v1/pools/ci/terraform/history", "", "").StatusCode)
	resp := f.do("GET", "/api/v1/pools/ci/terraform/history", "", testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, decode(t, resp)["samples"], "nothing recorded yet: an empty list")
}

// pointsOf parses an SVG points attribute.
func pointsOf(t *testing.T, attr string) [][2]float64 {
	t.Helper()
	var out [][2]float64
	for _, p := range strings.Fields(attr) {
		x, y, ok := strings.Cut(p, ",")
		require.True(t, ok, p)
		fx, err := strconv.ParseFloat(x, 64)
		require.NoError(t, err)
		fy, err := strconv.ParseFloat(y, 64)
		require.NoError(t, err)
		out = append(out, [2]float64{fx, fy})
	}
	return out
}

func TestPoolPageDrawsTheRecordedSamples(t *testing.T) {
	f := newFixture(t)
	pod, _ := f.addPod()
	samples := f.recordGrowingQueue(14)

	doc := f.page("/pools/ci/terraform", http.StatusOK)
	chart := doc.Find(testid("chart"))
	require.Equal(t, 1, chart.Length())
	assert.Equal(t, strconv.Itoa(len(samples)), chart.AttrOr("data-samples", ""))
	assert.Equal(t, "1h", chart.AttrOr("data-window", ""))
	assert.Equal(t, "/pools/ci/terraform/chart?window=1h", chart.AttrOr("hx-get", ""), "the chart fetches itself again")
	assert.Equal(t, "every 10s", chart.AttrOr("hx-trigger", ""), "as often as samples come")

	queueMax, err := strconv.ParseFloat(doc.Find(testid("chart-queue")+" "+testid("chart-max")).Text(), 64)
	require.NoError(t, err)
	assert.Equal(t, samples[len(samples)-1].Queued["plan"], queueMax, "the queue panel reaches the largest queue")
	plan := doc.Find(testid("chart-queue") + " " + testid("series-plan"))
	assert.Equal(t, strconv.Itoa(len(samples)), plan.AttrOr("data-points", ""))
	pts := pointsOf(t, plan.Find("polyline").AttrOr("points", ""))
	require.Len(t, pts, len(samples), "one point per sample")
	for i, s := range samples {
		assert.InDelta(t, 100*(1-s.Queued["plan"]/queueMax), pts[i][1], 0.051, "point %d is sample %d's queue", i, i)
		if i > 0 {
			assert.Greater(t, pts[i][0], pts[i-1][0], "time runs left to right")
		}
	}
	assert.Equal(t, 0.0, pts[0][0], "a history younger than the window starts at the left edge")
	assert.InDelta(t, 1000, pts[len(pts)-1][0], 200, "the right edge is now: the newest sample is 20 s old, of a 130 s history")

	podsMax, err := strconv.ParseFloat(doc.Find(testid("chart-pods")+" "+testid("chart-max")).Text(), 64)
	require.NoError(t, err)
	live := pointsOf(t, doc.Find(testid("chart-pods")+" "+testid("series-live")+" polyline").AttrOr("points", ""))
	require.Len(t, live, len(samples))
	for i, s := range samples {
		assert.InDelta(t, 100*(1-s.LivePods/podsMax), live[i][1], 0.051)
	}
	assert.Equal(t, 1, doc.Find(testid("series-desired")+" polyline").Length())
	busy := pointsOf(t, doc.Find(testid("series-busy")+" polygon").AttrOr("points", ""))
	assert.Len(t, busy, 2*len(samples), "an area: its top edge and back along 0")
	assert.Equal(t, 1, doc.Find(testid("series-idle")).Length())

	cols := doc.Find(testid("chart-sample"))
	require.Equal(t, len(samples), cols.Length(), "one hover column per sample")
	last := samples[len(samples)-1]
	title := cols.Last().Find("title").Text()
	assert.Contains(t, title, fmt.Sprintf("desired %v, live %v", last.DesiredPods, last.LivePods))
	assert.Contains(t, title, fmt.Sprintf("queued plan %v", last.Queued["plan"]))
	assert.Equal(t, fmt.Sprint(last.Queued["plan"]), doc.Find(testid("legend-plan")+" "+testid("legend-latest")).Text())
	assert.NotEmpty(t, doc.Find(testid("chart-svg")).First().Find("title").First().Text(), "the panel says its values in words")
	assert.Equal(t, 1, doc.Find(testid("pod")+`[data-pod="`+pod+`"]`).Length(), "the grid is still there")

	day := f.page("/pools/ci/terraform?window=24h", http.StatusOK).Find(testid("chart"))
	assert.Equal(t, "24h", day.AttrOr("data-window", ""), "the toggle works without JavaScript")
	links := doc.Find(testid("chart-window"))
	require.Equal(t, 2, links.Length())
	assert.Equal(t, "/pools/ci/terraform?window=24h", links.Last().AttrOr("href", ""))
	assert.Equal(t, "/pools/ci/terraform/chart?window=24h", links.Last().AttrOr("hx-get", ""))
	// The links survive the chart's own refreshes (the same window's id), and
	// are replaced when the window changes (another id).
	nav := doc.Find(testid("chart-windows"))
	assert.Equal(t, "true", nav.AttrOr("hx-preserve", ""))
	assert.Equal(t, "chart-windows-"+doc.Find(testid("chart")).AttrOr("data-window", ""), nav.AttrOr("id", ""))
	assert.Equal(t, "chart-windows-24h", day.Find(testid("chart-windows")).AttrOr("id", ""))
}

func TestChartFragmentAndAnEmptyHistory(t *testing.T) {
	f := newFixture(t)
	resp := f.do("GET", "/pools/ci/terraform/chart?window=24h", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, resp.Uncompressed, "the fragment came gzipped (Go's client asked for it and unpacked it)")
	body := readAll(t, resp)
	assert.True(t, strings.HasPrefix(body, `<section id="chart"`), "a fragment, not a page: %.80s", body)
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
	require.NoError(t, err)
	chart := doc.Find(testid("chart"))
	assert.Equal(t, "24h", chart.AttrOr("data-window", ""))
	assert.Equal(t, 1, chart.Find(testid("chart-empty")).Length(), "no history yet: said, not drawn")
	f.page("/pools/ci/missing/chart", http.StatusNotFound)
}

func TestOverviewDrawsASparklineAndAUtilisationBar(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid) // one slot of three holds work
	f.recorder(10*time.Second, 8).tick(8, nil)
	samples, err := history.NewReader(f.rdb, f.prefix, history.DefaultLayout).Window(f.ctx, f.pool, history.Hour, time.Now())
	require.NoError(t, err)
	require.Len(t, samples, 6)

	row := f.page("/", http.StatusOK).Find(testid("pool-row") + `[data-pool="ci/terraform"]`)
	spark := row.Find(testid("sparkline"))
	require.Equal(t, 1, spark.Length())
	assert.Equal(t, strconv.Itoa(len(samples)), spark.AttrOr("data-samples", ""))
	assert.Len(t, pointsOf(t, spark.Find(testid("spark-live")+" polyline").AttrOr("points", "")), len(samples))
	assert.Contains(t, spark.Find("title").Text(), fmt.Sprintf("%v now", samples[len(samples)-1].LivePods))
	assert.Equal(t, "33%", row.Find(testid("utilisation")).Text())
	assert.Equal(t, "33.3", row.Find(testid("utilisation-fill")).AttrOr("width", ""))
	assert.Contains(t, row.Find(testid("utilisation-bar")+" title").Text(), "33%")
}

// The History schemas name every field the API renders, and only those.
func TestOpenAPIHistorySchemasMatchTheirObjects(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	for schema, typ := range map[string]reflect.Type{"History": reflect.TypeFor[poolHistoryView](), "HistorySample": reflect.TypeFor[sampleView]()} {
		var documented, rendered []string
		for name := range doc.Components.Schemas[schema].Properties {
			documented = append(documented, name)
		}
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			rendered = append(rendered, name)
		}
		slices.Sort(documented)
		slices.Sort(rendered)
		assert.Equal(t, rendered, documented, schema)
	}
}

func TestChartDrawsAtMostMaxDrawnPoints(t *testing.T) {
	now := time.Now()
	var samples []history.Sample
	for i := range 1000 { // an hour at a 3.6 s interval
		samples = append(samples, history.Sample{At: now.Add(time.Duration(i-1000) * 3600 * time.Millisecond), LivePods: float64(i % 7),
			Queued: map[string]float64{"plan": float64(i)}})
	}
	v := chartView(slots.PoolID{Namespace: "ci", Name: "tf"}, history.Hour, history.DefaultLayout, samples, now)
	assert.Equal(t, 334, v.Samples, "runs of three samples drawn as one point")
	assert.Len(t, v.Columns, 334)
	assert.Contains(t, v.Caption, "each point the mean of 3 samples")
	plan := v.Queue.Lines[0]
	assert.Equal(t, "999", plan.Latest, "the last point is the mean of what is left (one sample)")
	assert.Equal(t, 3, v.RefreshSeconds, "refreshed about as often as samples come (whole seconds)")

	v = chartView(slots.PoolID{Namespace: "ci", Name: "tf"}, history.Hour, history.DefaultLayout, samples[:360], now)
	assert.Equal(t, 360, v.Samples, "an hour at 10 s is drawn whole")
	assert.Contains(t, v.Caption, "every sample")
}
