package capacity

import "slices"

// Class is a set of slots of one pod that run exactly the same task types.
type Class struct {
	Types  []string // task types this class's slots may run
	PerPod int      // how many slots of this class each pod has
}

// ClassesOf groups a per-slot policy (slot index → allowed types) into
// classes, in order of first appearance of each distinct type set, and
// returns each slot's class index. It is the one grouping: the slot store
// allocates and counts by these classes too.
//
// Type order and duplicates within a slot do not matter: each returned
// Class.Types is a sorted, de-duplicated copy (the input is never aliased).
// A slot that allows no type can run nothing and adds no capacity: it is in
// no class (index -1).
func ClassesOf(slots [][]string) (classes []Class, slotClass []int) {
	slotClass = make([]int, len(slots))
	for i, slot := range slots {
		set := slices.Clone(slot)
		slices.Sort(set)
		set = slices.Compact(set)
		if len(set) == 0 {
			slotClass[i] = -1
			continue
		}
		idx := slices.IndexFunc(classes, func(c Class) bool { return slices.Equal(c.Types, set) })
		if idx < 0 {
			idx = len(classes)
			classes = append(classes, Class{Types: slices.Clip(set)})
		}
		classes[idx].PerPod++
		slotClass[i] = idx
	}
	return classes, slotClass
}
