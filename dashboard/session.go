package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/web"
)

// redisSessionStore keeps the pages' login sessions in the slot store's
// Redis, under the installation's key prefix, so every dashboard replica
// knows every session. scs's own goredisstore takes a *redis.Client only;
// this one takes the UniversalClient the dashboard has (single node,
// Sentinel or Cluster: each session is one key, so any slot is fine).
// The session manager hashes tokens before they reach a store
// (HashTokenInStore): reading Redis does not yield usable cookies.
type redisSessionStore struct {
	rdb    redis.UniversalClient
	prefix string
}

func newRedisSessionStore(rdb redis.UniversalClient, keyPrefix string) *redisSessionStore {
	return &redisSessionStore{rdb: rdb, prefix: keyPrefix + ":dashboard:session:"}
}

func (s *redisSessionStore) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	b, err := s.rdb.Get(ctx, s.prefix+token).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading session: %w", err)
	}
	return b, true, nil
}

func (s *redisSessionStore) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	ttl := time.Until(expiry)
	if ttl <= 0 {
		// SET with a zero or negative TTL would keep the key forever.
		return s.DeleteCtx(ctx, token)
	}
	if err := s.rdb.Set(ctx, s.prefix+token, b, ttl).Err(); err != nil {
		return fmt.Errorf("writing session: %w", err)
	}
	return nil
}

func (s *redisSessionStore) DeleteCtx(ctx context.Context, token string) error {
	if err := s.rdb.Del(ctx, s.prefix+token).Err(); err != nil {
		return fmt.Errorf("deleting session: %w", err)
	}
	return nil
}

// The context-free methods complete scs.Store; scs calls the Ctx ones.
func (s *redisSessionStore) Find(token string) ([]byte, bool, error) {
	return s.FindCtx(context.Background(), token)
}

func (s *redisSessionStore) Commit(token string, b []byte, expiry time.Time) error {
	return s.CommitCtx(context.Background(), token, b, expiry)
}

func (s *redisSessionStore) Delete(token string) error {
	return s.DeleteCtx(context.Background(), token)
}

// sessionSettings are the login session's cookie and lifetimes.
type sessionSettings struct {
	Secure      bool
	Lifetime    time.Duration
	IdleTimeout time.Duration
}

// Cookie names: the __Host- prefix makes browsers refuse the cookie unless
// it is Secure, for path / and without Domain, so no sibling subdomain can
// plant or overwrite it. Plain HTTP (local use) cannot have it.
const (
	secureSessionCookie = "__Host-slotscaler-session"
	plainSessionCookie  = "slotscaler-session"
)

func newSessionManager(store scs.Store, set sessionSettings) *scs.SessionManager {
	sm := scs.New()
	sm.Store = store
	sm.HashTokenInStore = true
	sm.Lifetime = set.Lifetime
	sm.IdleTimeout = set.IdleTimeout
	sm.Cookie.Name = plainSessionCookie
	if set.Secure {
		sm.Cookie.Name = secureSessionCookie
	}
	sm.Cookie.Secure = set.Secure
	sm.Cookie.HttpOnly = true
	sm.Cookie.Path = "/"
	// Lax, not Strict: a link to a task page from chat or CI opens it
	// signed in. Cookie-authenticated requests are reads, except POST
	// /logout, and Lax withholds the cookie from cross-site POSTs.
	sm.Cookie.SameSite = http.SameSiteLaxMode
	sm.Cookie.Persist = true
	return sm
}

// Session keys: the token's name and a fingerprint of its secret, so
// changing a token's secret ends the sessions opened with the old one.
const (
	sessionTokenName = "token_name"
	sessionTokenFP   = "token_fp"
)

