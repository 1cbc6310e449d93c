package capacity

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExplanation(t *testing.T) {
	threeClasses := classesOf([][]string{{"a", "b"}, {"b", "c"}, {"c"}}) // {a,b}×1, {b,c}×1, {c}×1

	tests := map[string]struct {
		classes []Class // nil: default policy, {plan, plan_and_apply}×1 + {plan}×2
		in      Input   // Classes filled from classes; FreeOnBusy nil: all zero
		want    Explanation
		say     string
		// tie: another constraint asks for as many pods. The enumerations
		// name the most specific one; max-flow's cut may name either
		// (checkRules still checks it is one).
		tie bool
	}{
		"empty pool": {
			want: Explanation{Kind: KindIdle, SlotsPerPod: 3},
			say:  "Nothing is running, reserved or queued: 0 pods.",
		},
		"idle pool raised to its minimum; warm pods only while active": {
			in:   Input{Min: 2, Max: 5, Warm: 3},
			want: Explanation{Kind: KindIdle, Clamp: ClampMin, Desired: 2, Min: 2, Max: 5, SlotsPerPod: 3},
			say:  "Nothing is running, reserved or queued: the minimum, 2 pods.",
		},
		"busy pods alone": {
			in:   Input{BusyPods: 3},
			want: Explanation{Kind: KindBusy, Desired: 3, BusyPods: 3, SlotsPerPod: 3},
			say:  "3 pods with running or reserved work stay.",
		},
		"queued work fits the idle slots of busy pods": {
			in:   Input{BusyPods: 2, FreeOnBusy: []int{1, 3}, Queued: map[string]int{plan: 4}},
			want: Explanation{Kind: KindBusy, Desired: 2, BusyPods: 2, Queued: 4, FreeOnBusy: 4, SlotsPerPod: 3},
			say:  "2 pods with running or reserved work stay; 4 queued tasks fit in their 4 idle slots.",
		},
		"plans need whole pods, three per pod": {
			in: Input{Queued: map[string]int{plan: 42}},
			want: Explanation{Kind: KindSlots, Desired: 14, NewPods: 14, Queued: 42, SlotsPerPod: 3,
				Constraint: Constraint{Tasks: 42, PerPod: 3}},
			say: "42 queued tasks need 42 slots at 3 per pod: 14 new pods.",
		},
		"plans beyond the idle slots of busy pods": {
			in: Input{BusyPods: 2, FreeOnBusy: []int{0, 2}, Queued: map[string]int{plan: 9}},
			want: Explanation{Kind: KindSlots, Desired: 5, BusyPods: 2, NewPods: 3, Queued: 9, FreeOnBusy: 2, SlotsPerPod: 3,
				Constraint: Constraint{Tasks: 9, Free: 2, PerPod: 3}},
			say: "9 queued tasks need 9 slots at 3 per pod; 2 such slots are idle on busy pods, the other 7 tasks need 3 new pods. 2 busy + 3 new = 5 pods.",
		},
		"plan_and_apply needs slot 0: it binds over the whole pod on a tie": {
			// {plan_and_apply}: 5 pods at 1 per pod; all 15 tasks: 5 pods at 3 per pod.
			in: Input{Queued: map[string]int{plan: 10, pa: 5}},
			want: Explanation{Kind: KindSlotClass, Desired: 5, NewPods: 5, Queued: 15, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{pa}, Tasks: 5, PerPod: 1}},
			say: "5 queued plan_and_apply can use only 1 of each pod's 3 slots: 5 new pods; 10 more queued tasks fit beside them.",
			tie: true,
		},
		"plan_and_apply binds while plans fill the idle slots of busy pods": {
			in: Input{BusyPods: 3, FreeOnBusy: []int{0, 6}, Queued: map[string]int{plan: 12, pa: 5}},
			want: Explanation{Kind: KindSlotClass, Desired: 8, BusyPods: 3, NewPods: 5, Queued: 17, FreeOnBusy: 6, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{pa}, Tasks: 5, PerPod: 1}},
			say: "5 queued plan_and_apply can use only 1 of each pod's 3 slots: 5 new pods; 12 more queued tasks fit beside them. 3 busy + 5 new = 8 pods.",
		},
		"a free slot 0 on a busy pod counts for plan_and_apply": {
			in: Input{BusyPods: 2, FreeOnBusy: []int{1, 0}, Queued: map[string]int{pa: 3}},
			want: Explanation{Kind: KindSlotClass, Desired: 4, BusyPods: 2, NewPods: 2, Queued: 3, FreeOnBusy: 1, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{pa}, Tasks: 3, Free: 1, PerPod: 1}},
			say: "3 queued plan_and_apply can use only 1 of each pod's 3 slots; 1 such slot is idle on busy pods, the other 2 tasks need 2 new pods. 2 busy + 2 new = 4 pods.",
		},
		"on a tie the constraint with the fewest slots per pod is named": {
			// {b}×2 (class 0): ⌈6/2⌉ = 3 pods; {a}×1: 3 pods; all 9 tasks: 3 pods.
			classes: classesOf([][]string{{"b"}, {"b"}, {"a"}}),
			in:      Input{Queued: map[string]int{"a": 3, "b": 6}},
			want: Explanation{Kind: KindSlotClass, Desired: 3, NewPods: 3, Queued: 9, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{"a"}, Tasks: 3, PerPod: 1}},
			say: "3 queued a can use only 1 of each pod's 3 slots: 3 new pods; 6 more queued tasks fit beside them.",
			tie: true,
		},
		"the whole pod binds once plans outnumber what slot 0 asks for": {
			// {plan_and_apply}: 2 pods; all 11 tasks: ⌈11/3⌉ = 4 pods.
			in: Input{Queued: map[string]int{plan: 9, pa: 2}},
			want: Explanation{Kind: KindSlots, Desired: 4, NewPods: 4, Queued: 11, SlotsPerPod: 3,
				Constraint: Constraint{Tasks: 11, PerPod: 3}},
			say: "11 queued tasks need 11 slots at 3 per pod: 4 new pods.",
		},
		"a pair of types binds beyond either alone": {
			// a: 1 pod, b: ⌈4/2⌉ = 2, c: 1; {a,b} share 2 slots per pod: ⌈5/2⌉ = 3.
			classes: threeClasses,
			in:      Input{Queued: map[string]int{"a": 1, "b": 4, "c": 1}},
			want: Explanation{Kind: KindSlotClass, Desired: 3, NewPods: 3, Queued: 6, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{"a", "b"}, Tasks: 5, PerPod: 2}},
			say: "5 queued tasks of type a or b can use only 2 of each pod's 3 slots: 3 new pods; 1 more queued task fits beside them.",
		},
		"one slot running everything: one task per pod": {
			classes: classesOf([][]string{{plan, pa}}),
			in:      Input{BusyPods: 1, FreeOnBusy: []int{1}, Queued: map[string]int{plan: 2, pa: 3}},
			want: Explanation{Kind: KindSlots, Desired: 5, BusyPods: 1, NewPods: 4, Queued: 5, FreeOnBusy: 1, SlotsPerPod: 1,
				Constraint: Constraint{Tasks: 5, Free: 1, PerPod: 1}},
			say: "5 queued tasks need 5 slots at 1 per pod; 1 such slot is idle on busy pods, the other 4 tasks need 4 new pods. 1 busy + 4 new = 5 pods.",
		},
		"warm pods are added while active": {
			in: Input{Queued: map[string]int{plan: 3}, Warm: 2},
			want: Explanation{Kind: KindSlots, Desired: 3, NewPods: 1, Warm: 2, Queued: 3, SlotsPerPod: 3,
				Constraint: Constraint{Tasks: 3, PerPod: 3}},
			say: "3 queued tasks need 3 slots at 3 per pod: 1 new pod. 1 new + 2 warm = 3 pods.",
		},
		"capped at Max": {
			in: Input{Queued: map[string]int{plan: 30}, Max: 4},
			want: Explanation{Kind: KindSlots, Clamp: ClampMax, Desired: 4, NewPods: 10, Max: 4, Queued: 30, SlotsPerPod: 3,
				Constraint: Constraint{Tasks: 30, PerPod: 3}},
			say: "30 queued tasks need 30 slots at 3 per pod: 10 new pods. Capped at the maximum: 4 pods.",
		},
		"busy and warm pods capped at Max": {
			in:   Input{BusyPods: 4, Warm: 2, Max: 5},
			want: Explanation{Kind: KindBusy, Clamp: ClampMax, Desired: 5, BusyPods: 4, Warm: 2, Max: 5, SlotsPerPod: 3},
			say:  "4 pods with running or reserved work stay. 4 busy + 2 warm = 6, capped at the maximum: 5 pods.",
		},
		"raised to Min": {
			in: Input{BusyPods: 1, Queued: map[string]int{pa: 1}, Min: 5},
			want: Explanation{Kind: KindSlotClass, Clamp: ClampMin, Desired: 5, BusyPods: 1, NewPods: 1, Min: 5, Queued: 1, SlotsPerPod: 3,
				Constraint: Constraint{Types: []string{pa}, Tasks: 1, PerPod: 1}},
			say: "1 queued plan_and_apply can use only 1 of each pod's 3 slots: 1 new pod. 1 busy + 1 new = 2, raised to the minimum: 5 pods.",
		},
		"unschedulable work is named and not counted": {
			in: Input{Queued: map[string]int{plan: 3, "apply": 5}},
			want: Explanation{Kind: KindSlots, Desired: 1, NewPods: 1, Queued: 3, SlotsPerPod: 3, Unschedulable: 5,
				Constraint: Constraint{Tasks: 3, PerPod: 3}},
			say: "3 queued tasks need 3 slots at 3 per pod: 1 new pod. 5 queued tasks of types no slot may run are not counted.",
		},
		"only unschedulable work: idle": {
			in:   Input{Queued: map[string]int{"apply": 1}},
			want: Explanation{Kind: KindIdle, SlotsPerPod: 3, Unschedulable: 1},
			say:  "Nothing is running, reserved or queued: 0 pods. 1 queued task of types no slot may run is not counted.",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			in.Classes = tc.classes
			if in.Classes == nil {
				in.Classes = defaultClasses
			}
			if in.FreeOnBusy == nil {
				in.FreeOnBusy = make([]int, len(in.Classes))
			}
			for _, s := range []strategy{auto, hallGroups, hallClasses, maxFlow} {
				got, err := desired(in, s)
				require.NoError(t, err)
				checkRules(t, in, got)
				if tc.tie && s == maxFlow {
					continue
				}
				assert.Equal(t, tc.want, got.Why, "solver %d", s)
				assert.Equal(t, tc.say, got.Why.String(), "solver %d", s)
			}
		})
	}
}

