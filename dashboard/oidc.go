package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5/middleware"
	"golang.org/x/oauth2"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// Browser sign-in with an OpenID provider: the authorization code flow
// with PKCE. The state, the nonce and the PKCE verifier of a sign-in under
// way live in the browser's server-side session (never in a cookie of
// their own), so the callback is accepted only in the browser that
// started the sign-in, once. The ID token is verified by go-oidc against
// the provider's keys: issuer, audience (our client id), expiry and
// signature; the nonce is checked here.
//
// The identity of a signed-in session is "oidc:<email>" when the provider
// gives a verified email, else "oidc:<subject>": that is what the store
// records as who approved, readable by people and stable as long as the
// address is. The subject, which never changes, is in every audit line.
// Its scopes are the union of the scopes its groups map to in the tokens
// file's "groups:"; read on each request, so a changed mapping applies at
// once (the groups themselves are those of the sign-in).

const (
	identityOIDC = "oidc"

	oidcLoginPath    = "/login/oidc"
	oidcCallbackPath = "/login/oidc/callback"
)

// Session keys of a sign-in under way, and of a signed-in OIDC session.
const (
	sessionOIDCState    = "oidc_state"
	sessionOIDCNonce    = "oidc_nonce"
	sessionOIDCVerifier = "oidc_verifier"
	sessionOIDCNext     = "oidc_next"

	sessionOIDCSubject = "oidc_sub"
	sessionOIDCName    = "oidc_name"
	sessionOIDCEmail   = "oidc_email"
	sessionOIDCGroups  = "oidc_groups" // joined by newlines
	// sessionOIDCIDToken is the raw ID token, the id_token_hint of the
	// provider's logout.
	sessionOIDCIDToken = "oidc_id_token"
)

// oidcLogin is the configured OpenID provider and our client at it.
type oidcLogin struct {
	name        string // on the login page: "Sign in with <name>"
	oauth       oauth2.Config
	verifier    *oidc.IDTokenVerifier
	groupsClaim string
	// endSession is the provider's end_session_endpoint (RP-initiated
	// logout); "" when it has none or --oidc-provider-logout is off.
	endSession string
	// afterLogout is where the provider sends the browser back after its
	// logout: the dashboard's root, from --oidc-redirect-url.
	afterLogout string
}