func tokenFingerprint(secret string) string {
	sum := sha256.Sum256([]byte("slotscaler dashboard session\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// sessionError answers when the session store failed (Redis down).
func (s *server) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("session store unavailable", "path", r.URL.Path, "err", err)
	w.Header().Set("Retry-After", "5")
	s.render(w, r, http.StatusServiceUnavailable, web.ErrorPage(http.StatusServiceUnavailable, "The session store (Redis) is unavailable."))
}

// sessionIdentity is the identity of the request's login session: the
// OIDC user signed in (oidc.go), or the token it was opened with, if that token is still configured with the
// same secret. The token's scopes are read from the configuration on each
// request, so a changed scope applies to open sessions at once.
func (s *server) sessionIdentity(r *http.Request) (*identity, bool) {
	if s.sessions == nil {
		return nil, false
	}
	ctx := r.Context()
	if id, ok := s.oidcSessionIdentity(ctx); ok {
		return id, true
	}
	name := s.sessions.GetString(ctx, sessionTokenName)
	t, known := s.tokens.byName(name)
	if name == "" || !known {
		return nil, false
	}
	fp := s.sessions.GetString(ctx, sessionTokenFP)
	if subtle.ConstantTimeCompare([]byte(fp), []byte(tokenFingerprint(t.secret))) != 1 {
		return nil, false
	}
	return t.id, true
}

// requirePageToken guards the HTML pages when --read-auth is on: a bearer
// header or a login session; else a 401 page with the login form.
func (s *server) requirePageToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Authorization"); h != "" {
			if s.failures.blocked(w, r, s.tooManyFailuresPage) {
				return
			}
			id, ok := s.authenticate(h)
			if !ok {
				s.failures.failed(r)
				s.unauthorized(w, r, r.URL.RequestURI(), "")
				return
			}
			next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
			return
		}
		if id, ok := s.sessionIdentity(r); ok {
			ctx := web.WithSignedIn(withIdentity(r.Context(), id), id.Name)
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		s.unauthorized(w, r, r.URL.RequestURI(), "")
	})
}

func (s *server) unauthorized(w http.ResponseWriter, r *http.Request, next, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="slotscaler"`)
	if r.Header.Get("HX-Request") == "true" && r.Method != http.MethodGet {
		// A decision form posted after the login ended: a line in the form,
		// not the login page inside it.
		s.render(w, r, http.StatusUnauthorized, web.DecisionError("Your login has ended: reload the page and log in again."))
		return
	}
	s.render(w, r, http.StatusUnauthorized, web.UnauthorizedPage(s.loginView(next, msg)))
}

func (s *server) tooManyFailuresPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusTooManyRequests, web.ErrorPage(http.StatusTooManyRequests, "Too many failed logins from your address: wait a minute."))
}

// localPath keeps a redirect target on this site: a path starting with one
// "/", else "/". Browsers drop tabs and newlines inside a URL and read "\"
// as "/", so "/\t/evil.example" and "/\evil.example" are "//evil.example"
// to them, another host: such characters are refused outright.
func localPath(p string) string {
	if strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f || c == '\\' }) {
		return "/"
	}
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return "/"
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	return p
}

// login checks a token posted by the 401 page's form and opens a session:
// a fresh session id (never the one the browser came with, against session
// fixation) naming the token, in an HttpOnly cookie; the token itself stays
// on the server side.
func (s *server) login(w http.ResponseWriter, r *http.Request) {
	if s.failures.blocked(w, r, s.tooManyFailuresPage) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.render(w, r, http.StatusBadRequest, web.ErrorPage(http.StatusBadRequest, "bad login form"))
		return
	}
	next := localPath(r.PostForm.Get("next"))
	token := r.PostForm.Get("token")
	id, ok := s.tokens.authenticate(token)
	if !ok {
		s.failures.failed(r)
		s.log.Info("login refused", "client", clientIP(r))
		s.unauthorized(w, r, next, "That token is not valid.")
		return
	}
	ctx := r.Context()
	if err := s.sessions.RenewToken(ctx); err != nil {
		s.sessionError(w, r, err)
		return
	}
	t, _ := s.tokens.byName(id.Name)
	// One identity per session: an OIDC sign-in before this one ends.
	for _, k := range []string{sessionOIDCSubject, sessionOIDCName, sessionOIDCEmail, sessionOIDCGroups, sessionOIDCIDToken} {
		s.sessions.Remove(ctx, k)
	}
	s.sessions.Put(ctx, sessionTokenName, id.Name)
	s.sessions.Put(ctx, sessionTokenFP, tokenFingerprint(t.secret))
	s.log.Info("login", "token_name", id.Name, "client", clientIP(r))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout ends the browser's session on the server (every replica) and
// expires its cookie; a session signed in with OIDC goes on to the
// provider's logout when it has one.
func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	next := s.providerLogout(r.Context())
	if next == "" {
		next = "/"
	}
	if err := s.sessions.Destroy(r.Context()); err != nil {
		s.sessionError(w, r, err)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}
