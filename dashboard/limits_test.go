package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/perclient"
)

func withFailureLimit(n int) fixtureOption {
	return func(s *server) { s.failures = newFailureLimiter(n) }
}

func withTrustedProxies(cidrs ...string) fixtureOption {
	return func(s *server) {
		for _, c := range cidrs {
			s.clientIPs.trusted = append(s.clientIPs.trusted, netip.MustParsePrefix(c))
		}
	}
}

func withStreamCap(n int) fixtureOption {
	return func(s *server) { s.streams = perclient.New(n) }
}

// get sends GET path with a bearer token ("" none) and extra headers.
func (f *fixture) get(path, token string, header map[string]string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.ctx, "GET", f.http.URL+path, nil)
	require.NoError(f.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Client().Do(req)
	require.NoError(f.t, err)
	_ = resp.Body.Close()
	return resp
}

func TestFailedBearerChecksAreRateLimitedPerClient(t *testing.T) {
	for _, path := range []string{"/api/v1/pools", "/pools/ci/terraform"} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t, withReadAuth, withFailureLimit(3))
			for i := range 3 {
				assert.Equal(t, http.StatusUnauthorized, f.get(path, "guess", nil).StatusCode, "failure %d", i+1)
			}
			resp := f.get(path, "guess", nil)
			require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
			assert.Equal(t, "60", resp.Header.Get("Retry-After"))
			// Over the limit, the right token is refused too: else each
			// refused guess would still tell right from wrong.
			assert.Equal(t, http.StatusTooManyRequests, f.get(path, testToken, nil).StatusCode)
		})
	}
}

func TestSuccessfulRequestsAreNeverRateLimited(t *testing.T) {
	f := newFixture(t, withReadAuth, withFailureLimit(3))
	for i := range 20 {
		require.Equal(t, http.StatusOK, f.get("/api/v1/pools", testToken, nil).StatusCode, "request %d", i+1)
		require.Equal(t, http.StatusOK, f.get("/pools/ci/terraform", testToken, nil).StatusCode, "request %d", i+1)
	}
	// No header at all is a first visit, not a guess.
	for range 5 {
		require.Equal(t, http.StatusUnauthorized, f.get("/", "", nil).StatusCode)
	}
	assert.Equal(t, http.StatusOK, f.get("/", testToken, nil).StatusCode)
}

func TestFailedLoginsAreRateLimited(t *testing.T) {
	f := newFixture(t, withReadAuth, withFailureLimit(3))
	for range 3 {
		require.Equal(t, http.StatusUnauthorized, f.postForm("/login", url.Values{"token": {"guess"}}).StatusCode)
	}
	resp := f.postForm("/login", url.Values{"token": {"guess"}})
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "60", resp.Header.Get("Retry-After"))
	resp = f.postForm("/login", url.Values{"token": {testToken}})
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Empty(t, resp.Cookies(), "no session while limited")
	// The same client's failures count on the API too.
	assert.Equal(t, http.StatusTooManyRequests, f.get("/api/v1/pools", testToken, nil).StatusCode)
}

func TestLoginPostsAreRateLimited(t *testing.T) {
	f := newFixture(t, withReadAuth)
	for i := range loginPostsPerMinute {
		require.Equal(t, http.StatusSeeOther, f.postForm("/login", url.Values{"token": {testToken}}).StatusCode, "login %d", i+1)
	}
	resp := f.postForm("/login", url.Values{"token": {testToken}})
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

func TestSpoofedForwardedForDoesNotEscapeTheLimit(t *testing.T) {
	f := newFixture(t, withReadAuth, withFailureLimit(3)) // no trusted proxies: the default
	for i := range 3 {
		require.Equal(t, http.StatusUnauthorized, f.get("/api/v1/pools", "guess",
			map[string]string{"X-Forwarded-For": "203.0.113." + string(rune('1'+i)), "X-Real-IP": "198.51.100." + string(rune('1'+i))}).StatusCode)
	}
	resp := f.get("/api/v1/pools", "guess", map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "198.51.100.9"})
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "a made-up X-Forwarded-For from an untrusted peer is not a new client")
}

func TestTrustedProxyNamesTheClient(t *testing.T) {
	f := newFixture(t, withReadAuth, withFailureLimit(3), withTrustedProxies("127.0.0.0/8", "::1/128"))
	alice := map[string]string{"X-Forwarded-For": "203.0.113.7"}
	for range 3 {
		require.Equal(t, http.StatusUnauthorized, f.get("/api/v1/pools", "guess", alice).StatusCode)
	}
	require.Equal(t, http.StatusTooManyRequests, f.get("/api/v1/pools", "guess", alice).StatusCode)
	bob := map[string]string{"X-Forwarded-For": "203.0.113.8"}
	assert.Equal(t, http.StatusOK, f.get("/api/v1/pools", testToken, bob).StatusCode, "another client behind the same proxy")
	// Alice cannot become Bob by prepending: the proxy appends what it saw.
	spoof := map[string]string{"X-Forwarded-For": "203.0.113.8, 203.0.113.7"}
	assert.Equal(t, http.StatusTooManyRequests, f.get("/api/v1/pools", testToken, spoof).StatusCode)
}

