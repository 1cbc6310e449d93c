package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// testOP is a real OpenID provider in the test: zitadel/oidc's OP
// (OpenID-certified) with the in-memory storage of its example, its
// username/password login page, and users whose ID tokens carry a groups
// claim.
type testOP struct {
	url     string
	clients map[string]*storage.Client
	// postLogout is where the OP's logout may send browsers back to.
	postLogout []string
	// logouts counts the browsers sent to the OP's logout.
	logouts atomic.Int32
}

const (
	opClientID     = "slotscaler-dashboard"
	opClientSecret = "op-client-secret"
	opPassword     = "correct horse"
)

// opUsers: alice is in a mapped group, bob in none.
var opUsers = map[string]struct {
	user   storage.User
	groups []string
}{
	"u-alice": {storage.User{ID: "u-alice", Username: "alice", Password: opPassword, FirstName: "Alice", LastName: "A", Email: "alice@example.com", EmailVerified: true}, []string{"platform-admins", "everyone"}},
	"u-bob":   {storage.User{ID: "u-bob", Username: "bob", Password: opPassword, FirstName: "Bob", LastName: "B", Email: "bob@example.com", EmailVerified: true}, []string{"contractors"}},
}

type opUserStore struct{}

func (opUserStore) GetUserByID(id string) *storage.User {
	u, ok := opUsers[id]
	if !ok {
		return nil
	}
	return &u.user
}

func (opUserStore) GetUserByUsername(name string) *storage.User {
	for _, u := range opUsers {
		if u.user.Username == name {
			return &u.user
		}
	}
	return nil
}

func (opUserStore) ExampleClientID() string { return "service" }

// groupsStorage puts the user's email and groups in its ID tokens, as
// Keycloak, Dex or Okta do when configured to.
type groupsStorage struct {
	*storage.Storage
	idp *testOP
}

// logoutClient is a client of the example storage with post-logout
// redirect URIs (its own constructors have none).
type logoutClient struct {
	op.Client
	postLogout []string
}

func (c logoutClient) PostLogoutRedirectURIs() []string { return c.postLogout }

func (s groupsStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return logoutClient{Client: c, postLogout: s.idp.postLogout}, nil
}

func (s groupsStorage) SetUserinfoFromScopes(_ context.Context, ui *zoidc.UserInfo, userID, _ string, _ []string) error {
	u, ok := opUsers[userID]
	if !ok {
		return nil
	}
	ui.Email, ui.EmailVerified = u.user.Email, zoidc.Bool(u.user.EmailVerified)
	ui.AppendClaims("groups", u.groups)
	return nil
}

func newTestOP(t *testing.T) *testOP {
	t.Helper()
	p := &testOP{clients: map[string]*storage.Client{}}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/end_session" {
			p.logouts.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	st := groupsStorage{Storage: storage.NewStorageWithClients(opUserStore{}, p.clients), idp: p}
	h = exampleop.SetupServer(p.url, st, nil, false)
	return p
}

// withOIDC signs the fixture's browsers in with op; the fixture's URL is
// known once it serves, so the redirect URL is set by registerRedirect.
func withOIDC(t *testing.T, idp *testOP) fixtureOption {
	return func(s *server) {
		l, err := newOIDCLogin(t.Context(), oidcSettings{Issuer: idp.url, ClientID: opClientID, ClientSecret: opClientSecret,
			RedirectURL: "http://unset" + oidcCallbackPath, GroupsClaim: "groups", ProviderName: "Test OP", Scopes: "email,profile", ProviderLogout: true})
		require.NoError(t, err)
		s.oidc = l
	}
}

