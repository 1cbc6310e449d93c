// Package keda is the scaler's contract test: the scaler binary, run as a
// real process against a real redis-server holding slot state written by
// pkg/slots, driven by KEDA's own external scaler client.
package keda

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v2 "k8s.io/api/autoscaling/v2"

	"github.com/slotscaler/slotscaler/internal/hpa"
	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testcerts"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var scalerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "slotscaler-keda-")
	if err != nil {
		panic(err)
	}
	scalerBin = filepath.Join(dir, "scaler")
	// Built in the root module, with its dependency versions: the binary
	// this test runs is the one that ships, not one built against KEDA's pins.
	if err := testutil.BuildBinaries(dir, "./scaler"); err != nil {
		fmt.Fprintln(os.Stderr, "building the scaler:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startScaler runs the scaler binary and waits until it accepts connections.
func startScaler(t *testing.T, env ...string) string {
	t.Helper()
	return testutil.StartScaler(t, scalerBin, env...)
}

type world struct {
	t      *testing.T
	ctx    context.Context
	store  *slots.Store
	pool   slots.PoolID
	prefix string
	n      int
}

func newWorld(t *testing.T, redisURL string) *world {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	w := &world{t: t, ctx: context.Background(), pool: slots.PoolID{Namespace: "team-a", Name: "pool-1"}, prefix: redistest.Prefix(t)}
	w.store, err = slots.New(w.ctx, rdb, slots.Options{Prefix: w.prefix, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	_, err = w.store.DeclarePool(w.ctx, w.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	return w
}

func (w *world) pods(n int) {
	for i := 0; i < n; i++ {
		w.n++
		_, err := w.store.RegisterPod(w.ctx, w.pool, fmt.Sprintf("agent-%d", w.n), fmt.Sprintf("uid-%d", w.n))
		require.NoError(w.t, err)
	}
}

func (w *world) submit(tt slots.TaskType, n int) {
	for i := 0; i < n; i++ {
		w.n++
		_, err := w.store.Submit(w.ctx, w.pool, slots.TaskSpec{ID: fmt.Sprintf("task-%d", w.n), Type: tt})
		require.NoError(w.t, err)
	}
}

func kedaConfig(addr string, md map[string]string, auth map[string]string) *scalersconfig.ScalerConfig {
	meta := map[string]string{"scalerAddress": addr, "pool": "pool-1"}
	for k, v := range md {
		meta[k] = v
	}
	return &scalersconfig.ScalerConfig{
		ScalableObjectName:      "pool-1",
		ScalableObjectNamespace: "team-a",
		ScalableObjectType:      "ScaledObject",
		TriggerType:             "external",
		TriggerMetadata:         meta,
		AuthParams:              auth,
		GlobalHTTPTimeout:       3 * time.Second,
		MetricType:              v2.AverageValueMetricType,
	}
}

// poll does what KEDA does on each cycle and returns the metric target,
// the value, activity, and the replicas an HPA with tolerance would set.
func poll(t *testing.T, cfg *scalersconfig.ScalerConfig, current int, tolerance float64) (int, bool) {
	t.Helper()
	s, err := scalers.NewExternalScaler(cfg)
	require.NoError(t, err)
	defer s.Close(context.Background())
	specs := s.GetMetricSpecForScaling(context.Background())
	require.Len(t, specs, 1)
	ext := specs[0].External
	require.Equal(t, "s0-slotscaler-team-a-pool-1", ext.Metric.Name)
	require.Equal(t, v2.AverageValueMetricType, ext.Target.Type)
	require.Equal(t, int64(1000), ext.Target.AverageValue.MilliValue())
	values, active, err := s.GetMetricsAndActivity(context.Background(), ext.Metric.Name)
	require.NoError(t, err)
	require.Len(t, values, 1)
	return int(hpa.ExternalPerPodReplicas(int32(current), values[0].Value.MilliValue(), ext.Target.AverageValue.MilliValue(),
		hpa.Symmetric(tolerance))), active
}

func TestKEDAClientReadsDesiredPodsOverTCP(t *testing.T) {
	url := redistest.Standalone(t)
	w := newWorld(t, url)
	addr := startScaler(t, "REDIS_URL="+url, "KEY_PREFIX="+w.prefix)
	cfg := kedaConfig(addr, nil, nil)

	replicas, active := poll(t, cfg, 0, 0.1)
	assert.Equal(t, 0, replicas)
	assert.False(t, active, "an idle pool is inactive: KEDA may scale it to zero")

	w.submit(slots.Plan, 7)
	replicas, active = poll(t, cfg, 0, 0.1)
	assert.True(t, active)
	assert.Equal(t, 3, replicas, "7 plans need 3 pods of 3 slots")
}

// A 20-pod pool whose slot 0s are all busy and a plan_and_apply waiting:
// 21/20 is inside the HPA's default 10% band, so without tolerance 0 or the
// nudge the 21st pod never comes.
func TestQueuedApplyOnTwentyPodPoolGetsItsPod(t *testing.T) {
	url := redistest.Standalone(t)
	w := newWorld(t, url)
	w.pods(20)
	w.submit(slots.Plan, 40)
	w.submit(slots.PlanAndApply, 21)
	addr := startScaler(t, "REDIS_URL="+url, "KEY_PREFIX="+w.prefix)

	stuck, _ := poll(t, kedaConfig(addr, nil, nil), 20, 0.1)
	assert.Equal(t, 20, stuck, "the failure mode: the HPA ignores 21 of 20")
	withTolerance0, _ := poll(t, kedaConfig(addr, nil, nil), 20, 0)
	assert.Equal(t, 21, withTolerance0, "behavior.scaleUp.tolerance: 0")
	nudged, _ := poll(t, kedaConfig(addr, map[string]string{"nudgeTolerance": "true"}, nil), 20, 0.1)
	assert.Equal(t, 23, nudged, "the nudge: the smallest count outside the band")
}

func TestKEDAClientOverMTLS(t *testing.T) {
	url := redistest.Standalone(t)
	w := newWorld(t, url)
	w.submit(slots.PlanAndApply, 2)
	pki := testcerts.New(t)
	addr := startScaler(t, "REDIS_URL="+url, "KEY_PREFIX="+w.prefix,
		"TLS_CERT_FILE="+pki.ServerCertFile, "TLS_KEY_FILE="+pki.ServerKeyFile, "TLS_CLIENT_CA_FILE="+pki.CAFile)
	// localhost, not 127.0.0.1: KEDA verifies the server name.
	addr = "localhost" + addr[len("127.0.0.1"):]
	auth := map[string]string{"caCert": pki.CA, "tlsClientCert": pki.ClientCert, "tlsClientKey": pki.ClientKey}
	replicas, active := poll(t, kedaConfig(addr, nil, auth), 0, 0.1)
	assert.True(t, active)
	assert.Equal(t, 2, replicas)

	s, err := scalers.NewExternalScaler(kedaConfig(addr, map[string]string{"enableTLS": "true"}, map[string]string{"caCert": pki.CA}))
	require.NoError(t, err)
	_, _, err = s.GetMetricsAndActivity(context.Background(), "s0-slotscaler-team-a-pool-1")
	require.Error(t, err, "no client certificate: refused")
}

func TestErrorsReachKEDAWithTheirCodes(t *testing.T) {
	srv := redistest.Start(t)
	w := newWorld(t, srv.URL())
	addr := startScaler(t, "REDIS_URL="+srv.URL(), "KEY_PREFIX="+w.prefix)
	call := func(md map[string]string, ns string) error {
		cfg := kedaConfig(addr, md, nil)
		if ns == "" {
			ns = "team-a"
		}
		cfg.ScalableObjectNamespace = ns
		s, err := scalers.NewExternalScaler(cfg)
		require.NoError(t, err)
		_, _, err = s.GetMetricsAndActivity(context.Background(), "s0-slotscaler-"+ns+"-pool-1")
		return err
	}
	err := call(map[string]string{"warmPods": "-3"}, "")
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, err.Error(), "warmPods")
	assert.Equal(t, codes.NotFound, status.Code(call(nil, "team-b")))
	srv.Kill(t)
	assert.Equal(t, codes.Unavailable, status.Code(call(nil, "")))
}

func TestPushScalerSendsActivityWhenWorkAppears(t *testing.T) {
	url := redistest.Standalone(t)
	w := newWorld(t, url)
	addr := startScaler(t, "REDIS_URL="+url, "KEY_PREFIX="+w.prefix)
	ps, err := scalers.NewExternalPushScaler(kedaConfig(addr, nil, nil))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	active := make(chan bool, 10)
	done := make(chan struct{})
	go func() { ps.Run(ctx, active); close(done) }()
	select {
	case v := <-active:
		assert.False(t, v)
	case <-time.After(10 * time.Second):
		t.Fatal("no initial activity from the push stream")
	}
	w.submit(slots.Plan, 1)
	start := time.Now()
	select {
	case v := <-active:
		assert.True(t, v)
		t.Logf("activity reached KEDA %v after the submit (the scaler polls every 500ms)", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("new work never reached KEDA")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the push scaler did not stop with its context")
	}
}
