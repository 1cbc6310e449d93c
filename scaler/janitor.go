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
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/podpolicy"
	"github.com/slotscaler/slotscaler/pkg/poolcreds"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// JanitorConfig is every setting of `scaler janitor`; each flag has an
// environment twin.
type JanitorConfig struct {
	config.Common
	Kubeconfig       string
	Namespaces       commaList
	Workers          int
	SyncInterval     time.Duration
	FullPassInterval time.Duration
	DryRun           bool
	KubeQPS          float64
	KubeBurst        int
	Parallelism      int
	ReplicaWait      time.Duration
	AgentRedisURL    string
	AgentRedisSecret string
	LeaderElect      bool
	LeaseNamespace   string
	LeaseName        string
	Identity         string
	LeaseDuration    time.Duration
	ListenAddress    string
	ReapInterval     time.Duration
	WatchHPAs        bool
	// The pod policy every agent pod must satisfy (pkg/podpolicy).
	PodPolicy                string
	AllowedServiceAccounts   commaList
	AllowServiceAccountToken bool
	// Pool credentials (pkg/poolcreds): a Redis user per pool.
	PoolCredsKeyFile         string
	PoolCredsPreviousKeyFile string
	PoolCredsSecret          string
	PoolCredsRedisURL        string
}

// commaList is a flag holding a comma-separated list (blanks dropped).
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }

func (l *commaList) Set(s string) error {
	*l = nil
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func parseJanitorConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (JanitorConfig, error) {
	var c JanitorConfig
	fs := flag.NewFlagSet("scaler janitor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.Common.Register(fs, "slot store Redis: redis://, rediss://, redis+cluster://, redis+sentinel://")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	fs.Var(&c.Namespaces, "namespace", "watch AgentPools and pods of these comma-separated namespaces only, with one informer per namespace (the chart then grants a Role in each instead of a ClusterRole); empty: all namespaces")
	fs.IntVar(&c.Workers, "workers", 4, "pools worked on at once")
	fs.DurationVar(&c.SyncInterval, "sync-interval", 5*time.Second, "how often each pool is looked at without a Kubernetes event (slots becoming idle are Redis changes)")
	fs.DurationVar(&c.FullPassInterval, "full-pass-interval", janitor.DefaultFullPassInterval, "a pool at rest (nothing changed in Redis or Kubernetes, nothing due) is passed by reading its change token only; a full pass (the whole pool read and planned) still runs at least this often; 0: every pass is full")
	fs.BoolVar(&c.DryRun, "dry-run", false, "decide and log, change nothing (no Kubernetes or Redis writes)")
	fs.Float64Var(&c.KubeQPS, "kube-api-qps", 50, "Kubernetes API requests per second (client-side limit)")
	fs.IntVar(&c.KubeBurst, "kube-api-burst", 100, "Kubernetes API request burst")
	fs.IntVar(&c.Parallelism, "parallelism", 16, "concurrent API calls within one pass over a pool")
	fs.DurationVar(&c.ReplicaWait, "replica-wait", 5*time.Second, "how long a drain waits for a Redis replica to acknowledge it before the pod may be deleted")
	fs.StringVar(&c.AgentRedisURL, "agent-redis-url", "", "REDIS_URL given to agent pods whose template sets none (prefer --agent-redis-secret when it has a password)")
	fs.StringVar(&c.AgentRedisSecret, "agent-redis-secret", "", "secret-name/key in each pool's namespace referenced as the agents' REDIS_URL when the template sets none")
	fs.BoolVar(&c.LeaderElect, "leader-elect", false, "elect a leader through a Lease (required when running more than one replica)")
	fs.StringVar(&c.LeaseNamespace, "leader-elect-namespace", "", "namespace of the Lease (the chart: the janitor's namespace)")
	fs.StringVar(&c.LeaseName, "leader-elect-lease", "slotscaler-janitor", "name of the Lease")
	fs.StringVar(&c.Identity, "leader-elect-identity", "", "this replica's identity in the Lease (the chart: the pod name); empty: the host name")
	fs.DurationVar(&c.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal")
	fs.StringVar(&c.ListenAddress, "listen-address", ":8083", "HTTP address of /healthz, /readyz and /metrics")
	fs.BoolVar(&c.WatchHPAs, "watch-hpas", true, "read the HorizontalPodAutoscaler targeting each AgentPool (an informer: get, list and watch on horizontalpodautoscalers): without behavior.scaleUp.tolerance 0 on it the pool gets HPAToleranceHonoured False and the scaler nudges its scale-ups; false: no HPA is read, the trigger's nudgeTolerance alone decides")
	fs.DurationVar(&c.ReapInterval, "reap-interval", time.Second, "how often to expire heartbeats, reservations and queue ages of every pool while leading (0: off, when the scaler reaps); reapers may run beside the scaler's")
	fs.StringVar(&c.PodPolicy, "pod-policy", string(podpolicy.Restricted), "Pod Security Standard every agent pod must meet before the janitor creates it: restricted, baseline, or privileged (no check at all: anyone who may create an AgentPool may then run any pod; unsafe)")
	c.AllowedServiceAccounts = commaList{podpolicy.DefaultServiceAccount}
	fs.Var(&c.AllowedServiceAccounts, "allowed-service-accounts", "comma-separated ServiceAccounts agent pods may run as (a template naming another is refused)")
	fs.BoolVar(&c.AllowServiceAccountToken, "allow-service-account-token", false, "allow templates to set automountServiceAccountToken: true (otherwise an unset one becomes false and true is refused)")
	fs.StringVar(&c.PoolCredsKeyFile, "pool-credentials-key-file", "", "file holding the master key (at least 32 bytes) each pool's Redis password derives from: every pool gets a Redis user confined to its keys, and its agents that user's URL (key <pool> of --pool-credentials-secret); empty: agents get --agent-redis-secret or --agent-redis-url as they are")
	fs.StringVar(&c.PoolCredsPreviousKeyFile, "pool-credentials-previous-key-file", "", "file holding the master key before a rotation (absent or empty: no rotation under way): pool users accept its passwords too until it is removed (once every agent pod started after the rotation)")
	fs.StringVar(&c.PoolCredsSecret, "pool-credentials-secret", poolcreds.DefaultSecretName, "Secret the janitor writes (server-side apply, never reads) in each pool namespace: one key per pool, its agents' REDIS_URL")
	fs.StringVar(&c.PoolCredsRedisURL, "pool-credentials-redis-url", "", "Redis URL of the user pool users are managed as (ACL SETUSER, DELUSER, GETUSER and INFO; see docs/security.md); empty: --redis-url, whose user then needs those rights too")
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, janitorHelp)
		}
		return JanitorConfig{}, err
	}
	if c.Identity == "" {
		c.Identity, _ = os.Hostname()
	}
	return c, c.validate()
}