// oidcFixture: the scoped fixture with OIDC sign-in at op, platform-admins
// mapped to read and approve in ci/*.
func oidcFixture(t *testing.T, idp *testOP) (*fixture, *testutil.SyncBuffer) {
	t.Helper()
	f, logs := scopedFixture(t, withOIDC(t, idp), func(s *server) {
		s.tokens.groups = map[string][]scope{"platform-admins": {mustScope(t, []string{"read", "approve"}, []string{"ci/*"})}}
	})
	redirect := f.http.URL + oidcCallbackPath
	f.srv.oidc.oauth.RedirectURL = redirect
	idp.clients[opClientID] = storage.WebClient(opClientID, opClientSecret, redirect)
	idp.postLogout = []string{f.http.URL + "/"}
	f.srv.oidc.afterLogout = f.http.URL + "/"
	return f, logs
}

func mustScope(t *testing.T, vs, pools []string) scope {
	t.Helper()
	sc, err := scopeEntry{Verbs: vs, Pools: pools}.scope()
	require.NoError(t, err)
	return sc
}

// opSignIn signs in at the OP's login page (reached from the dashboard's
// login page) and waits for waitFor back on the dashboard. It returns the
// dashboard's session cookie while at the OP (the sign-in under way) and
// once back (signed in).
func opSignIn(t *testing.T, ctx context.Context, dashboard, user, waitFor string) (during, after string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Click(`[data-testid="oidc-login"]`),
		chromedp.WaitVisible(`input[name="username"]`),
	))
	during = sessionCookie(t, ctx, dashboard)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(`input[name="username"]`, user),
		chromedp.SendKeys(`input[name="password"]`, opPassword),
		chromedp.Submit(`input[name="password"]`),
		chromedp.WaitVisible(waitFor),
	))
	return during, sessionCookie(t, ctx, dashboard)
}

// sessionCookie is the browser's (HttpOnly) session cookie for url.
func sessionCookie(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	var value string
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
		for _, c := range res.Cookies {
			if c.Name == secureSessionCookie {
				value = c.Value
			}
		}
		return err
	})))
	return value
}

// A browser signs in at a real OpenID provider, comes back signed in,
// approves a reserved plan_and_apply (recorded as its OIDC identity, the
// subject in the audit line), signs out and needs to sign in again. A
// user of no mapped group is signed in but may read nothing, and the 403
// says why.
func TestBrowserSignsInWithOIDCAndApproves(t *testing.T) {
	idp := newTestOP(t)
	f, logs := oidcFixture(t, idp)
	pod, uid := f.addPod()
	f.reserveIn(f.pool, pod, uid, "tf1", "submitter")
	ctx := newBrowser(t)
	watch := watchBrowser(t, ctx)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform/tasks/tf1"),
		chromedp.WaitVisible(`[data-testid="oidc-login"]`),
	))
	label, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="oidc-login"]').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "Sign in with Test OP", label)
	tokenForm, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="login"] input[name="token"]').length`))
	require.NoError(t, err)
	assert.Equal(t, 1, tokenForm, "token login is still offered")

	during, after := opSignIn(t, ctx, f.http.URL, "alice", `[data-testid="approve"]`)
	assert.NotEmpty(t, during, "the sign-in under way is in the session")
	assert.NotEmpty(t, after)
	assert.NotEqual(t, during, after, "signing in renews the session id (against fixation)")
	path, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
	require.NoError(t, err)
	assert.Equal(t, "/pools/ci/terraform/tasks/tf1", path, "back on the page that asked for the sign-in")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(`[data-testid="approve-form"] input[name="note"]`, "CHG-42"),
		chromedp.Click(`[data-testid="approve"]`),
		// htmx answers with a navigation to the task page (this page):
		// wait for an element of the new one.
		chromedp.WaitVisible(`.task-running[data-testid="task-state"]`),
	))
	for id, want := range map[string]string{"task-state": "running", "task-by": "oidc:alice@example.com", "task-note": "CHG-42"} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="`+id+`"]').textContent`))
		require.NoError(t, err)
		assert.Equal(t, want, got, id)
	}
	lines := auditLines(t, logs)
	var approved map[string]any
	for _, l := range lines {
		if l["action"] == "approve" {
			approved = l
		}
	}
	require.NotNil(t, approved, "the approval is audited: %v", lines)
	assert.Equal(t, "oidc", approved["identity_kind"])
	assert.Equal(t, "oidc:alice@example.com", approved["identity"])
	assert.Equal(t, "u-alice", approved["subject"], "the subject, which never changes, is in the audit line")

	// Sign out: the session ends, the browser goes through the OP's
	// logout and back; pages ask for a sign-in again. (A CSP without the
	// OP's origin in form-action would hold the browser on the way: the
	// wait is bounded, on a context derived from the tab's.)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, chromedp.Do(wctx,
		chromedp.Click(`[data-testid="logout"] button`),
		chromedp.WaitVisible(`[data-testid="oidc-login"]`),
	), "back on the dashboard's sign-in page after the OP's logout")
	assert.EqualValues(t, 1, idp.logouts.Load(), "signed out at the OP too")
	assert.Empty(t, sessionCookie(t, ctx, f.http.URL), "the session cookie is gone")
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.http.URL+"/pools/ci/terraform"),
		chromedp.WaitVisible(`[data-testid="oidc-login"]`),
	))

	// bob's groups map to nothing: signed in, allowed nothing, told why.
	opSignIn(t, ctx, f.http.URL, "bob", `[data-testid="error"]`)
	msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="error"]').textContent`))
	require.NoError(t, err)
	assert.Contains(t, msg, "bob@example.com (signed in, but none of its groups is mapped to scopes in the tokens file) has no read scope on pool ci/terraform")

	time.Sleep(200 * time.Millisecond) // let late reports arrive
	assert.Empty(t, watch.seen(), "the browser reported problems (CSP violations, errors)")
}

