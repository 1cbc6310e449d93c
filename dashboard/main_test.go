package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
)

func TestRunServesUntilCancelledAndNeverLogsTokens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the metrics listener
	require.NoError(t, err)
	metricsAddr := mln.Addr().String()
	require.NoError(t, mln.Close())
	redisURL, prefix := redistest.Standalone(t), redistest.Prefix(t)
	ctx, cancel := context.WithCancel(t.Context())
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--log-level=debug"}, logs, testutil.Env(map[string]string{
			"REDIS_URL":       redisURL,
			"KEY_PREFIX":      prefix,
			"API_TOKENS":      "ci=very-secret-1,ops=very-secret-2",
			"METRICS_ADDRESS": metricsAddr,
		}), ln)
	}()
	base := "http://" + ln.Addr().String()
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	// Read auth is on by default: pages and API reads want a token.
	for _, path := range []string{"/", "/api/v1/pools"} {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
		req, err := http.NewRequest("GET", base+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer very-secret-1")
		resp, err = http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	// A page login: a Secure session cookie (the default), kept in Redis.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(base+"/login", url.Values{"token": {"very-secret-1"}, "next": {"/"}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	session := resp.Cookies()[0]
	assert.True(t, session.Secure)
	req, err := http.NewRequest("GET", base+"/", nil)
	require.NoError(t, err)
	req.AddCookie(session)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the session opens the pages")
	resp, err = noRedirect.PostForm(base+"/login", url.Values{"token": {"very-secret-wrong"}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	rdb := redis.NewClient(mustParseRedisURL(t, redisURL))
	defer rdb.Close()
	n, err := rdb.Keys(t.Context(), prefix+":dashboard:session:*").Result()
	require.NoError(t, err)
	assert.Len(t, n, 1, "the session is in the installation's Redis, under its prefix")
	req, err = http.NewRequest("POST", base+"/api/v1/pools/ci/nope/tasks", strings.NewReader(`{"id":"a","type":"plan"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer very-secret-2")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the token from API_TOKENS is accepted")

	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), `slotscaler_dashboard_requests_total{code="200",method="GET",route="/healthz"} 1`, "metrics on their own port")
	assert.Equal(t, http.StatusNotFound, func() int {
		r, err := http.Get(base + "/metrics")
		require.NoError(t, err)
		_ = r.Body.Close()
		return r.StatusCode
	}(), "not on the public port")

	cancel()
	require.NoError(t, <-done, "a cancelled run is a clean shutdown")
	out := logs.String()
	assert.Contains(t, out, "serving dashboard and API")
	assert.Contains(t, out, "request")
	assert.NotContains(t, out, "very-secret", "tokens never reach the logs")
}

func TestTokensParseNamePairsAndNeverPrintSecrets(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    tokens
		wantErr bool
	}{
		"pairs":             {in: "ci=abc, ops=def", want: tokens{"ci": "abc", "ops": "def"}},
		"empty":             {in: "", want: tokens{}},
		"missing secret":    {in: "ci=", wantErr: true},
		"missing separator": {in: "abc", wantErr: true},
		"duplicate name":    {in: "ci=a,ci=b", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got tokens
			err := got.Set(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				assert.NotContains(t, err.Error(), "abc")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.NotContains(t, got.String(), "abc")
		})
	}
}

func TestHelpListsEnvironmentTwins(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfigWith([]string{"--help"}, testutil.Env(nil), &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	for _, want := range []string{"--listen-address", "LISTEN_ADDRESS", ":8080", "API_TOKENS", "READ_AUTH", "REDIS_URL"} {
		assert.Contains(t, out.String(), want)
	}
}

func TestConfigRejectsBadSettings(t *testing.T) {
	_, err := parseConfig([]string{"--max-payload=0"}, testutil.Env(nil))
	require.ErrorContains(t, err, "--max-payload")
	_, err = parseConfig(nil, testutil.Env(map[string]string{"API_TOKENS": "nope"}))
	require.ErrorContains(t, err, "API_TOKENS")
}

func mustParseRedisURL(t *testing.T, u string) *redis.Options {
	t.Helper()
	o, err := redis.ParseURL(u)
	require.NoError(t, err)
	return o
}