// janitorHelp follows the flags in --help. Like roles, no line starts with
// "  --" or four spaces (the configuration reference reads those as flags).
const janitorHelp = `
The pool controller: makes each AgentPool's agent pods match spec.replicas. It
declares the pool in the slot store, creates agent pods from its template, and
removes only pods it drained in the slot store (proven idle, none reserved).
The command, its metrics (slotscaler_janitor_*) and its Lease keep the name
janitor: installations, dashboards and alerts refer to them.
`

func (c JanitorConfig) validate() error {
	errs := []error{c.Common.Validate()}
	if c.RedisURL == "" {
		errs = append(errs, errors.New("--redis-url is required: the janitor shares the slot store with the scaler and agents"))
	}
	if c.Workers < 1 || c.Parallelism < 1 {
		errs = append(errs, fmt.Errorf("--workers %d and --parallelism %d must be at least 1", c.Workers, c.Parallelism))
	}
	if c.SyncInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--sync-interval %v: want at least 100ms", c.SyncInterval))
	}
	if c.FullPassInterval < 0 {
		errs = append(errs, fmt.Errorf("--full-pass-interval %v must not be negative", c.FullPassInterval))
	}
	if c.KubeQPS <= 0 || c.KubeBurst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-qps %v and --kube-api-burst %d must be positive", c.KubeQPS, c.KubeBurst))
	}
	if c.ReapInterval < 0 {
		errs = append(errs, fmt.Errorf("--reap-interval %v must not be negative", c.ReapInterval))
	}
	if c.ReplicaWait <= 0 {
		errs = append(errs, fmt.Errorf("--replica-wait %v must be positive", c.ReplicaWait))
	}
	if c.AgentRedisSecret != "" {
		name, key, ok := strings.Cut(c.AgentRedisSecret, "/")
		if !ok || len(validation.IsDNS1123Subdomain(name)) > 0 || len(validation.IsConfigMapKey(key)) > 0 {
			errs = append(errs, fmt.Errorf("--agent-redis-secret %q: want secret-name/key", c.AgentRedisSecret))
		}
	}
	if c.PoolCredsKeyFile == "" && (c.PoolCredsPreviousKeyFile != "" || c.PoolCredsRedisURL != "") {
		errs = append(errs, errors.New("--pool-credentials-previous-key-file and --pool-credentials-redis-url need --pool-credentials-key-file"))
	}
	if c.PoolCredsKeyFile != "" && len(validation.IsDNS1123Subdomain(c.PoolCredsSecret)) > 0 {
		errs = append(errs, fmt.Errorf("--pool-credentials-secret %q: want a Secret name", c.PoolCredsSecret))
	}
	for _, ns := range c.Namespaces {
		if len(validation.IsDNS1123Label(ns)) > 0 {
			errs = append(errs, fmt.Errorf("--namespace %q: want comma-separated namespace names", ns))
		}
	}
	if _, err := c.podPolicy(); err != nil {
		errs = append(errs, err)
	}
	if c.LeaderElect && (c.LeaseNamespace == "" || c.Identity == "") {
		errs = append(errs, errors.New("--leader-elect needs --leader-elect-namespace and --leader-elect-identity"))
	}
	if c.LeaderElect && c.LeaseDuration < 2*time.Second {
		errs = append(errs, fmt.Errorf("--leader-elect-lease-duration %v: want at least 2s", c.LeaseDuration))
	}
	return errors.Join(errs...)
}