// newOIDCLogin discovers the provider (its endpoints and keys) from the
// issuer's /.well-known/openid-configuration. The client secret is read
// from its file when given so; it never reaches a log or a message.
func newOIDCLogin(ctx context.Context, set oidcSettings) (*oidcLogin, error) {
	secret := set.ClientSecret
	if set.ClientSecretFile != "" {
		b, err := os.ReadFile(set.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("reading --oidc-client-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
		if secret == "" {
			return nil, fmt.Errorf("--oidc-client-secret-file %s is empty", set.ClientSecretFile)
		}
	}
	provider, err := oidc.NewProvider(ctx, set.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering OpenID provider %s: %w", set.Issuer, err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("reading OpenID provider %s's discovery document: %w", set.Issuer, err)
	}
	if !set.ProviderLogout {
		meta.EndSession = ""
	}
	var afterLogout string
	if u, err := url.Parse(set.RedirectURL); err == nil {
		afterLogout = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/"}).String()
	}
	name := set.ProviderName
	if name == "" {
		if u, err := url.Parse(set.Issuer); err == nil {
			name = u.Host
		}
	}
	scopes := []string{oidc.ScopeOpenID}
	for sc := range strings.SplitSeq(set.Scopes, ",") {
		if sc = strings.TrimSpace(sc); sc != "" && sc != oidc.ScopeOpenID {
			scopes = append(scopes, sc)
		}
	}
	return &oidcLogin{
		name: name,
		oauth: oauth2.Config{
			ClientID:     set.ClientID,
			ClientSecret: secret,
			Endpoint:     provider.Endpoint(),
			RedirectURL:  set.RedirectURL,
			Scopes:       scopes,
		},
		verifier:    provider.Verifier(&oidc.Config{ClientID: set.ClientID}),
		groupsClaim: set.GroupsClaim,
		endSession:  meta.EndSession,
		afterLogout: afterLogout,
	}, nil
}

// randomToken is 256 random bits, URL-safe.
func randomToken() string { return rand.Text() + rand.Text() }

// oidcStart sends the browser to the provider's sign-in, remembering in
// its session what the callback must see again.
func (s *server) oidcStart(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	state, nonce, verifier := randomToken(), randomToken(), oauth2.GenerateVerifier()
	s.sessions.Put(ctx, sessionOIDCState, state)
	s.sessions.Put(ctx, sessionOIDCNonce, nonce)
	s.sessions.Put(ctx, sessionOIDCVerifier, verifier)
	s.sessions.Put(ctx, sessionOIDCNext, localPath(r.URL.Query().Get("next")))
	http.Redirect(w, r, s.oidc.oauth.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

// errOIDCRefused is every sign-in the callback refuses.
var errOIDCRefused = errors.New("sign-in refused")

// oidcCallback finishes a sign-in: the provider sent the browser back
// with a code (or an error). Whatever happens, the sign-in under way is
// forgotten: a callback is good once.
func (s *server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if s.failures.blocked(w, r, s.tooManyFailuresPage) {
		return
	}
	ctx := r.Context()
	state := s.sessions.PopString(ctx, sessionOIDCState)
	nonce := s.sessions.PopString(ctx, sessionOIDCNonce)
	verifier := s.sessions.PopString(ctx, sessionOIDCVerifier)
	next := localPath(s.sessions.PopString(ctx, sessionOIDCNext))
	claims, err := s.oidcExchange(r, state, nonce, verifier)
	if err != nil {
		s.failures.failed(r)
		s.oidcAudit(r, "refused", slog.String("reason", err.Error()))
		s.unauthorized(w, r, next, "Sign-in with "+s.oidc.name+" failed: "+userMessage(err))
		return
	}
	id := claims.identity(s.tokens)
	if err := s.sessions.RenewToken(ctx); err != nil {
		s.sessionError(w, r, err)
		return
	}
	// One identity per session: a token login before this one ends.
	s.sessions.Remove(ctx, sessionTokenName)
	s.sessions.Remove(ctx, sessionTokenFP)
	s.sessions.Put(ctx, sessionOIDCSubject, claims.Subject)
	s.sessions.Put(ctx, sessionOIDCName, id.Name)
	s.sessions.Put(ctx, sessionOIDCEmail, claims.Email)
	s.sessions.Put(ctx, sessionOIDCGroups, strings.Join(claims.Groups, "\n"))
	s.sessions.Put(ctx, sessionOIDCIDToken, claims.rawIDToken)
	s.oidcAudit(r, "ok", slog.String("identity", id.Name), slog.String("subject", claims.Subject),
		slog.String("groups", strings.Join(claims.Groups, ",")), slog.Bool("scoped", len(id.scopes) > 0))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// userMessage is the part of a refusal the browser is shown.
func userMessage(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, errOIDCRefused.Error()+": "); ok {
		msg = after
	}
	return msg
}

// oidcClaims are what the dashboard takes from a verified ID token.
type oidcClaims struct {
	Subject  string
	Email    string
	Username string
	Groups   []string

	rawIDToken string
}

// oidcExchange checks the callback against the sign-in under way, trades
// the code for tokens (with the PKCE verifier) and verifies the ID token.
func (s *server) oidcExchange(r *http.Request, state, nonce, verifier string) (oidcClaims, error) {
	q := r.URL.Query()
	if state == "" {
		return oidcClaims{}, fmt.Errorf("%w: no sign-in under way in this browser (it ended, or was started elsewhere): start again", errOIDCRefused)
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return oidcClaims{}, fmt.Errorf("%w: the state does not match the sign-in under way: start again", errOIDCRefused)
	}
	if e := q.Get("error"); e != "" {
		return oidcClaims{}, fmt.Errorf("%w: the provider answered %s: %s", errOIDCRefused, e, q.Get("error_description"))
	}
	code := q.Get("code")
	if code == "" {
		return oidcClaims{}, fmt.Errorf("%w: the provider sent no code", errOIDCRefused)
	}
	tok, err := s.oidc.oauth.Exchange(r.Context(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		s.log.Warn("oidc code exchange failed", "err", err)
		return oidcClaims{}, fmt.Errorf("%w: the provider refused the code", errOIDCRefused)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return oidcClaims{}, fmt.Errorf("%w: the provider sent no ID token", errOIDCRefused)
	}
	c, err := s.oidc.verify(r.Context(), raw, nonce)
	c.rawIDToken = raw
	return c, err
}

// verify checks an ID token (signature, issuer, audience, expiry, then the
// nonce of the sign-in under way) and reads its claims.
func (o *oidcLogin) verify(ctx context.Context, raw, nonce string) (oidcClaims, error) {
	idt, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		return oidcClaims{}, fmt.Errorf("%w: the ID token is not valid: %v", errOIDCRefused, err)
	}
	if nonce == "" || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return oidcClaims{}, fmt.Errorf("%w: the ID token's nonce is not the sign-in's (a replayed token?)", errOIDCRefused)
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return oidcClaims{}, fmt.Errorf("%w: reading the ID token's claims: %v", errOIDCRefused, err)
	}
	c := oidcClaims{Subject: idt.Subject}
	if email, _ := all["email"].(string); email != "" {
		// An address the provider has not verified could be anyone's.
		if verified, present := all["email_verified"].(bool); verified || !present {
			c.Email = email
		}
	}
	c.Username, _ = all["preferred_username"].(string)
	switch g := all[o.groupsClaim].(type) {
	case string:
		c.Groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				c.Groups = append(c.Groups, s)
			}
		}
	}
	slices.Sort(c.Groups)
	c.Groups = slices.Compact(c.Groups)
	return c, nil
}

// identity is the signed-in identity: named by its email, else by its
// subject; its scopes those of its mapped groups.
func (c oidcClaims) identity(ts *tokenSet) *identity {
	name := "oidc:" + c.Subject
	if c.Email != "" {
		name = "oidc:" + c.Email
	}
	if len(name) > slots.MaxActorLen {
		name = name[:slots.MaxActorLen]
	}
	return &identity{Kind: identityOIDC, Name: name, Email: c.Email, subject: c.Subject, scopes: ts.groupScopes(c.Groups)}
}

// oidcSessionIdentity is the identity of a signed-in OIDC session.
func (s *server) oidcSessionIdentity(ctx context.Context) (*identity, bool) {
	sub := s.sessions.GetString(ctx, sessionOIDCSubject)
	if sub == "" || s.oidc == nil {
		return nil, false
	}
	var groups []string
	if g := s.sessions.GetString(ctx, sessionOIDCGroups); g != "" {
		groups = strings.Split(g, "\n")
	}
	return &identity{Kind: identityOIDC, Name: s.sessions.GetString(ctx, sessionOIDCName),
		Email: s.sessions.GetString(ctx, sessionOIDCEmail), subject: sub, scopes: s.tokens.groupScopes(groups)}, true
}

// providerLogout is where a signing-out browser goes next: the provider's
// logout (which ends its own session there, then sends the browser back
// to the dashboard) for a session signed in with OIDC when the provider
// has one; else "".
func (s *server) providerLogout(ctx context.Context) string {
	if s.oidc == nil || s.oidc.endSession == "" || s.sessions.GetString(ctx, sessionOIDCSubject) == "" {
		return ""
	}
	u, err := url.Parse(s.oidc.endSession)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("client_id", s.oidc.oauth.ClientID)
	q.Set("post_logout_redirect_uri", s.oidc.afterLogout)
	if hint := s.sessions.GetString(ctx, sessionOIDCIDToken); hint != "" {
		q.Set("id_token_hint", hint)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// logoutOrigin is the origin of the provider's logout the sign-out form
// leads to; "" when there is none.
func (o *oidcLogin) logoutOrigin() string {
	if o == nil || o.endSession == "" {
		return ""
	}
	u, err := url.Parse(o.endSession)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// oidcAudit writes the audit line of a sign-in, accepted or refused.
func (s *server) oidcAudit(r *http.Request, result string, extra ...slog.Attr) {
	attrs := []slog.Attr{
		slog.Bool("audit", true), slog.String("identity_kind", identityOIDC),
		slog.String("action", "sign-in"), slog.String("result", result),
		slog.String("client", clientIP(r)), slog.String("request_id", middleware.GetReqID(r.Context())),
	}
	lvl := slog.LevelInfo
	if result != "ok" {
		lvl = slog.LevelWarn
	}
	s.log.LogAttrs(r.Context(), lvl, "audit", append(attrs, extra...)...)
}

// loginView is the login form of the 401 page, with the OIDC link when
// OIDC is configured.
func (s *server) loginView(next, msg string) web.LoginView {
	v := web.LoginView{Next: next, Error: msg}
	if s.oidc != nil {
		v.OIDCProvider = s.oidc.name
	}
	return v
}
