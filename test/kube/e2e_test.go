package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/restmapper"
	"k8s.io/kubernetes/pkg/controller/podautoscaler"
	metricsclient "k8s.io/kubernetes/pkg/controller/podautoscaler/metrics"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var (
	kedaPollOnce sync.Once
	kedaPoll     string
	kedaPollErr  error
)

// buildKedaPoll builds kedapoll, KEDA's client, in the test/keda module:
// KEDA pins Kubernetes libraries this module cannot share, so KEDA's client
// runs as a process. (TestMain built the scaler.)
func buildKedaPoll(t testing.TB) {
	t.Helper()
	kedaPollOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slotscaler-e2e-")
		if err != nil {
			kedaPollErr = err
			return
		}
		kedaPoll = filepath.Join(dir, "kedapoll")
		cmd := exec.Command("go", "build", "-o", kedaPoll, "./cmd/kedapoll")
		cmd.Dir = filepath.Join(repoRoot, "test/keda")
		if out, err := cmd.CombinedOutput(); err != nil {
			kedaPollErr = fmt.Errorf("building kedapoll: %v\n%s", err, out)
		}
	})
	require.NoError(t, kedaPollErr)
}

// startScaler runs the scaler binary on the cluster's Redis.
func (c *cluster) startScaler() string {
	c.t.Helper()
	return c.startScalerWith(c.redis)
}

// startScalerWith runs the scaler binary on the Redis at redisURL.
func (c *cluster) startScalerWith(redisURL string) string {
	c.t.Helper()
	return testutil.StartScaler(c.t, scalerBin, "REDIS_URL="+redisURL, "KEY_PREFIX="+c.prefix, "LOG_LEVEL=warn")
}

// kedaMetrics is the HPA's external metrics source: KEDA's metrics adapter
// answers the HPA with what KEDA's scaler client reads from the scaler.
type kedaMetrics struct {
	t        *testing.T
	mu       sync.Mutex
	metadata map[string]string // namespace -> trigger metadata
	last     map[string]int64  // namespace -> last value (milli)
}

func (k *kedaMetrics) set(ns, md string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.metadata[ns] = md
}

func (k *kedaMetrics) GetExternalMetric(metricName, namespace string, _ labels.Selector) ([]int64, time.Time, error) {
	k.mu.Lock()
	md := k.metadata[namespace]
	k.mu.Unlock()
	pool := strings.TrimPrefix(metricName, "s0-slotscaler-"+namespace+"-")
	out, err := exec.Command(kedaPoll, "-namespace", namespace, "-name", pool, "-metadata", md).Output()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("kedapoll: %w", err)
	}
	var a struct {
		Metric     string
		ValueMilli int64
	}
	if err := json.Unmarshal(out, &a); err != nil {
		return nil, time.Time{}, err
	}
	if a.Metric != metricName {
		return nil, time.Time{}, fmt.Errorf("KEDA names the metric %s, the HPA asks for %s", a.Metric, metricName)
	}
	k.mu.Lock()
	k.last[namespace] = a.ValueMilli
	k.mu.Unlock()
	return []int64{a.ValueMilli}, time.Now(), nil
}

func (k *kedaMetrics) GetResourceMetric(context.Context, corev1.ResourceName, string, labels.Selector, string) (metricsclient.PodMetricsInfo, time.Time, error) {
	return nil, time.Time{}, fmt.Errorf("not served")
}

func (k *kedaMetrics) GetRawMetric(string, string, labels.Selector, labels.Selector) (metricsclient.PodMetricsInfo, time.Time, error) {
	return nil, time.Time{}, fmt.Errorf("not served")
}

func (k *kedaMetrics) GetObjectMetric(string, string, *autoscalingv2.CrossVersionObjectReference, labels.Selector) (int64, time.Time, error) {
	return 0, time.Time{}, fmt.Errorf("not served")
}

// controllerDeps is what a kube-controller-manager controller run in the
// test needs: a context ended with the test, discovery, a REST mapper and
// an informer factory (the caller starts it).
func (c *cluster) controllerDeps() (context.Context, discovery.DiscoveryInterface, apimeta.RESTMapper, informers.SharedInformerFactory) {
	ctx, cancel := context.WithCancel(c.ctx)
	c.t.Cleanup(cancel)
	disc := discovery.NewDiscoveryClientForConfigOrDie(c.admin)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	return ctx, disc, mapper, informers.NewSharedInformerFactory(c.kube, 0)
}

