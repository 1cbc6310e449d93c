package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestHPAReplicasFollowTheControllersMaths(t *testing.T) {
	now := time.Now()
	base := hpaInput{SpecReplicas: 20, StatusReplicas: 20, TargetMilli: 1000, Min: 1, Max: 100,
		ToleranceUp: 0.1, ToleranceDown: 0.1, Now: now}
	nudged := int64(capacity.NudgeForTolerance(20, 21, 0, capacity.DefaultTolerance))
	cases := map[string]struct {
		mutate func(*hpaInput)
		want   int32
	}{
		"tolerance 0 adds the 21st pod":                     {func(in *hpaInput) { in.MetricMilli, in.ToleranceUp = 21000, 0 }, 21},
		"the 10 % band keeps 20 pods when 21 are needed":    {func(in *hpaInput) { in.MetricMilli = 21000 }, 20},
		"22 of 20 is still inside the band":                 {func(in *hpaInput) { in.MetricMilli = 22000 }, 20},
		"the scaler's nudge leaves the band":                {func(in *hpaInput) { in.MetricMilli = nudged * 1000 }, int32(nudged)},
		"a small scale-down inside the band keeps the pods": {func(in *hpaInput) { in.MetricMilli = 19000 }, 20},
		"a scale-down outside the band goes through":        {func(in *hpaInput) { in.MetricMilli = 10000 }, 10},
		"clamped to max":                      {func(in *hpaInput) { in.MetricMilli, in.Max = 50000, 30 }, 30},
		"clamped to min when no work is left": {func(in *hpaInput) { in.MetricMilli, in.Min = 0, 1 }, 1},
		"spec zero is KEDA's: the HPA does not scale": {func(in *hpaInput) {
			in.SpecReplicas, in.StatusReplicas, in.MetricMilli = 0, 0, 5000
		}, 0},
		"spec above max comes down without metrics": {func(in *hpaInput) { in.SpecReplicas, in.Max = 40, 30 }, 30},
		"status zero (pods not counted yet) asks for the metric": {func(in *hpaInput) {
			in.SpecReplicas, in.StatusReplicas, in.MetricMilli = 1, 0, 3000
		}, 3},
		"status zero and no work stays at min": {func(in *hpaInput) {
			in.SpecReplicas, in.StatusReplicas, in.MetricMilli = 1, 0, 0
		}, 1},
		"inside the band the proposal is status.replicas, not spec": {func(in *hpaInput) {
			in.SpecReplicas, in.StatusReplicas, in.MetricMilli = 5, 4, 4000
		}, 4},
		"a scale-down waits for the stabilization window": {func(in *hpaInput) {
			in.MetricMilli, in.DownWindow = 2000, 10*time.Second
			in.History = []recommendation{{20, now.Add(-5 * time.Second)}}
		}, 20},
		"recommendations older than the window no longer hold pods": {func(in *hpaInput) {
			in.MetricMilli, in.DownWindow = 2000, 10*time.Second
			in.History = []recommendation{{20, now.Add(-15 * time.Second)}}
		}, 2},
		"the first sync remembers the current count": {func(in *hpaInput) {
			in.MetricMilli, in.DownWindow = 2000, 10*time.Second
		}, 20},
		"a scale-up is never held by the window": {func(in *hpaInput) {
			in.MetricMilli, in.ToleranceUp, in.DownWindow = 25000, 0, 10*time.Second
			in.History = []recommendation{{3, now.Add(-time.Second)}}
		}, 25},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			in := base
			tc.mutate(&in)
			got, _ := hpaReplicas(in)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestHPAHistoryKeepsOnlyTheWindow(t *testing.T) {
	now := time.Now()
	_, h := hpaReplicas(hpaInput{SpecReplicas: 4, StatusReplicas: 4, MetricMilli: 2000, TargetMilli: 1000, Min: 1, Max: 10,
		ToleranceDown: 0.1, DownWindow: 10 * time.Second, Now: now,
		History: []recommendation{{9, now.Add(-time.Minute)}, {5, now.Add(-time.Second)}}})
	assert.Equal(t, []recommendation{{5, now.Add(-time.Second)}, {2, now}}, h)
}

func TestLoadProfileAlternatesBusyAndQuiet(t *testing.T) {
	p := PoolProfile{Offset: 10 * time.Second, Busy: 20 * time.Second, Quiet: 40 * time.Second}
	cases := map[string]struct {
		at   time.Duration
		busy bool
		left time.Duration
	}{
		"before the offset":     {5 * time.Second, false, 5 * time.Second},
		"start of busy":         {10 * time.Second, true, 20 * time.Second},
		"end of busy":           {29 * time.Second, true, time.Second},
		"quiet":                 {30 * time.Second, false, 40 * time.Second},
		"busy again next cycle": {75 * time.Second, true, 15 * time.Second},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			busy, left := p.busyAt(tc.at)
			assert.Equal(t, tc.busy, busy)
			assert.Equal(t, tc.left, left)
		})
	}
}

