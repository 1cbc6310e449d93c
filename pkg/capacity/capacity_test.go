package capacity

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// Task types of the default policy.
const (
	plan = "plan"
	pa   = "plan_and_apply"
)

// defaultSlots is the default policy: slot 0 runs anything, slots 1-2 plans.
var defaultSlots = [][]string{{plan, pa}, {plan}, {plan}}

// defaultClasses = [{plan, plan_and_apply}×1, {plan}×2].
var defaultClasses = classesOf(defaultSlots)

// classesOf is ClassesOf without the slot indexes.
func classesOf(slots [][]string) []Class {
	c, _ := ClassesOf(slots)
	return c
}

func TestDesired(t *testing.T) {
	threeClasses := classesOf([][]string{{"a", "b"}, {"b", "c"}, {"c"}}) // {a,b}×1, {b,c}×1, {c}×1

	tests := map[string]struct {
		classes []Class // nil: default policy
		in      Input   // Classes filled from classes; FreeOnBusy nil: all zero
		want    Result
	}{
		"empty pool wants zero pods and is inactive": {
			want: Result{},
		},
		"zero queued entries are ignored and keep the pool inactive": {
			in:   Input{Queued: map[string]int{plan: 0, pa: 0, "unknown": 0}},
			want: Result{},
		},
		"queued plans fill free plan slots on busy pods first": {
			in:   Input{BusyPods: 2, FreeOnBusy: []int{1, 3}, Queued: map[string]int{plan: 4}},
			want: Result{Desired: 2, NewPods: 0, Active: true},
		},
		"plans beyond free slots need new pods at three plans per pod": {
			in:   Input{BusyPods: 2, FreeOnBusy: []int{0, 2}, Queued: map[string]int{plan: 9}},
			want: Result{Desired: 5, NewPods: 3, Active: true}, // 7 left → ceil(7/3)
		},
		"plans on an empty pool need ceil(plans/3) pods": {
			in:   Input{Queued: map[string]int{plan: 10}},
			want: Result{Desired: 4, NewPods: 4, Active: true},
		},
		"plan_and_apply runs one per pod": {
			in:   Input{Queued: map[string]int{pa: 3}},
			want: Result{Desired: 3, NewPods: 3, Active: true},
		},
		"free plan-only slots do not help plan_and_apply": {
			in:   Input{BusyPods: 1, FreeOnBusy: []int{0, 2}, Queued: map[string]int{pa: 2}},
			want: Result{Desired: 3, NewPods: 2, Active: true},
		},
		"a free slot 0 on a busy pod takes a plan_and_apply": {
			in:   Input{BusyPods: 2, FreeOnBusy: []int{1, 0}, Queued: map[string]int{pa: 1}},
			want: Result{Desired: 2, NewPods: 0, Active: true},
		},
		"mix that fills whole pods exactly": {
			in:   Input{Queued: map[string]int{plan: 4, pa: 2}},
			want: Result{Desired: 2, NewPods: 2, Active: true},
		},
		"mix whose plans spill into one more pod": {
			in:   Input{Queued: map[string]int{plan: 5, pa: 2}},
			want: Result{Desired: 3, NewPods: 3, Active: true}, // 7 tasks, 3 per pod
		},
		"mix where plans use free slots and plan_and_apply needs new pods": {
			in:   Input{BusyPods: 1, FreeOnBusy: []int{1, 2}, Queued: map[string]int{plan: 3, pa: 3}},
			want: Result{Desired: 3, NewPods: 2, Active: true},
		},
		"slot 0s held by plans: a waiting plan_and_apply gets a new pod": {
			in:   Input{BusyPods: 2, FreeOnBusy: []int{0, 4}, Queued: map[string]int{plan: 3, pa: 1}},
			want: Result{Desired: 3, NewPods: 1, Active: true},
		},
		"reserved pods are busy: the floor stays without queued work": {
			in:   Input{BusyPods: 3},
			want: Result{Desired: 3, NewPods: 0, Active: true},
		},
		"cordoned busy pods count in the floor but bring no free slots": {
			// 4 busy pods, 2 of them cordoned: only the uncordoned ones' 2 free plan slots count.
			in:   Input{BusyPods: 4, FreeOnBusy: []int{0, 2}, Queued: map[string]int{plan: 3}},
			want: Result{Desired: 5, NewPods: 1, Active: true},
		},
		"free slots are ignored when there are no busy pods": {
			in:   Input{FreeOnBusy: []int{2, 2}, Queued: map[string]int{plan: 3}},
			want: Result{Desired: 1, NewPods: 1, Active: true},
		},
		"warm buffer is added on top of busy pods while active": {
			in:   Input{BusyPods: 1, Warm: 2},
			want: Result{Desired: 3, NewPods: 0, Active: true},
		},
		"warm buffer is added on top of new pods while active": {
			in:   Input{Queued: map[string]int{plan: 3}, Warm: 1},
			want: Result{Desired: 2, NewPods: 1, Active: true},
		},
		"warm buffer alone does not keep the pool active: scale to zero": {
			in:   Input{Warm: 2},
			want: Result{Desired: 0, Active: false},
		},
		"inactive pool with warm buffer sits at Min": {
			in:   Input{Warm: 2, Min: 1, Max: 5},
			want: Result{Desired: 1, Active: false},
		},
		"clamped to Max": {
			in:   Input{Queued: map[string]int{plan: 30}, Max: 4},
			want: Result{Desired: 4, NewPods: 10, Active: true},
		},
		"busy floor is clamped to Max too": {
			in:   Input{BusyPods: 10, Max: 5},
			want: Result{Desired: 5, Active: true},
		},
		"clamped to Min": {
			in:   Input{Queued: map[string]int{plan: 3}, Min: 5},
			want: Result{Desired: 5, NewPods: 1, Active: true},
		},
		"Min with Max zero (unbounded) is valid": {
			in:   Input{Queued: map[string]int{plan: 300}, Min: 2},
			want: Result{Desired: 100, NewPods: 100, Active: true},
		},
		"unschedulable type is reported and not counted": {
			in: Input{Queued: map[string]int{plan: 3, "apply": 5}},
			want: Result{Desired: 1, NewPods: 1, Active: true,
				Unschedulable: map[string]int{"apply": 5}},
		},
		"only unschedulable work neither activates the pool nor adds pods": {
			in: Input{Queued: map[string]int{"apply": 2, "destroy": 1}, Warm: 1},
			want: Result{Desired: 0, NewPods: 0, Active: false,
				Unschedulable: map[string]int{"apply": 2, "destroy": 1}},
		},
		"single slot running all types: one task per pod": {
			classes: classesOf([][]string{{plan, pa}}),
			in:      Input{BusyPods: 1, FreeOnBusy: []int{1}, Queued: map[string]int{plan: 2, pa: 3}},
			want:    Result{Desired: 5, NewPods: 4, Active: true},
		},
		"four slots running all types: four tasks per pod": {
			classes: classesOf([][]string{{plan, pa}, {pa, plan}, {plan, pa}, {plan, pa}}),
			in:      Input{Queued: map[string]int{plan: 5, pa: 3}},
			want:    Result{Desired: 2, NewPods: 2, Active: true},
		},
		"two classes where one type fits both": {
			classes: classesOf([][]string{{"a"}, {"a", "b"}, {"a", "b"}}), // {a}×1, {a,b}×2
			in:      Input{Queued: map[string]int{"a": 4, "b": 1}},
			want:    Result{Desired: 2, NewPods: 2, Active: true},
		},
		"two classes where the narrower type alone binds": {
			classes: classesOf([][]string{{"a"}, {"a", "b"}, {"a", "b"}}),
			in:      Input{BusyPods: 1, FreeOnBusy: []int{1, 0}, Queued: map[string]int{"a": 1, "b": 5}},
			want:    Result{Desired: 4, NewPods: 3, Active: true},
		},
		"three classes where naive greedy over-counts": {
			// Greedy putting b into the first class allowing it ({a,b}) leaves
			// nothing for a and asks for 2 pods; b belongs on {b,c}: 1 pod.
			classes: threeClasses,
			in:      Input{Queued: map[string]int{"a": 1, "b": 1}},
			want:    Result{Desired: 1, NewPods: 1, Active: true},
		},
		"three classes: only the type without a free slot needs a new pod": {
			// Free: one {a,b} and one {c} slot. a→{a,b}, c→{c}; b needs a pod.
			classes: threeClasses,
			in:      Input{BusyPods: 1, FreeOnBusy: []int{1, 0, 1}, Queued: map[string]int{"a": 1, "b": 1, "c": 1}},
			want:    Result{Desired: 2, NewPods: 1, Active: true},
		},
		"three classes where a pair constraint binds beyond any single type": {
			// Per type: a 1, b ceil(4/2)=2, c 1; but {a,b} share {a,b}+{b,c}: ceil(5/2)=3.
			classes: threeClasses,
			in:      Input{Queued: map[string]int{"a": 1, "b": 4, "c": 1}},
			want:    Result{Desired: 3, NewPods: 3, Active: true},
		},
		"three classes where every type fits free slots": {
			classes: threeClasses,
			in:      Input{BusyPods: 1, FreeOnBusy: []int{1, 0, 1}, Queued: map[string]int{"a": 1, "c": 1}},
			want:    Result{Desired: 1, NewPods: 0, Active: true},
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
				if err != nil {
					t.Fatalf("solver %d: unexpected error: %v", s, err)
				}
				checkRules(t, in, got)
				got.Why = Explanation{} // TestExplanation looks at it
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("solver %d: got %+v, want %+v", s, got, tc.want)
				}
			}
		})
	}
}

