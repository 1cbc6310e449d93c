package main

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEveryResponseCarriesTheSecurityHeaders(t *testing.T) {
	f := newFixture(t, withReadAuth)
	for _, tc := range []struct{ method, path, token string }{
		{"GET", "/", testToken}, {"GET", "/", ""}, {"GET", "/pools/ci/terraform", testToken},
		{"GET", "/static/htmx.min.js", ""}, {"GET", "/api/v1/pools", testToken}, {"GET", "/api/v1/nope", ""},
		{"GET", "/nope", ""}, {"GET", "/healthz", ""}, {"POST", "/login", ""}, {"GET", "/api/v1/openapi.json", ""},
	} {
		resp := f.do(tc.method, tc.path, "", tc.token)
		h := resp.Header
		name := tc.method + " " + tc.path
		assert.Equal(t, "default-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
			h.Get("Content-Security-Policy"), name)
		assert.NotContains(t, h.Get("Content-Security-Policy"), "unsafe", name)
		assert.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), name)
		assert.Equal(t, "same-origin", h.Get("Referrer-Policy"), name)
		assert.Equal(t, "DENY", h.Get("X-Frame-Options"), name)
	}
}

func TestPagesHaveNoInlineScriptOrStyle(t *testing.T) {
	f := newFixture(t)
	pod, uid := f.addPod()
	f.reserve("t1", pod, uid)
	for _, path := range []string{"/", "/pools/ci/terraform", "/pools/ci/terraform/tasks/t1", "/pools/ci/nope"} {
		body := readAll(t, f.do("GET", path, "", ""))
		doc, err := goquery.NewDocumentFromReader(strings.NewReader(body))
		require.NoError(t, err)
		doc.Find("script").Each(func(_ int, s *goquery.Selection) {
			assert.NotEmpty(t, s.AttrOr("src", ""), "%s: inline <script>", path)
		})
		assert.Zero(t, doc.Find("style").Length(), "%s: inline <style>", path)
		assert.Zero(t, doc.Find("[style]").Length(), "%s: style attribute", path)
		assert.NotRegexp(t, `\son[a-z]+=`, body, "%s: inline event handler", path)
		assert.Equal(t, `{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}`,
			doc.Find(`meta[name="htmx-config"]`).AttrOr("content", ""), "%s: htmx must not inject its indicator <style>", path)
	}
}

func TestRequestMethodIsABoundedMetricsLabel(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{"FOOBAR", "BREW", "GET"} {
		f.do(m, "/healthz", "", "")
	}
	rec := httptest.NewRecorder()
	f.srv.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var series []string
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "slotscaler_dashboard_requests_total{") {
			series = append(series, strings.TrimSpace(line))
		}
	}
	assert.ElementsMatch(t, []string{
		`slotscaler_dashboard_requests_total{code="200",method="GET",route="/healthz"} 1`,
		`slotscaler_dashboard_requests_total{code="405",method="other",route="unmatched"} 2`,
	}, series, "made-up methods share one label")
}

func TestServerBoundsSlowClients(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler())
	assert.Positive(t, srv.ReadHeaderTimeout)
	assert.Positive(t, srv.ReadTimeout)
	assert.Positive(t, srv.WriteTimeout)
	assert.Positive(t, srv.IdleTimeout)
	assert.Positive(t, srv.MaxHeaderBytes)
}

// TestStreamsOutliveTheServersTimeouts: the live grid and a waiting events
// request run past the server's read and write timeouts, which cut any
// other slow request.
func TestStreamsOutliveTheServersTimeouts(t *testing.T) {
	f := newFixture(t)
	h := httptest.NewUnstartedServer(f.srv.routes())
	h.Config = newHTTPServer(h.Config.Handler)
	h.Config.ReadTimeout, h.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	h.Start()
	t.Cleanup(h.Close)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", h.URL+"/pools/ci/terraform/live", nil)
	require.NoError(t, err)
	resp, err := h.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := make(chan time.Time, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: grid") {
				events <- time.Now()
			}
		}
		close(events)
	}()
	start := time.Now()
	var last time.Time
	for e := range events {
		last = e
		if e.Sub(start) > time.Second {
			break
		}
	}
	assert.Greater(t, last.Sub(start), time.Second, "the live stream was cut after %v", last.Sub(start))

	start = time.Now()
	ev, err := h.Client().Get(h.URL + "/api/v1/pools/ci/terraform/events?wait=1")
	require.NoError(t, err)
	_ = ev.Body.Close()
	assert.Equal(t, http.StatusOK, ev.StatusCode)
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "the events request waited its second")
}