func TestClientIPOf(t *testing.T) {
	c := clientIPs{trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}}
	tests := map[string]struct {
		peer   string
		header map[string]string
		want   string
	}{
		"untrusted peer, headers ignored": {"192.0.2.1:5000", map[string]string{"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}, "192.0.2.1"},
		"trusted peer, forwarded-for":     {"10.1.2.3:5000", map[string]string{"X-Forwarded-For": "203.0.113.7"}, "203.0.113.7"},
		"rightmost untrusted hop":         {"10.1.2.3:5000", map[string]string{"X-Forwarded-For": "1.1.1.1, 203.0.113.7, 10.9.9.9"}, "203.0.113.7"},
		"garbage hop stops the walk":      {"10.1.2.3:5000", map[string]string{"X-Forwarded-For": "203.0.113.7, nonsense"}, "10.1.2.3"},
		"all hops trusted":                {"10.1.2.3:5000", map[string]string{"X-Forwarded-For": "10.5.5.5"}, "10.5.5.5"},
		"trusted peer, real-ip":           {"10.1.2.3:5000", map[string]string{"X-Real-IP": "203.0.113.8"}, "203.0.113.8"},
		"trusted peer, bad real-ip":       {"10.1.2.3:5000", map[string]string{"X-Real-IP": "x"}, "10.1.2.3"},
		"trusted peer, no headers":        {"10.1.2.3:5000", nil, "10.1.2.3"},
		"ipv6 proxy":                      {"[fd00::1]:443", map[string]string{"X-Forwarded-For": "2001:db8::7"}, "2001:db8::7"},
		"ipv4-mapped peer":                {"[::ffff:10.1.2.3]:5000", map[string]string{"X-Forwarded-For": "203.0.113.7"}, "203.0.113.7"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			assert.Equal(t, tc.want, c.of(r).String())
		})
	}
}

func TestTrustedProxiesFlag(t *testing.T) {
	var c cidrs
	require.NoError(t, c.Set("10.0.0.0/8, 192.168.1.7,fd00::/8"))
	assert.Equal(t, "10.0.0.0/8,192.168.1.7/32,fd00::/8", c.String())
	assert.ErrorContains(t, c.Set("10.0.0.0/33"), "10.0.0.0/33")
	assert.ErrorContains(t, c.Set("proxy.example"), "proxy.example")
}

// openStream starts a long-lived request and returns its status once the
// headers arrived (or the request ended) and a function that hangs up.
func (f *fixture) openStream(path, token string) (int, context.CancelFunc) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.ctx)
	f.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", f.http.URL+path, nil)
	require.NoError(f.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	type result struct {
		status int
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := f.http.Client().Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{status: resp.StatusCode}
		<-ctx.Done()
		_ = resp.Body.Close()
	}()
	select {
	case r := <-got:
		require.NoError(f.t, r.err)
		return r.status, cancel
	case <-time.After(10 * time.Second):
		f.t.Fatalf("no answer to %s", path)
		return 0, cancel
	}
}

func TestLiveStreamsAreCappedPerClient(t *testing.T) {
	f := newFixture(t, withStreamCap(2))
	s1, close1 := f.openStream("/pools/ci/terraform/live", "")
	s2, _ := f.openStream("/pools/ci/terraform/live", "")
	require.Equal(t, []int{http.StatusOK, http.StatusOK}, []int{s1, s2})
	resp := f.get("/pools/ci/terraform/live", "", nil)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the third stream of one client")
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Equal(t, http.StatusOK, f.get("/pools/ci/terraform", "", nil).StatusCode, "plain pages are not streams")

	close1()
	require.Eventually(t, func() bool {
		s, hangUp := f.openStream("/pools/ci/terraform/live", "")
		if s != http.StatusOK {
			hangUp()
		}
		return s == http.StatusOK
	}, 5*time.Second, 50*time.Millisecond, "closing a stream frees its place")
}

func TestEventWaitsAreCappedPerTokenWhenAuthenticated(t *testing.T) {
	f := newFixture(t, withReadAuth, withStreamCap(2), withTrustedProxies("127.0.0.0/8", "::1/128"))
	path := "/api/v1/pools/ci/terraform/events?wait=20"
	// The waits come from two addresses: they count against the token.
	_, hangUp := f.openStreamFrom(path, testToken, "203.0.113.1")
	f.openStreamFrom(path, testToken, "203.0.113.2")
	require.Eventually(t, func() bool { return f.srv.streams.Count("token:"+testTokenName) == 2 }, 5*time.Second, 10*time.Millisecond)
	resp := f.get(path, testToken, nil)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Equal(t, http.StatusOK, f.get("/api/v1/pools/ci/terraform/events", testToken, nil).StatusCode, "a read that does not wait is no stream")
	assert.Equal(t, http.StatusOK, f.get("/api/v1/pools/ci/terraform/events?wait=0", testToken, nil).StatusCode)
	assert.Equal(t, http.StatusOK, f.get("/api/v1/pools/ci/terraform/events?wait=0", "other-token", nil).StatusCode)

	hangUp()
	require.Eventually(t, func() bool { return f.srv.streams.Count("token:"+testTokenName) == 1 }, 5*time.Second, 10*time.Millisecond,
		"a client that hangs up frees its place")
	s, _ := f.openStreamFrom("/api/v1/pools/ci/terraform/events?wait=1", testToken, "203.0.113.9")
	assert.Equal(t, http.StatusOK, s)
}

// openStreamFrom is openStream through the fixture's trusted proxy for
// client ip; the request's answer may come only when it ends.
func (f *fixture) openStreamFrom(path, token, ip string) (int, context.CancelFunc) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.ctx)
	f.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", f.http.URL+path, nil)
	require.NoError(f.t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-For", ip)
	status := make(chan int, 1)
	go func() {
		resp, err := f.http.Client().Do(req)
		if err != nil {
			status <- 0
			return
		}
		_ = resp.Body.Close()
		status <- resp.StatusCode
	}()
	if strings.Contains(path, "wait=1") {
		return <-status, cancel
	}
	return 0, cancel
}
