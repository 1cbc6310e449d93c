package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testcerts"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

type running struct {
	grpcAddr, healthAddr, metricsAddr string
	stop                              func() error
	logs                              *testutil.SyncBuffer
}

func listen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

// start runs the whole binary (run) on loopback ports with env settings.
func start(t *testing.T, env map[string]string) *running {
	t.Helper()
	ls := &listeners{grpc: listen(t), health: listen(t), metrics: listen(t)}
	r := &running{grpcAddr: ls.grpc.Addr().String(), healthAddr: ls.health.Addr().String(),
		metricsAddr: ls.metrics.Addr().String(), logs: &testutil.SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, r.logs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, ls)
	}()
	var once sync.Once
	var stopErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = context.DeadlineExceeded
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

func waitServing(t *testing.T, conn *grpc.ClientConn, service string) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	require.Eventually(t, func() bool {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING
	}, 10*time.Second, 50*time.Millisecond, "service %q never became SERVING", service)
}

func TestBinaryServesHealthMetricsAndStopsCleanly(t *testing.T) {
	r := start(t, map[string]string{"REDIS_URL": redistest.Standalone(t), "KEY_PREFIX": redistest.Prefix(t)})
	health, err := grpc.NewClient(r.healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer health.Close()
	waitServing(t, health, "liveness")
	waitServing(t, health, "readiness")

	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	_, err = pb.NewExternalScalerClient(conn).IsActive(context.Background(),
		&pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "missing"}})
	assert.Equal(t, codes.NotFound, status.Code(err))

	resp, err := http.Get("http://" + r.metricsAddr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), `slotscaler_scaler_requests_total{code="NotFound",method="/externalscaler.ExternalScaler/IsActive"} 1`)

	require.NoError(t, r.stop(), "SIGTERM is a clean exit")
	assert.Contains(t, r.logs.String(), "shutting down")
}

func TestBinaryRefusesBadSettingsWithOneClearLine(t *testing.T) {
	cases := map[string]map[string]string{
		"cert without key":   {"TLS_CERT_FILE": "/x.pem"},
		"bad duration":       {"STREAM_POLL_INTERVAL": "often"},
		"poll too slow":      {"STREAM_POLL_INTERVAL": "5s"},
		"unknown log format": {"LOG_FORMAT": "xml"},
		"bad redis url":      {"REDIS_URL": "http://localhost"},
		"history too often":  {"HISTORY_INTERVAL": "100ms"},
		"history too rarely": {"HISTORY_INTERVAL": "1h"},
		"no notify config":   {"NOTIFY_CONFIG": "/nonexistent/notify.yaml"},
	}
	for name, env := range cases {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), nil, io.Discard, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
			require.Error(t, err)
		})
	}
}

func TestMTLSRequiresAClientCertificateFromTheCA(t *testing.T) {
	pki := testcerts.New(t)
	r := start(t, map[string]string{
		"REDIS_URL": redistest.Standalone(t), "KEY_PREFIX": redistest.Prefix(t),
		"TLS_CERT_FILE": pki.ServerCertFile, "TLS_KEY_FILE": pki.ServerKeyFile, "TLS_CLIENT_CA_FILE": pki.CAFile,
	})
	health, err := grpc.NewClient(r.healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer health.Close()
	waitServing(t, health, "readiness")

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM([]byte(pki.CA)))
	ref := &pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "missing"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	noCert, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	require.NoError(t, err)
	defer noCert.Close()
	_, err = pb.NewExternalScalerClient(noCert).IsActive(ctx, ref)
	assert.Equal(t, codes.Unavailable, status.Code(err), "the handshake fails without a client certificate")

	cert, err := tls.X509KeyPair([]byte(pki.ClientCert), []byte(pki.ClientKey))
	require.NoError(t, err)
	withCert, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})))
	require.NoError(t, err)
	defer withCert.Close()
	_, err = pb.NewExternalScalerClient(withCert).IsActive(ctx, ref)
	assert.Equal(t, codes.NotFound, status.Code(err), "with a certificate the call reaches the handler")
}

