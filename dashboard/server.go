package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/alexedwards/scs/v2/memstore"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/go-chi/httprate"

	"github.com/slotscaler/slotscaler/pkg/perclient"
	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// Store is what the dashboard needs of the slot store.
type Store interface {
	Submit(ctx context.Context, pool slots.PoolID, spec slots.TaskSpec) (slots.SubmitResult, error)
	Task(ctx context.Context, pool slots.PoolID, id string) (slots.Task, error)
	Tasks(ctx context.Context, keys []slots.TaskKey) ([]slots.Task, error)
	CancelWith(ctx context.Context, pool slots.PoolID, task string, d slots.Decision) (slots.TaskState, error)
	ApproveWith(ctx context.Context, pool slots.PoolID, task string, d slots.Decision) (string, error)
	RejectWith(ctx context.Context, pool slots.PoolID, task string, d slots.Decision) error
	Reservations(ctx context.Context, pools ...slots.PoolID) ([]slots.Reservation, time.Time, error)
	Pools(ctx context.Context) ([]slots.PoolID, error)
	Pool(ctx context.Context, id slots.PoolID) (slots.PoolConfig, string, error)
	Stats(ctx context.Context, pools ...slots.PoolID) ([]slots.PoolStats, error)
	Snapshot(ctx context.Context, pool slots.PoolID) (slots.Snapshot, error)
	Version(ctx context.Context, pool slots.PoolID) (slots.Version, error)
	Events(ctx context.Context, pool slots.PoolID, cursor string, limit int) (slots.EventPage, error)
}

// server holds the handlers' dependencies.
type server struct {
	store        Store
	ping         func(context.Context) error
	log          *slog.Logger
	tokens       *tokenSet
	readAuth     bool
	maxPayload   int
	pollInterval time.Duration
	maxWait      time.Duration
	hub          *poolHub
	// history reads the pools' history (charts, sparklines, the history
	// API); nil: none is shown.
	history historyReader
	// janitor reads the janitor's reports of the pools (the pool page's
	// Janitor block, the API's pool resource); nil: none is shown.
	janitor janitorReader
	// webhooks reads the webhooks' delivery status (the pool page's
	// Webhooks block, the API's pool resource); nil: none is shown.
	webhooks webhookReader
	// configs caches slot policies for the overview's desired-pod counts:
	// one Stats round trip for every pool instead of one more per pool.
	configs *slots.ConfigCache
	metrics *metrics
	// sessions holds the pages' login sessions (read auth only).
	sessions *scs.SessionManager
	// clientIPs says which peers' forwarding headers name the client.
	clientIPs clientIPs
	// failures bounds failed logins and bearer checks per client IP.
	failures *failureLimiter
	// streams bounds the live grids and waiting events requests per client.
	streams *perclient.Limiter
	// stopping closes when the server shuts down, so waiting events
	// requests answer at once instead of holding the shutdown.
	stopping <-chan struct{}
	// separateApprover: pools where a task's submitter may not approve it.
	separateApprover poolGlobs
	// oidc signs browsers in with an OpenID provider; nil: tokens only.
	oidc *oidcLogin
}

const apiPrefix = "/api/v1"

