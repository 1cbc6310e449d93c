package main

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestPoolGlobMatchesNamespaceAndName(t *testing.T) {
	pool := func(s string) slots.PoolID {
		ns, name, _ := strings.Cut(s, "/")
		return slots.PoolID{Namespace: ns, Name: name}
	}
	tests := []struct {
		glob  string
		pool  string
		match bool
	}{
		{"*", "team-a/terraform", true},
		{"*", "x/y", true},
		{"*/*", "team-a/terraform", true},
		{"team-a/*", "team-a/terraform", true},
		{"team-a/*", "team-a/x.y", true},
		{"team-a/*", "team-b/terraform", false},
		{"team-a/*", "team-ab/terraform", false},
		{"team-*/*", "team-ab/terraform", true},
		{"*/terraform", "team-a/terraform", true},
		{"*/terraform", "team-a/terraform-2", false},
		{"ci/tf-*", "ci/tf-prod", true},
		{"ci/tf-*", "ci/tf", false},
		{"ci/terraform", "ci/terraform", true},
		{"ci/terraform", "ci/terraforms", false},
		{"ci/terraform", "cix/terraform", false},
		{"ci/tf-?", "ci/tf-1", true},
		{"ci/tf-?", "ci/tf-12", false},
		{"ci/tf-[ab]", "ci/tf-b", true},
		{"ci/tf-[ab]", "ci/tf-c", false},
		{" team-a/* ", "team-a/x", true}, // surrounding blanks (a YAML list written loosely)
	}
	for _, tc := range tests {
		t.Run(tc.glob+" "+tc.pool, func(t *testing.T) {
			g, err := parsePoolGlob(tc.glob)
			require.NoError(t, err)
			assert.Equal(t, tc.match, g.matches(pool(tc.pool)))
		})
	}
}