func TestDesiredErrors(t *testing.T) {
	valid := func() Input {
		return Input{Classes: defaultClasses, FreeOnBusy: []int{0, 0}, Queued: map[string]int{plan: 1}}
	}
	tests := map[string]struct {
		mutate  func(*Input)
		wantErr error
		detail  string // substring of the message
	}{
		"negative BusyPods":   {func(in *Input) { in.BusyPods = -1 }, ErrNegativeCount, "BusyPods = -1"},
		"negative Min":        {func(in *Input) { in.Min = -1 }, ErrNegativeCount, "Min = -1"},
		"negative Max":        {func(in *Input) { in.Max = -2 }, ErrNegativeCount, "Max = -2"},
		"negative Warm":       {func(in *Input) { in.Warm = -3 }, ErrNegativeCount, "Warm = -3"},
		"negative FreeOnBusy": {func(in *Input) { in.FreeOnBusy[1] = -1 }, ErrNegativeCount, "FreeOnBusy[1] = -1"},
		"negative Queued reported deterministically by name": {
			func(in *Input) { in.Queued = map[string]int{"z": -1, "b": -2, plan: 3} }, ErrNegativeCount, `Queued["b"] = -2`},
		"negative Queued of an unknown type": {
			func(in *Input) { in.Queued = map[string]int{"unknown": -1} }, ErrNegativeCount, `Queued["unknown"]`},
		"FreeOnBusy shorter than Classes": {
			func(in *Input) { in.FreeOnBusy = []int{0} }, ErrFreeOnBusyLength, "len(FreeOnBusy) = 1, len(Classes) = 2"},
		"FreeOnBusy longer than Classes": {
			func(in *Input) { in.FreeOnBusy = []int{0, 0, 0} }, ErrFreeOnBusyLength, "len(FreeOnBusy) = 3"},
		"FreeOnBusy nil with classes": {
			func(in *Input) { in.FreeOnBusy = nil }, ErrFreeOnBusyLength, "len(FreeOnBusy) = 0"},
		"class with PerPod zero": {
			func(in *Input) { in.Classes = []Class{{Types: []string{plan}, PerPod: 0}, defaultClasses[1]} }, ErrInvalidClass, "Classes[0]"},
		"class with negative PerPod": {
			func(in *Input) { in.Classes = []Class{defaultClasses[0], {Types: []string{plan}, PerPod: -1}} }, ErrInvalidClass, "PerPod = -1"},
		"class with no types": {
			func(in *Input) { in.Classes = []Class{defaultClasses[0], {PerPod: 2}} }, ErrInvalidClass, "Classes[1] has no types"},
		"Min above Max": {func(in *Input) { in.Min, in.Max = 5, 4 }, ErrMinAboveMax, "Min = 5, Max = 4"},
		"queued sum overflows int": {
			func(in *Input) { in.Queued = map[string]int{plan: math.MaxInt, pa: 1} }, ErrOverflow, "Queued"},
		"FreeOnBusy sum overflows int": {
			func(in *Input) { in.FreeOnBusy = []int{math.MaxInt, 1} }, ErrOverflow, "FreeOnBusy"},
		"PerPod sum overflows int": {
			func(in *Input) {
				in.Classes = []Class{{Types: []string{pa}, PerPod: math.MaxInt}, {Types: []string{plan}, PerPod: 1}}
			}, ErrOverflow, "PerPod"},
	}
	sentinels := []error{ErrNegativeCount, ErrFreeOnBusyLength, ErrInvalidClass, ErrMinAboveMax, ErrInvalidTolerance, ErrOverflow}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := valid()
			tc.mutate(&in)
			got, err := Desired(in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want %v", err, tc.wantErr)
			}
			for _, s := range sentinels {
				if s != tc.wantErr && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
			if !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("error %q lacks detail %q", err, tc.detail)
			}
			if !reflect.DeepEqual(got, Result{}) {
				t.Errorf("got result %+v alongside an error, want zero", got)
			}
		})
	}
}

