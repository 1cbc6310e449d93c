package janitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// hpaFor is KEDA's HPA for a ScaledObject named like the pool it scales;
// tolerance "" leaves behavior.scaleUp.tolerance out.
func hpaFor(name, pool, tolerance string) *autoscalingv2.HorizontalPodAutoscaler {
	h := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind, Name: pool},
			MaxReplicas:    10,
		},
	}
	if tolerance != "" {
		q := resource.MustParse(tolerance)
		h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: &autoscalingv2.HPAScalingRules{Tolerance: &q}}
	}
	return h
}

func TestHPATargetIsAnAgentPool(t *testing.T) {
	for name, tc := range map[string]struct {
		mut  func(*autoscalingv2.HorizontalPodAutoscaler)
		want string
	}{
		"KEDA's HPA of an AgentPool": {want: "team/pool-a"},
		"another version of the group": {
			mut: func(h *autoscalingv2.HorizontalPodAutoscaler) {
				h.Spec.ScaleTargetRef.APIVersion = v1alpha1.Group + "/v1"
			},
			want: "team/pool-a",
		},
		"a Deployment": {mut: func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.ScaleTargetRef = autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "pool-a"}
		}},
		"an AgentPool kind of another group": {mut: func(h *autoscalingv2.HorizontalPodAutoscaler) {
			h.Spec.ScaleTargetRef.APIVersion = "example.com/v1"
		}},
		"no name":                {mut: func(h *autoscalingv2.HorizontalPodAutoscaler) { h.Spec.ScaleTargetRef.Name = "" }},
		"a malformed apiVersion": {mut: func(h *autoscalingv2.HorizontalPodAutoscaler) { h.Spec.ScaleTargetRef.APIVersion = "a/b/c" }},
	} {
		t.Run(name, func(t *testing.T) {
			h := hpaFor("keda-hpa-pool-a", "pool-a", "")
			if tc.mut != nil {
				tc.mut(h)
			}
			got, ok := hpaTarget(h)
			require.Equal(t, tc.want != "", ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestJudgeHPAs(t *testing.T) {
	for name, tc := range map[string]struct {
		hpas   []*autoscalingv2.HorizontalPodAutoscaler
		want   slots.HPATolerance
		status metav1.ConditionStatus
		reason string
		says   []string // in the message
	}{
		"no HPA: unknown, the trigger decides": {
			status: metav1.ConditionUnknown, reason: "NoHPA", says: []string{"nudgeTolerance"},
		},
		"tolerance 0: honoured": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("keda-hpa-pool-a", "pool-a", "0")},
			want: slots.HPATolerance{Known: true, Set: true}, status: metav1.ConditionTrue, reason: "ToleranceZero",
			says: []string{"keda-hpa-pool-a", "no nudge"},
		},
		"the field dropped: the cluster's band, nudged": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("keda-hpa-pool-a", "pool-a", "")},
			want: slots.HPATolerance{Known: true}, status: metav1.ConditionFalse, reason: "ToleranceMissing",
			says: []string{"keda-hpa-pool-a has no behavior.scaleUp.tolerance", "1.35", "HPAConfigurableTolerance", "nudges"},
		},
		"a behavior without scaleUp is as missing": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{func() *autoscalingv2.HorizontalPodAutoscaler {
				h := hpaFor("keda-hpa-pool-a", "pool-a", "")
				h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{}}
				return h
			}()},
			want: slots.HPATolerance{Known: true}, status: metav1.ConditionFalse, reason: "ToleranceMissing",
		},
		"a tolerance of its own: nudged past it": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("keda-hpa-pool-a", "pool-a", "50m")},
			want: slots.HPATolerance{Known: true, Set: true, Value: 0.05}, status: metav1.ConditionFalse, reason: "ToleranceNonZero",
			says: []string{"tolerance 0.05"},
		},
		"several HPAs: a missing field is the worst": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("b", "pool-a", "0.2"), hpaFor("a", "pool-a", "0"), hpaFor("c", "pool-a", "")},
			want: slots.HPATolerance{Known: true}, status: metav1.ConditionFalse, reason: "ToleranceMissing",
			says: []string{"3 HorizontalPodAutoscalers", "c has no"},
		},
		"several HPAs: else the widest band": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("b", "pool-a", "0.2"), hpaFor("a", "pool-a", "0"), hpaFor("c", "pool-a", "0.1")},
			want: slots.HPATolerance{Known: true, Set: true, Value: 0.2}, status: metav1.ConditionFalse, reason: "ToleranceNonZero",
			says: []string{"b sets behavior.scaleUp.tolerance 0.2"},
		},
		"several HPAs all at 0": {
			hpas: []*autoscalingv2.HorizontalPodAutoscaler{hpaFor("b", "pool-a", "0"), hpaFor("a", "pool-a", "0")},
			want: slots.HPATolerance{Known: true, Set: true}, status: metav1.ConditionTrue, reason: "ToleranceZero",
			says: []string{"the 2 HorizontalPodAutoscalers"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			v := judgeHPAs(tc.hpas)
			require.Equal(t, tc.want, v.Tolerance)
			require.Equal(t, v1alpha1.ConditionHPAToleranceHonoured, v.Condition.Type)
			require.Equal(t, tc.status, v.Condition.Status)
			require.Equal(t, tc.reason, v.Condition.Reason)
			for _, s := range tc.says {
				require.Contains(t, v.Condition.Message, s)
			}
			require.Equal(t, tc.want.Nudge(), v.Condition.Status == metav1.ConditionFalse, "nudged exactly when not honoured")
		})
	}
}

