// Command agent runs in each agent pod: it registers the pod with the slot
// store, heartbeats, takes the pod's work from its inbox and runs an
// executor per task phase (see README.md for the executor contract).
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

	"github.com/slotscaler/slotscaler/pkg/executor"
	"github.com/slotscaler/slotscaler/pkg/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal stops the agent at once
	}()
	harden()
	if err := run(ctx, os.Args[1:], os.Stderr, os.LookupEnv, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// runOptions let tests hand in a listener and hooks; nil listens on the
// configured address.
type runOptions struct {
	listener net.Listener
	hooks    hooks
	// built, when set, gets the agent before it runs (tests poke it).
	built func(*agent)
}

// run is the whole binary: ctx ending (SIGTERM) starts a graceful stop.
func run(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool), opts *runOptions) error {
	if opts == nil {
		opts = &runOptions{}
	}
	cfg, err := parseConfig(args, lookup, stderr)
	if err != nil {
		return err
	}
	base, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	// The store's own lines name the pool and pod themselves.
	log := base.With("component", "agent", "pool", cfg.Pool.String(), "pod", cfg.PodName)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	supervisor, err := executor.FindSupervisor(cfg.Supervisor)
	if err != nil {
		return fmt.Errorf("--supervisor: %w", err)
	}
	if supervisor == "" {
		log.Info("executor supervisor", "supervisor", "self")
	} else {
		log.Info("executor supervisor", "supervisor", supervisor)
	}
	runner, err := executor.New(cfg.Executor, executor.Options{KillGrace: cfg.KillGrace, Supervisor: supervisor})
	if err != nil {
		return fmt.Errorf("--executor %q: %w", cfg.Executor, err)
	}
	ln := opts.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.ListenAddress); err != nil {
			return fmt.Errorf("--listen-address: %w", err)
		}
	}

	ws, err := openWorkspaces(resolveWorkspaceRoot(cfg), log)
	if err != nil {
		return err
	}
	// Once the agent is done nothing of it can use a workspace again: a
	// new start is a new incarnation, whose reservations the store ends.
	defer func() { ws.clear(log); ws.Close() }()

	m := newMetrics(cfg.Pool)
	a := newAgent(cfg, log, base, runner, executorEnv(cfg, lookup), m, opts.hooks)
	a.ws = ws
	if opts.built != nil {
		opts.built(a)
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("serving /healthz, /readyz and /metrics", "address", ln.Addr().String())
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving health and metrics: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		return a.run(gctx)
	})
	return g.Wait()
}

// executorEnv is what executors inherit from the agent's environment: the
// always-passed variables and the --executor-env allow-list, nothing else.
func executorEnv(cfg Config, lookup func(string) (string, bool)) []string {
	var env []string
	for _, n := range append(append([]string{}, alwaysPassed...), cfg.ExecutorEnv...) {
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		} else if n == "PATH" {
			env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		}
	}
	return env
}
