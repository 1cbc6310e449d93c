// Package hpa is the replica arithmetic of Kubernetes' Horizontal Pod
// Autoscaler for one External metric with an AverageValue target, which is
// what KEDA makes of slotscaler's external scaler. The demo's HPA and the
// scaler's contract tests both predict the HPA with it, so what they assert
// about the scaler's numbers holds for the real controller.
package hpa

import "math"

// Tolerance is the band around a usage ratio of 1 inside which the HPA
// keeps the replicas it has: [1-Down, 1+Up], both ends included.
// behavior.scaleUp.tolerance and behavior.scaleDown.tolerance set the two
// sides separately; the controller's default is 0.1 for both.
type Tolerance struct{ Up, Down float64 }

// Symmetric is the band of a cluster-wide tolerance
// (--horizontal-pod-autoscaler-tolerance), the same on both sides.
func Symmetric(t float64) Tolerance { return Tolerance{Up: t, Down: t} }

// ExternalPerPodReplicas is Kubernetes' ReplicaCalculator.GetExternalPerPodMetricReplicas
// with its tolerance check (Tolerances.isWithin): the usage ratio is the
// metric over target × status.replicas; inside the band the proposal is
// status.replicas, outside it ceil(usage/target). usage and target are in
// milli-units, as the HPA reads them from the metrics API.
//
// With statusReplicas 0 the ratio is infinite (NaN for no usage), never
// inside the band, so the proposal is ceil(usage/target), 0 for no usage,
// as upstream. The min/max clamp and stabilization are the caller's.
func ExternalPerPodReplicas(statusReplicas int32, usageMilli, targetMilli int64, tol Tolerance) int32 {
	ratio := float64(usageMilli) / (float64(targetMilli) * float64(statusReplicas))
	if 1-tol.Down <= ratio && ratio <= 1+tol.Up {
		return statusReplicas
	}
	r := math.Ceil(float64(usageMilli) / float64(targetMilli))
	if r > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(r)
}
