// Command dashboard serves slotscaler's read-only HTML dashboard and its
// JSON API for platforms (submit, follow, cancel, approve and reject tasks).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/perclient"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, os.LookupEnv, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}

// maxWait bounds how long an events request may wait.
const maxWait = 30 * time.Second

// run serves until ctx ends. ln, when not nil, is used instead of listening
// on the configured address (tests).
// newHTTPServer bounds every request of the public port: slow headers,
// slow bodies, slow readers, idle keep-alives. The live grids and waiting
// events requests move their own deadlines (live, longPollDeadlines).
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second, // the largest task payload, on a slow link
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

func run(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool), ln net.Listener) error {
	cfg, err := parseConfig(args, lookup)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("component", "dashboard")
	// A bad tokens file fails the start before anything connects.
	toks, err := loadTokens(cfg.APITokens, cfg.APITokensFile, lookup)
	if err != nil {
		return err
	}

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := redisconn.Open(startCtx, cfg.RedisURL, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	var signIn *oidcLogin
	if cfg.OIDC.enabled() {
		// The provider must answer at start: its endpoints and keys come
		// from its discovery document.
		if signIn, err = newOIDCLogin(startCtx, cfg.OIDC); err != nil {
			return err
		}
		log.Info("browser sign-in with OIDC", "issuer", cfg.OIDC.Issuer, "client_id", cfg.OIDC.ClientID,
			"redirect_url", cfg.OIDC.RedirectURL, "groups_claim", cfg.OIDC.GroupsClaim, "groups_mapped", len(toks.groups))
		if len(toks.groups) == 0 {
			log.Warn("OIDC is on but --api-tokens-file maps no groups: whoever signs in may do nothing")
		}
	}
	opts := cfg.Redis.StoreOptions(log)
	opts.MaxPayload = cfg.MaxPayload
	store, err := slots.New(startCtx, conn.Client, opts)
	if err != nil {
		return fmt.Errorf("opening slot store: %w", err)
	}
	for _, t := range toks.tokens {
		if t.id.fullAccess() {
			log.Info(fmt.Sprintf("token %s has full access", t.id.Name), "token_name", t.id.Name)
		} else {
			log.Info(fmt.Sprintf("token %s is scoped", t.id.Name), "token_name", t.id.Name, "scopes", t.id.describeScopes())
		}
	}
	switch {
	case toks.len() == 0 && cfg.ReadAuth:
		log.Warn("no API tokens configured (--api-tokens, --api-tokens-file): API writes are refused, and so are pages and API reads (--read-auth); configure tokens, or pass --read-auth=false to open reads to anyone who reaches the port")
	case toks.len() == 0:
		log.Warn("no API tokens configured (--api-tokens, --api-tokens-file): API writes are refused")
	}
	if len(cfg.SeparateApproverPools) > 0 {
		log.Info("a task's submitter may not approve it in these pools", "pools", cfg.SeparateApproverPools.String())
	}
	if !cfg.ReadAuth {
		log.Warn("read auth is off (--read-auth=false): anyone who reaches the port reads every task's payload and output")
	}
	if cfg.ReadAuth && !cfg.SecureCookie {
		log.Warn("the login cookie is not Secure (--secure-cookie=false): browsers send it over plain HTTP; for local use only")
	}

	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.ListenAddress); err != nil {
			return fmt.Errorf("listening on %s: %w", cfg.ListenAddress, err)
		}
	}
	stopping := make(chan struct{})
	s := &server{stopping: stopping, store: store, log: log, tokens: toks, separateApprover: cfg.SeparateApproverPools,
		readAuth: cfg.ReadAuth, maxPayload: cfg.MaxPayload,
		pollInterval: cfg.PollInterval, maxWait: maxWait, hub: newPoolHub(store, cfg.LiveInterval, log),
		configs:   slots.NewConfigCache(store.Pool, 30*time.Second),
		history:   history.NewReader(conn.Client, cfg.KeyPrefix, history.DefaultLayout),
		janitor:   janitorreport.NewStore(conn.Client, cfg.KeyPrefix),
		webhooks:  notify.NewStatusReader(conn.Client, cfg.KeyPrefix),
		clientIPs: clientIPs{trusted: cfg.TrustedProxies},
		failures:  newFailureLimiter(cfg.AuthFailuresPerMinute),
		oidc:      signIn,
		streams:   perclient.New(cfg.MaxStreamsPerClient),
		ping:      func(ctx context.Context) error { return redisconn.Ping(ctx, conn.Client, 2*time.Second) }}
	if cfg.ReadAuth {
		s.sessions = newSessionManager(newRedisSessionStore(conn.Client, cfg.KeyPrefix),
			sessionSettings{Secure: cfg.SecureCookie, Lifetime: cfg.SessionLifetime, IdleTimeout: cfg.SessionIdleTimeout})
	}
	srv := newHTTPServer(s.routes())
	var msrv *http.Server
	var mln net.Listener
	if cfg.MetricsAddress != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			return fmt.Errorf("listening on %s for metrics: %w", cfg.MetricsAddress, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics.handler())
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("serving dashboard and API", "address", ln.Addr().String(), "tokens", toks.len(), "read_auth", cfg.ReadAuth)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if msrv != nil {
		g.Go(func() error {
			log.Info("serving metrics", "address", mln.Addr().String())
			if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down")
		close(stopping)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if msrv != nil {
			_ = msrv.Close() // scrapes are short; nothing to drain
		}
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("graceful stop timed out; closing connections")
			return srv.Close()
		}
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
