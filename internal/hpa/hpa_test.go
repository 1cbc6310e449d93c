package hpa

import (
	"math"
	"testing"
)

func TestExternalPerPodReplicas(t *testing.T) {
	ten := Symmetric(0.1)
	cases := map[string]struct {
		status        int32
		usage, target int64
		tol           Tolerance
		want          int32
	}{
		"on target: unchanged":                            {10, 10000, 1000, ten, 10},
		"upper edge of the band is inside (11/10)":        {10, 11000, 1000, ten, 10},
		"just above the band: ceil(usage/target)":         {10, 11001, 1000, ten, 12},
		"lower edge of the band is inside (9/10)":         {10, 9000, 1000, ten, 10},
		"just below the band: ceil(usage/target)":         {10, 8999, 1000, ten, 9},
		"band edges hold for one pod too (1.1 and 0.9)":   {1, 1100, 1000, ten, 1},
		"one pod at 0.9 stays":                            {1, 900, 1000, ten, 1},
		"the band hides one more pod at 20 (21/20)":       {20, 21000, 1000, ten, 20},
		"scale-up tolerance 0: one more pod is a change":  {20, 21000, 1000, Tolerance{Up: 0, Down: 0.1}, 21},
		"scale-up tolerance 0 leaves the down side":       {20, 19000, 1000, Tolerance{Up: 0, Down: 0.1}, 20},
		"asymmetric: a wide up side does not widen down":  {10, 8000, 1000, Tolerance{Up: 0.5, Down: 0.1}, 8},
		"rounds up a fraction of a pod":                   {5, 2001, 1000, ten, 3},
		"fractional target: ceil of the quotient":         {3, 1000, 300, ten, 4},
		"no usage scales to zero (the caller clamps)":     {3, 0, 1000, ten, 0},
		"status 0 with usage: ceil(usage/target)":         {0, 2500, 1000, ten, 3},
		"status 0 without usage: 0":                       {0, 0, 1000, ten, 0},
		"tolerance 0: exact ratio 1 is inside":            {7, 7000, 1000, Symmetric(0), 7},
		"a proposal beyond int32 is capped at MaxInt32":   {1, math.MaxInt64, 1, ten, math.MaxInt32},
		"scale-down below one pod's worth rounds up to 1": {4, 1, 1000, ten, 1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := ExternalPerPodReplicas(tc.status, tc.usage, tc.target, tc.tol); got != tc.want {
				t.Errorf("ExternalPerPodReplicas(%d, %d, %d, %+v) = %d, want %d", tc.status, tc.usage, tc.target, tc.tol, got, tc.want)
			}
		})
	}
}
