package capacity

import (
	"errors"
	"math"
	"testing"
)

func TestNudgeForTolerance(t *testing.T) {
	tests := map[string]struct {
		current, desired, max int
		tolerance             float64
		want                  int
	}{
		"scale-up inside the band is nudged to the smallest integer outside": {20, 21, 0, 0.1, 23},
		"scale-up on the band edge (22/20 = 1.1) is inside and nudged":       {20, 22, 0, 0.1, 23},
		"scale-up just outside the band is unchanged":                        {20, 23, 0, 0.1, 23},
		"scale-up far outside the band is unchanged":                         {20, 30, 0, 0.1, 30},
		"small pool: 11/10 is on the edge and nudged":                        {10, 11, 0, 0.1, 12},
		"small pool: 2/1 is outside the band":                                {1, 2, 0, 0.1, 2},
		"default tolerance constant behaves like 0.1":                        {20, 21, 0, DefaultTolerance, 23},
		"tolerance is exact decimal: 13/10 with 0.3 is inside":               {10, 13, 0, 0.3, 14},
		"large tolerance nudges further":                                     {4, 5, 0, 1.5, 11},
		"scale-down inside the band is never nudged":                         {20, 19, 0, 0.1, 19},
		"scale-down outside the band is unchanged":                           {20, 10, 0, 0.1, 10},
		"no change is never nudged":                                          {20, 20, 0, 0.1, 20},
		"current zero is never nudged":                                       {0, 1, 0, 0.1, 1},
		"current zero with a big desired is unchanged":                       {0, 5, 10, 0.1, 5},
		"negative current is never nudged":                                   {-1, 3, 0, 0.1, 3},
		"nudge capped by max, even back inside the band":                     {20, 21, 22, 0.1, 22},
		"nudge exactly reaching max":                                         {20, 21, 23, 0.1, 23},
		"desired already at max is unchanged":                                {20, 21, 21, 0.1, 21},
		"desired above max is not lowered":                                   {20, 21, 15, 0.1, 21},
		"tolerance zero never nudges":                                        {20, 21, 0, 0, 21},
		"negative tolerance never nudges":                                    {20, 21, 0, -0.1, 21},
		"NaN tolerance never nudges":                                         {20, 21, 0, math.NaN(), 21},
		"infinite tolerance never nudges":                                    {20, 21, 0, math.Inf(1), 21},
		"unrepresentable nudge without max is unchanged":                     {20, 21, 0, 1e300, 21},
		"unrepresentable nudge with max goes to max":                         {20, 21, 50, 1e300, 50},
		"huge current does not overflow":                                     {math.MaxInt / 2, math.MaxInt/2 + 1, 0, 0.1, math.MaxInt/2 + math.MaxInt/20 + 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NudgeForTolerance(tc.current, tc.desired, tc.max, tc.tolerance); got != tc.want {
				t.Errorf("NudgeForTolerance(%d, %d, %d, %v) = %d, want %d",
					tc.current, tc.desired, tc.max, tc.tolerance, got, tc.want)
			}
		})
	}
}

func TestCheckTolerance(t *testing.T) {
	tests := map[string]struct {
		tolerance float64
		wantErr   error
	}{
		"zero is valid":                {0, nil},
		"default is valid":             {DefaultTolerance, nil},
		"above one is valid":           {1.5, nil},
		"negative is invalid":          {-0.1, ErrInvalidTolerance},
		"NaN is invalid":               {math.NaN(), ErrInvalidTolerance},
		"positive infinity is invalid": {math.Inf(1), ErrInvalidTolerance},
		"negative infinity is invalid": {math.Inf(-1), ErrInvalidTolerance},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := CheckTolerance(tc.tolerance); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("CheckTolerance(%v) = %v, want %v", tc.tolerance, err, tc.wantErr)
			}
		})
	}
}