func (c JanitorConfig) injection() janitor.Injection {
	inj := janitor.Injection{KeyPrefix: c.KeyPrefix, RedisURL: c.AgentRedisURL, ReplicaAcks: c.ReplicaAcks}
	inj.RedisSecretName, inj.RedisSecretKey, _ = strings.Cut(c.AgentRedisSecret, "/")
	if c.PoolCredsKeyFile != "" {
		inj.PoolSecretName = c.PoolCredsSecret
	}
	return inj
}

func (c JanitorConfig) podPolicy() (podpolicy.Policy, error) {
	level, err := podpolicy.ParseLevel(c.PodPolicy)
	if err != nil {
		return podpolicy.Policy{}, fmt.Errorf("--pod-policy: %w", err)
	}
	p := podpolicy.Policy{Level: level, AllowedServiceAccounts: c.AllowedServiceAccounts, AllowServiceAccountToken: c.AllowServiceAccountToken}
	if err := p.Validate(); err != nil {
		return podpolicy.Policy{}, fmt.Errorf("--pod-policy, --allowed-service-accounts: %w", err)
	}
	return p, nil
}

// poolCredentials is the pool users' manager, or nil when
// --pool-credentials-key-file is not set. Agents get --agent-redis-url, or
// the janitor's own URL, with the pool's user and password in it.
func (c JanitorConfig) poolCredentials(ctx context.Context, conn *redisconn.Conn, kube kubernetes.Interface, log *slog.Logger) (*poolcreds.Manager, func(), error) {
	none := func() {}
	if c.PoolCredsKeyFile == "" {
		return nil, none, nil
	}
	if conn.Embedded != nil {
		return nil, none, errors.New("--pool-credentials-key-file needs a real Redis (7 or later), not the embedded one")
	}
	keys, err := poolcreds.LoadKeys(c.PoolCredsKeyFile, c.PoolCredsPreviousKeyFile)
	if err != nil {
		return nil, none, err
	}
	agentURL := c.AgentRedisURL
	if agentURL == "" {
		agentURL = c.RedisURL
	}
	admin := conn
	if c.PoolCredsRedisURL != "" {
		if admin, err = redisconn.Open(ctx, c.PoolCredsRedisURL, nil); err != nil {
			return nil, none, fmt.Errorf("--pool-credentials-redis-url: %w", err)
		}
	}
	closeAll := func() {
		if admin != conn {
			_ = admin.Close()
		}
	}
	m, err := poolcreds.New(admin.Client, kube, poolcreds.Options{
		Prefix: c.KeyPrefix, Keys: keys, AgentURL: agentURL, SecretName: c.PoolCredsSecret, Logger: log,
	})
	if err != nil {
		closeAll()
		return nil, none, err
	}
	log.Info("pool credentials on: each pool gets a Redis user of its own", "secret", c.PoolCredsSecret, "rotating", keys.Previous != nil)
	return m, func() { _ = m.Close(); closeAll() }, nil
}

// credentialsOption keeps a nil *Manager a nil interface.
func credentialsOption(m *poolcreds.Manager) janitor.PoolCredentials {
	if m == nil {
		return nil
	}
	return m
}

func (c JanitorConfig) restConfig() (*rest.Config, error) {
	rc, err := kubeConfig(c.Kubeconfig, "slotscaler-janitor")
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = float32(c.KubeQPS), c.KubeBurst
	return rc, nil
}