// noRedirects is a client with a cookie jar that stops at each redirect.
func noRedirects(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// A callback whose state is not the sign-in's, or that comes without a
// sign-in under way, is refused with a clear page and an audit line; it
// opens no session.
func TestOIDCCallbackRefusesAForgedState(t *testing.T) {
	idp := newTestOP(t)
	f, logs := oidcFixture(t, idp)
	c := noRedirects(t)

	resp, err := c.Get(f.http.URL + oidcLoginPath + "?next=/approvals")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	to, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(to.String(), idp.url), "sent to the provider: %s", to)
	q := to.Query()
	assert.Equal(t, "S256", q.Get("code_challenge_method"), "PKCE")
	assert.NotEmpty(t, q.Get("code_challenge"))
	assert.NotEmpty(t, q.Get("nonce"))
	assert.NotEmpty(t, q.Get("state"))
	assert.Equal(t, opClientID, q.Get("client_id"))

	for _, tc := range []struct {
		name, query, want string
	}{
		{"forged state", "?state=forged&code=x", "the state does not match the sign-in under way"},
		// The first callback used up the sign-in, whatever its outcome.
		{"replayed", "?state=" + url.QueryEscape(q.Get("state")) + "&code=x", "no sign-in under way in this browser"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Get(f.http.URL + oidcCallbackPath + tc.query)
			require.NoError(t, err)
			body := readAll(t, resp)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Contains(t, body, "Sign-in with Test OP failed: "+tc.want)
			lines := auditLines(t, logs)
			require.NotEmpty(t, lines)
			last := lines[len(lines)-1]
			assert.Equal(t, "sign-in", last["action"])
			assert.Equal(t, "refused", last["result"])
			assert.Contains(t, last["reason"], tc.want)
		})
	}
	resp, err = c.Get(f.http.URL + "/approvals")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no session was opened")
}

// signer makes ID tokens with a key the verifier under test trusts.
type signer struct {
	key *rsa.PrivateKey
	s   jose.Signer
}

func newSigner(t *testing.T) *signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, nil)
	require.NoError(t, err)
	return &signer{key: key, s: s}
}

func (sg *signer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	require.NoError(t, err)
	jws, err := sg.s.Sign(b)
	require.NoError(t, err)
	raw, err := jws.CompactSerialize()
	require.NoError(t, err)
	return raw
}