// The enumerations meet the queued types in map order, which changes from
// call to call; the constraint they name must not.
func TestExplanationDoesNotDependOnMapOrder(t *testing.T) {
	in := Input{
		Classes:    classesOf([][]string{{"a"}, {"b"}, {"c"}, {"d"}}), // four classes of 1 slot
		FreeOnBusy: []int{0, 0, 0, 0},
		Queued:     map[string]int{"a": 3, "b": 3, "c": 3, "d": 3}, // each alone asks for 3 pods, as do all 12
	}
	for _, s := range []strategy{hallGroups, hallClasses} {
		first, err := desired(in, s)
		require.NoError(t, err)
		assert.Equal(t, Constraint{Types: []string{"a"}, Tasks: 3, PerPod: 1}, first.Why.Constraint, "solver %d", s)
		for range 50 {
			again, err := desired(in, s)
			require.NoError(t, err)
			require.Equal(t, first.Why, again.Why, "solver %d", s)
		}
	}
}

func TestExplanationBindingNamesTheClampFirst(t *testing.T) {
	for _, tc := range []struct {
		e    Explanation
		want string
	}{
		{Explanation{Kind: KindIdle}, "idle"},
		{Explanation{Kind: KindIdle, Clamp: ClampMin}, "min"},
		{Explanation{Kind: KindSlotClass}, "slot-class"},
		{Explanation{Kind: KindSlots, Clamp: ClampMax}, "max"},
	} {
		assert.Equal(t, tc.want, tc.e.Binding())
		assert.Contains(t, Bindings, tc.e.Binding())
	}
}