// startHPA runs the real HorizontalPodAutoscaler controller (default 10 %
// tolerance, as kube-controller-manager) against the test API server.
func (c *cluster) startHPA(m *kedaMetrics) {
	c.t.Helper()
	ctx, _, mapper, f := c.controllerDeps()
	hpa := podautoscaler.NewHorizontalController(ctx, c.kube.CoreV1(), c.scales, c.kube.AutoscalingV2(), mapper, m,
		f.Autoscaling().V2().HorizontalPodAutoscalers(), f.Core().V1().Pods(),
		time.Second, 5*time.Minute, 0.1, 5*time.Minute, 30*time.Second)
	f.Start(ctx.Done())
	go hpa.Run(ctx, 1)
}

// keda's HPA for a ScaledObject named like the pool: an External
// AverageValue metric with target 1 (what the scaler's GetMetricSpec says).
func (c *cluster) createHPA(ns, pool string, scaleUpTolerance *resource.Quantity) {
	c.t.Helper()
	var behavior *autoscalingv2.HorizontalPodAutoscalerBehavior
	if scaleUpTolerance != nil {
		behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: &autoscalingv2.HPAScalingRules{Tolerance: scaleUpTolerance}}
	}
	one := int32(1)
	h := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "keda-hpa-" + pool},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "slotscaler.io/v1alpha1", Kind: "AgentPool", Name: pool},
			MinReplicas:    &one,
			MaxReplicas:    40,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ExternalMetricSourceType, External: &autoscalingv2.ExternalMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: "s0-slotscaler-" + ns + "-" + pool,
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"scaledobject.keda.sh/name": pool}}},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewMilliQuantity(1000, resource.DecimalSI)},
			}}},
			Behavior: behavior,
		},
	}
	_, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(c.ctx, h, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(c.t, err)
}

func (c *cluster) hpaStatus(ns, pool string) autoscalingv2.HorizontalPodAutoscalerStatus {
	h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(c.ctx, "keda-hpa-"+pool, metav1.GetOptions{})
	require.NoError(c.t, err)
	return h.Status
}

// fillSlotZero puts a gated plan_and_apply on slot 0 of each of n pods and
// queues one more: the pool needs pod n+1.
func (c *cluster) fillSlotZero(ns, pool string, n int) {
	c.t.Helper()
	for i := range n {
		c.submit(ns, pool, fmt.Sprintf("held-%d", i), slots.PlanAndApply, "gate")
	}
	for i := range n {
		c.waitTask(ns, pool, fmt.Sprintf("held-%d", i), started(slots.PhasePlan), "running")
	}
	c.submit(ns, pool, "waiting", slots.PlanAndApply, "0")
	require.Equal(c.t, slots.StateQueued, c.task(ns, pool, "waiting").State)
}