// The ID token checks: issuer, audience, expiry, signature, nonce; and
// what is read from a good one.
func TestOIDCVerifiesIDTokens(t *testing.T) {
	const issuer = "https://login.example.com"
	sg := newSigner(t)
	keys := &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&sg.key.PublicKey}}
	login := &oidcLogin{groupsClaim: "groups",
		verifier: oidc.NewVerifier(issuer, keys, &oidc.Config{ClientID: opClientID})}
	now := time.Now()
	good := func() map[string]any {
		return map[string]any{"iss": issuer, "aud": opClientID, "sub": "u-1", "nonce": "n-1",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"email": "carol@example.com", "email_verified": true, "groups": []string{"b", "a", "b"}}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		token  string
		nonce  string
		want   string // "" accepted
		claims oidcClaims
	}{
		{name: "good", token: sg.sign(t, good()), nonce: "n-1",
			claims: oidcClaims{Subject: "u-1", Email: "carol@example.com", Groups: []string{"a", "b"}}},
		{name: "one group as a string", token: sg.sign(t, with("groups", "a")), nonce: "n-1",
			claims: oidcClaims{Subject: "u-1", Email: "carol@example.com", Groups: []string{"a"}}},
		{name: "unverified email is not used", token: sg.sign(t, with("email_verified", false)), nonce: "n-1",
			claims: oidcClaims{Subject: "u-1", Groups: []string{"a", "b"}}},
		{name: "wrong nonce", token: sg.sign(t, good()), nonce: "n-2", want: "nonce is not the sign-in's"},
		{name: "no nonce", token: sg.sign(t, with("nonce", nil)), nonce: "n-1", want: "nonce is not the sign-in's"},
		{name: "another audience", token: sg.sign(t, with("aud", "another-client")), nonce: "n-1", want: "expected audience"},
		{name: "expired", token: sg.sign(t, with("exp", now.Add(-time.Minute).Unix())), nonce: "n-1", want: "token is expired"},
		{name: "another issuer", token: sg.sign(t, with("iss", "https://evil.example.com")), nonce: "n-1", want: "id token issued by a different provider"},
		{name: "another key", token: newSigner(t).sign(t, good()), nonce: "n-1", want: "failed to verify signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := login.verify(t.Context(), tc.token, tc.nonce)
			if tc.want != "" {
				require.ErrorIs(t, err, errOIDCRefused)
				assert.Contains(t, err.Error(), tc.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.claims, c)
		})
	}
}

// The identity of a signed-in user: its name, and the union of the scopes
// its mapped groups hold.
func TestOIDCGroupsMapToScopes(t *testing.T) {
	ts, err := loadTokens(nil, writeTokensFile(t, "groups.yaml", `
groups:
  - group: platform-admins
    scopes:
      - verbs: [read, approve, cancel]
        pools: ["*"]
  - group: team-a
    scopes:
      - verbs: [read]
        pools: ["team-a/*"]
      - verbs: [approve]
        pools: ["team-a/prod"]
  - group: ci-readers
    scopes:
      - verbs: [read]
        pools: ["ci/*"]
`), noEnv)
	require.NoError(t, err)
	pool := func(s string) slots.PoolID {
		ns, name, _ := strings.Cut(s, "/")
		return slots.PoolID{Namespace: ns, Name: name}
	}
	for _, tc := range []struct {
		name     string
		claims   oidcClaims
		wantName string
		can      map[string][]verb // pool → verbs it may use (others: none)
	}{
		{"admin", oidcClaims{Subject: "s1", Email: "a@x", Groups: []string{"platform-admins"}}, "oidc:a@x",
			map[string][]verb{"team-a/prod": {verbRead, verbApprove, verbCancel}, "ci/terraform": {verbRead, verbApprove, verbCancel}}},
		{"two groups: the union", oidcClaims{Subject: "s2", Email: "b@x", Groups: []string{"ci-readers", "team-a"}}, "oidc:b@x",
			map[string][]verb{"team-a/prod": {verbRead, verbApprove}, "team-a/dev": {verbRead}, "ci/terraform": {verbRead}}},
		{"no mapped group", oidcClaims{Subject: "s3", Email: "c@x", Groups: []string{"unknown"}}, "oidc:c@x",
			map[string][]verb{"team-a/prod": nil, "ci/terraform": nil}},
		{"no email: the subject", oidcClaims{Subject: "s4", Groups: []string{"ci-readers"}}, "oidc:s4",
			map[string][]verb{"ci/terraform": {verbRead}, "team-a/prod": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.claims.identity(ts)
			assert.Equal(t, tc.wantName, id.Name)
			assert.Equal(t, identityOIDC, id.Kind)
			assert.Equal(t, tc.claims.Subject, id.subject)
			for p, want := range tc.can {
				for _, v := range verbs {
					assert.Equal(t, slices.Contains(want, v), id.can(v, pool(p)), "%s on %s", v, p)
				}
			}
		})
	}
}

