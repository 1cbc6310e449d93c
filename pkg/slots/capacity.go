package slots

import "github.com/slotscaler/slotscaler/pkg/capacity"

// CapacityInput turns a pool's counters into the capacity model's input.
// Idle slots are counted on active pods; those of fully idle pods are not
// free capacity on busy pods (an idle pod may go away), so they are
// subtracted: FreeOnBusy = idle slots − idle pods × slots of that class per pod.
func CapacityInput(cfg PoolConfig, st Stats, warm int) capacity.Input {
	classes, _ := cfg.Policy.Classes()
	in := capacity.Input{
		Classes:    make([]capacity.Class, len(classes)),
		BusyPods:   st.BusyPods,
		FreeOnBusy: make([]int, len(classes)),
		Queued:     make(map[string]int, len(st.Queued)),
		Warm:       warm,
	}
	for i, c := range classes {
		types := make([]string, len(c.Types))
		for j, t := range c.Types {
			types[j] = string(t)
		}
		in.Classes[i] = capacity.Class{Types: types, PerPod: c.PerPod}
		idle := 0
		if i < len(st.IdleSlots) {
			idle = st.IdleSlots[i]
		}
		in.FreeOnBusy[i] = max(0, idle-st.IdlePods*c.PerPod)
	}
	for t, n := range st.Queued {
		in.Queued[string(t)] = n
	}
	return in
}

// LivePods counts the pods an HPA sees as the pool's replicas: created and
// not on their way out (expected, active, cordoned).
func (st Stats) LivePods() int {
	return st.Pods[PodExpected] + st.Pods[PodActive] + st.Pods[PodCordoned]
}