// checkWhy checks that got.Why explains got: the numbers come from the
// input, and its constraint is a Hall constraint that asks for exactly
// NewPods, counting all the queued work that may run only in its slots.
func checkWhy(t testing.TB, in Input, got Result) {
	t.Helper()
	w := got.Why
	want := Explanation{Desired: got.Desired, BusyPods: in.BusyPods, NewPods: got.NewPods, Min: in.Min, Max: in.Max,
		Constraint: w.Constraint}
	for _, c := range in.Classes {
		want.SlotsPerPod += c.PerPod
	}
	if in.BusyPods > 0 {
		for _, f := range in.FreeOnBusy {
			want.FreeOnBusy += f
		}
	}
	for ty, n := range in.Queued {
		switch {
		case n <= 0:
		case allowedSomewhere(in.Classes, ty):
			want.Queued += n
		default:
			want.Unschedulable = satAdd(want.Unschedulable, n)
		}
	}
	sum := 0
	if got.Active {
		want.Warm = in.Warm
		sum = satAdd(satAdd(in.BusyPods, got.NewPods), in.Warm)
	}
	switch {
	case in.Max > 0 && sum > in.Max:
		want.Clamp = ClampMax
	case sum < in.Min:
		want.Clamp = ClampMin
	}
	switch {
	case !got.Active:
		want.Kind = KindIdle
	case got.NewPods == 0:
		want.Kind = KindBusy
	case w.Constraint.PerPod < want.SlotsPerPod:
		want.Kind = KindSlotClass
	default:
		want.Kind = KindSlots
	}
	if w.Kind != want.Kind || w.Clamp != want.Clamp || !equalExceptConstraint(w, want) {
		t.Fatalf("%+v: Why = %+v, want %+v", in, w, want)
	}
	if got.NewPods == 0 {
		if !isZero(w.Constraint) {
			t.Fatalf("%+v: no new pod but a constraint %+v", in, w.Constraint)
		}
	} else {
		checkConstraint(t, in, got, want.Kind)
	}
	if s := w.String(); !strings.Contains(s, count(got.Desired, "pod")) && !strings.Contains(s, count(got.Desired, "new pod")) {
		t.Fatalf("%+v: %q does not say %d pods", in, s, got.Desired)
	}
}

