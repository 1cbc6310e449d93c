package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

type fixture struct {
	t      testing.TB
	ctx    context.Context
	store  *slots.Store
	client pb.ExternalScalerClient
	pool   slots.PoolID
	n      int
	h      *handler
	logs   *testutil.SyncBuffer // the handler's log
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFixture serves the scaler over bufconn against a real redis-server
// (url) holding one declared pool.
func newFixture(t testing.TB, url string, nudge bool) *fixture {
	t.Helper()
	ctx := context.Background()
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := slots.New(ctx, rdb, slots.Options{Prefix: redistest.Prefix(t), Logger: quiet()})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "team-a", Name: "pool-1"}
	_, err = store.DeclarePool(ctx, pool, slots.DefaultPoolConfig())
	require.NoError(t, err)

	logs := &testutil.SyncBuffer{}
	h := &handler{store: store, log: slog.New(slog.NewTextHandler(logs, nil)), metrics: newMetrics(), nudge: nudge,
		streamPoll: 50 * time.Millisecond, redisTimeout: 2 * time.Second, configs: slots.NewConfigCache(store.Pool, time.Minute)}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterExternalScalerServer(srv, h)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{t: t, ctx: ctx, store: store, client: pb.NewExternalScalerClient(conn), pool: pool, h: h, logs: logs}
}

func (f *fixture) ref(md map[string]string) *pb.ScaledObjectRef {
	if md == nil {
		md = map[string]string{"pool": f.pool.Name}
	}
	return &pb.ScaledObjectRef{Name: "so", Namespace: f.pool.Namespace, ScalerMetadata: md}
}

func (f *fixture) pods(n int) {
	f.t.Helper()
	for i := 0; i < n; i++ {
		f.n++
		_, err := f.store.RegisterPod(f.ctx, f.pool, fmt.Sprintf("agent-%d", f.n), fmt.Sprintf("uid-%d", f.n))
		require.NoError(f.t, err)
	}
}

func (f *fixture) submit(tt slots.TaskType, n int) {
	f.t.Helper()
	for i := 0; i < n; i++ {
		f.n++
		_, err := f.store.Submit(f.ctx, f.pool, slots.TaskSpec{ID: fmt.Sprintf("task-%d", f.n), Type: tt})
		require.NoError(f.t, err)
	}
}

func (f *fixture) desired(md map[string]string) int64 {
	f.t.Helper()
	ref := f.ref(md)
	resp, err := f.client.GetMetrics(f.ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: metricName(f.pool)})
	require.NoError(f.t, err)
	require.Len(f.t, resp.MetricValues, 1)
	v := resp.MetricValues[0]
	require.Equal(f.t, float64(v.MetricValue), v.MetricValueFloat)
	return v.MetricValue
}

func (f *fixture) active() bool {
	f.t.Helper()
	resp, err := f.client.IsActive(f.ctx, f.ref(nil))
	require.NoError(f.t, err)
	return resp.Result
}

func TestGetMetricSpecIsOneMetricPerPoolWithTargetOne(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	resp, err := f.client.GetMetricSpec(f.ctx, f.ref(nil))
	require.NoError(t, err)
	require.Len(t, resp.MetricSpecs, 1)
	s := resp.MetricSpecs[0]
	assert.Equal(t, "slotscaler-team-a-pool-1", s.MetricName)
	assert.NotContains(t, s.MetricName, "/")
	assert.Equal(t, int64(1), s.TargetSize)
	assert.Equal(t, 1.0, s.TargetSizeFloat)
}