func TestBadPoolGlobsAreRefused(t *testing.T) {
	for _, glob := range []string{"", "team-a", "team-a/", "/terraform", "a/b/c", "**", "team-[a/*", "team-a/[", `team-a/\`} {
		t.Run(glob, func(t *testing.T) {
			_, err := parsePoolGlob(glob)
			require.ErrorIs(t, err, errBadGlob)
			assert.Contains(t, err.Error(), "team-a/*", "the message shows what a glob looks like")
		})
	}
}

func TestVerbsAreTheFourKnownOnes(t *testing.T) {
	for _, v := range []string{"read", "submit", "approve", "cancel"} {
		got, err := parseVerb(v)
		require.NoError(t, err)
		assert.Equal(t, verb(v), got)
	}
	for _, v := range []string{"", "*", "reject", "admin", "Read"} {
		_, err := parseVerb(v)
		assert.Error(t, err, v)
	}
}

func TestIdentityCanOnlyWhatAScopeAllows(t *testing.T) {
	globs := func(s ...string) poolGlobs {
		var out poolGlobs
		for _, g := range s {
			pg, err := parsePoolGlob(g)
			require.NoError(t, err)
			out = append(out, pg)
		}
		return out
	}
	id := &identity{Kind: identityToken, Name: "alice", scopes: []scope{
		{verbs: []verb{verbRead}, pools: globs("*")},
		{verbs: []verb{verbApprove, verbCancel}, pools: globs("team-a/*", "*/terraform")},
	}}
	tests := []struct {
		v    verb
		pool slots.PoolID
		can  bool
	}{
		{verbRead, slots.PoolID{Namespace: "x", Name: "y"}, true},
		{verbApprove, slots.PoolID{Namespace: "team-a", Name: "y"}, true},
		{verbCancel, slots.PoolID{Namespace: "b", Name: "terraform"}, true},
		{verbApprove, slots.PoolID{Namespace: "team-b", Name: "y"}, false},
		{verbSubmit, slots.PoolID{Namespace: "team-a", Name: "y"}, false},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.can, id.can(tc.v, tc.pool), "%s in %s", tc.v, tc.pool)
	}
	var nobody *identity
	assert.False(t, nobody.can(verbRead, slots.PoolID{Namespace: "x", Name: "y"}), "no identity may nothing")
	assert.False(t, id.fullAccess())
	assert.True(t, (&identity{scopes: []scope{scopeEverything}}).fullAccess())
}

// writeTokensFile writes a tokens file into a temporary directory.
func writeTokensFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func noEnv(string) (string, bool) { return "", false }

func TestTokensFileGrantsScopedTokens(t *testing.T) {
	secretFile := writeTokensFile(t, "alice", "alice-secret-from-file\n")
	yamlDoc := `
tokens:
  - name: ci
    secretEnv: CI_TOKEN
    scopes:
      - verbs: [submit, read]
        pools: ["ci/*"]
  - name: alice@example.com
    secretFile: ` + secretFile + `
    scopes:
      - verbs: [read]
        pools: ["*"]
      - verbs: [approve, cancel]
        pools: ["team-a/*", "*/terraform"]
  - name: literal
    secret: literal-secret
    scopes:
      - verbs: [read]
        pools: ["team-b/*"]
`
	env := func(k string) (string, bool) {
		if k == "CI_TOKEN" {
			return "ci-secret-from-env", true
		}
		return "", false
	}
	jsonDoc := `{"tokens":[{"name":"ci","secretEnv":"CI_TOKEN","scopes":[{"verbs":["submit","read"],"pools":["ci/*"]}]}]}`
	for _, tc := range []struct{ name, file string }{{"yaml", yamlDoc}, {"json", jsonDoc}} {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := loadTokens(tokens{"admin": "admin-secret"}, writeTokensFile(t, "tokens", tc.file), env)
			require.NoError(t, err)
			ci, ok := ts.authenticate("ci-secret-from-env")
			require.True(t, ok)
			assert.Equal(t, "ci", ci.Name)
			assert.True(t, ci.can(verbSubmit, slots.PoolID{Namespace: "ci", Name: "x"}))
			assert.False(t, ci.can(verbApprove, slots.PoolID{Namespace: "ci", Name: "x"}))
			assert.False(t, ci.can(verbSubmit, slots.PoolID{Namespace: "team-a", Name: "x"}))
			admin, ok := ts.authenticate("admin-secret")
			require.True(t, ok)
			assert.True(t, admin.fullAccess(), "--api-tokens tokens keep full access")
			_, ok = ts.authenticate("nope")
			assert.False(t, ok)
		})
	}
	ts, err := loadTokens(nil, writeTokensFile(t, "tokens.yaml", yamlDoc), env)
	require.NoError(t, err)
	alice, ok := ts.authenticate("alice-secret-from-file")
	require.True(t, ok, "a secretFile's trailing newline is not part of the secret")
	assert.True(t, alice.can(verbApprove, slots.PoolID{Namespace: "x", Name: "terraform"}))
	assert.False(t, alice.can(verbApprove, slots.PoolID{Namespace: "x", Name: "other"}))
	assert.Equal(t, "read on *; approve,cancel on team-a/*,*/terraform", alice.describeScopes())
	_, ok = ts.authenticate("literal-secret")
	assert.True(t, ok)
}

// A bad tokens file stops the start with a message naming the token and
// the problem, never a secret.
func TestBadTokensFilesAreRefusedClearly(t *testing.T) {
	const secret = "do-not-print-me"
	entry := func(body string) string { return "tokens:\n  - name: ci\n" + body }
	good := "    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"
	tests := map[string]struct {
		flag    tokens
		content string
		want    string
	}{
		"unknown verb": {content: entry("    secret: " + secret + "\n    scopes:\n      - verbs: [read, destroy]\n        pools: [\"*\"]\n"),
			want: `token 1 ("ci"): scope 1: unknown verb "destroy"`},
		"bad glob": {content: entry("    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n        pools: [\"team-a\"]\n"),
			want: `bad pool glob "team-a"`},
		"malformed glob": {content: entry("    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n        pools: [\"team-[a/*\"]\n"),
			want: `bad pool glob "team-[a/*"`},
		"duplicate name": {content: entry(good) + "  - name: ci\n    secret: other-" + secret + "\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n",
			want: `token name "ci" given twice`},
		"name also in --api-tokens": {flag: tokens{"ci": "flag-" + secret}, content: entry(good),
			want: `token name "ci" given twice`},
		"empty secret":        {content: entry("    secret: \"  \"\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "the secret is empty"},
		"empty secret file":   {content: entry("    secretFile: " + writeTokensFile(t, "empty", "\n") + "\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "the secret is empty"},
		"missing secret file": {content: entry("    secretFile: /nonexistent/secret\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "secretFile: open /nonexistent/secret"},
		"unset secretEnv":     {content: entry("    secretEnv: NOT_SET\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "secretEnv NOT_SET is not set"},
		"no secret":           {content: entry("    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "give exactly one of secret, secretEnv and secretFile"},
		"two secrets":         {content: entry("    secret: " + secret + "\n    secretEnv: X\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n"), want: "give exactly one of"},
		"no scopes":           {content: entry("    secret: " + secret + "\n"), want: "no scopes"},
		"no verbs":            {content: entry("    secret: " + secret + "\n    scopes:\n      - pools: [\"*\"]\n"), want: "no verbs"},
		"no pools":            {content: entry("    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n"), want: "no pools"},
		"unknown field":       {content: entry(good + "    scope: []\n"), want: `unknown field "scope"`},
		"misspelt pools":      {content: entry("    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n        pool: [\"*\"]\n"), want: `unknown field "pool"`},
		"bad name":            {content: "tokens:\n  - name: \"ci bot\"\n" + good, want: `name "ci bot": want letters`},
		"no tokens":           {content: "tokens: []\n", want: "no tokens"},
		"not YAML":            {content: "tokens: [\n", want: "parsing --api-tokens-file"},
		"same secret twice": {content: entry(good) + "  - name: cd\n    secret: " + secret + "\n    scopes:\n      - verbs: [read]\n        pools: [\"*\"]\n",
			want: `api tokens "cd" and "ci" have the same secret`},
		"same secret as a flag token": {flag: tokens{"admin": secret}, content: entry(good), want: "have the same secret"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := loadTokens(tc.flag, writeTokensFile(t, "tokens.yaml", tc.content), noEnv)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), secret, "no secret in the message")
		})
	}
	_, err := loadTokens(nil, "/nonexistent/tokens.yaml", noEnv)
	assert.ErrorContains(t, err, "reading --api-tokens-file")
}

// Each route needs the verb of its kind, in the route's pool. The table
// is the one the router is built from: a route added without thinking of
// its scope fails here.
func TestEachRouteNeedsItsVerb(t *testing.T) {
	s := &server{}
	got := map[string]verb{}
	for _, rt := range s.pageRoutes() {
		got[rt.method+" "+rt.pattern] = rt.verb
	}
	for _, rt := range s.apiRoutes() {
		got[rt.method+" "+apiPrefix+rt.pattern] = rt.verb
	}
	want := map[string]verb{
		"GET /":                                             verbRead,
		"GET /approvals":                                    verbRead,
		"GET /pools/{ns}/{name}":                            verbRead,
		"GET /pools/{ns}/{name}/grid":                       verbRead,
		"GET /pools/{ns}/{name}/chart":                      verbRead,
		"GET /pools/{ns}/{name}/live":                       verbRead,
		"GET /pools/{ns}/{name}/tasks/{id}":                 verbRead,
		"POST /pools/{ns}/{name}/tasks/{id}/approve":        verbApprove,
		"POST /pools/{ns}/{name}/tasks/{id}/reject":         verbApprove,
		"POST /pools/{ns}/{name}/tasks/{id}/cancel":         verbCancel,
		"GET /api/v1/pools":                                 verbRead,
		"GET /api/v1/pools/{ns}/{name}":                     verbRead,
		"GET /api/v1/pools/{ns}/{name}/history":             verbRead,
		"GET /api/v1/pools/{ns}/{name}/events":              verbRead,
		"GET /api/v1/pools/{ns}/{name}/tasks/{id}":          verbRead,
		"POST /api/v1/pools/{ns}/{name}/tasks":              verbSubmit,
		"POST /api/v1/pools/{ns}/{name}/tasks/{id}/cancel":  verbCancel,
		"POST /api/v1/pools/{ns}/{name}/tasks/{id}/approve": verbApprove,
		"POST /api/v1/pools/{ns}/{name}/tasks/{id}/reject":  verbApprove,
	}
	assert.Equal(t, want, got)

	// Every route the router serves is in the table, or open on purpose.
	open := []string{"GET /healthz", "GET /readyz", "GET /static/*", "POST /login", "POST /logout", "GET /api/v1/openapi.json"}
	for _, readAuth := range []bool{false, true} {
		s := &server{readAuth: readAuth}
		require.NoError(t, chi.Walk(s.routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			key := method + " " + route
			if route == "/static/*" {
				key = "GET /static/*" // a file server, for whatever method
			}
			if _, ok := want[key]; !ok && !slices.Contains(open, key) {
				t.Errorf("route %s (read auth %v) has no verb", key, readAuth)
			}
			return nil
		}))
	}
}

func TestOutputTailLinesEndsOnWholeLines(t *testing.T) {
	tests := []struct {
		out        string
		lines, max int
		want       string
		wantCut    bool
	}{
		{"a\nb\nc\n", 5, 100, "a\nb\nc", false},
		{"a\nb\nc\nd", 2, 100, "c\nd", true},
		{"aaaa\nbb\ncc", 10, 6, "bb\ncc", true},
		{"", 3, 10, "", false},
		{"one line", 3, 100, "one line", false},
	}
	for _, tc := range tests {
		got, cut := outputTailLines(tc.out, tc.lines, tc.max)
		assert.Equal(t, tc.want, got, "%q", tc.out)
		assert.Equal(t, tc.wantCut, cut, "%q", tc.out)
	}
}
