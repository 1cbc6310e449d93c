package capacity

import "slices"

// Class is a set of slots of one pod that run exactly the same task types.
type Class struct {
	Types  []string // task types this class's slots may run
	PerPod int      // how many slots of this class each pod has
}

// ClassesOf groups a per-slot policy (slot index → allowed types) into
// classes, in order of first appearance of each distinct type set.
//
// Type order and duplicates within a slot do not matter: each returned
// Class.Types is a sorted, de-duplicated copy (the input is never aliased).
// A slot that allows no type can run nothing and adds no capacity, so it is
// skipped.
func ClassesOf(slots [][]string) []Class {
	var out []Class
	for _, slot := range slots {
		set := slices.Clone(slot)
		slices.Sort(set)
		set = slices.Compact(set)
		if len(set) == 0 {
			continue
		}
		found := false
		for i := range out {
			if slices.Equal(out[i].Types, set) {
				out[i].PerPod++
				found = true
				break
			}
		}
		if !found {
			out = append(out, Class{Types: slices.Clip(set), PerPod: 1})
		}
	}
	return out
}
