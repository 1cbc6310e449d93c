// Package redisconn turns one Redis URL into a go-redis UniversalClient:
// a single node, Sentinel or Cluster, or the embedded miniredis default.
//
// URL forms (query parameters are go-redis's, e.g. dial_timeout, pool_size):
//
//	redis://[user:pass@]host:port/db          one node (rediss:// for TLS)
//	redis+cluster://host:port?addr=host2:port  Redis Cluster seed nodes (rediss+cluster:// for TLS)
//	redis+sentinel://host:port?master_name=m&addr=host2:port
//	                                           Sentinel; the master by name (rediss+sentinel:// for TLS)
//	memory:// or empty                         embedded miniredis, in this process (local use only: no persistence)
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Conn is an open Redis connection and what closes it.
type Conn struct {
	Client redis.UniversalClient
	// Embedded is set when the URL asked for the in-process miniredis.
	Embedded *miniredis.Miniredis
	// Kind is "standalone", "cluster", "sentinel" or "embedded".
	Kind string
}

// Close closes the client and stops an embedded server.
func (c *Conn) Close() error {
	err := c.Client.Close()
	if c.Embedded != nil {
		c.Embedded.Close()
	}
	return err
}

// Open parses url and connects, checking with a PING bounded by ctx.
// Every command honours its context deadline (ContextTimeoutEnabled), so a
// dead Redis fails calls within their deadlines instead of hanging.
func Open(ctx context.Context, rawURL string, log *slog.Logger) (*Conn, error) {
	conn, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	if err := conn.Client.Ping(ctx).Err(); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connecting to %s redis at %s: %w", conn.Kind, Redact(rawURL), err)
	}
	if log != nil {
		log.Info("redis connected", "kind", conn.Kind, "url", Redact(rawURL))
		RouteLogs(log, slog.LevelWarn)
	}
	return conn, nil
}

// RouteLogs sends go-redis's own log lines (reconnects, pool trouble, failed
// dials), which it otherwise writes as plain lines to stderr through a
// process-wide logger, to log at level, as component go-redis.
func RouteLogs(log *slog.Logger, level slog.Level) {
	redis.SetLogger(slogAdapter{log: log.With("component", "go-redis"), level: level})
}

type slogAdapter struct {
	log   *slog.Logger
	level slog.Level
}

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.log.Log(ctx, a.level, fmt.Sprintf(format, v...))
}

func parse(rawURL string) (*Conn, error) {
	if rawURL == "" || rawURL == "memory://" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("starting embedded redis: %w", err)
		}
		c := redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true})
		return &Conn{Client: c, Embedded: m, Kind: "embedded"}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing redis url: %w", withoutURL(err))
	}
	base, mode, _ := strings.Cut(u.Scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("redis url %s: scheme %q must be redis, rediss, redis+cluster, redis+sentinel (or rediss+…), or memory", Redact(rawURL), u.Scheme)
	}
	u.Scheme = base
	plain := u.String()
	// Every client below skips go-redis's CLIENT SETINFO on connect
	// (DisableIdentity): a pool's Redis user may run only the agent's own
	// commands, and a refused SETINFO would fill the ACL log on every
	// connection (Redis 7.0 cannot even name client|setinfo in a rule).
	switch mode {
	case "":
		o, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis url %s: %w", Redact(rawURL), err)
		}
		o.ContextTimeoutEnabled = true
		o.DisableIdentity = true
		return &Conn{Client: redis.NewClient(o), Kind: "standalone"}, nil
	case "cluster":
		o, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis cluster url %s: %w", Redact(rawURL), err)
		}
		o.ContextTimeoutEnabled = true
		o.DisableIdentity = true
		return &Conn{Client: redis.NewClusterClient(o), Kind: "cluster"}, nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis sentinel url %s: %w", Redact(rawURL), err)
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("redis sentinel url %s: master_name is required", Redact(rawURL))
		}
		o.ContextTimeoutEnabled = true
		o.DisableIdentity = true
		return &Conn{Client: redis.NewFailoverClient(o), Kind: "sentinel"}, nil
	}
	return nil, fmt.Errorf("redis url %s: unknown mode %q (want cluster or sentinel)", Redact(rawURL), mode)
}

// withoutURL strips the URL from a url.Parse error, whose message quotes the
// whole input, password included. A bad percent-escape is not quoted either:
// it may be three characters of the password.
func withoutURL(err error) error {
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		return err
	}
	var esc url.EscapeError
	if errors.As(uerr.Err, &esc) {
		return errors.New("invalid percent-escape (a password holding '%', '@', '/', ':' or '#' must be percent-encoded)")
	}
	return uerr.Err
}

// Redact hides the password of a Redis URL, for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparseable url>"
	}
	return u.Redacted()
}

// Ping reports whether Redis answers within timeout: for readiness probes.
func Ping(ctx context.Context, c redis.UniversalClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}