// A pass reads the pool's HPA from its informer: without
// behavior.scaleUp.tolerance the pool gets HPAToleranceHonoured False, one
// Warning event and the scaler's nudge (declared with the pool); with the
// field set to 0, True, a Normal event, no nudge; without an HPA, Unknown
// and the trigger decides.
func TestPassDetectsTheHPAsToleranceAndTurnsTheNudgeOnAndOff(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	hpas := e.kube.AutoscalingV2().HorizontalPodAutoscalers("team")
	found := func() slots.HPATolerance {
		st, err := e.slots.Stats(e.ctx, e.id)
		require.NoError(t, err)
		return st[0].HPATolerance
	}
	e.pass()
	require.Equal(t, metav1.ConditionUnknown, condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured).Status)
	require.Equal(t, slots.HPATolerance{}, found())

	h, err := hpas.Create(e.ctx, hpaFor("keda-hpa-pool-a", "pool-a", ""), metav1.CreateOptions{})
	require.NoError(t, err)
	e.passOnceHPAsCached()
	c := condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured)
	require.Equal(t, metav1.ConditionFalse, c.Status)
	require.Equal(t, "ToleranceMissing", c.Reason)
	require.Equal(t, slots.HPATolerance{Known: true}, found(), "the scaler nudges")
	evs := e.drainEvents()
	require.Len(t, eventsWith(evs, "HPAToleranceIgnored"), 1, "%v", evs)
	require.Contains(t, eventsWith(evs, "HPAToleranceIgnored")[0], "Warning")
	e.pass()
	require.Empty(t, eventsWith(e.drainEvents(), "HPAToleranceIgnored"), "one event per finding")

	zero := resource.MustParse("0")
	h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleUp: &autoscalingv2.HPAScalingRules{Tolerance: &zero}}
	h.Generation++ // what the API server does on a spec change
	_, err = hpas.Update(e.ctx, h, metav1.UpdateOptions{})
	require.NoError(t, err)
	e.passOnceHPAsCached()
	c = condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured)
	require.Equal(t, metav1.ConditionTrue, c.Status)
	require.Equal(t, "ToleranceZero", c.Reason)
	require.Equal(t, slots.HPATolerance{Known: true, Set: true}, found(), "no nudge")
	require.Len(t, eventsWith(e.drainEvents(), "HPAToleranceHonoured"), 1)

	require.NoError(t, hpas.Delete(e.ctx, h.Name, metav1.DeleteOptions{}))
	e.passOnceHPAsCached()
	require.Equal(t, metav1.ConditionUnknown, condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured).Status)
	require.Equal(t, slots.HPATolerance{}, found(), "the trigger decides again")
}

// With IgnoreHPAs the janitor has no HPA informer and says nothing.
func TestPassIgnoringHPAsSetsNoCondition(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	_, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers("team").Create(e.ctx, hpaFor("keda-hpa-pool-a", "pool-a", ""), metav1.CreateOptions{})
	require.NoError(t, err)
	e.passOnceHPAsCached()
	require.NotNil(t, condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured))

	e.ignoreHPAs = true
	e.startJanitor()
	require.Nil(t, e.c.watchOf("team").hpas)
	e.pass()
	require.Nil(t, condition(e.pool(), v1alpha1.ConditionHPAToleranceHonoured), "an old condition goes")
	require.Empty(t, eventsWith(e.drainEvents(), "HPAToleranceIgnored"))
	st, err := e.slots.Stats(e.ctx, e.id)
	require.NoError(t, err)
	require.Equal(t, slots.HPATolerance{}, st[0].HPATolerance, "declared unknown again")
}

// passOnceHPAsCached runs a pass once the janitor's HPA cache holds what
// the API holds.
func (e *passEnv) passOnceHPAsCached() {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		list, err := e.kube.AutoscalingV2().HorizontalPodAutoscalers(e.id.Namespace).List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		cached := e.c.watchOf(e.id.Namespace).hpas.GetIndexer().List()
		if len(cached) != len(list.Items) {
			return false
		}
		for i := range list.Items {
			got, ok, _ := e.c.watchOf(e.id.Namespace).hpas.GetIndexer().GetByKey(e.id.Namespace + "/" + list.Items[i].Name)
			if !ok || !equality.Semantic.DeepEqual(got, &list.Items[i]) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "the HPA informer never caught up")
	e.pass()
}
