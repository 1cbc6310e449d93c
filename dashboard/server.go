package main

import (
	"context"
	"crypto/subtle"
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
	Cancel(ctx context.Context, pool slots.PoolID, task, by string) (slots.TaskState, error)
	Approve(ctx context.Context, pool slots.PoolID, task, by string) (string, error)
	Reject(ctx context.Context, pool slots.PoolID, task, by string) error
	Pools(ctx context.Context) ([]slots.PoolID, error)
	Pool(ctx context.Context, id slots.PoolID) (slots.PoolConfig, string, error)
	Stats(ctx context.Context, pools ...slots.PoolID) ([]slots.PoolStats, error)
	Snapshot(ctx context.Context, pool slots.PoolID) (slots.Snapshot, error)
	Events(ctx context.Context, pool slots.PoolID, cursor string, limit int) (slots.EventPage, error)
}

// server holds the handlers' dependencies.
type server struct {
	store        Store
	ping         func(context.Context) error
	log          *slog.Logger
	tokens       tokens
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
	r := chi.NewRouter()
	r.Use(securityHeaders, middleware.RequestID, s.clientIPs.middleware, s.requestLogger, middleware.Recoverer)

	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)

	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(web.Static)))
	r.Group(func(r chi.Router) {
		if s.readAuth {
			r.Use(s.sessions.LoadAndSave, s.requirePageToken)
		}
		r.Get("/", s.overviewPage)
		r.Get("/pools/{ns}/{name}", s.poolPage)
		r.Get("/pools/{ns}/{name}/grid", s.poolGrid)
		r.Get("/pools/{ns}/{name}/chart", s.chartFragment)
		r.With(s.capStreams(false)).Get("/pools/{ns}/{name}/live", s.live)
		r.Get("/pools/{ns}/{name}/tasks/{id}", s.taskPage)
	})
	if s.readAuth {
		r.Group(func(r chi.Router) {
			r.Use(s.sessions.LoadAndSave)
			r.With(httprate.Limit(loginPostsPerMinute, time.Minute,
				httprate.WithKeyFuncs(func(r *http.Request) (string, error) { return clientIP(r), nil }),
				httprate.WithLimitHandler(s.tooManyLoginsPage))).Post("/login", s.login)
			r.Post("/logout", s.logout)
		})
	}

	r.Route(apiPrefix, func(r chi.Router) {
		r.Get("/openapi.json", serveOpenAPI)
		r.Group(func(r chi.Router) {
			if s.readAuth {
				r.Use(s.requireToken)
			}
			r.Get("/pools", s.listPools)
			r.Get("/pools/{ns}/{name}", s.getPool)
			r.Get("/pools/{ns}/{name}/history", s.getHistory)
			r.With(s.capStreams(true), s.longPollDeadlines).Get("/pools/{ns}/{name}/events", s.events)
			r.Get("/pools/{ns}/{name}/tasks/{id}", s.getTask)
		})
		r.Group(func(r chi.Router) {
			r.Use(s.requireToken)
			r.Post("/pools/{ns}/{name}/tasks", s.submit)
			r.Post("/pools/{ns}/{name}/tasks/{id}/cancel", s.cancel)
			r.Post("/pools/{ns}/{name}/tasks/{id}/approve", s.approve)
			r.Post("/pools/{ns}/{name}/tasks/{id}/reject", s.reject)
		})
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

type ctxKey struct{}

// requireToken admits requests carrying one of the configured bearer
// tokens and records the token's name in the context.
func (s *server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.failures.blocked(w, r, tooManyFailuresAPI) {
			return
		}
		name, ok := s.authenticate(r.Header.Get("Authorization"))
		if !ok {
			// No header at all is not a guess; a wrong one is.
			if r.Header.Get("Authorization") != "" {
				s.failures.failed(r)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="slotscaler"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, name)))
	})
}

// authenticate compares the presented token with every configured one in
// constant time each, without stopping at a match.
func (s *server) authenticate(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return s.authenticateToken(token)
}

// authenticateToken checks a bare token (bearer header, login form or cookie).
func (s *server) authenticateToken(token string) (string, bool) {
	if token == "" {
		return "", false
	}
	var found string
	for name, secret := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(token), []byte(secret)) == 1 {
			found = name
		}
	}
	return found, found != ""
}

// tokenName is the name of the token that authenticated the request ("" if none).
func tokenName(ctx context.Context) string {
	n, _ := ctx.Value(ctxKey{}).(string)
	return n
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