func TestGetMetricsReportsDesiredPods(t *testing.T) {
	cases := map[string]struct {
		pods   int
		plans  int
		applys int
		warm   string
		want   int64
		active bool
	}{
		"empty pool scales to zero":                         {want: 0},
		"warm buffer alone does not keep a pool alive":      {warm: "2", want: 0},
		"plans fill pods three at a time":                   {plans: 7, want: 3, active: true},
		"plan_and_apply needs a slot 0 each":                {applys: 3, want: 3, active: true},
		"busy pods stay and queued work adds pods":          {pods: 2, plans: 8, want: 3, active: true},
		"slot 0s taken by plans: the apply needs a new pod": {pods: 2, plans: 6, applys: 1, want: 3, active: true},
		"warm pods are added while active":                  {pods: 1, plans: 1, warm: "2", want: 3, active: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, redistest.Standalone(t), false)
			f.pods(tc.pods)
			f.submit(slots.Plan, tc.plans)
			f.submit(slots.PlanAndApply, tc.applys)
			md := map[string]string{"pool": f.pool.Name}
			if tc.warm != "" {
				md["warmPods"] = tc.warm
			}
			assert.Equal(t, tc.want, f.desired(md))
			resp, err := f.client.IsActive(f.ctx, f.ref(md))
			require.NoError(t, err)
			assert.Equal(t, tc.active, resp.Result)
		})
	}
}

// The scaler logs why at info once per change of its answer, not on every
// poll, and its binding gauge names what set the count.
func TestDesiredPodsAreExplainedOncePerChange(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(f.logs.String(), "\n") {
			if strings.Contains(l, `msg="desired pods"`) {
				out = append(out, l)
			}
		}
		return out
	}
	binding := func(b string) float64 {
		return promtestutil.ToFloat64(f.h.metrics.binding.WithLabelValues(f.pool.String(), b))
	}

	assert.Equal(t, int64(0), f.desired(nil))
	assert.Equal(t, int64(0), f.desired(nil))
	require.Len(t, lines(), 1, "the first answer is logged, the same one again is not")
	assert.Contains(t, lines()[0], `binding=idle why="Nothing is running, reserved or queued: 0 pods."`)
	assert.Equal(t, 1.0, binding("idle"))

	f.pods(2)
	f.submit(slots.PlanAndApply, 2) // the slot 0 of each pod
	f.submit(slots.Plan, 4)         // their plan-only slots
	assert.Equal(t, int64(2), f.desired(nil))
	f.submit(slots.PlanAndApply, 3) // queued: no slot 0 is left
	assert.Equal(t, int64(5), f.desired(nil))
	assert.Equal(t, int64(5), f.desired(nil))
	got := lines()
	require.Len(t, got, 3, "one line per change: %s", f.logs.String())
	assert.Contains(t, got[1], `binding=busy why="2 pods with running or reserved work stay."`)
	assert.Contains(t, got[2], `desired=5 reported=5 binding=slot-class why="3 queued plan_and_apply can use only 1 of each pod's 3 slots: 3 new pods. 2 busy + 3 new = 5 pods."`)
	assert.Equal(t, 1.0, binding("slot-class"))
	for _, b := range []string{"idle", "busy", "slots", "min", "max"} {
		assert.Equal(t, 0.0, binding(b), b)
	}
}

func TestNudgeMovesScaleUpOutOfToleranceBandOnly(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	f.pods(20)
	f.submit(slots.Plan, 40)         // every plan-only slot busy
	f.submit(slots.PlanAndApply, 21) // 20 slot 0s, one apply waits
	assert.Equal(t, int64(21), f.desired(nil), "without the nudge: 21 of 20, inside the 10% band")
	assert.Equal(t, int64(23), f.desired(map[string]string{"pool": f.pool.Name, "nudgeTolerance": "true"}),
		"nudged to the smallest count outside the band")
	g := newFixture(t, redistest.Standalone(t), true)
	g.pods(20)
	assert.Equal(t, int64(0), g.desired(nil), "a scale-down is never nudged")
}

func TestBadMetadataIsInvalidArgumentNamingTheKey(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	cases := map[string]struct {
		md  map[string]string
		key string
	}{
		"missing pool":       {map[string]string{}, "pool"},
		"invalid pool name":  {map[string]string{"pool": "Pool_1"}, "pool"},
		"negative warm pods": {map[string]string{"pool": "pool-1", "warmPods": "-1"}, "warmPods"},
		"non-numeric warm":   {map[string]string{"pool": "pool-1", "warmPods": "many"}, "warmPods"},
		"bad nudge switch":   {map[string]string{"pool": "pool-1", "nudgeTolerance": "maybe"}, "nudgeTolerance"},
		"negative tolerance": {map[string]string{"pool": "pool-1", "tolerance": "-0.1"}, "tolerance"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for method, call := range map[string]func() error{
				"GetMetricSpec": func() error { _, err := f.client.GetMetricSpec(f.ctx, f.ref(tc.md)); return err },
				"GetMetrics": func() error {
					_, err := f.client.GetMetrics(f.ctx, &pb.GetMetricsRequest{ScaledObjectRef: f.ref(tc.md)})
					return err
				},
				"IsActive": func() error { _, err := f.client.IsActive(f.ctx, f.ref(tc.md)); return err },
			} {
				err := call()
				assert.Equal(t, codes.InvalidArgument, status.Code(err), method)
				assert.Contains(t, status.Convert(err).Message(), tc.key, method)
			}
		})
	}
}