func TestDesiredSaturatesInsteadOfOverflowing(t *testing.T) {
	tests := map[string]struct {
		in   Input
		want int
	}{
		"huge busy plus new pods plus warm, unbounded, saturates": {
			in:   Input{Classes: defaultClasses, FreeOnBusy: []int{0, 0}, BusyPods: math.MaxInt - 1, Warm: 5, Queued: map[string]int{pa: 3}},
			want: math.MaxInt,
		},
		"huge busy plus warm is clamped to Max": {
			in:   Input{Classes: defaultClasses, FreeOnBusy: []int{0, 0}, BusyPods: math.MaxInt, Warm: math.MaxInt, Max: 7},
			want: 7,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := Desired(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Desired != tc.want {
				t.Errorf("Desired = %d, want %d", got.Desired, tc.want)
			}
		})
	}
}

func TestDesiredDoesNotModifyInput(t *testing.T) {
	in := Input{Classes: defaultClasses, BusyPods: 1, FreeOnBusy: []int{1, 2}, Queued: map[string]int{plan: 5, pa: 1, "x": 2}}
	before := Input{
		Classes:    []Class{{Types: []string{plan, pa}, PerPod: 1}, {Types: []string{plan}, PerPod: 2}},
		BusyPods:   1,
		FreeOnBusy: []int{1, 2},
		Queued:     map[string]int{plan: 5, pa: 1, "x": 2},
	}
	res, err := Desired(in)
	if err != nil {
		t.Fatal(err)
	}
	res.Unschedulable["x"] = 99 // the returned map must not alias the input
	if !reflect.DeepEqual(in, before) {
		t.Errorf("input modified: %+v", in)
	}
}