// kubeConfig is the Kubernetes client config of a command: from a
// kubeconfig file, or (empty path) the pod's in-cluster service account.
func kubeConfig(path, userAgent string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if path != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client config: %w", err)
	}
	rc.UserAgent = userAgent
	return rc, nil
}

// runJanitor is `scaler janitor`: the pool controller, which creates pods as
// well as removing idle ones (see the package doc for why it keeps its name).
func runJanitor(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool), ln net.Listener) error {
	cfg, err := parseJanitorConfig(args, stderr, lookup)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	rc, err := cfg.restConfig()
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("building Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("building Kubernetes dynamic client: %w", err)
	}
	conn, store, err := openStore(ctx, cfg.Redis, log)
	if err != nil {
		return err
	}
	defer conn.Close()

	pol, err := cfg.podPolicy()
	if err != nil {
		return err
	}
	if pol.Level == podpolicy.Privileged {
		log.Warn("--pod-policy privileged: agent pod templates are not checked; anyone who may create an AgentPool may run any pod through the janitor")
	}

	creds, closeCreds, err := cfg.poolCredentials(ctx, conn, kube, log)
	if err != nil {
		return err
	}
	defer closeCreds()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctrl, err := janitor.New(kube, dyn, store, janitor.Options{
		Namespaces: cfg.Namespaces, PodPolicy: pol, Workers: cfg.Workers, SyncInterval: cfg.SyncInterval, DryRun: cfg.DryRun,
		FullPassInterval: fullPassInterval(cfg.FullPassInterval),
		Inject:           cfg.injection(), ReplicaWait: cfg.ReplicaWait, Parallelism: cfg.Parallelism, IgnoreHPAs: !cfg.WatchHPAs,
		Logger: log, Metrics: janitor.NewMetrics(reg), Credentials: credentialsOption(creds),
		Reports: janitorreport.NewStore(conn.Client, cfg.KeyPrefix), Identity: cfg.Identity,
		Webhooks: notify.NewDeclarations(conn.Client, cfg.KeyPrefix),
	})
	if err != nil {
		return err
	}

	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.ListenAddress); err != nil {
			return fmt.Errorf("listening on %s: %w", cfg.ListenAddress, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := redisconn.Ping(r.Context(), conn.Client, 2*time.Second); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		defer func() {
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = httpSrv.Shutdown(shut)
		}()
		// Lost heartbeats become lost pods (which the janitor then deletes)
		// only through a reaper; the scaler runs one too, and they may overlap.
		run := func(ctx context.Context) error {
			if cfg.ReapInterval > 0 {
				go store.RunReaper(ctx, cfg.ReapInterval, slots.ReapOptions{})
			}
			return ctrl.Run(ctx)
		}
		if !cfg.LeaderElect {
			return run(gctx)
		}
		return leadAndRun(gctx, cfg, kube, log, run)
	})
	err = g.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("janitor shut down")
	return nil
}

// leadAndRun runs fn while this replica holds the Lease. Losing the Lease
// stops fn and returns an error: the process exits and restarts as a
// follower, so two leaders never act at once for longer than the renew
// deadline allows.
func leadAndRun(ctx context.Context, cfg JanitorConfig, kube kubernetes.Interface, log *slog.Logger, fn func(context.Context) error) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.LeaseNamespace, Name: cfg.LeaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	// fn's result; buffered so the callback never blocks. Leadership's
	// context ends when le.Run returns, and fn returns with it.
	done := make(chan error, 1)
	var started, lost atomic.Bool
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   cfg.LeaseDuration,
		RenewDeadline:   cfg.LeaseDuration * 2 / 3,
		RetryPeriod:     cfg.LeaseDuration / 7,
		ReleaseOnCancel: true,
		Name:            cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				started.Store(true)
				log.Info("leading", "lease", cfg.LeaseNamespace+"/"+cfg.LeaseName, "identity", cfg.Identity)
				done <- fn(ctx)
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil {
					lost.Store(true)
				}
			},
			OnNewLeader: func(id string) {
				if id != cfg.Identity {
					log.Info("following", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("configuring leader election: %w", err)
	}
	le.Run(ctx)
	var runErr error
	if started.Load() {
		runErr = <-done
	}
	if lost.Load() {
		return errors.New("lost the leader Lease")
	}
	return runErr
}

// fullPassInterval maps the flag (0: every pass full) to the option (0:
// the default, negative: every pass full).
func fullPassInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
