package capacity

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// referenceNewPods is the brute-force reference: try N = 0, 1, 2, … and
// check with a unit-capacity bipartite matching (Kuhn's augmenting paths,
// one node per task and per slot) whether every schedulable queued task gets
// a slot of its own. Independent of the Hall and max-flow solvers.
func referenceNewPods(t testing.TB, in Input) int {
	t.Helper()
	var tasks []string
	for ty, n := range in.Queued {
		if allowedSomewhere(in.Classes, ty) {
			for range n {
				tasks = append(tasks, ty)
			}
		}
	}
	for n := 0; n <= len(tasks); n++ {
		var slots []int // class index of each slot
		for j, c := range in.Classes {
			units := n * c.PerPod
			if in.BusyPods > 0 {
				units += in.FreeOnBusy[j]
			}
			for range units {
				slots = append(slots, j)
			}
		}
		if everyTaskMatched(tasks, slots, in.Classes) {
			return n
		}
	}
	t.Fatalf("reference: %d tasks do not fit in %d pods", len(tasks), len(tasks))
	return -1
}

func allowedSomewhere(classes []Class, ty string) bool {
	for _, c := range classes {
		if slices.Contains(c.Types, ty) {
			return true
		}
	}
	return false
}

func everyTaskMatched(tasks []string, slots []int, classes []Class) bool {
	if len(tasks) > len(slots) {
		return false
	}
	owner := make([]int, len(slots)) // task holding each slot, -1 if free
	for i := range owner {
		owner[i] = -1
	}
	var augment func(task int, seen []bool) bool
	augment = func(task int, seen []bool) bool {
		for s, j := range slots {
			if seen[s] || !slices.Contains(classes[j].Types, tasks[task]) {
				continue
			}
			seen[s] = true
			if owner[s] < 0 || augment(owner[s], seen) {
				owner[s] = task
				return true
			}
		}
		return false
	}
	for task := range tasks {
		if !augment(task, make([]bool, len(slots))) {
			return false
		}
	}
	return true
}

// randomInput draws a small random pool: up to 5 types, up to 5 slots per
// pod with random allowed sets, random busy/free counts, and sometimes work
// of a type no slot allows.
func randomInput(r *rand.Rand) Input {
	universe := []string{"a", "b", "c", "d", "e"}[:1+r.IntN(5)]
	nSlots := 1 + r.IntN(5)
	slots := make([][]string, nSlots)
	for i := range slots {
		for len(slots[i]) == 0 {
			for _, ty := range universe {
				if r.IntN(2) == 0 {
					slots[i] = append(slots[i], ty)
				}
			}
		}
	}
	in := Input{Classes: classesOf(slots), BusyPods: r.IntN(4), Queued: map[string]int{}}
	for range in.Classes {
		in.FreeOnBusy = append(in.FreeOnBusy, r.IntN(4))
	}
	for _, ty := range universe {
		in.Queued[ty] = r.IntN(6)
	}
	if r.IntN(5) == 0 {
		in.Queued["zz"] = 1 + r.IntN(3)
	}
	in.Warm = r.IntN(3)
	if r.IntN(3) == 0 {
		in.Max = 1 + r.IntN(8)
		in.Min = r.IntN(in.Max + 1)
	}
	return in
}

// TestDesiredMatchesBruteForce is the property test: for random small
// policies and queues, NewPods equals the brute-force minimum, every solver
// agrees, and the rest of the Result follows from the rules.
func TestDesiredMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(2024, 11))
	for iter := range 3000 {
		in := randomInput(r)
		got, err := Desired(in)
		if err != nil {
			t.Fatalf("#%d %+v: %v", iter, in, err)
		}
		if want := referenceNewPods(t, in); got.NewPods != want {
			t.Fatalf("#%d %+v: NewPods = %d, brute force %d", iter, in, got.NewPods, want)
		}
		checkRules(t, in, got)
		for _, s := range []strategy{hallGroups, hallClasses, maxFlow} {
			other, _ := desired(in, s)
			// Solvers may pick different binding constraints when several
			// ask for the same count; checkRules checks each is one.
			checkRules(t, in, other)
			if !reflect.DeepEqual(withoutWhy(other), withoutWhy(got)) {
				t.Fatalf("#%d %+v: solver %d gives %+v, auto gives %+v", iter, in, s, other, got)
			}
		}
	}
}

func withoutWhy(r Result) Result {
	r.Why = Explanation{}
	return r
}

// checkRules checks everything in Result except the value of NewPods.
func checkRules(t testing.TB, in Input, got Result) {
	t.Helper()
	var unsched map[string]int
	active := in.BusyPods > 0
	for ty, n := range in.Queued {
		if n > 0 {
			if !allowedSomewhere(in.Classes, ty) {
				if unsched == nil {
					unsched = map[string]int{}
				}
				unsched[ty] = n
				continue
			}
			active = true
		}
	}
	if got.Active != active {
		t.Fatalf("%+v: Active = %v, want %v", in, got.Active, active)
	}
	if !reflect.DeepEqual(got.Unschedulable, unsched) {
		t.Fatalf("%+v: Unschedulable = %v, want %v", in, got.Unschedulable, unsched)
	}
	if got.NewPods < 0 || (!active && got.NewPods != 0) {
		t.Fatalf("%+v: NewPods = %d", in, got.NewPods)
	}
	if in.Max > 0 && got.Desired > in.Max {
		t.Fatalf("%+v: Desired %d above Max", in, got.Desired)
	}
	if got.Desired < in.Min {
		t.Fatalf("%+v: Desired %d below Min", in, got.Desired)
	}
	if !active && got.Desired != in.Min {
		t.Fatalf("%+v: inactive Desired = %d, want Min %d", in, got.Desired, in.Min)
	}
	if active && (in.Max == 0 || in.Max >= in.BusyPods) && got.Desired < in.BusyPods {
		t.Fatalf("%+v: active Desired %d below BusyPods", in, got.Desired)
	}
	if active {
		want := clamp(in.Min, in.Max, satAdd(satAdd(in.BusyPods, got.NewPods), in.Warm))
		if got.Desired != want {
			t.Fatalf("%+v: Desired = %d, want clamp(BusyPods+NewPods+Warm) = %d", in, got.Desired, want)
		}
	}
	checkWhy(t, in, got)
}
