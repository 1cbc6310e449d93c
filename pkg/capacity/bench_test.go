package capacity

import "testing"

func BenchmarkDesiredDefaultPolicy(b *testing.B) {
	in := Input{
		Classes:    classesOf(defaultSlots),
		BusyPods:   12,
		FreeOnBusy: []int{2, 9},
		Queued:     map[string]int{plan: 25, pa: 7},
		Max:        50,
		Warm:       2,
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Desired(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDesiredSlotClass: plan_and_apply binds (only slot 0 may run
// it), so the explanation lists its types: the one allocation Desired makes.
func BenchmarkDesiredSlotClass(b *testing.B) {
	in := Input{
		Classes:    classesOf(defaultSlots),
		BusyPods:   3,
		FreeOnBusy: []int{0, 6},
		Queued:     map[string]int{plan: 12, pa: 5},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Desired(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNudgeForTolerance(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NudgeForTolerance(20, 21, 50, DefaultTolerance)
	}
}
