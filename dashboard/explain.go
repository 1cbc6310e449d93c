package main

import (
	"fmt"
	"strconv"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// explanationView is capacity.Explanation as the API shows it. The
// dashboard's desired count leaves out what only the ScaledObject knows
// (the trigger's warmPods, KEDA's replica bounds), so there is no warm
// term and no clamp here.
type explanationView struct {
	// Kind: idle, busy, slots or slot-class (capacity.Kind).
	Kind string `json:"kind"`
	Text string `json:"text"`
	// The terms of the desired count: busy pods + new pods.
	BusyPods int `json:"busy_pods"`
	NewPods  int `json:"new_pods"`
	// Queued counts the queued tasks some slot may run; IdleSlots the idle
	// slots of busy, uncordoned pods they may fill first.
	Queued      int `json:"queued"`
	IdleSlots   int `json:"idle_slots_on_busy_pods"`
	SlotsPerPod int `json:"slots_per_pod"`
	// Constraint is the one that asks for the new pods; absent without.
	Constraint    *constraintView `json:"constraint,omitempty"`
	Unschedulable int             `json:"unschedulable"`
}

// constraintView: Tasks queued tasks (of Types; every queued type when
// absent) may run only in SlotsPerPod slots of each pod, IdleSlots of which
// are idle on busy pods.
type constraintView struct {
	Types       []string `json:"types,omitempty"`
	Tasks       int      `json:"tasks"`
	IdleSlots   int      `json:"idle_slots"`
	SlotsPerPod int      `json:"slots_per_pod"`
}

func viewExplanation(e capacity.Explanation) explanationView {
	v := explanationView{Kind: string(e.Kind), Text: e.String(), BusyPods: e.BusyPods, NewPods: e.NewPods,
		Queued: e.Queued, IdleSlots: e.FreeOnBusy, SlotsPerPod: e.SlotsPerPod, Unschedulable: e.Unschedulable}
	if c := e.Constraint; e.NewPods > 0 {
		v.Constraint = &constraintView{Types: c.Types, Tasks: c.Tasks, IdleSlots: c.Free, SlotsPerPod: c.PerPod}
	}
	return v
}

// hpaView is the band of the HPA in front of the pool as the scaler sees
// it: what the janitor found on the HPA (slots.HPATolerance) and what the
// scaler reports for the desired count because of it.
type hpaView struct {
	// Found: the janitor found the pool's HPA. Without, the trigger's
	// nudgeTolerance decides, which only the ScaledObject says.
	Found bool `json:"found"`
	// Tolerance is the scale-up tolerance the scaler nudges past: the
	// HPA's own, or 0.1 (the trigger's default) for one that applies the
	// cluster's. Null when not found.
	Tolerance *float64 `json:"tolerance"`
	// ClusterTolerance: the HPA has none of its own and applies
	// kube-controller-manager's, which the janitor cannot see.
	ClusterTolerance bool `json:"cluster_tolerance"`
	// BandTop is the highest count the HPA would ignore over the live pods;
	// null when not found, or no band (tolerance 0, no live pods).
	BandTop *int `json:"band_top"`
	// ReportedPods is what the scaler reports: the desired count, nudged
	// past the band. Null when not found or the desired count is unknown.
	ReportedPods *int   `json:"reported_pods"`
	Text         string `json:"text"`
}

// viewHPA mirrors the scaler's choice (request.nudging) where the janitor's
// finding settles it.
func viewHPA(t slots.HPATolerance, live int, desired *int) hpaView {
	v := hpaView{Found: t.Known}
	if !t.Known {
		v.Text = "The janitor has not reported an HPA for this pool (none targets it, HPAs are not watched, or the pool is static): " +
			"the trigger's nudgeTolerance says whether the scaler nudges scale-ups past the HPA's tolerance."
		return v
	}
	tol, name := t.Value, "tolerance "+strconv.FormatFloat(t.Value, 'g', -1, 64)
	if !t.Set {
		tol, name = capacity.DefaultTolerance, "the cluster's tolerance (the trigger's tolerance stands for it, 0.1 unless set)"
		v.ClusterTolerance = true
	}
	v.Tolerance = &tol
	if desired != nil {
		r := capacity.NudgeForTolerance(live, *desired, 0, tol)
		v.ReportedPods = &r
	}
	if tol == 0 {
		v.Text = "The pool's HPA has scale-up tolerance 0: it follows the desired count exactly, and the scaler does not nudge."
		return v
	}
	if live == 0 {
		v.Text = fmt.Sprintf("The pool's HPA applies %s; with no live pods there is no band (KEDA activates the pool).", name)
		return v
	}
	// The band's top, exactly as the nudge computes it: one below where a
	// scale-up by one is pushed to.
	top := live
	if up := capacity.NudgeForTolerance(live, live+1, 0, tol); up > live+1 {
		top = up - 1
	}
	v.BandTop = &top
	v.Text = fmt.Sprintf("The pool's HPA applies %s: from %d live %s it ignores a scale-up to %d or fewer, so the scaler nudges such a scale-up just past it",
		name, live, plural(live, "pod", "pods"), top)
	switch {
	case desired == nil:
		v.Text += "."
	case *v.ReportedPods != *desired:
		v.Text += fmt.Sprintf(": it reports %d for the %d desired.", *v.ReportedPods, *desired)
	case *desired > live:
		v.Text += fmt.Sprintf("; %d desired is already past it.", *desired)
	default:
		v.Text += "; no scale-up is pending."
	}
	return v
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
