package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/klog/v2"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// demo is one run of the local stack.
type demo struct {
	cfg Config
	con *console
	log *slog.Logger

	// ready is closed once everything runs (tests wait for it); the fields
	// below are set by then.
	ready        chan struct{}
	api          *fakeAPI
	store        *slots.Store
	kubelet      *kubelet
	loads        []*load
	scalers      []*autoscaler
	dashboardURL string

	apiToken string
	yours    *yours // the task that waits for your approval

	// conflicts counts the janitor's status writes refused as stale (409).
	conflicts atomic.Int64

	mu    sync.Mutex
	peak  map[string]int // live pods, per pool
	procs []*child       // the scaler and the dashboard, for killAll
}

func newDemo(cfg Config, stdout io.Writer) *demo {
	return &demo{cfg: cfg, con: &console{w: stdout}, ready: make(chan struct{}), peak: map[string]int{}}
}

// run starts everything, runs until ctx ends (or --duration passes, or a
// part fails), stops everything in order and sums up.
func (d *demo) run(ctx context.Context) (result, error) {
	started := time.Now()
	prof := d.cfg.Profile
	log, err := logging.New(d.con, d.cfg.LogFormat, d.cfg.logLevel())
	if err != nil {
		return result{}, err
	}
	d.log = log
	klog.SetSlogLogger(log.With("component", "client-go"))
	if _, port, err := net.SplitHostPort(d.cfg.DashboardAddress); err == nil && port != "0" {
		// The first thing a newcomer sees: where to look (it answers within
		// seconds, once the line below the banner says so).
		d.con.Printf("slotscaler demo: dashboard http://%s/ (starting...)", displayAddr(d.cfg.DashboardAddress))
	}

	bins, err := findBinaries(d.cfg.BinDir)
	if err != nil {
		return result{}, err
	}
	if err := checkFree(d.cfg.DashboardAddress); err != nil {
		return result{}, err
	}

	// Everything started is stopped in reverse order, also on an early error.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	// Redis: the given one, or miniredis on a loopback port the child
	// processes can reach.
	redisURL, redisDesc := d.cfg.RedisURL, "REDIS_URL "+redisconn.Redact(d.cfg.RedisURL)
	if redisURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return result{}, fmt.Errorf("starting the embedded redis: %w", err)
		}
		cleanups = append(cleanups, m.Close)
		redisURL = "redis://" + m.Addr() + "/0"
		redisDesc = "embedded miniredis, " + redisURL
	}
	openCtx, cancelOpen := context.WithTimeout(ctx, 30*time.Second)
	defer cancelOpen()
	conn, err := redisconn.Open(openCtx, redisURL, log)
	if err != nil {
		return result{}, err
	}
	cleanups = append(cleanups, func() { _ = conn.Close() })
	store, err := slots.New(openCtx, conn.Client, d.cfg.Redis.StoreOptions(log))
	if err != nil {
		return result{}, fmt.Errorf("opening the slot store: %w", err)
	}
	d.store = store

	// Kubernetes: the in-memory API holding the pools, the janitor, the
	// kubelet. The reaper turns silent agents into lost pods (the scaler
	// reaps too; reapers may overlap).
	api := newFakeAPI()
	d.api = api
	for _, p := range prof.Pools {
		obj, err := agentPool(p, prof, d.cfg)
		if err != nil {
			return result{}, err
		}
		if _, err := api.Dyn.Resource(v1alpha1.GroupVersionResource).Namespace(p.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return result{}, fmt.Errorf("creating AgentPool %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	ctrl, err := janitor.New(api.Kube, api.Dyn, store, janitor.Options{
		SyncInterval: prof.SyncInterval,
		Inject:       janitor.Injection{KeyPrefix: d.cfg.KeyPrefix, RedisURL: redisURL},
		Logger:       slog.New(conflictFilter{log.Handler(), &d.conflicts}),
		Metrics:      janitor.NewMetrics(nil),
		Reports:      janitorreport.NewStore(conn.Client, d.cfg.KeyPrefix),
		Identity:     "demo",
	})
	if err != nil {
		return result{}, fmt.Errorf("building the janitor: %w", err)
	}
	kl := newKubelet(api.Kube, store, bins.Agent, d.con, log, prof.StopGrace)
	d.mu.Lock()
	d.kubelet = kl
	d.mu.Unlock()
	// The event followers stop last, after the agents: they count what
	// happened to the work in flight.
	followCtx, stopFollow := context.WithCancel(context.WithoutCancel(ctx))
	var followWG sync.WaitGroup
	cleanups = append(cleanups, func() { stopFollow(); followWG.Wait() })
	coreCtx, stopCore := context.WithCancel(context.WithoutCancel(ctx))
	fatal := make(chan error, 2)
	var core sync.WaitGroup
	core.Go(func() {
		if err := ctrl.Run(coreCtx); err != nil && coreCtx.Err() == nil {
			fatal <- fmt.Errorf("janitor: %w", err)
		}
	})
	core.Go(func() { store.RunReaper(coreCtx, time.Second, slots.ReapOptions{}) })
	core.Go(func() { _ = d.kubelet.run(coreCtx) })
	cleanups = append(cleanups, func() {
		stopCore()
		core.Wait()
		if n := d.kubelet.running(); n > 0 {
			d.con.Printf("%s  stopping %d agents: SIGTERM, they finish their running phases (SIGKILL after %v)", clock(time.Now()), n, prof.StopGrace)
		}
		d.kubelet.stopAll(context.Background())
	})

	// The shipped binaries: scaler and dashboard.
	env := func(kv ...string) []string {
		return append(append(baseEnv(), "REDIS_URL="+redisURL, "KEY_PREFIX="+d.cfg.KeyPrefix,
			"LOG_LEVEL="+d.cfg.logLevel(), "LOG_FORMAT="+d.cfg.LogFormat), kv...)
	}
	scalerAddr, err := freeLoopback()
	if err != nil {
		return result{}, err
	}
	scaler, err := startChild(d.con, "scaler", bins.Scaler, env("LISTEN_ADDRESS="+scalerAddr,
		"HEALTH_ADDRESS=127.0.0.1:0", "METRICS_ADDRESS=127.0.0.1:0", "HISTORY_INTERVAL="+d.cfg.Profile.HistoryInterval.String()))
	if err != nil {
		return result{}, err
	}
	d.track(scaler)
	cleanups = append(cleanups, func() { scaler.stop(context.Background(), 10*time.Second) })
	d.apiToken = rand.String(24)
	dash, err := startChild(d.con, "dashboard", bins.Dashboard, env("LISTEN_ADDRESS="+d.cfg.DashboardAddress,
		"METRICS_ADDRESS=", "LIVE_INTERVAL=1s", "API_TOKENS=you="+d.apiToken,
		// Read auth stays on, as in production; the page login's cookie
		// goes without Secure, as the demo serves plain http://127.0.0.1.
		"READ_AUTH=true", "SECURE_COOKIE=false"))
	if err != nil {
		return result{}, err
	}
	d.track(dash)
	cleanups = append(cleanups, func() { dash.stop(context.Background(), 10*time.Second) })
	d.dashboardURL = "http://" + displayAddr(d.cfg.DashboardAddress) + "/"

	cc, err := grpc.NewClient(scalerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return result{}, fmt.Errorf("dialling the scaler: %w", err)
	}
	cleanups = append(cleanups, func() { _ = cc.Close() })
	if err := waitReady(ctx, scaler, "the scaler", func(ctx context.Context) bool {
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}); err != nil {
		return result{}, err
	}
	if err := waitReady(ctx, dash, "the dashboard", func(ctx context.Context) bool {
		return httpOK(ctx, d.dashboardURL+"healthz")
	}); err != nil {
		return result{}, err
	}

	// KEDA + HPA per pool, the load, the status lines.
	runID := rand.String(4)
	client := pb.NewExternalScalerClient(cc)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loadWG sync.WaitGroup
	for _, p := range prof.Pools {
		a := newAutoscaler(p, client, api.Dyn, prof, d.con, log)
		l := newLoad(store, p, prof, runID, log)
		d.scalers = append(d.scalers, a)
		d.loads = append(d.loads, l)
		loadWG.Go(func() { _ = a.run(loadCtx) })
		loadWG.Go(func() { l.submitLoop(loadCtx, time.Now()) })
		followWG.Go(func() { l.follow(followCtx, loadCtx) })
	}
	if len(prof.Pools) > 0 {
		first := prof.Pools[0]
		d.yours = &yours{store: store, pool: slots.PoolID{Namespace: first.Namespace, Name: first.Name}, run: runID,
			con: d.con, url: d.dashboardURL + "approvals", log: log.With("component", "yours"), poll: time.Second,
			last: make(chan string, 1)}
		loadWG.Go(func() { d.yours.loop(loadCtx) })
	}
	loadWG.Go(func() { d.statusLoop(loadCtx) })
	cleanups = append(cleanups, func() { stopLoad(); loadWG.Wait() })

	d.banner(redisDesc, scalerAddr, bins)
	close(d.ready)

	var timeout <-chan time.Time
	if d.cfg.Duration > 0 {
		timeout = time.After(d.cfg.Duration)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case <-timeout:
	case runErr = <-fatal:
	case <-scaler.done:
		runErr = fmt.Errorf("the scaler exited (code %d): see its lines above", scaler.exitCode())
	case <-dash.done:
		runErr = fmt.Errorf("the dashboard exited (code %d): see its lines above", dash.exitCode())
	}
	d.con.Printf("%s  stopping: load, KEDA/HPA, scaler, dashboard, janitor, agents (Ctrl-C again kills them at once)", clock(time.Now()))
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil

	res := d.result()
	d.summary(res, time.Since(started))
	return res, runErr
}

