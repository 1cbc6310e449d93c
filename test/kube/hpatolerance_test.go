package kube

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// TestHPAToleranceDetectedTurnsTheNudgeOnAndOff: the janitor (the chart's
// ServiceAccount and RBAC) reads the HPA that targets a pool. Without
// behavior.scaleUp.tolerance (what a cluster before 1.35 keeps of KEDA's
// HPA) the pool gets HPAToleranceHonoured False and a Warning event, and
// the scaler, asked through KEDA's own client with the trigger metadata the
// chart renders for a cluster that supports the field (nudgeTolerance
// "false"), nudges the answer out of the band; with the field at 0 the
// condition turns True and the nudge off; without an HPA the trigger
// decides again.
func TestHPAToleranceDetectedTurnsTheNudgeOnAndOff(t *testing.T) {
	buildKedaPoll(t)
	c := newCluster(t)
	scaler := c.startScaler()
	m := &kedaMetrics{t: t, metadata: map[string]string{}, last: map[string]int64{}}
	m.set("tol", "scalerAddress="+scaler+",pool=pool,nudgeTolerance=false")
	// The pods stay pending: their expected records are the 10 live pods
	// the scaler sees, and 11 queued plan_and_apply need 11 pods, inside
	// the default 10 % band (11/10). The nudge reports 12.
	c.kubelet.pause("tol/pool", true)
	c.startJanitor()
	c.newPool("tol", "pool", 10)
	require.Eventually(t, func() bool {
		snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: "tol", Name: "pool"})
		return err == nil && len(snap.Pods) == 10
	}, 60*time.Second, 50*time.Millisecond, "ten expected pods")
	for i := range 11 {
		c.submit("tol", "pool", fmt.Sprintf("t%d", i), slots.PlanAndApply, "0")
	}
	answer := func() int64 {
		v, _, err := m.GetExternalMetric("s0-slotscaler-tol-pool", "tol", nil)
		require.NoError(t, err)
		require.Len(t, v, 1)
		return v[0] / 1000
	}
	waitFor := func(status metav1.ConditionStatus, reason string, pods int64) *metav1.Condition {
		t.Helper()
		var got *metav1.Condition
		var last int64
		require.Eventually(t, func() bool {
			got = condition(c.getPool("tol", "pool"), v1alpha1.ConditionHPAToleranceHonoured)
			if got == nil || got.Status != status || got.Reason != reason {
				return false
			}
			last = answer()
			return last == pods
		}, 60*time.Second, 100*time.Millisecond, "want HPAToleranceHonoured %s %s and the scaler at %d pods; have %+v, %d", status, reason, pods, got, last)
		return got
	}

	waitFor(metav1.ConditionUnknown, "NoHPA", 11)

	// KEDA's HPA as a cluster before 1.35 keeps it: the field dropped.
	c.createHPA("tol", "pool", nil)
	got := waitFor(metav1.ConditionFalse, "ToleranceMissing", 12)
	require.Contains(t, got.Message, "keda-hpa-pool has no behavior.scaleUp.tolerance")
	ignored := c.waitPoolEvent("tol", "pool", "HPAToleranceIgnored")
	require.Equal(t, corev1.EventTypeWarning, ignored.Type)
	require.Contains(t, ignored.Message, "HPAConfigurableTolerance")

	// The field set to 0, as the chart asks and the cluster now keeps.
	zero := resource.MustParse("0")
	h, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers("tol").Get(c.ctx, "keda-hpa-pool", metav1.GetOptions{})
	require.NoError(t, err)
	h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: &autoscalingv2.HPAScalingRules{Tolerance: &zero}}
	_, err = c.kube.AutoscalingV2().HorizontalPodAutoscalers("tol").Update(c.ctx, h, metav1.UpdateOptions{FieldValidation: "Strict"})
	require.NoError(t, err)
	waitFor(metav1.ConditionTrue, "ToleranceZero", 11)
	require.Equal(t, corev1.EventTypeNormal, c.waitPoolEvent("tol", "pool", "HPAToleranceHonoured").Type)

	// Gone: the trigger's "false" decides again.
	require.NoError(t, c.kube.AutoscalingV2().HorizontalPodAutoscalers("tol").Delete(c.ctx, "keda-hpa-pool", metav1.DeleteOptions{}))
	waitFor(metav1.ConditionUnknown, "NoHPA", 11)
	// And an HPA created with the field at 0 never turns the nudge on.
	c.createHPA("tol", "pool", &zero)
	waitFor(metav1.ConditionTrue, "ToleranceZero", 11)
	require.Len(t, c.events("tol", "HPAToleranceIgnored"), 1, "one Warning, for the one HPA without the field")
	c.audit.check(t)
}

func condition(ap *v1alpha1.AgentPool, typ string) *metav1.Condition {
	for i := range ap.Status.Conditions {
		if ap.Status.Conditions[i].Type == typ {
			return &ap.Status.Conditions[i]
		}
	}
	return nil
}

// waitPoolEvent waits for an event with this reason on the AgentPool.
func (c *cluster) waitPoolEvent(ns, pool, reason string) corev1.Event {
	c.t.Helper()
	var found corev1.Event
	require.Eventually(c.t, func() bool {
		for _, e := range c.events(ns, reason) {
			if e.InvolvedObject.Kind == v1alpha1.Kind && e.InvolvedObject.Name == pool && strings.Contains(e.Source.Component, "janitor") {
				found = e
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "no %s event on AgentPool %s/%s", reason, ns, pool)
	return found
}
