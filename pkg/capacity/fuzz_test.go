package capacity

import (
	"errors"
	"testing"
)

// FuzzDesired: Desired never panics; on success Min ≤ Desired ≤ Max (when
// Max > 0), Desired ≥ BusyPods while active and unclamped, and the rest of
// the rules hold. For small inputs NewPods is compared with brute force.
//
// policy encodes up to 4 slots (bits 16-17: slot count − 1), each slot a
// 4-bit subset of the types a, b, c, d (bits 4i..4i+3). Type x is never
// allowed. perPod, when non-zero, overrides the first class's PerPod.
func FuzzDesired(f *testing.F) {
	f.Add(uint32(0x2_0113), 2, 0, 2, 0, 0, 3, 1, 0, 0, 0, 0, 0, 1, 0)    // default-like policy
	f.Add(uint32(0x0_0000), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)    // nothing
	f.Add(uint32(0x2_0463), 1, 1, 0, 1, 0, 1, 4, 1, 0, 1, 0, 6, 2, 0)    // {a,b},{b,c},{c}
	f.Add(uint32(0x3_ffff), 5, 1, 2, 3, 4, 9, 9, 9, 9, 9, 2, 10, 1, 3)   // all types, clamped
	f.Add(uint32(0x1_0021), 0, 0, 0, 0, 0, 2, 3, 0, 0, 4, 0, 0, 0, 0)    // unschedulable work
	f.Add(uint32(0x2_0113), -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 4, -1, -2) // errors
	f.Fuzz(func(t *testing.T, policy uint32, busy, f0, f1, f2, f3, qa, qb, qc, qd, qx, min, max, warm, perPod int) {
		names := []string{"a", "b", "c", "d"}
		nSlots := 1 + int(policy>>16)%4
		slots := make([][]string, nSlots)
		for i := range slots {
			for b, name := range names {
				if policy>>(4*i+b)&1 != 0 {
					slots[i] = append(slots[i], name)
				}
			}
		}
		classes := classesOf(slots)
		if perPod != 0 && len(classes) > 0 {
			classes[0].PerPod = perPod
		}
		in := Input{
			Classes:    classes,
			BusyPods:   busy,
			FreeOnBusy: []int{f0, f1, f2, f3}[:len(classes)],
			Queued:     map[string]int{"a": qa, "b": qb, "c": qc, "d": qd, "x": qx},
			Min:        min,
			Max:        max,
			Warm:       warm,
		}
		got, err := Desired(in)
		if err != nil {
			for _, s := range []error{ErrNegativeCount, ErrFreeOnBusyLength, ErrInvalidClass, ErrMinAboveMax, ErrOverflow} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
		checkRules(t, in, got)

		small := busy <= 8 && min <= 8 && max <= 8 && warm <= 8
		for _, v := range []int{f0, f1, f2, f3, qa, qb, qc, qd, qx} {
			small = small && v <= 8
		}
		for _, c := range classes {
			small = small && c.PerPod <= 4
		}
		if small {
			if want := referenceNewPods(t, in); got.NewPods != want {
				t.Fatalf("%+v: NewPods = %d, brute force %d", in, got.NewPods, want)
			}
		}
	})
}