func TestSettingsHaveEnvironmentTwins(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://r:6379/0", "DASHBOARD_ADDRESS": "127.0.0.1:9999", "DURATION": "70s", "VERBOSE": "true"}
	cfg, err := parseConfig([]string{"--key-prefix", "x"}, io.Discard, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	assert.Equal(t, "redis://r:6379/0", cfg.RedisURL)
	assert.Equal(t, "127.0.0.1:9999", cfg.DashboardAddress)
	assert.Equal(t, 70*time.Second, cfg.Duration)
	assert.True(t, cfg.Verbose)
	assert.Equal(t, "x", cfg.KeyPrefix)

	_, err = parseConfig([]string{"--dashboard-address", "nope"}, io.Discard, func(string) (string, bool) { return "", false })
	assert.ErrorContains(t, err, "--dashboard-address")
}

func TestMissingBinariesNameMakeBinaries(t *testing.T) {
	_, err := findBinaries(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make binaries")
}

func TestFakeAPIDeletesPodsGracefullyAndHonoursPreconditions(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI()
	pods := api.Kube.CoreV1().Pods("ns")
	created, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, created.UID)
	require.False(t, created.CreationTimestamp.IsZero())
	require.NotEmpty(t, created.ResourceVersion)

	other := types.UID("someone-else")
	err = pods.Delete(ctx, "p", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &other}})
	assert.True(t, apierrors.IsConflict(err), "a wrong UID precondition is a conflict, got %v", err)

	uid := created.UID
	require.NoError(t, pods.Delete(ctx, "p", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}))
	terminating, err := pods.Get(ctx, "p", metav1.GetOptions{})
	require.NoError(t, err, "a running pod stays until the kubelet confirms")
	require.NotNil(t, terminating.DeletionTimestamp)

	zero := int64(0)
	require.NoError(t, pods.Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	_, err = pods.Get(ctx, "p", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))
}

func TestFakeAPIKeepsSpecAndStatusApart(t *testing.T) {
	ctx := context.Background()
	api := newFakeAPI()
	pools := api.Dyn.Resource(v1alpha1.GroupVersionResource).Namespace("ns")
	obj, err := agentPool(PoolProfile{Namespace: "ns", Name: "p"}, defaultProfile(), Config{LogFormat: "text"})
	require.NoError(t, err)
	stale, err := pools.Create(ctx, obj, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, stale.GetUID())

	// The HPA writes spec.replicas (with a status it must not change).
	fresh := stale.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(fresh.Object, int64(3), "spec", "replicas"))
	require.NoError(t, unstructured.SetNestedField(fresh.Object, int64(99), "status", "replicas"))
	fresh, err = pools.Update(ctx, fresh, metav1.UpdateOptions{})
	require.NoError(t, err)
	st, _, _ := unstructured.NestedInt64(fresh.Object, "status", "replicas")
	assert.Zero(t, st, "an update leaves status alone")

	// A status write from the stale copy is refused…
	require.NoError(t, unstructured.SetNestedField(stale.Object, int64(2), "status", "replicas"))
	_, err = pools.UpdateStatus(ctx, stale, metav1.UpdateOptions{})
	assert.True(t, apierrors.IsConflict(err), "a stale resourceVersion is a conflict, got %v", err)

	// …and one from the fresh copy changes only status.
	require.NoError(t, unstructured.SetNestedField(fresh.Object, int64(2), "status", "replicas"))
	require.NoError(t, unstructured.SetNestedField(fresh.Object, int64(7), "spec", "replicas"))
	got, err := pools.UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
	require.NoError(t, err)
	sp, _, _ := unstructured.NestedInt64(got.Object, "spec", "replicas")
	st, _, _ = unstructured.NestedInt64(got.Object, "status", "replicas")
	assert.Equal(t, int64(3), sp)
	assert.Equal(t, int64(2), st)
}

