package main

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// apiToken is one configured bearer token: its secret and the identity it
// authenticates.
type apiToken struct {
	secret string
	id     *identity
}

// tokenSet is every configured token. Secrets never leave it: not in
// messages, not in logs.
type tokenSet struct {
	tokens []apiToken // sorted by name
	// groups maps an OIDC group to the scopes its members get.
	groups map[string][]scope
}

// groupScopes is the union of the scopes of the groups mapped in the
// tokens file; groups not mapped add nothing.
func (ts *tokenSet) groupScopes(groups []string) []scope {
	if ts == nil {
		return nil
	}
	var out []scope
	for _, g := range groups {
		out = append(out, ts.groups[g]...)
	}
	return out
}

func (ts *tokenSet) len() int {
	if ts == nil {
		return 0
	}
	return len(ts.tokens)
}

// authenticate finds the token whose secret is presented, comparing with
// every configured one in constant time each, without stopping at a match.
func (ts *tokenSet) authenticate(secret string) (*identity, bool) {
	if ts == nil || secret == "" {
		return nil, false
	}
	var found *identity
	for _, t := range ts.tokens {
		if subtle.ConstantTimeCompare([]byte(secret), []byte(t.secret)) == 1 {
			found = t.id
		}
	}
	return found, found != nil
}

// byName finds a token by its name (a login session names its token).
func (ts *tokenSet) byName(name string) (apiToken, bool) {
	if ts == nil {
		return apiToken{}, false
	}
	i := slices.IndexFunc(ts.tokens, func(t apiToken) bool { return t.id.Name == name })
	if i < 0 {
		return apiToken{}, false
	}
	return ts.tokens[i], true
}

// fullAccessTokens turns --api-tokens (name=secret pairs) into tokens that
// may do everything in every pool, as they always could.
func fullAccessTokens(t tokens) *tokenSet {
	ts := &tokenSet{}
	for name, secret := range t {
		ts.tokens = append(ts.tokens, apiToken{secret: secret,
			id: &identity{Kind: identityToken, Name: name, scopes: []scope{scopeEverything}}})
	}
	ts.sort()
	return ts
}

func (ts *tokenSet) sort() {
	slices.SortFunc(ts.tokens, func(a, b apiToken) int { return strings.Compare(a.id.Name, b.id.Name) })
}

// tokensFile is the --api-tokens-file document (YAML, or JSON, which is
// YAML too). Unknown fields are errors: a misspelt "scopes" must not
// silently grant nothing, or a misspelt "pools" everything.
//
//	tokens:
//	  - name: ci
//	    secretEnv: CI_TOKEN          # or secretFile: /path, or secret: "..."
//	    scopes:
//	      - verbs: [submit, read]
//	        pools: ["ci/*"]
//	groups:                          # OIDC groups (--oidc-groups-claim)
//	  - group: platform-admins
//	    scopes:
//	      - verbs: [read, approve, cancel]
//	        pools: ["*"]
//
// Tokens and OIDC groups share the file so that who may do what is
// reviewed in one place.
type tokensFile struct {
	Tokens []tokenEntry `json:"tokens"`
	Groups []groupEntry `json:"groups"`
}

type groupEntry struct {
	Group  string       `json:"group"`
	Scopes []scopeEntry `json:"scopes"`
}

type tokenEntry struct {
	Name       string       `json:"name"`
	Secret     string       `json:"secret,omitempty"`
	SecretEnv  string       `json:"secretEnv,omitempty"`
	SecretFile string       `json:"secretFile,omitempty"`
	Scopes     []scopeEntry `json:"scopes"`
}

type scopeEntry struct {
	Verbs []string `json:"verbs"`
	Pools []string `json:"pools"`
}

