package main

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// busyPoolWithQueuedApply leaves the fixture's pool with one pod holding
// work in all three slots (a reservation in slot 0, two plans) and a plan
// and a plan_and_apply queued: the plan_and_apply needs a new pod's slot 0.
func busyPoolWithQueuedApply(f *fixture) {
	f.t.Helper()
	pod, uid := f.addPod()
	f.reserve("r1", pod, uid)
	f.submit("p1", slots.Plan)
	f.submit("p2", slots.Plan)
	f.submit("q1", slots.Plan)
	f.submit("q2", slots.PlanAndApply)
}

const queuedApplyWhy = "1 queued plan_and_apply can use only 1 of each pod's 3 slots: 1 new pod; 1 more queued task fits beside them. 1 busy + 1 new = 2 pods."

func TestPoolPageExplainsTheDesiredCount(t *testing.T) {
	f := newFixture(t)
	f.declare(f.pool, func(c *slots.PoolConfig) { c.HPATolerance = slots.HPATolerance{Known: true, Set: true, Value: 1} })
	busyPoolWithQueuedApply(f)

	doc := f.page("/pools/ci/terraform", http.StatusOK)
	scaling := doc.Find(testid("scaling"))
	require.Equal(t, 1, scaling.Length())
	assert.Equal(t, "2", scaling.Find(testid("pool-desired")).Text())
	assert.Equal(t, "1", scaling.Find(testid("pool-live")).Text())
	assert.Equal(t, queuedApplyWhy, scaling.Find(testid("pool-explanation")).Text())
	assert.Equal(t, "The pool's HPA applies tolerance 1: from 1 live pod it ignores a scale-up to 2 or fewer, "+
		"so the scaler nudges such a scale-up just past it: it reports 3 for the 2 desired.", scaling.Find(testid("pool-hpa")).Text())
}

func TestPoolPageSaysWhenNoHPAWasFound(t *testing.T) {
	f := newFixture(t)
	doc := f.page("/pools/ci/terraform", http.StatusOK)
	assert.Equal(t, "0", doc.Find(testid("pool-desired")).Text())
	assert.Equal(t, "Nothing is running, reserved or queued: 0 pods.", doc.Find(testid("pool-explanation")).Text())
	assert.Contains(t, doc.Find(testid("pool-hpa")).Text(), "The janitor has not reported an HPA for this pool")
}

func TestPoolResourceExplainsTheDesiredCountAsTheListDoes(t *testing.T) {
	f := newFixture(t)
	f.declare(f.pool, func(c *slots.PoolConfig) { c.HPATolerance = slots.HPATolerance{Known: true, Set: true, Value: 1} })
	busyPoolWithQueuedApply(f)

	body := decode(t, f.do("GET", poolPath, "", ""))
	assert.EqualValues(t, 2, body["desired_pods"])
	why := body["explanation"].(map[string]any)
	assert.Equal(t, map[string]any{
		"kind": "slot-class", "text": queuedApplyWhy, "busy_pods": 1.0, "new_pods": 1.0, "queued": 2.0,
		"idle_slots_on_busy_pods": 0.0, "slots_per_pod": 3.0, "unschedulable": 0.0,
		"constraint": map[string]any{"types": []any{"plan_and_apply"}, "tasks": 1.0, "idle_slots": 0.0, "slots_per_pod": 1.0},
	}, why)
	hpa := body["hpa"].(map[string]any)
	assert.Equal(t, true, hpa["found"])
	assert.EqualValues(t, 1, hpa["tolerance"])
	assert.Equal(t, false, hpa["cluster_tolerance"])
	assert.EqualValues(t, 2, hpa["band_top"])
	assert.EqualValues(t, 3, hpa["reported_pods"])

	list := decode(t, f.do("GET", "/api/v1/pools", "", ""))
	p := list["pools"].([]any)[0].(map[string]any)
	assert.Equal(t, why, p["explanation"], "the list and the pool resource explain the same answer")
	assert.Equal(t, hpa, p["hpa"])
}

func TestHPABandInWords(t *testing.T) {
	n := func(v int) *int { return &v }
	tests := map[string]struct {
		found        slots.HPATolerance
		live         int
		desired      *int
		tolerance    *float64
		top, reports *int
		text         string
	}{
		"not found: the trigger decides": {
			live: 20, desired: n(21),
			text: "The janitor has not reported an HPA for this pool (none targets it, HPAs are not watched, or the pool is static): " +
				"the trigger's nudgeTolerance says whether the scaler nudges scale-ups past the HPA's tolerance.",
		},
		"tolerance 0: no band": {
			found: slots.HPATolerance{Known: true, Set: true}, live: 20, desired: n(21), tolerance: new(float64), reports: n(21),
			text: "The pool's HPA has scale-up tolerance 0: it follows the desired count exactly, and the scaler does not nudge.",
		},
		"the cluster's tolerance: 0.1 stands for it, 21 of 20 is nudged to 23": {
			found: slots.HPATolerance{Known: true}, live: 20, desired: n(21), tolerance: ptr(0.1), top: n(22), reports: n(23),
			text: "The pool's HPA applies the cluster's tolerance (the trigger's tolerance stands for it, 0.1 unless set): " +
				"from 20 live pods it ignores a scale-up to 22 or fewer, so the scaler nudges such a scale-up just past it: it reports 23 for the 21 desired.",
		},
		"its own tolerance, a scale-up already past the band": {
			found: slots.HPATolerance{Known: true, Set: true, Value: 0.05}, live: 20, desired: n(25), tolerance: ptr(0.05), top: n(21), reports: n(25),
			text: "The pool's HPA applies tolerance 0.05: from 20 live pods it ignores a scale-up to 21 or fewer, " +
				"so the scaler nudges such a scale-up just past it; 25 desired is already past it.",
		},
		"a scale-down is not nudged": {
			found: slots.HPATolerance{Known: true, Set: true, Value: 0.1}, live: 20, desired: n(3), tolerance: ptr(0.1), top: n(22), reports: n(3),
			text: "The pool's HPA applies tolerance 0.1: from 20 live pods it ignores a scale-up to 22 or fewer, " +
				"so the scaler nudges such a scale-up just past it; no scale-up is pending.",
		},
		"no live pods: no band": {
			found: slots.HPATolerance{Known: true, Set: true, Value: 0.1}, desired: n(4), tolerance: ptr(0.1), reports: n(4),
			text: "The pool's HPA applies tolerance 0.1; with no live pods there is no band (KEDA activates the pool).",
		},
		"desired count unknown": {
			found: slots.HPATolerance{Known: true, Set: true, Value: 0.1}, live: 10, tolerance: ptr(0.1), top: n(11),
			text: "The pool's HPA applies tolerance 0.1: from 10 live pods it ignores a scale-up to 11 or fewer, so the scaler nudges such a scale-up just past it.",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := viewHPA(tc.found, tc.live, tc.desired)
			assert.Equal(t, hpaView{Found: tc.found.Known, Tolerance: tc.tolerance, ClusterTolerance: tc.found.Known && !tc.found.Set,
				BandTop: tc.top, ReportedPods: tc.reports, Text: tc.text}, got)
		})
	}
}

func ptr[T any](v T) *T { return &v }