// TestEndToEndHPAToleranceBand: KEDA's client reads the scaler, the real HPA
// controller turns it into replicas and writes /scale, the janitor and the
// agents follow. A 20-pod pool with every slot 0 busy and a queued
// plan_and_apply needs 21 pods: inside the HPA's default 10 % band it never
// gets them; with scaleUp.tolerance 0 it gets 21; with the scaler's nudge it
// gets 23. Either way the queued plan_and_apply runs on a new pod.
func TestEndToEndHPAToleranceBand(t *testing.T) {
	buildKedaPoll(t)
	c := newCluster(t)
	scaler := c.startScaler()
	m := &kedaMetrics{t: t, metadata: map[string]string{}, last: map[string]int64{}}
	// Not watching HPAs: a janitor that does reads the missing tolerance
	// and turns the nudge on by itself (TestHPAToleranceDetected…), and
	// this test shows the band the nudge is for.
	c.startJanitor(func(o *janitor.Options) { o.IgnoreHPAs = true })
	c.startHPA(m)

	for _, tc := range []struct {
		ns, metadata string
		tolerance    *resource.Quantity
		want         int32
	}{
		{ns: "band", metadata: "scalerAddress=" + scaler + ",pool=pool", want: 21},
		{ns: "nudged", metadata: "scalerAddress=" + scaler + ",pool=pool,nudgeTolerance=true", want: 23},
	} {
		// Not subtests: the cluster's helpers (and its kubelet's goroutines)
		// log to the test that made it, which must outlive them.
		func() {
			t.Logf("pool %s/pool: want %d pods", tc.ns, tc.want)
			m.set(tc.ns, tc.metadata)
			// A lost agent's plan would be requeued ahead of "waiting" and take
			// the new pod: on a loaded machine 2s of silence can happen, and
			// this test is about the HPA, not heartbeats.
			c.newPool(tc.ns, "pool", 20, func(ap *v1alpha1.AgentPool) {
				ap.Spec.HeartbeatTimeout = &metav1.Duration{Duration: 15 * time.Second}
			})
			original := map[string]bool{}
			for _, p := range c.waitActive(tc.ns, "pool", 20) {
				original[p.Name] = true
			}
			c.fillSlotZero(tc.ns, "pool", 20)
			c.createHPA(tc.ns, "pool", nil) // the default 10 % tolerance

			if tc.ns == "band" {
				// KEDA reports 21 pods needed; 21/20 is inside the band.
				require.Eventually(t, func() bool {
					st := c.hpaStatus(tc.ns, "pool")
					return len(st.CurrentMetrics) == 1 && st.CurrentMetrics[0].External.Current.AverageValue.MilliValue() == 21000/20 &&
						st.LastScaleTime == nil && st.DesiredReplicas == 20
				}, 60*time.Second, 100*time.Millisecond, "the HPA sees 21 pods needed and keeps 20")
				time.Sleep(3 * time.Second) // three more HPA passes
				require.EqualValues(t, 20, c.hpaStatus(tc.ns, "pool").DesiredReplicas)
				require.Equal(t, slots.StateQueued, c.task(tc.ns, "pool", "waiting").State, "stuck inside the band")

				// What the chart sets where the cluster supports it.
				zero := resource.MustParse("0")
				h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(tc.ns).Get(c.ctx, "keda-hpa-pool", metav1.GetOptions{})
				require.NoError(t, err)
				h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: &autoscalingv2.HPAScalingRules{Tolerance: &zero}}
				h, err = c.kube.AutoscalingV2().HorizontalPodAutoscalers(tc.ns).Update(c.ctx, h, metav1.UpdateOptions{FieldValidation: "Strict"})
				require.NoError(t, err)
				require.NotNil(t, h.Spec.Behavior.ScaleUp.Tolerance, "the API server keeps scaleUp.tolerance")
			}

			require.Eventually(t, func() bool {
				s, err := c.scales.Scales(tc.ns).Get(c.ctx, agentPoolsGR, "pool", metav1.GetOptions{})
				return err == nil && s.Spec.Replicas == tc.want
			}, 60*time.Second, 100*time.Millisecond, "the HPA writes %d to /scale", tc.want)
			got := c.waitTask(tc.ns, "pool", "waiting", func(tk slots.Task) bool { return tk.State != slots.StateQueued }, "dispatched")
			require.False(t, original[got.Pod], "the queued plan_and_apply runs on a new pod, not %s", got.Pod)
			require.Eventually(t, func() bool {
				return len(c.livePods(tc.ns, "pool")) == int(tc.want)
			}, 60*time.Second, 100*time.Millisecond)
			c.audit.check(t)
			// The held plans end (their slot 0 stays reserved for the apply):
			// twenty gate loops less beside the next pool's.
			// The gate files are shared by task name: closed again before
			// the next pool's held plans start.
			for i := range 20 {
				c.kubelet.open(fmt.Sprintf("held-%d", i), string(slots.PhasePlan))
			}
			for i := range 20 {
				c.waitTask(tc.ns, "pool", fmt.Sprintf("held-%d", i), func(tk slots.Task) bool { return !started(slots.PhasePlan)(tk) }, "ended its plan")
				c.kubelet.close(fmt.Sprintf("held-%d", i), string(slots.PhasePlan))
			}
		}()
	}
}
