package slots

import (
	"fmt"
	"math"
	"strconv"
)

// HPATolerance is the scale-up tolerance of the HorizontalPodAutoscaler in
// front of a pool, as the janitor found it on the HPA that targets the
// pool's AgentPool (KEDA's, made for the pool's ScaledObject). The janitor
// declares it with the pool; the scaler reads it with the pool's counters
// (Stats, no extra round trip) and nudges its answer past the HPA's band
// when the band is not 0. The zero value is "unknown": no janitor looked,
// or it found no HPA; the trigger's nudgeTolerance then decides.
type HPATolerance struct {
	// Known: the janitor found the pool's HPA.
	Known bool
	// Set: its spec.behavior.scaleUp.tolerance is set, to Value. Unset
	// (clusters before Kubernetes 1.35 without the HPAConfigurableTolerance
	// feature gate drop the field, as do KEDA versions that do not pass it
	// on), the HPA applies the cluster-wide tolerance of
	// kube-controller-manager, 0.1 by default, which the janitor cannot see.
	Set   bool
	Value float64
}

// Nudge reports whether scale-ups must be nudged past the HPA's band: the
// HPA is known and its tolerance is not 0.
func (t HPATolerance) Nudge() bool { return t.Known && !(t.Set && t.Value == 0) }

// hpaToleranceCluster encodes a known HPA without its own tolerance.
const hpaToleranceCluster = "cluster"

// encode is the config field's value: "" unknown, "cluster" unset, else
// the tolerance as a decimal.
func (t HPATolerance) encode() string {
	switch {
	case !t.Known:
		return ""
	case !t.Set:
		return hpaToleranceCluster
	}
	return strconv.FormatFloat(t.Value, 'g', -1, 64)
}

// parseHPATolerance reads what encode wrote; anything else is unknown.
func parseHPATolerance(s string) HPATolerance {
	switch s {
	case "":
		return HPATolerance{}
	case hpaToleranceCluster:
		return HPATolerance{Known: true}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return HPATolerance{}
	}
	return HPATolerance{Known: true, Set: true, Value: v}
}

// validate: a set tolerance is finite and not negative.
func (t HPATolerance) validate() error {
	if t.Set && (t.Value < 0 || math.IsNaN(t.Value) || math.IsInf(t.Value, 0)) {
		return fmt.Errorf("%w: HPA tolerance %v must be finite and at least 0", ErrInvalidConfig, t.Value)
	}
	return nil
}

func (t HPATolerance) String() string {
	switch {
	case !t.Known:
		return "unknown"
	case !t.Set:
		return "the cluster's"
	}
	return strconv.FormatFloat(t.Value, 'g', -1, 64)
}