func (d *demo) track(c *child) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.procs = append(d.procs, c)
}

// killAll SIGKILLs every process the demo started (a second Ctrl-C).
func (d *demo) killAll() {
	d.mu.Lock()
	procs, kl := slices.Clone(d.procs), d.kubelet
	d.mu.Unlock()
	for _, c := range procs {
		c.signal(syscall.SIGKILL)
	}
	if kl != nil {
		kl.killAll()
	}
}

// agentPool is a demo pool's AgentPool: the agent runs the builtin sleep
// executor, heartbeats well inside the pool's timeout, and logs at the
// demo's level.
func agentPool(p PoolProfile, prof Profile, cfg Config) (*unstructured.Unstructured, error) {
	replicas := p.MinReplicas
	exec := fmt.Sprintf("builtin:sleep?min=%v&max=%v", prof.TaskMin, prof.TaskMax)
	ap := &v1alpha1.AgentPool{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name,
			Labels: map[string]string{"app.kubernetes.io/part-of": "slotscaler-demo"}},
		Spec: v1alpha1.AgentPoolSpec{
			Replicas:         &replicas,
			IdleFor:          &metav1.Duration{Duration: prof.IdleFor},
			HeartbeatTimeout: &metav1.Duration{Duration: prof.HeartbeatTimeout},
			ReservationTTL:   &metav1.Duration{Duration: prof.ReservationTTL},
			PhaseTimeouts: v1alpha1.PhaseTimeouts{
				Plan:  &metav1.Duration{Duration: prof.PhaseTimeout},
				Apply: &metav1.Duration{Duration: prof.PhaseTimeout},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
					"app.kubernetes.io/name": "slotscaler", "app.kubernetes.io/component": "agent"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  janitor.AgentContainer,
					Image: "slotscaler/agent:demo",
					Env: []corev1.EnvVar{
						{Name: "EXECUTOR", Value: exec},
						{Name: "HEARTBEAT_INTERVAL", Value: prof.HeartbeatInterval.String()},
						{Name: "KILL_GRACE", Value: "2s"},
						{Name: "REGISTER_TIMEOUT", Value: "30s"},
						{Name: "LOG_LEVEL", Value: cfg.logLevel()},
						{Name: "LOG_FORMAT", Value: cfg.LogFormat},
					},
				}}},
			},
		},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	if err != nil {
		return nil, fmt.Errorf("encoding AgentPool %s/%s: %w", p.Namespace, p.Name, err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// checkFree fails with one clear line when addr cannot be listened on.
func checkFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("the dashboard cannot listen on %s (%v): pass another --dashboard-address (or DASHBOARD_ADDRESS), e.g. 127.0.0.1:8090", addr, err)
	}
	return ln.Close()
}

// freeLoopback returns a loopback address with a port that was free a
// moment ago.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// displayAddr makes a listen address something a browser can open.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// waitReady polls check until it holds, the child exits, or 30 s pass.
func waitReady(ctx context.Context, c *child, what string, check func(context.Context) bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		ok := check(cctx)
		cancel()
		switch {
		case ok:
			return nil
		case c.exited():
			return fmt.Errorf("%s exited during start-up (code %d): see its lines above", what, c.exitCode())
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("%s was not ready within 30s", what)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

func httpOK(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