// routes builds the whole HTTP surface.
func (s *server) routes() chi.Router {
	if s.hub == nil {
		s.hub = newPoolHub(s.store, 2*time.Second, s.log)
	}
	if s.metrics == nil {
		s.metrics = newMetrics(s.hub)
	}
	if s.failures == nil {
		s.failures = newFailureLimiter(defaultAuthFailuresPerMinute)
	}
	if s.streams == nil {
		s.streams = perclient.New(defaultMaxStreamsPerClient)
	}
	if s.sessions == nil && s.readAuth {
		// Tests and single-process use; run() always passes the Redis store.
		s.sessions = newSessionManager(memstore.New(), sessionSettings{Secure: true, Lifetime: 12 * time.Hour, IdleTimeout: time.Hour})
	}
	if s.sessions != nil {
		s.sessions.ErrorFunc = s.sessionError
	}
	csp := contentSecurityPolicy
	if origin := s.oidc.logoutOrigin(); origin != "" {
		csp = cspWithFormTarget(origin)
	}
	r := chi.NewRouter()
	r.Use(securityHeadersWith(csp), middleware.RequestID, s.clientIPs.middleware, s.requestLogger, middleware.Recoverer)

	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)

	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(web.Static)))
	// Page posts act on the browser's session cookie: refused when they
	// come from another origin (Sec-Fetch-Site, else Origin against Host),
	// besides the cookie's SameSite=Lax.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(s.crossOriginPage))
	for _, rt := range s.pageRoutes() {
		var mws []func(http.Handler) http.Handler
		if rt.method != http.MethodGet {
			mws = append(mws, csrf.Handler)
		}
		if s.readAuth || rt.verb != verbRead {
			if s.sessions != nil {
				mws = append(mws, s.sessions.LoadAndSave)
			}
			mws = append(mws, s.requirePageToken)
		}
		mws = append(mws, s.allow(rt.verb, false))
		r.With(append(mws, rt.with...)...).Method(rt.method, rt.pattern, rt.handler)
	}
	if s.readAuth {
		r.Group(func(r chi.Router) {
			r.Use(csrf.Handler, s.sessions.LoadAndSave)
			r.With(httprate.Limit(loginPostsPerMinute, time.Minute,
				httprate.WithKeyFuncs(func(r *http.Request) (string, error) { return clientIP(r), nil }),
				httprate.WithLimitHandler(s.tooManyLoginsPage))).Post("/login", s.login)
			r.Post("/logout", s.logout)
		})
		if s.oidc != nil {
			r.Group(func(r chi.Router) {
				// GETs (top-level navigations: SameSite=Lax sends the
				// cookie back from the provider); the state in the session
				// is what ties the callback to this browser's sign-in.
				r.Use(s.sessions.LoadAndSave)
				r.With(httprate.Limit(loginPostsPerMinute, time.Minute,
					httprate.WithKeyFuncs(func(r *http.Request) (string, error) { return clientIP(r), nil }),
					httprate.WithLimitHandler(s.tooManyLoginsPage))).Get(oidcLoginPath, s.oidcStart)
				r.Get(oidcCallbackPath, s.oidcCallback)
			})
		}
	}

	r.Route(apiPrefix, func(r chi.Router) {
		r.Get("/openapi.json", serveOpenAPI)
		for _, rt := range s.apiRoutes() {
			var mws []func(http.Handler) http.Handler
			if s.readAuth || rt.verb != verbRead {
				mws = append(mws, s.requireToken)
			}
			mws = append(mws, s.allow(rt.verb, true))
			r.With(append(mws, rt.with...)...).Method(rt.method, rt.pattern, rt.handler)
		}
		r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "no such API route")
		})
		r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
		})
	})
	return r
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.ping(r.Context()); err != nil {
		s.log.Warn("not ready", "err", err)
		writeError(w, http.StatusServiceUnavailable, "redis_unavailable", "redis unreachable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// requestLogger logs one line per request. It never logs headers, so
// bearer tokens stay out of the logs.
func (s *server) requestLogger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now()
		defer func() {
			s.metrics.observe(r, ww.Status(), time.Since(start).Seconds())
			lvl := slog.LevelInfo
			if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || strings.HasPrefix(r.URL.Path, "/static/") {
				lvl = slog.LevelDebug
			}
			s.log.LogAttrs(r.Context(), lvl, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", ww.Status()), slog.Int("bytes", ww.BytesWritten()),
				slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr), slog.String("client", clientIP(r)),
				slog.String("request_id", middleware.GetReqID(r.Context())))
		}()
		next.ServeHTTP(ww, r)
	})
}

// route is one route of the pages or of the API, with the verb its
// identity must hold in the route's pool (pool-less routes show only what
// the identity may read).
type route struct {
	method, pattern string
	verb            verb
	handler         http.HandlerFunc
	with            []func(http.Handler) http.Handler // after authentication and the scope check
}

// compressed gzips the big, frequent, secret-free answers: a chart
// fragment of an hour's samples is 60-80 KB of SVG, fetched again every
// refresh by every viewer, and shrinks about tenfold. Pages that may carry
// what a user typed next to something secret are left alone (BREACH).
var compressed = []func(http.Handler) http.Handler{middleware.Compress(5, "text/html", "application/json")}