func TestUnknownPoolIsNotFound(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	ref := &pb.ScaledObjectRef{Namespace: "other-ns", ScalerMetadata: map[string]string{"pool": f.pool.Name}}
	_, err := f.client.GetMetrics(f.ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref})
	assert.Equal(t, codes.NotFound, status.Code(err))
	_, err = f.client.IsActive(f.ctx, ref)
	assert.Equal(t, codes.NotFound, status.Code(err))
}

func TestRedisDownIsUnavailableNeverZero(t *testing.T) {
	srv := redistest.Start(t)
	f := newFixture(t, srv.URL(), false)
	f.submit(slots.Plan, 1)
	require.True(t, f.active())
	srv.Kill(t)
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second) // the caller's deadline, beyond the scaler's own
	defer cancel()
	_, err := f.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: f.ref(nil)})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	_, err = f.client.IsActive(ctx, f.ref(nil))
	assert.Equal(t, codes.Unavailable, status.Code(err))
}

func TestStreamIsActiveSendsTrueWhenWorkAppears(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	ctx, cancel := context.WithCancel(f.ctx)
	stream, err := f.client.StreamIsActive(ctx, f.ref(nil))
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	assert.False(t, first.Result, "an idle pool starts inactive")
	f.submit(slots.Plan, 1)
	// The stream re-reads the pool every streamPoll (≤ 1s, enforced by
	// config validation); no wall-clock assertion here, machines are shared.
	next, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, next.Result)
	cancel()
	_, err = stream.Recv()
	assert.Equal(t, codes.Canceled, status.Code(err))
}

// What the janitor found on the pool's HPA decides the nudge, whatever the
// trigger says; the trigger decides only without a finding.
func TestTheJanitorsHPAFindingDecidesTheNudge(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), false)
	f.pods(20)
	f.submit(slots.Plan, 40)         // every plan-only slot busy
	f.submit(slots.PlanAndApply, 21) // 20 slot 0s, one apply waits: 21 needed
	find := func(tol slots.HPATolerance) {
		t.Helper()
		cfg := slots.DefaultPoolConfig()
		cfg.HPATolerance = tol
		_, err := f.store.DeclarePool(f.ctx, f.pool, cfg)
		require.NoError(t, err)
	}
	md := func(kv ...string) map[string]string {
		m := map[string]string{"pool": f.pool.Name}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		found slots.HPATolerance
		md    map[string]string
		want  int64
	}{
		{"no finding: the trigger's false", slots.HPATolerance{}, md("nudgeTolerance", "false"), 21},
		{"no finding: the trigger's true", slots.HPATolerance{}, md("nudgeTolerance", "true"), 23},
		{"no scaleUp.tolerance on the HPA: nudged although the trigger says false", slots.HPATolerance{Known: true}, md("nudgeTolerance", "false"), 23},
		{"no scaleUp.tolerance: past the trigger's tolerance", slots.HPATolerance{Known: true}, md("tolerance", "0.2"), 25},
		{"the HPA's own tolerance", slots.HPATolerance{Known: true, Set: true, Value: 0.05}, md("nudgeTolerance", "false", "tolerance", "0.2"), 22},
		{"tolerance 0 honoured: no nudge although the trigger says true", slots.HPATolerance{Known: true, Set: true}, md("nudgeTolerance", "true"), 21},
	} {
		find(tc.found)
		assert.Equal(t, tc.want, f.desired(tc.md), tc.name)
	}
}