func TestGuardReportsADeletedPodThatHoldsWork(t *testing.T) {
	ctx := context.Background()
	conn, err := redisconn.Open(ctx, "", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	store, err := slots.New(ctx, conn.Client, slots.Options{Prefix: "guard"})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "ns", Name: "p"}
	cfg := slots.DefaultPoolConfig()
	cfg.Managed = true
	_, err = store.DeclarePool(ctx, pool, cfg)
	require.NoError(t, err)
	for _, pod := range []string{"busy", "idle"} {
		require.NoError(t, store.ExpectPod(ctx, pool, pod, pod+"-uid"))
		_, err := store.RegisterPod(ctx, pool, pod, pod+"-uid")
		require.NoError(t, err)
		if pod == "busy" {
			res, err := store.Submit(ctx, pool, slots.TaskSpec{ID: "t1", Type: slots.PlanAndApply})
			require.NoError(t, err)
			require.Equal(t, "busy", res.Pod)
		}
	}

	var out bytes.Buffer
	k := newKubelet(nil, store, "", &console{w: &out}, slog.New(slog.DiscardHandler), time.Second)
	podOf := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name + "-uid"),
			Labels: map[string]string{janitor.LabelPool: "p"}}}
	}
	k.guard(ctx, podOf("idle"))
	assert.Zero(t, k.busyRemoved.Load(), "an idle pod may go")
	k.guard(ctx, podOf("busy"))
	assert.Equal(t, int64(1), k.busyRemoved.Load())
	assert.Equal(t, int64(2), k.checked.Load())
	assert.Contains(t, out.String(), "BUSY POD REMOVED: ns/busy")
	assert.Contains(t, out.String(), "t1")
}

