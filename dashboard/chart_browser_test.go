package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

const (
	chartJS         = `document.querySelector('[data-testid="chart"]')`
	lastSampleTitle = `[...document.querySelectorAll('[data-testid="chart-sample"] title')].at(-1).textContent`
)

// TestBrowserChartGrowsWithTheHistory: a real browser shows the pool's
// chart, sees it gain the samples recorded after the page loaded (the
// chart fetches itself again, no reload), switches it to 24 hours, and at
// phone width the page still fits; nothing breaks the CSP.
func TestBrowserChartGrowsWithTheHistory(t *testing.T) {
	f := newFixture(t)
	f.addPod()
	rec := f.recorder(2*time.Second, 10) // samples 2 s apart: the chart refreshes every 2 s
	rec.tick(10, nil)
	ctx := newBrowser(t)
	watch := watchBrowser(t, ctx)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="chart-pods"] svg`),
	))
	before, err := chromedp.Run(ctx, chromedp.Evaluate[int](`+`+chartJS+`.dataset.samples`))
	require.NoError(t, err)
	require.Equal(t, 8, before)
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](lastSampleTitle))
	require.NoError(t, err)
	assert.Contains(t, title, "busy 0, idle 1", "the pod idles")
	_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`))
	require.NoError(t, err)

	rec.tick(3, func(i int) { f.submit(fmt.Sprintf("late-%d", i), slots.Plan) })
	waitFor(t, ctx, "the new samples drawn",
		`+`+chartJS+`.dataset.samples === 11 && document.querySelector('[data-testid="series-live"]').dataset.points === "11"`)
	title, err = chromedp.Run(ctx, chromedp.Evaluate[string](lastSampleTitle))
	require.NoError(t, err)
	assert.Contains(t, title, "busy 1, idle 0", "the newest sample has the pod running the plans")
	points, err := chromedp.Run(ctx, chromedp.Evaluate[int](
		`document.querySelector('[data-testid="chart-queue"] [data-testid="series-plan"] polyline').points.numberOfItems`))
	require.NoError(t, err)
	assert.Equal(t, 11, points, "the browser parsed one point per sample")

	require.NoError(t, chromedp.Do(ctx, chromedp.Click(`[data-testid="chart-window"][data-window="24h"]`)))
	waitFor(t, ctx, "the 24-hour chart", chartJS+`.dataset.window === "24h"`)
	noReload, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload === true`))
	require.NoError(t, err)
	assert.True(t, noReload, "the chart changed without a reload")

	require.NoError(t, chromedp.Do(ctx, chromedp.EmulateViewport(375, 812), chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="chart-pods"] svg`)))
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	require.NoError(t, err)
	assert.LessOrEqual(t, width, 375, "the chart fits a phone")
	height, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector('[data-testid="chart-pods"] svg').getBoundingClientRect().height`))
	require.NoError(t, err)
	assert.Greater(t, height, 100, "and is tall enough to read")
	assert.Empty(t, watch.seen(), "the browser reported problems (CSP violations, errors)")
}
