package capacity

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// DefaultTolerance is the HPA's default tolerance band.
const DefaultTolerance = 0.1

// CheckTolerance reports whether tolerance is usable by NudgeForTolerance: it
// must be finite and ≥ 0. The error wraps ErrInvalidTolerance. Call it when
// loading configuration; NudgeForTolerance itself never fails and simply
// does not nudge with an invalid tolerance.
func CheckTolerance(tolerance float64) error {
	if tolerance < 0 || math.IsNaN(tolerance) || math.IsInf(tolerance, 0) {
		return fmt.Errorf("%w: %v (want finite and >= 0)", ErrInvalidTolerance, tolerance)
	}
	return nil
}

// NudgeForTolerance compensates for the HPA tolerance band. The HPA ignores
// a change when |desired/current − 1| ≤ tolerance. A scale-up that falls
// inside the band is pushed to the smallest integer outside it (a bounded
// overshoot of at most ⌊current·tolerance⌋+1 − (desired−current) pods).
//
// It never nudges a scale-down or a no-change, does not nudge when current ≤ 0
// (the HPA treats 0 specially; KEDA handles activation), and does not nudge
// with an invalid tolerance (see CheckTolerance) or when no representable
// integer lies outside the band. max > 0 caps the nudge: the result is never
// above max unless desired itself is, and never below desired; if capping
// lands back inside the band, max is returned anyway.
//
// The comparison is exact: tolerance is taken as the shortest decimal that
// round-trips to the given float64 (0.1 means 1/10), and the test is done in
// integers, so current 20, desired 22, tolerance 0.1 is inside the band.
func NudgeForTolerance(current, desired, max int, tolerance float64) int {
	if current <= 0 || desired <= current || CheckTolerance(tolerance) != nil {
		return desired
	}
	if max > 0 && desired >= max {
		return desired
	}
	tol, ok := new(big.Rat).SetString(strconv.FormatFloat(tolerance, 'g', -1, 64))
	if !ok { // cannot happen for a finite float64
		return desired
	}
	num, den := tol.Num(), tol.Denom()

	// inside ⇔ (desired−current)/current ≤ num/den ⇔ (desired−current)·den ≤ num·current
	band := new(big.Int).Mul(num, big.NewInt(int64(current)))
	diff := new(big.Int).Mul(big.NewInt(int64(desired-current)), den)
	if diff.Cmp(band) > 0 {
		return desired // already outside the band: the HPA will act
	}
	// smallest d with (d−current)·den > num·current: d = current + ⌊num·current/den⌋ + 1
	step := band.Quo(band, den)
	step.Add(step, big.NewInt(int64(current)+1))
	if !step.IsInt64() || step.Int64() > math.MaxInt {
		if max > 0 {
			return max
		}
		return desired
	}
	nudged := int(step.Int64())
	if max > 0 && nudged > max {
		return max
	}
	return nudged
}