func TestBinaryReapsExpiredReservations(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	ctx := context.Background()
	pool := slots.PoolID{Namespace: "ns", Name: "p"}
	cfg := slots.DefaultPoolConfig()
	cfg.ReservationTTL = 100 * time.Millisecond
	store := declared(t, url, prefix, pool, cfg)
	_, err := store.RegisterPod(ctx, pool, "agent-0", "u0")
	require.NoError(t, err)
	_, err = store.Submit(ctx, pool, slots.TaskSpec{ID: "pa", Type: slots.PlanAndApply})
	require.NoError(t, err)
	m, err := store.Take(ctx, pool, "agent-0", "u0", time.Second, nil)
	require.NoError(t, err)
	_, err = store.Complete(ctx, pool, slots.Result{Task: "pa", Epoch: m.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)

	start(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": prefix, "REAP_INTERVAL": "50ms"})
	require.Eventually(t, func() bool {
		tk, err := store.Task(ctx, pool, "pa")
		return err == nil && tk.State == slots.StateExpired
	}, 20*time.Second, 50*time.Millisecond, "the scaler's reaper expires the reservation")
}

func TestDispatchNamesTheThreeRoles(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"help", []string{"--help"}, "help requested"},
		{"unknown command", []string{"janitr"}, `unknown command "janitr"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := dispatch(context.Background(), tc.args, &out, testutil.Env(nil))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			for _, role := range []string{"scaler [flags]", "scaler janitor [flags]", "scaler declare-pool [flags]"} {
				assert.Contains(t, out.String(), role)
			}
		})
	}
}

func TestStreamsPerClientAreBounded(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	ctx := context.Background()
	declared(t, url, prefix, slots.PoolID{Namespace: "ns", Name: "p"}, slots.DefaultPoolConfig())
	r := start(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": prefix, "MAX_STREAMS_PER_CLIENT": "2"})

	ref := &pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "p"}}
	// Each stream on its own connection: the bound is per client (its IP),
	// not per connection, so new connections do not get around it.
	open := func() (context.CancelFunc, error) {
		conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		sctx, cancel := context.WithCancel(ctx)
		stream, err := pb.NewExternalScalerClient(conn).StreamIsActive(sctx, ref)
		require.NoError(t, err)
		_, err = stream.Recv()
		return cancel, err
	}
	cancel1, err := open()
	require.NoError(t, err)
	cancel2, err := open()
	require.NoError(t, err)
	defer cancel2()
	_, err = open()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a third stream from the same client is refused: %v", err)
	assert.Contains(t, r.logs.String(), "refused a StreamIsActive stream")

	cancel1()
	require.Eventually(t, func() bool {
		cancel, err := open()
		if err == nil {
			cancel()
		}
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "a closed stream frees its place")
}

// declared is a store on url under prefix holding pool, declared with cfg.
func declared(t *testing.T, url, prefix string, pool slots.PoolID, cfg slots.PoolConfig) *slots.Store {
	t.Helper()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := slots.New(context.Background(), rdb, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	_, err = store.DeclarePool(context.Background(), pool, cfg)
	require.NoError(t, err)
	return store
}

// TestBinaryRecordsPoolHistory: the scaler records every declared pool's
// history at --history-interval, for the dashboard's charts.
func TestBinaryRecordsPoolHistory(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	_, err = store.DeclarePool(t.Context(), pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	_, err = store.Submit(t.Context(), pool, slots.TaskSpec{ID: "t1", Type: slots.Plan})
	require.NoError(t, err)

	start(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": prefix, "HISTORY_INTERVAL": "1s"})
	reader := history.NewReader(rdb, prefix, history.DefaultLayout)
	var got []history.Sample
	require.Eventually(t, func() bool {
		got, err = reader.Window(t.Context(), pool, history.Hour, time.Now())
		return err == nil && len(got) >= 2
	}, 15*time.Second, 100*time.Millisecond, "two samples within seconds")
	assert.Equal(t, 1.0, got[len(got)-1].Queued["plan"])
	assert.Equal(t, 1.0, got[len(got)-1].DesiredPods)
}

// scrapeMetrics returns the scaler's /metrics page.
func scrapeMetrics(t *testing.T, r *running) string {
	t.Helper()
	resp, err := http.Get("http://" + r.metricsAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// The binary exports every pool's view and Redis' reachability; a deleted
// pool's series go, the per-pool view's and those of KEDA's last answer.
func TestBinaryExportsPoolsAndForgetsDeletedOnes(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	store, err := slots.New(ctx, rdb, slots.Options{Prefix: prefix})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "ns", Name: "gone"}
	_, err = store.DeclarePool(ctx, pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	_, err = store.Submit(ctx, pool, slots.TaskSpec{ID: "t1", Type: slots.Plan})
	require.NoError(t, err)

	r := start(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": prefix})
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	_, err = pb.NewExternalScalerClient(conn).GetMetricSpec(ctx,
		&pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "gone"}})
	require.NoError(t, err)
	_, err = pb.NewExternalScalerClient(conn).GetMetrics(ctx, &pb.GetMetricsRequest{MetricName: metricName(pool),
		ScaledObjectRef: &pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "gone"}}})
	require.NoError(t, err)

	require.Eventually(t, func() bool { return strings.Contains(scrapeMetrics(t, r), "slotscaler_scaler_redis_up 1") },
		10*time.Second, 50*time.Millisecond)
	page := scrapeMetrics(t, r)
	assert.Contains(t, page, `slotscaler_pool_queued_tasks{pool="ns/gone",type="plan"} 1`)
	assert.Contains(t, page, `slotscaler_scaler_desired_pods{pool="ns/gone"} 1`)

	_, err = store.Cancel(ctx, pool, "t1", "test")
	require.NoError(t, err)
	_, err = store.BeginDeletion(ctx, pool)
	require.NoError(t, err)
	_, err = store.Purge(ctx, pool)
	require.NoError(t, err)
	// The per-pool view is cached for a few seconds: the series go with
	// the first read after the purge.
	require.Eventually(t, func() bool { return !strings.Contains(scrapeMetrics(t, r), `pool="ns/gone"`) },
		20*time.Second, 100*time.Millisecond, "a purged pool's series stay:\n%s", scrapeMetrics(t, r))
}

// The binary delivers the webhooks of its --notify-config, URL and signing
// secret from variables, and exports the delivery metrics.
func TestBinaryDeliversWebhooks(t *testing.T) {
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "ci", Name: "tf"}
	_, err = store.DeclarePool(t.Context(), pool, slots.DefaultPoolConfig())
	require.NoError(t, err)

	got := make(chan notify.Payload, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if notify.Verify([]byte("sig"), r.Header.Get(notify.SignatureHeader), body, time.Minute) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p notify.Payload
		_ = json.Unmarshal(body, &p)
		got <- p
	}))
	defer recv.Close()
	cfgFile := filepath.Join(t.TempDir(), "notify.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
dashboardURL: https://dash.example
webhooks:
- name: ci
  pools: ["ci/*"]
  urlEnv: HOOK_URL
  signingSecretEnv: HOOK_SECRET
`), 0o600))
	r := start(t, map[string]string{"REDIS_URL": url, "KEY_PREFIX": prefix, "NOTIFY_CONFIG": cfgFile,
		"HOOK_URL": recv.URL + "/hook", "HOOK_SECRET": "sig"})
	// The webhook's group exists once its status does.
	require.Eventually(t, func() bool {
		st, err := notify.ReadStatus(t.Context(), rdb, prefix, pool)
		return err == nil && len(st) == 1
	}, 15*time.Second, 50*time.Millisecond)

	_, err = store.RegisterPod(t.Context(), pool, "agent-0", "uid-0")
	require.NoError(t, err)
	_, err = store.Submit(t.Context(), pool, slots.TaskSpec{ID: "t1", Type: slots.Plan})
	require.NoError(t, err)
	msg, err := store.Take(t.Context(), pool, "agent-0", "uid-0", time.Second, nil)
	require.NoError(t, err)
	_, err = store.Complete(t.Context(), pool, slots.Result{Task: "t1", Epoch: msg.Epoch, Outcome: slots.OutcomeFailure, ExitCode: 2})
	require.NoError(t, err)
	select {
	case p := <-got:
		assert.Equal(t, notify.EventFailed, p.Event)
		assert.Equal(t, "t1", p.Task)
		assert.Equal(t, "https://dash.example/pools/ci/tf/tasks/t1", p.URL)
	case <-time.After(15 * time.Second):
		t.Fatal("no delivery")
	}
	require.Eventually(t, func() bool {
		return strings.Contains(scrapeMetrics(t, r), `slotscaler_notify_deliveries_total{pool="ci/tf",result="success",webhook="ci"} 1`)
	}, 5*time.Second, 50*time.Millisecond)
}
