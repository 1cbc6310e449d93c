package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/perclient"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stderr, os.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "scaler:", err)
		os.Exit(1)
	}
}

// roles is printed by --help (after the scaler's own flags) and with an
// unknown command. No line starts with "  --" or four spaces: the
// configuration reference is generated from --help and reads those as
// flags.
const roles = `
One binary, slotscaler's three control-plane roles:
  scaler [flags]               the KEDA external scaler (no command): tells KEDA how many agent pods each pool needs
  scaler janitor [flags]       the pool controller: creates each AgentPool's agent pods, removes only pods drained idle
  scaler declare-pool [flags]  declares a static pool (agents outside Kubernetes) in the slot store and exits
  scaler delete-pools [flags]  deletes the selected AgentPools and waits until their pods were removed idle (helm uninstall's hook)
  scaler drain-idle [flags]    removes the pods a deleted AgentPool left behind, each once idle (moving back to a Deployment)
Each command's --help lists its flags.
`

// dispatch runs the role named by the first argument: janitor,
// declare-pool, or none (a flag or nothing) for the external scaler.
func dispatch(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool)) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		err := run(ctx, args, stderr, lookup, nil)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, roles)
		}
		return err
	}
	switch args[0] {
	case "janitor":
		return runJanitor(ctx, args[1:], stderr, lookup, nil)
	case "declare-pool":
		return runDeclarePool(ctx, args[1:], stderr, lookup)
	case "delete-pools":
		return runDeletePools(ctx, args[1:], stderr, lookup)
	case "drain-idle":
		return runDrainIdle(ctx, args[1:], stderr, lookup)
	}
	// The external scaler takes no arguments: a word here was meant as a
	// command.
	fmt.Fprint(stderr, roles)
	return fmt.Errorf("unknown command %q", args[0])
}

// listeners lets tests hand in their own listeners (bufconn); nil listens
// on the configured addresses.
type listeners struct {
	grpc, health, metrics net.Listener
}

func run(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool), ls *listeners) error {
	cfg, err := parseConfig(args, lookup)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log = log.With("component", "scaler")
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return err
	}

	var notifyCfg notify.Config
	if cfg.NotifyConfig != "" && cfg.Notify {
		// Read before serving: a config that does not load (a missing
		// Secret key, a typo) stops the scaler at start, not silently later.
		if notifyCfg, err = notify.Load(cfg.NotifyConfig, lookup); err != nil {
			return err
		}
	}

	conn, store, err := openStore(ctx, cfg.Redis, log)
	if err != nil {
		return err
	}
	defer conn.Close()

	var rec *history.Recorder
	if cfg.HistoryInterval > 0 {
		rec, err = history.NewRecorder(ctx, store, conn.Client, history.Options{Prefix: cfg.KeyPrefix, Interval: cfg.HistoryInterval, Logger: log})
		if err != nil {
			return fmt.Errorf("starting the pool history recorder: %w", err)
		}
	}

	if ls == nil {
		ls = &listeners{}
	}
	for _, l := range []struct {
		ln   *net.Listener
		addr string
	}{{&ls.grpc, cfg.ListenAddress}, {&ls.health, cfg.HealthAddress}, {&ls.metrics, cfg.MetricsAddress}} {
		if *l.ln == nil {
			if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
				return fmt.Errorf("listening on %s: %w", l.addr, err)
			}
		}
	}

	m := newMetrics()
	m.exportPools(store, conn.Client, rec, cfg.HistoryInterval, log)
	var notifier *notify.Notifier
	if cfg.Notify && (len(notifyCfg.Webhooks) > 0 || cfg.NotifyAgentPools) {
		opts := notify.Options{Logger: log, Registerer: m.registry}
		if cfg.NotifyAgentPools {
			rc, err := kubeConfig(cfg.Kubeconfig, "slotscaler-notifier")
			if err != nil {
				return err
			}
			kube, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return fmt.Errorf("creating the Kubernetes client: %w", err)
			}
			opts.Secrets = newKubeSecrets(kube, time.Minute)
		}
		if notifier, err = notify.New(store, conn.Client, notifyCfg, opts); err != nil {
			return err
		}
	}
	h := &handler{store: store, log: log, metrics: m, nudge: cfg.NudgeTolerance,
		streamPoll: cfg.StreamPoll, streams: perclient.New(cfg.MaxStreams), redisTimeout: cfg.RedisTimeout, configs: slots.NewConfigCache(store.Pool, cfg.ConfigCacheTTL)}
	hs := health.NewServer()
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.unaryInterceptor), grpc.ChainStreamInterceptor(m.streamInterceptor)}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterExternalScalerServer(srv, h)
	healthpb.RegisterHealthServer(srv, hs)
	healthSrv := grpc.NewServer()
	healthpb.RegisterHealthServer(healthSrv, hs)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("serving KEDA external scaler", "address", ls.grpc.Addr().String(), "tls", tlsCfg != nil, "mtls", cfg.TLSClientCAFile != "")
		return srv.Serve(ls.grpc)
	})
	g.Go(func() error { return healthSrv.Serve(ls.health) })
	g.Go(func() error {
		if err := httpSrv.Serve(ls.metrics); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { watchRedis(ctx, conn, hs, m.redisUp, log); return nil })
	if cfg.ReapInterval > 0 {
		g.Go(func() error { store.RunReaper(ctx, cfg.ReapInterval, slots.ReapOptions{}); return nil })
	}
	if rec != nil {
		g.Go(func() error { rec.Run(ctx); return nil })
	}
	if notifier != nil {
		g.Go(func() error { notifier.Run(ctx); return nil })
	}
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down")
		hs.Shutdown() // every service NOT_SERVING: probes and KEDA stop sending
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); healthSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(cfg.ShutdownTimeout):
			log.Warn("graceful stop timed out; closing connections")
			srv.Stop()
			healthSrv.Stop()
		}
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// watchRedis keeps the readiness service in step with Redis: KEDA's calls
// would fail while it is unreachable, so the scaler is not ready then.
// Liveness stays SERVING: restarting the scaler does not bring Redis back.
func watchRedis(ctx context.Context, conn *redisconn.Conn, hs *health.Server, up prometheus.Gauge, log *slog.Logger) {
	hs.SetServingStatus("liveness", healthpb.HealthCheckResponse_SERVING)
	ready := healthpb.HealthCheckResponse_UNKNOWN
	for {
		want := healthpb.HealthCheckResponse_SERVING
		if err := redisconn.Ping(ctx, conn.Client, 2*time.Second); err != nil {
			up.Set(0)
			want = healthpb.HealthCheckResponse_NOT_SERVING
			if ready != want && ctx.Err() == nil {
				log.Warn("redis unreachable: not ready", "err", err)
			}
		} else {
			up.Set(1)
			if ready == healthpb.HealthCheckResponse_NOT_SERVING {
				log.Info("redis reachable again: ready")
			}
		}
		if want != ready && ctx.Err() == nil {
			hs.SetServingStatus("readiness", want)
			hs.SetServingStatus("", want)
			ready = want
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