// tokenNameRe: a token's name is recorded as who submitted and decided
// and shown on pages: plain words, e-mail addresses allowed.
var tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]*$`)

// loadTokens builds the token set from --api-tokens (full access) and
// --api-tokens-file (scoped). lookup reads the environment (secretEnv).
// Every problem is reported, by token name and never with a secret.
func loadTokens(flagTokens tokens, file string, lookup func(string) (string, bool)) (*tokenSet, error) {
	ts := fullAccessTokens(flagTokens)
	if file == "" {
		return ts, ts.checkSecretsDistinct()
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading --api-tokens-file: %w", err)
	}
	var doc tokensFile
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		// sigs.k8s.io/yaml errors name lines and fields, not values.
		return nil, fmt.Errorf("parsing --api-tokens-file %s: %w", file, err)
	}
	if len(doc.Tokens) == 0 && len(doc.Groups) == 0 {
		return nil, fmt.Errorf("--api-tokens-file %s: no tokens and no groups (want a top-level \"tokens:\" or \"groups:\" list)", file)
	}
	var errs []error
	for i, g := range doc.Groups {
		scopes, err := g.scopes()
		if err != nil {
			errs = append(errs, fmt.Errorf("--api-tokens-file %s: group %d (%q): %w", file, i+1, g.Group, err))
			continue
		}
		if _, dup := ts.groups[g.Group]; dup {
			errs = append(errs, fmt.Errorf("--api-tokens-file %s: group %q given twice: give it one entry with all its scopes", file, g.Group))
			continue
		}
		if ts.groups == nil {
			ts.groups = map[string][]scope{}
		}
		ts.groups[g.Group] = scopes
	}
	for i, e := range doc.Tokens {
		t, err := e.token(lookup)
		if err != nil {
			errs = append(errs, fmt.Errorf("--api-tokens-file %s: token %d (%q): %w", file, i+1, e.Name, err))
			continue
		}
		if _, dup := ts.byName(t.id.Name); dup {
			errs = append(errs, fmt.Errorf("--api-tokens-file %s: token name %q given twice (in the file or also in --api-tokens)", file, t.id.Name))
			continue
		}
		ts.tokens = append(ts.tokens, t)
		ts.sort()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ts, ts.checkSecretsDistinct()
}

func (g groupEntry) scopes() ([]scope, error) {
	if strings.TrimSpace(g.Group) == "" {
		return nil, errors.New("no group name (want the group as the provider's groups claim names it)")
	}
	if len(g.Scopes) == 0 {
		return nil, errors.New("no scopes: a group must be allowed something")
	}
	var out []scope
	for j, se := range g.Scopes {
		sc, err := se.scope()
		if err != nil {
			return nil, fmt.Errorf("scope %d: %w", j+1, err)
		}
		out = append(out, sc)
	}
	return out, nil
}

func (e tokenEntry) token(lookup func(string) (string, bool)) (apiToken, error) {
	if !tokenNameRe.MatchString(e.Name) || len(e.Name) > slots.MaxActorLen {
		return apiToken{}, fmt.Errorf("name %q: want letters, digits and . _ @ + - (starting with a letter or digit), at most %d bytes", e.Name, slots.MaxActorLen)
	}
	secret, err := e.secret(lookup)
	if err != nil {
		return apiToken{}, err
	}
	if len(e.Scopes) == 0 {
		return apiToken{}, errors.New("no scopes: a token must be allowed something")
	}
	id := &identity{Kind: identityToken, Name: e.Name}
	for j, se := range e.Scopes {
		sc, err := se.scope()
		if err != nil {
			return apiToken{}, fmt.Errorf("scope %d: %w", j+1, err)
		}
		id.scopes = append(id.scopes, sc)
	}
	return apiToken{secret: secret, id: id}, nil
}

// secret reads the token's secret from the one source it names. Leading
// and trailing whitespace is dropped (a file written by echo ends in a
// newline).
func (e tokenEntry) secret(lookup func(string) (string, bool)) (string, error) {
	n := 0
	for _, s := range []string{e.Secret, e.SecretEnv, e.SecretFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return "", errors.New("give exactly one of secret, secretEnv and secretFile")
	}
	var secret string
	switch {
	case e.Secret != "":
		secret = e.Secret
	case e.SecretEnv != "":
		v, ok := lookup(e.SecretEnv)
		if !ok {
			return "", fmt.Errorf("secretEnv %s is not set", e.SecretEnv)
		}
		secret = v
	default:
		b, err := os.ReadFile(e.SecretFile)
		if err != nil {
			return "", fmt.Errorf("secretFile: %w", err)
		}
		secret = string(b)
	}
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return "", errors.New("the secret is empty")
	}
	return secret, nil
}

func (se scopeEntry) scope() (scope, error) {
	if len(se.Verbs) == 0 {
		return scope{}, errors.New("no verbs (want some of read, submit, approve, cancel)")
	}
	if len(se.Pools) == 0 {
		return scope{}, errors.New(`no pools (want globs such as "team-a/*", "*/terraform", or "*")`)
	}
	var sc scope
	for _, v := range se.Verbs {
		pv, err := parseVerb(v)
		if err != nil {
			return scope{}, err
		}
		sc.verbs = append(sc.verbs, pv)
	}
	for _, p := range se.Pools {
		g, err := parsePoolGlob(p)
		if err != nil {
			return scope{}, err
		}
		sc.pools = append(sc.pools, g)
	}
	return sc, nil
}

// checkSecretsDistinct refuses two tokens sharing a secret: a request
// bearing it would be either of them.
func (ts *tokenSet) checkSecretsDistinct() error {
	for i, a := range ts.tokens {
		for _, b := range ts.tokens[i+1:] {
			if a.secret == b.secret {
				return fmt.Errorf("api tokens %q and %q have the same secret: give each its own", a.id.Name, b.id.Name)
			}
		}
	}
	return nil
}

// describeScopes says what a token may do, for the startup log (no secret).
func (id *identity) describeScopes() string {
	parts := make([]string, len(id.scopes))
	for i, s := range id.scopes {
		vs := make([]string, len(s.verbs))
		for j, v := range s.verbs {
			vs[j] = string(v)
		}
		parts[i] = strings.Join(vs, ",") + " on " + s.pools.String()
	}
	return strings.Join(parts, "; ")
}

// fullAccess says whether the identity may do everything everywhere.
func (id *identity) fullAccess() bool {
	for _, s := range id.scopes {
		everyVerb := !slices.ContainsFunc(verbs, func(v verb) bool { return !slices.Contains(s.verbs, v) })
		everyPool := slices.ContainsFunc(s.pools, func(g poolGlob) bool { return g.ns == "*" && g.name == "*" })
		if everyVerb && everyPool {
			return true
		}
	}
	return false
}