// A bad group entry fails the start, naming it.
func TestTokensFileGroupErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"no name", "groups:\n  - scopes: [{verbs: [read], pools: ['*']}]\n", `group 1 (""): no group name`},
		{"no scopes", "groups:\n  - group: a\n", `group 1 ("a"): no scopes`},
		{"bad verb", "groups:\n  - group: a\n    scopes: [{verbs: [delete], pools: ['*']}]\n", `unknown verb "delete"`},
		{"twice", "groups:\n  - group: a\n    scopes: [{verbs: [read], pools: ['*']}]\n  - group: a\n    scopes: [{verbs: [read], pools: ['*']}]\n", `group "a" given twice`},
		{"misspelt", "groups:\n  - group: a\n    scope: [{verbs: [read], pools: ['*']}]\n", `unknown field "scope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadTokens(nil, writeTokensFile(t, "g.yaml", tc.doc), noEnv)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The OIDC flags: all or nothing, the secret from one place, the
// callback's path; the secret never in an error.
func TestOIDCConfig(t *testing.T) {
	good := []string{"--oidc-issuer=https://login.example.com", "--oidc-client-id=dash", "--oidc-redirect-url=https://dash.example.com/login/oidc/callback"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" valid
	}{
		{"off", nil, nil, ""},
		{"secret from the environment", good, map[string]string{"OIDC_CLIENT_SECRET": "topsecret"}, ""},
		{"secret file", append(good, "--oidc-client-secret-file=/run/secret"), nil, ""},
		{"no secret", good, nil, "exactly one of --oidc-client-secret and --oidc-client-secret-file"},
		{"two secrets", append(good, "--oidc-client-secret-file=/run/secret", "--oidc-client-secret=topsecret"), nil, "exactly one of"},
		{"no client id", []string{"--oidc-issuer=https://login.example.com", "--oidc-client-secret=topsecret", "--oidc-redirect-url=https://d/login/oidc/callback"}, nil, "needs --oidc-client-id"},
		{"redirect elsewhere", append(good[:2:2], "--oidc-client-secret=topsecret", "--oidc-redirect-url=https://d/callback"), nil, "ending in /login/oidc/callback"},
		{"no issuer", []string{"--oidc-client-id=dash", "--oidc-client-secret=topsecret"}, nil, "need --oidc-issuer"},
		{"read auth off", append(good, "--oidc-client-secret=topsecret", "--read-auth=false"), nil, "needs --read-auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.args, testutil.Env(tc.env))
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, "groups", cfg.OIDC.GroupsClaim)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "topsecret")
		})
	}
}

// fakeTokenEndpoint answers the code exchange with the ID token the test
// sets, after checking the PKCE verifier against the sign-in's challenge.
type fakeTokenEndpoint struct {
	idToken   atomic.Value // string
	challenge atomic.Value // string: the S256 challenge the exchange must match
}

func (e *fakeTokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "authorization_code" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if want, _ := e.challenge.Load().(string); oauth2.S256ChallengeFromVerifier(r.PostForm.Get("code_verifier")) != want {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"PKCE verifier does not match"}`))
		return
	}
	tok, _ := e.idToken.Load().(string)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": tok})
}

