package capacity

import (
	"reflect"
	"testing"
)

func TestClassesOf(t *testing.T) {
	tests := map[string]struct {
		slots     [][]string
		want      []Class
		slotClass []int
	}{
		"default policy groups into any-type class and plan-only class": {
			slots:     defaultSlots,
			want:      []Class{{Types: []string{plan, pa}, PerPod: 1}, {Types: []string{plan}, PerPod: 2}},
			slotClass: []int{0, 1, 1},
		},
		"type order within a slot does not matter": {
			slots: [][]string{{pa, plan}, {plan}, {plan, pa}},
			want:  []Class{{Types: []string{plan, pa}, PerPod: 2}, {Types: []string{plan}, PerPod: 1}},
		},
		"classes come in order of first appearance": {
			slots:     [][]string{{plan}, {plan, pa}, {plan}},
			want:      []Class{{Types: []string{plan}, PerPod: 2}, {Types: []string{plan, pa}, PerPod: 1}},
			slotClass: []int{0, 1, 0},
		},
		"duplicate types within a slot are collapsed": {
			slots: [][]string{{plan, plan}, {plan}},
			want:  []Class{{Types: []string{plan}, PerPod: 2}},
		},
		"types are returned sorted": {
			slots: [][]string{{"c", "a", "b"}},
			want:  []Class{{Types: []string{"a", "b", "c"}, PerPod: 1}},
		},
		"a slot that allows nothing adds no class": {
			slots:     [][]string{{}, {plan}, nil},
			want:      []Class{{Types: []string{plan}, PerPod: 1}},
			slotClass: []int{-1, 0, -1},
		},
		"three distinct sets make three classes": {
			slots: [][]string{{"a", "b"}, {"b", "c"}, {"c"}},
			want: []Class{
				{Types: []string{"a", "b"}, PerPod: 1},
				{Types: []string{"b", "c"}, PerPod: 1},
				{Types: []string{"c"}, PerPod: 1},
			},
		},
		"no slots give no classes": {slots: nil, want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, slotClass := ClassesOf(tc.slots)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ClassesOf(%v) = %+v, want %+v", tc.slots, got, tc.want)
			}
			if len(slotClass) != len(tc.slots) {
				t.Errorf("ClassesOf(%v) gave %d slot classes for %d slots", tc.slots, len(slotClass), len(tc.slots))
			}
			if tc.slotClass != nil && !reflect.DeepEqual(slotClass, tc.slotClass) {
				t.Errorf("ClassesOf(%v) slot classes = %v, want %v", tc.slots, slotClass, tc.slotClass)
			}
		})
	}
}

func TestClassesOfDoesNotAliasInput(t *testing.T) {
	slots := [][]string{{pa, plan}, {plan}}
	got, _ := ClassesOf(slots)
	slots[0][0], slots[1][0] = "changed", "changed"
	want := []Class{{Types: []string{plan, pa}, PerPod: 1}, {Types: []string{plan}, PerPod: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("classes changed with the input: %+v", got)
	}
	got[0].Types = append(got[0].Types, "x") // must not write into another class
	if !reflect.DeepEqual(got[1], want[1]) {
		t.Errorf("append to one class changed another: %+v", got)
	}
}
