package capacity

import (
	"fmt"
	"slices"
	"strings"
)

// Kind says what a pool's work asks for. Together with Clamp it names what
// sets Desired (Explanation.Binding). The set is closed and small, so it can
// label a metric.
type Kind string

const (
	// KindIdle: nothing runs, is reserved or queued: the pool goes to Min.
	KindIdle Kind = "idle"
	// KindBusy: the pods holding work stay, and whatever is queued fits in
	// their idle slots: no new pod.
	KindBusy Kind = "busy"
	// KindSlots: queued work needs new pods, and every slot of a pod can
	// take some of it: the queue needs ⌈(tasks − idle slots) / slots per pod⌉.
	KindSlots Kind = "slots"
	// KindSlotClass: queued work needs new pods because some of its types
	// may run only in some of a pod's slots (plan_and_apply only in slot 0
	// under the default policy): those slots, not the pod's, set the count.
	KindSlotClass Kind = "slot-class"
)

// Kinds lists every Kind, for metrics that set one series per kind.
var Kinds = []Kind{KindIdle, KindBusy, KindSlots, KindSlotClass}

// Clamp says which replica bound, if any, overrides what the work asks for.
type Clamp string

const (
	ClampNone Clamp = ""
	ClampMin  Clamp = "min" // raised to Min
	ClampMax  Clamp = "max" // capped at Max
)

// Bindings lists every value of Explanation.Binding.
var Bindings = []string{string(KindIdle), string(KindBusy), string(KindSlots), string(KindSlotClass), string(ClampMin), string(ClampMax)}

// Constraint is the Hall constraint that asks for the most new pods: Tasks
// queued tasks may run only in PerPod slots of each pod, Free of which are
// idle on busy pods, so they need ⌈(Tasks − Free) / PerPod⌉ new pods. The
// other queued work fits beside them in that many pods.
type Constraint struct {
	// Types are the queued types it counts, sorted. Nil when it counts
	// every schedulable queued task (Kind KindSlots).
	Types  []string
	Tasks  int
	Free   int
	PerPod int
}

// Explanation is why Desired is what it is: the constraint that binds and
// the numbers that go into it. Result.Why holds it; String says it in words.
type Explanation struct {
	Kind  Kind
	Clamp Clamp
	// Desired = clamp(Min, Max, BusyPods + NewPods + Warm) while the pool
	// is active, Min otherwise (as Result.Desired).
	Desired  int
	BusyPods int
	NewPods  int
	Warm     int // the warm pods added: Input.Warm while active, else 0
	Min, Max int
	// Queued counts the schedulable queued tasks; FreeOnBusy the idle slots
	// on busy, uncordoned pods (0 without busy pods).
	Queued, FreeOnBusy int
	SlotsPerPod        int
	// Constraint is the binding constraint when NewPods > 0 (Kind
	// KindSlots or KindSlotClass), zero otherwise.
	Constraint Constraint
	// Unschedulable counts queued tasks of types no slot may run (not
	// counted anywhere else).
	Unschedulable int
}

// Binding names what sets Desired: the clamp when one overrides the work,
// otherwise the Kind. One of Bindings.
func (e Explanation) Binding() string {
	if e.Clamp != ClampNone {
		return string(e.Clamp)
	}
	return string(e.Kind)
}

// explain fills res.Why (in place: Explanation is large for a copy on this
// path). want is BusyPods+NewPods+Warm before clamping (0 while inactive);
// total, freeTotal, perPod and unsched are the sums of the schedulable
// queued work, of the idle slots on busy pods (0 without busy pods), of
// the slots per pod and of the unschedulable work; free, q, nb, words are
// as for newPods and bind the binding set of classes it found. It
// allocates only for the Types of a KindSlotClass constraint.
//
// res.Why must be zero. Its fields are set one by one: a composite literal
// copied in whole was a third of this function's time (the copy reads back
// what was just written, in wider words than it was written).
func explain(res *Result, in *Input, want, total, freeTotal, perPod, unsched int, free, q []int, nb []uint64, words int, bind []uint64) {
	e := &res.Why
	e.Desired, e.BusyPods, e.NewPods, e.Min, e.Max = res.Desired, in.BusyPods, res.NewPods, in.Min, in.Max
	e.Queued, e.FreeOnBusy, e.SlotsPerPod, e.Unschedulable = total, freeTotal, perPod, unsched
	switch {
	case !res.Active:
		e.Kind = KindIdle
	case res.NewPods == 0:
		e.Kind = KindBusy
	default:
		e.Kind = KindSlots
		constraintOf(&e.Constraint, in, q, nb, words, bind, free, perPod)
		if e.Constraint.PerPod < perPod {
			e.Kind = KindSlotClass
		}
	}
	if res.Active {
		e.Warm = in.Warm
	}
	switch {
	case in.Max > 0 && want > in.Max:
		e.Clamp = ClampMax
	case want < in.Min:
		e.Clamp = ClampMin
	}
}

func inSet(set []uint64, j int) bool { return set[j/64]&(1<<(j%64)) != 0 }