// TestDemoScalesAPoolUpAndDownWithoutRemovingBusyPods runs the whole demo
// (real scaler, dashboard and agent binaries, the janitor, the fake kubelet,
// KEDA/HPA maths, load) on a fast profile against an embedded miniredis.
func TestDemoScalesAPoolUpAndDownWithoutRemovingBusyPods(t *testing.T) {
	bins := buildBinaries(t)
	addr, err := freeLoopback()
	require.NoError(t, err)
	cfg := Config{Redis: config.Redis{KeyPrefix: "demotest"}, BinDir: bins, DashboardAddress: addr, LogFormat: "text", Profile: fastProfile()}
	out := &testutil.SyncBuffer{}
	d := newDemo(cfg, out)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var res result
	var runErr error
	go func() {
		defer close(done)
		res, runErr = d.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() || os.Getenv("DEMO_TEST_SHOW") != "" {
			t.Logf("demo output:\n%s", out.String())
		}
	})
	select {
	case <-d.ready:
	case <-done:
		t.Fatalf("the demo ended before it was ready: %v", runErr)
	case <-time.After(2 * time.Minute):
		t.Fatal("the demo was not ready within 2 minutes")
	}
	assert.Contains(t, out.String(), d.dashboardURL)

	// Pool A scales up under load to at least 2 live pods, then back down
	// to at most one once the load stops.
	peak, downAfterPeak := 0, false
	require.Eventually(t, func() bool {
		n := livePods(t, d.api, "team-a", "pool-a")
		peak = max(peak, n)
		if peak >= 2 && n <= 1 {
			downAfterPeak = true
		}
		return downAfterPeak
	}, 3*time.Minute, 100*time.Millisecond, "pool-a never scaled to ≥2 pods and back down (peak %d)", peak)

	// The dashboard asks for the printed token, and its login works in a
	// browser on the demo's plain http:// (a cookie jar, as a browser's,
	// sends no Secure cookie there): then it serves the overview and the
	// pool pages.
	resp, err := http.Get(d.dashboardURL)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "read auth is on in the demo")
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	browser := &http.Client{Jar: jar}
	resp, err = browser.PostForm(d.dashboardURL+"login", url.Values{"token": {d.apiToken}, "next": {"/"}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the login leads to the overview")
	for _, page := range []string{"", "pools/team-a/pool-a", "pools/team-b/pool-b"} {
		resp, err := browser.Get(d.dashboardURL + page)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "GET /%s", page)
		if page != "" {
			assert.Contains(t, string(body), strings.Split(page, "/")[2])
			// The scaler records every pool every 2 s: the chart has filled.
			assert.Regexp(t, `data-testid="chart" data-window="1h" data-samples="[1-9][0-9]*"`, string(body), "GET /%s: a chart with samples", page)
		} else {
			assert.Contains(t, string(body), `data-testid="sparkline"`, "the overview's sparklines")
		}
	}

	// One plan_and_apply waits for you: the approvals page lists it, and
	// approving it in the browser (the page's form post, as the
	// logged-in token "you") runs its apply.
	var yoursID string
	select {
	case yoursID = <-d.yours.last:
	case <-time.After(2 * time.Minute):
		t.Fatal("no task waited for your approval within 2 minutes")
	}
	resp, err = browser.Get(d.dashboardURL + "approvals")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), yoursID, "the approvals page lists the task that waits for you")
	resp, err = browser.PostForm(d.dashboardURL+"pools/team-a/pool-a/tasks/"+yoursID+"/approve", url.Values{"note": {"looks right"}})
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "approving in the browser leads to the task page: %s", body)
	require.Eventually(t, func() bool {
		return strings.Contains(out.String(), yoursID+" succeeded by you")
	}, time.Minute, 100*time.Millisecond, "the approved task's apply did not succeed")
	task, err := d.yours.store.Task(ctx, d.yours.pool, yoursID)
	require.NoError(t, err)
	assert.Equal(t, "looks right", task.Note)
	assert.Equal(t, slots.PhaseApply, task.Phase, "the apply ran")

	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the demo did not stop within a minute")
	}
	require.NoError(t, runErr)
	assert.Zero(t, res.BusyRemoved, "the guard saw a busy pod removed")
	assert.Positive(t, res.Checked, "no pod deletion reached the guard: nothing scaled down?")
	assert.GreaterOrEqual(t, res.Peak["team-a/pool-a"], 2)
	assert.Positive(t, res.Outcomes["team-a/pool-a"]["succeeded"], "no task succeeded: %v", res.Outcomes)
	for pool, outcomes := range res.Outcomes {
		for how := range outcomes {
			assert.NotContains(t, how, "agent-lost", "%s: work lost with its pod", pool)
			assert.NotContains(t, how, "reservation-lost", "%s: a reservation lost with its pod", pool)
		}
	}
	assert.Contains(t, out.String(), "team-a/pool-a  metric")
	assert.Contains(t, out.String(), "no busy pod was removed")
	assert.Zero(t, d.kubelet.running(), "agents still running after the demo stopped")
}

// fastProfile tells the demo's story in about 20 seconds.
func fastProfile() Profile {
	p := defaultProfile()
	p.Pools = []PoolProfile{
		{Namespace: "team-a", Name: "pool-a", MaxReplicas: 6, Busy: 8 * time.Second, Quiet: time.Hour, Rate: 4, ApplyRatio: 0.3},
		{Namespace: "team-b", Name: "pool-b", MaxReplicas: 4, Nudge: true, Offset: 2 * time.Second, Busy: 5 * time.Second, Quiet: time.Hour, Rate: 1, ApplyRatio: 0.3},
	}
	p.SyncInterval = 250 * time.Millisecond
	p.PollInterval = 250 * time.Millisecond
	p.Cooldown = 3 * time.Second
	p.DownWindow = 2 * time.Second
	p.StatusEvery = 2 * time.Second
	p.StopGrace = 5 * time.Second
	p.IdleFor = time.Second
	// Heartbeats keep the default profile's generous timeout: a test
	// machine busy with other packages must not make agents look lost.
	p.TaskMin, p.TaskMax = 500*time.Millisecond, 1500*time.Millisecond
	p.ApproveMin, p.ApproveMax = 200*time.Millisecond, 600*time.Millisecond
	return p
}

// buildBinaries builds the shipped binaries as `make binaries` does, into a
// temporary folder.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "the integration test builds the binaries with the go command")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", dir+string(filepath.Separator), "./scaler", "./agent", "./cmd/slotscaler-supervisor", "./dashboard")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the binaries:\n%s", out)
	return dir
}

func livePods(t *testing.T, api *fakeAPI, ns, pool string) int {
	t.Helper()
	pods, err := api.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: janitor.LabelPool + "=" + pool})
	require.NoError(t, err)
	n := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
			n++
		}
	}
	return n
}
