package janitor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The HPA in front of a pool (KEDA's, made for the pool's ScaledObject and
// named keda-hpa-<ScaledObject>) should set behavior.scaleUp.tolerance 0:
// with the default 10 % band a 20-pod pool asking for 21 pods never gets
// them. Clusters before Kubernetes 1.35 (without the HPAConfigurableTolerance
// feature gate) and older KEDA drop the field without a word. The janitor
// reads the HPA the API server stored, says what it found
// (HPAToleranceHonoured, an event) and declares it with the pool, where the
// scaler reads it and nudges the pool's scale-ups past the band while the
// field is missing.

// byTarget indexes HPAs by the AgentPool they scale ("namespace/name").
const byTarget = "target"

// hpaTarget is the key of the AgentPool an HPA scales, if it scales one.
// The HPA is found by its scaleTargetRef rather than by KEDA's name for it,
// which depends on the ScaledObject's name.
func hpaTarget(h *autoscalingv2.HorizontalPodAutoscaler) (string, bool) {
	ref := h.Spec.ScaleTargetRef
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil || gv.Group != v1alpha1.Group || ref.Kind != v1alpha1.Kind || ref.Name == "" {
		return "", false
	}
	return h.Namespace + "/" + ref.Name, true
}

// hpaVerdict is what a pass concludes from the HPAs that target its pool.
type hpaVerdict struct {
	// Tolerance is declared with the pool for the scaler.
	Tolerance slots.HPATolerance
	// Condition is the pool's HPAToleranceHonoured.
	Condition metav1.Condition
}

// Reasons of the HPAToleranceHonoured condition.
const (
	hpaReasonZero    = "ToleranceZero"
	hpaReasonMissing = "ToleranceMissing"
	hpaReasonNonZero = "ToleranceNonZero"
	hpaReasonNoHPA   = "NoHPA"
)

// Events of a changed verdict.
const (
	eventHPAIgnored  = "HPAToleranceIgnored"
	eventHPAHonoured = "HPAToleranceHonoured"
)

// judgeHPAs decides from the HPAs targeting a pool whether their scale-up
// tolerance is 0. It is pure. Several HPAs on one pool fight over its
// replicas anyway; the verdict takes the worst of them: one without the
// field makes the band the cluster's, else the widest band set counts.
func judgeHPAs(hpas []*autoscalingv2.HorizontalPodAutoscaler) hpaVerdict {
	if len(hpas) == 0 {
		return hpaVerdict{Condition: metav1.Condition{Type: v1alpha1.ConditionHPAToleranceHonoured, Status: metav1.ConditionUnknown,
			Reason: hpaReasonNoHPA, Message: "no HorizontalPodAutoscaler targets this AgentPool: the scaler nudges scale-ups as the trigger's nudgeTolerance says"}}
	}
	hpas = slices.Clone(hpas)
	slices.SortFunc(hpas, func(a, b *autoscalingv2.HorizontalPodAutoscaler) int { return strings.Compare(a.Name, b.Name) })
	var missing, widest *autoscalingv2.HorizontalPodAutoscaler
	var band float64
	for _, h := range hpas {
		tol := scaleUpTolerance(h)
		switch {
		case tol == nil:
			if missing == nil {
				missing = h
			}
		case tol.AsApproximateFloat64() > band:
			widest, band = h, tol.AsApproximateFloat64()
		}
	}
	which := "HorizontalPodAutoscaler " + hpas[0].Name
	if len(hpas) > 1 {
		which = fmt.Sprintf("%d HorizontalPodAutoscalers target this AgentPool (one should); ", len(hpas))
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionHPAToleranceHonoured, Status: metav1.ConditionFalse}
	switch {
	case missing != nil:
		if len(hpas) > 1 {
			which += missing.Name
		}
		cond.Reason = hpaReasonMissing
		cond.Message = which + " has no behavior.scaleUp.tolerance (the API server drops it before Kubernetes 1.35 unless the HPAConfigurableTolerance feature gate is on, and older KEDA does not pass it on): it ignores scale-ups within " +
			"the cluster's tolerance (kube-controller-manager's --horizontal-pod-autoscaler-tolerance, 10 % by default), so the scaler nudges this pool's scale-ups past that band"
		return hpaVerdict{Tolerance: slots.HPATolerance{Known: true}, Condition: cond}
	case widest != nil:
		if len(hpas) > 1 {
			which += widest.Name
		}
		cond.Reason = hpaReasonNonZero
		cond.Message = fmt.Sprintf("%s sets behavior.scaleUp.tolerance %s, not 0: the scaler nudges this pool's scale-ups past that band",
			which, strconv.FormatFloat(band, 'g', -1, 64))
		return hpaVerdict{Tolerance: slots.HPATolerance{Known: true, Set: true, Value: band}, Condition: cond}
	}
	if len(hpas) > 1 {
		which = fmt.Sprintf("the %d HorizontalPodAutoscalers targeting this AgentPool (one should)", len(hpas))
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, hpaReasonZero
	cond.Message = which + " sets behavior.scaleUp.tolerance 0: the HPA follows every change the scaler asks for; no nudge"
	return hpaVerdict{Tolerance: slots.HPATolerance{Known: true, Set: true}, Condition: cond}
}

// scaleUpTolerance is the HPA's behavior.scaleUp.tolerance, or nil.
func scaleUpTolerance(h *autoscalingv2.HorizontalPodAutoscaler) *resource.Quantity {
	if b := h.Spec.Behavior; b != nil && b.ScaleUp != nil {
		return b.ScaleUp.Tolerance
	}
	return nil
}

// hpasOf lists the HPAs targeting the pass's pool from the cache, or nil
// when the janitor does not watch HPAs.
func (p *pass) hpasOf() []*autoscalingv2.HorizontalPodAutoscaler {
	objs, err := p.w.hpas.GetIndexer().ByIndex(byTarget, p.key)
	if err != nil {
		p.log.Error("listing HPAs from cache", "err", err)
		return nil
	}
	out := make([]*autoscalingv2.HorizontalPodAutoscaler, 0, len(objs))
	for _, o := range objs {
		if h, ok := o.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			out = append(out, h)
		}
	}
	return out
}

// checkHPAs judges the pool's HPAs, or returns nil when the janitor does
// not watch HPAs (Options.IgnoreHPAs). A change of verdict is logged and
// reported by an event: a Warning when the HPA does not honour tolerance 0,
// a Normal one when it does again.
func (p *pass) checkHPAs() *hpaVerdict {
	if p.w.hpas == nil {
		return nil
	}
	v := judgeHPAs(p.hpasOf())
	key := v.Condition.Reason + "|" + v.Condition.Message
	if p.st.hpaReported == key {
		return &v
	}
	prev := p.st.hpaReported
	p.st.hpaReported = key
	switch v.Condition.Reason {
	case hpaReasonMissing, hpaReasonNonZero:
		p.log.Warn("the pool's HPA does not honour scale-up tolerance 0: the scaler nudges its scale-ups", "why", v.Condition.Message)
		p.event(p.ap, corev1.EventTypeWarning, eventHPAIgnored, "%s", v.Condition.Message)
	case hpaReasonZero:
		if prev != "" && !strings.HasPrefix(prev, hpaReasonNoHPA+"|") {
			p.log.Info("the pool's HPA honours scale-up tolerance 0: no nudge")
			p.event(p.ap, corev1.EventTypeNormal, eventHPAHonoured, "%s", v.Condition.Message)
		}
	}
	return &v
}

// handleHPAs indexes one watch's HPAs by the pool they scale and queues
// that pool on every change, so a changed HPA is judged at once.
func (c *Controller) handleHPAs(w watch) error {
	if err := w.hpas.AddIndexers(cache.Indexers{byTarget: func(obj any) ([]string, error) {
		if h, ok := obj.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			if key, ok := hpaTarget(h); ok {
				return []string{key}, nil
			}
		}
		return nil, nil
	}}); err != nil {
		return fmt.Errorf("indexing HPAs by target: %w", err)
	}
	enqueue := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if h, ok := obj.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			if key, ok := hpaTarget(h); ok {
				c.enqueue(key)
			}
		}
	}
	if _, err := w.hpas.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(old, obj any) {
			// Its status changes every HPA sync; its spec rarely.
			o, ok1 := old.(*autoscalingv2.HorizontalPodAutoscaler)
			n, ok2 := obj.(*autoscalingv2.HorizontalPodAutoscaler)
			if ok1 && ok2 && o.Generation == n.Generation && o.Generation != 0 {
				return
			}
			enqueue(old) // a retargeted HPA leaves its old pool
			enqueue(obj)
		},
		DeleteFunc: enqueue,
	}); err != nil {
		return fmt.Errorf("watching HPAs: %w", err)
	}
	return nil
}