// The callback refuses, with a clear page and an audit line, an ID token
// with a wrong nonce, for another audience, expired or signed by another
// key; a good one opens a session with the mapped scopes.
func TestOIDCCallbackRefusesBadIDTokens(t *testing.T) {
	const issuer = "https://login.example.com"
	sg := newSigner(t)
	endpoint := &fakeTokenEndpoint{}
	tokSrv := httptest.NewServer(endpoint)
	t.Cleanup(tokSrv.Close)
	f, logs := scopedFixture(t, func(s *server) {
		s.oidc = &oidcLogin{name: "Fake OP", groupsClaim: "groups",
			oauth: oauth2.Config{ClientID: opClientID, ClientSecret: opClientSecret, Scopes: []string{"openid"},
				Endpoint:    oauth2.Endpoint{AuthURL: issuer + "/auth", TokenURL: tokSrv.URL + "/token"},
				RedirectURL: "http://dashboard.example" + oidcCallbackPath},
			verifier: oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&sg.key.PublicKey}}, &oidc.Config{ClientID: opClientID})}
		s.tokens.groups = map[string][]scope{"platform-admins": {mustScope(t, []string{"read"}, []string{"*"})}}
	})
	now := time.Now()
	claims := func(nonce string, change func(map[string]any)) map[string]any {
		c := map[string]any{"iss": issuer, "aud": opClientID, "sub": "u-9", "nonce": nonce,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "email": "dana@example.com", "groups": []string{"platform-admins"}}
		if change != nil {
			change(c)
		}
		return c
	}
	for _, tc := range []struct {
		name  string
		token func(nonce string) string
		want  string // "" accepted
	}{
		{"wrong nonce", func(string) string { return sg.sign(t, claims("another-nonce", nil)) }, "nonce is not the sign-in's"},
		{"another audience", func(n string) string {
			return sg.sign(t, claims(n, func(c map[string]any) { c["aud"] = "another-client" }))
		}, "expected audience"},
		{"expired", func(n string) string {
			return sg.sign(t, claims(n, func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }))
		}, "token is expired"},
		{"another key", func(n string) string { return newSigner(t).sign(t, claims(n, nil)) }, "failed to verify signature"},
		{"good", func(n string) string { return sg.sign(t, claims(n, nil)) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := noRedirects(t)
			resp, err := c.Get(f.http.URL + oidcLoginPath + "?next=/approvals")
			require.NoError(t, err)
			_ = resp.Body.Close()
			to, err := url.Parse(resp.Header.Get("Location"))
			require.NoError(t, err)
			q := to.Query()
			endpoint.challenge.Store(q.Get("code_challenge"))
			endpoint.idToken.Store(tc.token(q.Get("nonce")))

			resp, err = c.Get(f.http.URL + oidcCallbackPath + "?code=c1&state=" + url.QueryEscape(q.Get("state")))
			require.NoError(t, err)
			body := readAll(t, resp)
			_ = resp.Body.Close()
			lines := auditLines(t, logs)
			require.NotEmpty(t, lines)
			last := lines[len(lines)-1]
			assert.Equal(t, "sign-in", last["action"])
			if tc.want != "" {
				require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
				assert.Contains(t, body, "Sign-in with Fake OP failed: ")
				assert.Contains(t, body, html.EscapeString(tc.want))
				assert.Equal(t, "refused", last["result"])
				assert.Contains(t, last["reason"], tc.want)
				resp, err = c.Get(f.http.URL + "/approvals")
				require.NoError(t, err)
				_ = resp.Body.Close()
				assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no session was opened")
				return
			}
			require.Equal(t, http.StatusSeeOther, resp.StatusCode, body)
			assert.Equal(t, "/approvals", resp.Header.Get("Location"))
			assert.Equal(t, "ok", last["result"])
			assert.Equal(t, "oidc:dana@example.com", last["identity"])
			assert.Equal(t, "u-9", last["subject"])
			resp, err = c.Get(f.http.URL + "/pools/team-b/infra")
			require.NoError(t, err)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, "signed in, with platform-admins' read on every pool")
		})
	}
}