func TestDesiredManyTypesAndClasses(t *testing.T) {
	// Many distinct neighbourhoods: exercises the grouping index and the
	// max-flow fallback (enumeration would be too costly); compared with the
	// exact enumeration over class subsets where that is still affordable.
	tests := map[string]struct {
		classes, types int
	}{
		"40 types over 12 classes (grouping index, class enumeration)":         {classes: 12, types: 40},
		"60 types over 6 classes (types sharing neighbourhoods via the index)": {classes: 6, types: 60},
		"30 types over 30 classes (max-flow fallback)":                         {classes: 30, types: 30},
		"70 classes (multi-word bitsets, max-flow)":                            {classes: 70, types: 20},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.classes), uint64(tc.types)))
			in := Input{BusyPods: 2, Queued: map[string]int{}}
			for j := 0; j < tc.classes; j++ {
				var ts []string
				for i := 0; i < tc.types; i++ {
					if i%tc.classes == j || r.IntN(10) < 3 { // every type allowed somewhere
						ts = append(ts, typeName(i))
					}
				}
				in.Classes = append(in.Classes, Class{Types: ts, PerPod: 1 + r.IntN(3)})
				in.FreeOnBusy = append(in.FreeOnBusy, r.IntN(3))
			}
			for i := 0; i < tc.types; i++ {
				in.Queued[typeName(i)] = 1 + r.IntN(7)
			}
			got, err := Desired(in)
			if err != nil {
				t.Fatal(err)
			}
			want := referenceNewPods(t, in)
			if got.NewPods != want {
				t.Errorf("NewPods = %d, reference %d", got.NewPods, want)
			}
			checkRules(t, in, got)
			for _, s := range []strategy{hallClasses, maxFlow} {
				if tc.classes > 16 && s == hallClasses {
					continue
				}
				r, err := desired(in, s)
				if err != nil || r.NewPods != want {
					t.Errorf("solver %d: NewPods = %d (err %v), reference %d", s, r.NewPods, err, want)
				}
				checkRules(t, in, r)
			}
		})
	}
}

func typeName(i int) string { return "t" + string(rune('A'+i/26)) + string(rune('a'+i%26)) }

func ExampleDesired() {
	res, _ := Desired(Input{
		Classes:    classesOf([][]string{{"plan", "plan_and_apply"}, {"plan"}, {"plan"}}),
		BusyPods:   2,
		FreeOnBusy: []int{0, 3}, // both slot 0s busy, three plan-only slots idle
		Queued:     map[string]int{"plan": 4, "plan_and_apply": 1},
		Max:        10,
		Warm:       1,
	})
	fmt.Printf("desired=%d new=%d active=%v\n", res.Desired, res.NewPods, res.Active)
	// Output: desired=4 new=1 active=true
}