// pageRoutes are the HTML pages and their fragments, and the decisions
// taken from them (forms posted by htmx, or plainly without JS).
func (s *server) pageRoutes() []route {
	return []route{
		{method: "GET", pattern: "/", verb: verbRead, handler: s.overviewPage},
		{method: "GET", pattern: "/approvals", verb: verbRead, handler: s.approvalsPage},
		{method: "GET", pattern: "/pools/{ns}/{name}", verb: verbRead, handler: s.poolPage},
		{method: "GET", pattern: "/pools/{ns}/{name}/grid", verb: verbRead, handler: s.poolGrid},
		{method: "GET", pattern: "/pools/{ns}/{name}/chart", verb: verbRead, handler: s.chartFragment, with: compressed},
		{method: "GET", pattern: "/pools/{ns}/{name}/live", verb: verbRead, handler: s.live, with: []func(http.Handler) http.Handler{s.capStreams(false)}},
		{method: "GET", pattern: "/pools/{ns}/{name}/tasks/{id}", verb: verbRead, handler: s.taskPage},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/approve", verb: verbApprove, handler: s.decidePage(actionApprove)},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/reject", verb: verbApprove, handler: s.decidePage(actionReject)},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/cancel", verb: verbCancel, handler: s.decidePage(actionCancel)},
	}
}

// apiRoutes are the JSON API's routes under apiPrefix (openapi.json aside,
// which is open).
func (s *server) apiRoutes() []route {
	return []route{
		{method: "GET", pattern: "/pools", verb: verbRead, handler: s.listPools},
		{method: "GET", pattern: "/pools/{ns}/{name}", verb: verbRead, handler: s.getPool},
		{method: "GET", pattern: "/pools/{ns}/{name}/history", verb: verbRead, handler: s.getHistory, with: compressed},
		{method: "GET", pattern: "/pools/{ns}/{name}/events", verb: verbRead, handler: s.events, with: []func(http.Handler) http.Handler{s.capStreams(true), s.longPollDeadlines}},
		{method: "GET", pattern: "/pools/{ns}/{name}/tasks/{id}", verb: verbRead, handler: s.getTask},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks", verb: verbSubmit, handler: s.submit},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/cancel", verb: verbCancel, handler: s.decideAPI(actionCancel)},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/approve", verb: verbApprove, handler: s.decideAPI(actionApprove)},
		{method: "POST", pattern: "/pools/{ns}/{name}/tasks/{id}/reject", verb: verbApprove, handler: s.decideAPI(actionReject)},
	}
}

// requireToken admits requests carrying one of the configured bearer
// tokens and puts the token's identity in the context.
func (s *server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.failures.blocked(w, r, tooManyFailuresAPI) {
			return
		}
		id, ok := s.authenticate(r.Header.Get("Authorization"))
		if !ok {
			// No header at all is not a guess; a wrong one is.
			if r.Header.Get("Authorization") != "" {
				s.failures.failed(r)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="slotscaler"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token")
			return
		}
		next.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}

// authenticate checks an Authorization header's bearer token.
func (s *server) authenticate(header string) (*identity, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	return s.tokens.authenticate(token)
}

func tooManyFailuresAPI(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusTooManyRequests, "too_many_auth_failures", "too many failed bearer checks from this address; retry after the Retry-After header")
}

func (s *server) tooManyLoginsPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "60")
	s.render(w, r, http.StatusTooManyRequests, web.ErrorPage(http.StatusTooManyRequests, "Too many logins from your address: wait a minute."))
}

// capStreams refuses a long-lived request (a live grid; an events request
// that waits) beyond --max-streams-per-client for its client, with a 429.
func (s *server) capStreams(api bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if api && (r.URL.Query().Get("wait") == "" || r.URL.Query().Get("wait") == "0") {
				next.ServeHTTP(w, r) // answers at once: not a stream
				return
			}
			release, ok := s.streams.Acquire(streamKey(r))
			if !ok {
				w.Header().Set("Retry-After", "5")
				msg := fmt.Sprintf("this client holds %d open streams (live grids and waiting events requests), the most it may", s.streams.Max())
				if api {
					writeError(w, http.StatusTooManyRequests, "too_many_streams", msg)
				} else {
					s.render(w, r, http.StatusTooManyRequests, web.ErrorPage(http.StatusTooManyRequests, msg))
				}
				return
			}
			defer release()
			next.ServeHTTP(w, r)
		})
	}
}

// longPollDeadlines lets an events request outlive the server's read and
// write timeouts by its longest wait, no more.
func (s *server) longPollDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Now().Add(s.maxWait + sseWriteTimeout))
		next.ServeHTTP(w, r)
	})
}