// constraintOf puts numbers (into c, zero) on the set of classes k: the queued work that
// may run only there, and the slots it has. The solvers return a k that is
// exactly the classes that work may use, so the types listed use all of k.
func constraintOf(c *Constraint, in *Input, q []int, nb []uint64, words int, k []uint64, free []int, slotsPerPod int) {
	for j, cl := range in.Classes {
		if inSet(k, j) {
			c.PerPod += cl.PerPod
			if free != nil {
				c.Free += free[j]
			}
		}
	}
	for i, n := range q {
		inside := true
		for w := range words {
			if nb[i*words+w]&^k[w] != 0 {
				inside = false
				break
			}
		}
		if inside {
			c.Tasks += n // a part of total: no overflow
		}
	}
	if c.PerPod == slotsPerPod {
		return // every class: all queued work, no list needed
	}
	// The candidates are the types of k's classes: a walk over them and a
	// lookup each is cheaper than a walk over the queue map.
	for j, cl := range in.Classes {
		if !inSet(k, j) {
			continue
		}
		for _, t := range cl.Types {
			if in.Queued[t] > 0 && !slices.Contains(c.Types, t) && onlyIn(in.Classes, k, t) {
				if c.Types == nil {
					c.Types = make([]string, 0, len(in.Queued))
				}
				c.Types = append(c.Types, t)
			}
		}
	}
	slices.Sort(c.Types)
}

// onlyIn reports whether no class outside k allows t.
func onlyIn(classes []Class, k []uint64, t string) bool {
	for j, cl := range classes {
		if !inSet(k, j) && slices.Contains(cl.Types, t) {
			return false
		}
	}
	return true
}

// String says the explanation in one or a few sentences, e.g. "5 queued
// plan_and_apply can use only 1 of each pod's 3 slots: 5 new pods; 12 more
// queued tasks fit beside them. 3 busy + 5 new = 8 pods."
func (e Explanation) String() string {
	var b strings.Builder
	c := e.Constraint
	switch e.Kind {
	case KindIdle:
		b.WriteString("Nothing is running, reserved or queued: ")
		if e.Clamp == ClampMin {
			fmt.Fprintf(&b, "the minimum, %s.", count(e.Desired, "pod"))
		} else {
			fmt.Fprintf(&b, "%s.", count(e.Desired, "pod"))
		}
	case KindBusy:
		fmt.Fprintf(&b, "%s with running or reserved work %s", count(e.BusyPods, "pod"), verb(e.BusyPods, "stays", "stay"))
		if e.Queued > 0 {
			fmt.Fprintf(&b, "; %s %s in their %s", count(e.Queued, "queued task"), verb(e.Queued, "fits", "fit"), count(e.FreeOnBusy, "idle slot"))
		}
		b.WriteString(".")
	case KindSlots:
		fmt.Fprintf(&b, "%s %s %s at %d per pod", count(c.Tasks, "queued task"), verb(c.Tasks, "needs", "need"), count(c.Tasks, "slot"), c.PerPod)
		e.writeNewPods(&b)
		b.WriteString(".")
	case KindSlotClass:
		what := count(c.Tasks, "queued task") + " of type " + strings.Join(c.Types, " or ")
		if len(c.Types) == 1 {
			what = fmt.Sprintf("%d queued %s", c.Tasks, c.Types[0])
		}
		fmt.Fprintf(&b, "%s can use only %d of each pod's %s", what, c.PerPod, count(e.SlotsPerPod, "slot"))
		e.writeNewPods(&b)
		if rest := e.Queued - c.Tasks; rest > 0 {
			fmt.Fprintf(&b, "; %d more queued %s beside them", rest, verb(rest, "task fits", "tasks fit"))
		}
		b.WriteString(".")
	}
	if e.Kind != KindIdle {
		e.writeSum(&b)
	}
	if e.Unschedulable > 0 {
		fmt.Fprintf(&b, " %s of types no slot may run %s not counted.", count(e.Unschedulable, "queued task"), verb(e.Unschedulable, "is", "are"))
	}
	return b.String()
}

// writeNewPods: how the binding constraint's tasks become new pods.
func (e Explanation) writeNewPods(b *strings.Builder) {
	c := e.Constraint
	if c.Free == 0 {
		fmt.Fprintf(b, ": %s", count(e.NewPods, "new pod"))
		return
	}
	fmt.Fprintf(b, "; %d such %s idle on busy pods, the other %s %s", c.Free, verb(c.Free, "slot is", "slots are"),
		count(c.Tasks-c.Free, "task"), verb(c.Tasks-c.Free, "needs ", "need ")+count(e.NewPods, "new pod"))
}

// writeSum: busy + new + warm, and the clamp. A lone term the first
// sentence already gave is not repeated.
func (e Explanation) writeSum(b *strings.Builder) {
	var terms []string
	for _, t := range []struct {
		n    int
		name string
	}{{e.BusyPods, "busy"}, {e.NewPods, "new"}, {e.Warm, "warm"}} {
		if t.n > 0 {
			terms = append(terms, fmt.Sprintf("%d %s", t.n, t.name))
		}
	}
	sum := satAdd(satAdd(e.BusyPods, e.NewPods), e.Warm)
	if len(terms) > 1 {
		fmt.Fprintf(b, " %s = %d", strings.Join(terms, " + "), sum)
		if e.Clamp == ClampNone {
			b.WriteString(" pods")
		}
	}
	switch {
	case e.Clamp == ClampMax && len(terms) > 1:
		fmt.Fprintf(b, ", capped at the maximum: %s.", count(e.Max, "pod"))
	case e.Clamp == ClampMax:
		fmt.Fprintf(b, " Capped at the maximum: %s.", count(e.Max, "pod"))
	case e.Clamp == ClampMin && len(terms) > 1:
		fmt.Fprintf(b, ", raised to the minimum: %s.", count(e.Min, "pod"))
	case e.Clamp == ClampMin:
		fmt.Fprintf(b, " Raised to the minimum: %s.", count(e.Min, "pod"))
	case len(terms) > 1:
		b.WriteString(".")
	}
}

// count is "1 pod", "3 pods".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func verb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
