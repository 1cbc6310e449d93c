package main

import (
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

// login posts the login form with token and returns the session cookie.
func (f *fixture) login(base, token, next string) *http.Cookie {
	f.t.Helper()
	client := *f.http.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.PostForm(base+"/login", url.Values{"token": {token}, "next": {next}})
	require.NoError(f.t, err)
	_ = resp.Body.Close()
	require.Equal(f.t, http.StatusSeeOther, resp.StatusCode)
	require.Len(f.t, resp.Cookies(), 1)
	return resp.Cookies()[0]
}

// withCookies sends a request with the cookies and no bearer header.
func (f *fixture) withCookies(method, url string, cookies ...*http.Cookie) *http.Response {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.ctx, method, url, nil)
	require.NoError(f.t, err)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := *f.http.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestLoginOpensAServerSideSessionInAHardenedCookie(t *testing.T) {
	f := newFixture(t, withReadAuth)
	f.submit("t1", slots.Plan)

	doc := f.page("/pools/ci/terraform/tasks/t1", http.StatusUnauthorized)
	form := doc.Find(testid("login"))
	require.Equal(t, "/login", form.AttrOr("action", ""))
	assert.Equal(t, "/pools/ci/terraform/tasks/t1", form.Find(`input[name="next"]`).AttrOr("value", ""))
	assert.Zero(t, doc.Find(testid("logout")).Length(), "no logout button before logging in")

	resp := f.postForm("/login", url.Values{"token": {"wrong"}, "next": {"/"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Empty(t, resp.Cookies(), "no cookie for a wrong token")
	assert.Contains(t, readAll(t, resp), `data-testid="login-error"`)

	resp = f.postForm("/login", url.Values{"token": {testToken}, "next": {"/pools/ci/terraform/tasks/t1"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, "/pools/ci/terraform/tasks/t1", resp.Header.Get("Location"))
	require.Len(t, resp.Cookies(), 1)
	c := resp.Cookies()[0]
	assert.Equal(t, secureSessionCookie, c.Name)
	assert.NotContains(t, c.Value, testToken, "the cookie holds a session id, never the token")
	assert.GreaterOrEqual(t, len(c.Value), 32, "a session id too long to guess")
	assert.True(t, c.Secure, "Secure by default")
	assert.True(t, c.HttpOnly)
	assert.Equal(t, http.SameSiteLaxMode, c.SameSite)
	assert.Equal(t, "/", c.Path)
	assert.Empty(t, c.Domain)
	assert.InDelta(t, time.Hour.Seconds(), float64(c.MaxAge), 5, "the cookie lasts until the idle timeout (each request moves it on)")

	// The session lives in Redis under the installation's prefix, keyed by
	// a hash of its id, and holds neither the id nor the token.
	keys, err := f.rdb.Keys(f.ctx, f.prefix+":dashboard:session:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	assert.NotContains(t, keys[0], c.Value)
	val, err := f.rdb.Get(f.ctx, keys[0]).Result()
	require.NoError(t, err)
	assert.NotContains(t, val, testToken)
	ttl, err := f.rdb.PTTL(f.ctx, keys[0]).Result()
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5, "the store forgets a session after the idle timeout")

	resp = f.withCookies("GET", f.http.URL+"/pools/ci/terraform/tasks/t1", c)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	page, err := goquery.NewDocumentFromReader(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "/logout", page.Find(testid("logout")).AttrOr("action", ""), "a signed-in page offers logout")
	assert.Equal(t, "post", page.Find(testid("logout")).AttrOr("method", ""))
	assert.Equal(t, http.StatusOK, f.withCookies("GET", f.http.URL+"/", c).StatusCode)
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", f.http.URL+"/", &http.Cookie{Name: secureSessionCookie, Value: "forged"}).StatusCode)
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", f.http.URL+"/", &http.Cookie{Name: secureSessionCookie, Value: testToken}).StatusCode,
		"the token itself is no session")
	// The session is for pages only: the API keeps wanting the bearer header.
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", f.http.URL+"/api/v1/pools", c).StatusCode)
}

func TestLoginRenewsTheSessionID(t *testing.T) {
	f := newFixture(t, withReadAuth)
	first := f.login(f.http.URL, testToken, "/")
	// Logging in again from a browser that holds a session (an attacker's,
	// planted on the victim) must not keep its id.
	client := *f.http.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, err := http.NewRequestWithContext(f.ctx, "POST", f.http.URL+"/login", strings.NewReader(url.Values{"token": {"other-token"}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(first)
	resp, err := client.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	second := resp.Cookies()[0]
	assert.NotEqual(t, first.Value, second.Value, "login renews the session id")
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", f.http.URL+"/", first).StatusCode, "the old id is dead")
	assert.Equal(t, http.StatusOK, f.withCookies("GET", f.http.URL+"/", second).StatusCode)
}

func TestSessionsAreSharedByReplicasAndLogoutEndsThemEverywhere(t *testing.T) {
	f := newFixture(t, withReadAuth)
	_, other := f.newReplica(withReadAuth)
	c := f.login(f.http.URL, testToken, "/")
	assert.Equal(t, http.StatusOK, f.withCookies("GET", other.URL+"/", c).StatusCode, "a login on one replica opens the others")

	resp := f.withCookies("POST", other.URL+"/logout", c)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Equal(t, "/", resp.Header.Get("Location"))
	require.Len(t, resp.Cookies(), 1)
	assert.Equal(t, secureSessionCookie, resp.Cookies()[0].Name)
	assert.Negative(t, resp.Cookies()[0].MaxAge, "logout expires the cookie")
	// A copy of the cookie (a replay) opens nothing any more, on any replica.
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", f.http.URL+"/", c).StatusCode)
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", other.URL+"/", c).StatusCode)
	keys, err := f.rdb.Keys(f.ctx, f.prefix+":dashboard:session:*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys)
}

func TestSessionEndsAfterItsIdleTimeout(t *testing.T) {
	f := newFixture(t)
	_, h := f.newReplica(withReadAuth, func(s *server) {
		s.sessions = newSessionManager(newRedisSessionStore(f.rdb, f.prefix), sessionSettings{Secure: true, Lifetime: time.Hour, IdleTimeout: time.Second})
	})
	c := f.login(h.URL, testToken, "/")
	for range 4 { // use keeps it alive past the idle timeout
		time.Sleep(400 * time.Millisecond)
		require.Equal(t, http.StatusOK, f.withCookies("GET", h.URL+"/", c).StatusCode)
	}
	time.Sleep(1500 * time.Millisecond)
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", h.URL+"/", c).StatusCode)
}

func TestChangingATokensSecretEndsItsSessions(t *testing.T) {
	f := newFixture(t, withReadAuth)
	_, rotated := f.newReplica(withReadAuth, func(s *server) { s.tokens = fullAccessTokens(tokens{testTokenName: "the-new-secret"}) })
	c := f.login(f.http.URL, testToken, "/")
	assert.Equal(t, http.StatusUnauthorized, f.withCookies("GET", rotated.URL+"/", c).StatusCode,
		"a session opened with the old secret of %q", testTokenName)
}

func TestLoginRedirectsOnlyWithinTheSite(t *testing.T) {
	f := newFixture(t, withReadAuth)
	for name, next := range map[string]string{"absolute URL": "https://evil.example/", "scheme-relative": "//evil.example/",
		"backslash": `/\evil.example`, "tab": "/\t/evil.example", "empty": "", "relative": "pools"} {
		t.Run(name, func(t *testing.T) {
			resp := f.postForm("/login", url.Values{"token": {testToken}, "next": {next}})
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			assert.Equal(t, "/", resp.Header.Get("Location"))
		})
	}
}

func TestLocalPathRefusesWhatBrowsersReadAsAnotherHost(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"a page":                 {"/pools/ci/terraform?state=busy&page=2", "/pools/ci/terraform?state=busy&page=2"},
		"the root":               {"/", "/"},
		"empty":                  {"", "/"},
		"relative":               {"pools", "/"},
		"absolute URL":           {"https://evil.example/", "/"},
		"scheme-relative":        {"//evil.example", "/"},
		"backslash":              {`/\evil.example`, "/"},
		"backslashes":            {`\\evil.example`, "/"},
		"tab after the slash":    {"/\t/evil.example", "/"},
		"newline":                {"/\n/evil.example", "/"},
		"carriage return":        {"/\r/evil.example", "/"},
		"NUL":                    {"/\x00/evil.example", "/"},
		"DEL":                    {"/\x7f/evil.example", "/"},
		"leading space":          {" //evil.example", "/"},
		"javascript":             {"javascript:alert(1)", "/"},
		"slash then javascript":  {"/javascript:alert(1)", "/javascript:alert(1)"},
		"backslash in the query": {`/?next=\evil`, "/"},
		"userinfo trick":         {"//user@evil.example", "/"},
		"encoded slash":          {"/%2F/evil.example", "/%2F/evil.example"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := localPath(tc.in)
			assert.Equal(t, tc.want, got)
			// Whatever passes resolves, against this site, to this site.
			base, err := url.Parse("https://dash.example/x")
			require.NoError(t, err)
			ref, err := url.Parse(got)
			require.NoError(t, err)
			assert.Equal(t, "dash.example", base.ResolveReference(ref).Host)
		})
	}
}

func TestReadAuthAndSecureCookieAreOnByDefault(t *testing.T) {
	cfg, err := parseConfig(nil, testutil.Env(nil))
	require.NoError(t, err)
	assert.True(t, cfg.ReadAuth, "task payloads carry secrets: reads need a token unless turned off")
	assert.True(t, cfg.SecureCookie)
	assert.Equal(t, 12*time.Hour, cfg.SessionLifetime)
	assert.Equal(t, time.Hour, cfg.SessionIdleTimeout)
	cfg, err = parseConfig(nil, testutil.Env(map[string]string{"SECURE_COOKIE": "false", "READ_AUTH": "false"}))
	require.NoError(t, err)
	assert.False(t, cfg.SecureCookie)
	assert.False(t, cfg.ReadAuth)
	_, err = parseConfig([]string{"--session-idle-timeout=2h", "--session-lifetime=1h"}, testutil.Env(nil))
	assert.ErrorContains(t, err, "--session-idle-timeout")
}

func TestPlainHTTPSessionCookieForLocalUse(t *testing.T) {
	f := newFixture(t)
	_, h := f.newReplica(withReadAuth, func(s *server) {
		s.sessions = newSessionManager(newRedisSessionStore(f.rdb, f.prefix), sessionSettings{Secure: false, Lifetime: time.Hour, IdleTimeout: time.Hour})
	})
	c := f.login(h.URL, testToken, "/")
	assert.Equal(t, plainSessionCookie, c.Name, "the __Host- prefix needs Secure")
	assert.False(t, c.Secure)
	assert.True(t, c.HttpOnly)
}