func equalExceptConstraint(a, b Explanation) bool {
	a.Constraint, b.Constraint = Constraint{}, Constraint{}
	return assert.ObjectsAreEqual(a, b)
}

func isZero(c Constraint) bool { return c.Types == nil && c.Tasks == 0 && c.Free == 0 && c.PerPod == 0 }

// checkConstraint: the classes the constraint names (those allowing one of
// its types; all of them for KindSlots) have PerPod and Free slots, the
// queued work that may run only there is Tasks of Types, and it asks for
// exactly NewPods.
func checkConstraint(t testing.TB, in Input, got Result, kind Kind) {
	t.Helper()
	c := got.Why.Constraint
	if kind == KindSlots && c.Types != nil {
		t.Fatalf("%+v: KindSlots lists types %v", in, c.Types)
	}
	if kind == KindSlotClass && (len(c.Types) == 0 || !slices.IsSorted(c.Types)) {
		t.Fatalf("%+v: KindSlotClass types %v: want some, sorted", in, c.Types)
	}
	inGamma := make([]bool, len(in.Classes))
	for j, cl := range in.Classes {
		inGamma[j] = kind == KindSlots || slices.ContainsFunc(c.Types, func(ty string) bool { return slices.Contains(cl.Types, ty) })
	}
	per, free := 0, 0
	for j, cl := range in.Classes {
		if inGamma[j] {
			per += cl.PerPod
			if in.BusyPods > 0 {
				free += in.FreeOnBusy[j]
			}
		}
	}
	tasks := 0
	var types []string
	for ty, n := range in.Queued {
		if n <= 0 || !allowedSomewhere(in.Classes, ty) {
			continue
		}
		only := true
		for j, cl := range in.Classes {
			if !inGamma[j] && slices.Contains(cl.Types, ty) {
				only = false
			}
		}
		if only {
			tasks += n
			types = append(types, ty)
		}
	}
	slices.Sort(types)
	if kind == KindSlots {
		types = nil
	}
	if c.PerPod != per || c.Free != free || c.Tasks != tasks || !slices.Equal(c.Types, types) {
		t.Fatalf("%+v: constraint %+v, want PerPod %d Free %d Tasks %d Types %v", in, c, per, free, tasks, types)
	}
	if n := need(c.Tasks, c.Free, c.PerPod); n != got.NewPods {
		t.Fatalf("%+v: constraint %+v asks for %d pods, NewPods %d", in, c, n, got.NewPods)
	}
}

func ExampleExplanation() {
	res, _ := Desired(Input{
		Classes:    classesOf([][]string{{"plan", "plan_and_apply"}, {"plan"}, {"plan"}}),
		BusyPods:   3,
		FreeOnBusy: []int{0, 6}, // every slot 0 busy, six plan-only slots idle
		Queued:     map[string]int{"plan": 12, "plan_and_apply": 5},
		Warm:       1,
	})
	fmt.Println(res.Why.Binding())
	fmt.Println(res.Why)
	// Output:
	// slot-class
	// 5 queued plan_and_apply can use only 1 of each pod's 3 slots: 5 new pods; 12 more queued tasks fit beside them. 3 busy + 5 new + 1 warm = 9 pods.
}
