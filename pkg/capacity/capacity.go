package capacity

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (use errors.Is) and adds the offending field and value.
var (
	// ErrNegativeCount: BusyPods, FreeOnBusy, Queued, Min, Max or Warm < 0.
	ErrNegativeCount = errors.New("capacity: negative count")
	// ErrFreeOnBusyLength: len(FreeOnBusy) != len(Classes).
	ErrFreeOnBusyLength = errors.New("capacity: FreeOnBusy length does not match Classes")
	// ErrInvalidClass: a class with PerPod < 1 or no types.
	ErrInvalidClass = errors.New("capacity: invalid class")
	// ErrMinAboveMax: Min > Max while Max > 0.
	ErrMinAboveMax = errors.New("capacity: Min above Max")
	// ErrInvalidTolerance: a tolerance that is negative, NaN or infinite.
	ErrInvalidTolerance = errors.New("capacity: invalid tolerance")
	// ErrOverflow: the sum of the queued, free or per-pod counts does not fit
	// in an int, so the answer cannot be computed exactly.
	ErrOverflow = errors.New("capacity: counts overflow int")
)

// Input is a snapshot of one pool.
type Input struct {
	Classes  []Class
	BusyPods int // pods with any running or reserved slot, cordoned included
	// FreeOnBusy holds the idle slots per class (same index as Classes) on
	// busy, uncordoned pods. It is ignored when BusyPods is 0: without busy
	// pods there is nowhere for such slots to be.
	FreeOnBusy []int
	Queued     map[string]int // queued tasks by type; zero entries are ignored
	Min, Max   int            // replica bounds; Max 0 means unbounded
	Warm       int            // idle pods to keep while the pool is active
}

// Result is the answer for one pool.
type Result struct {
	// Desired is the absolute replica count:
	// clamp(Min, Max, BusyPods+NewPods+Warm) while Active, Min otherwise.
	// If BusyPods+NewPods+Warm exceeds the int range it saturates at
	// math.MaxInt before clamping.
	Desired int
	// NewPods is N: the fewest whole pods, beyond the busy ones, that make
	// all schedulable queued work fit. Before warm and clamping.
	NewPods int
	// Active is true while any work is running, reserved or queued
	// (schedulable queued work only). Warm alone never sets it.
	Active bool
	// Unschedulable holds queued work of types no slot may run; it is not
	// counted in NewPods. Nil when there is none.
	Unschedulable map[string]int
	// Why says what sets Desired, in numbers and in words (Why.String()).
	Why Explanation
}

// Desired computes how many pods the pool needs. See the package
// documentation for the model. It never panics; invalid input yields an error
// wrapping one of the Err* sentinels.
func Desired(in Input) (Result, error) {
	return desired(in, auto)
}

// desired is Desired with a selectable solver, so tests can cross-check them.
func desired(in Input, solver strategy) (res Result, err error) {
	perPod, freeTotal, err := validate(in)
	if err != nil {
		return Result{}, err
	}

	m := len(in.Classes)
	words := (m + 63) / 64 // uint64 words per class bitset

	// Group the queued types by neighbourhood (the set of classes allowing
	// them): types with the same neighbourhood are interchangeable for
	// Hall's condition, so only their sum matters. Small inputs (the normal
	// case) live in stack buffers and do not allocate.
	var (
		qBuf    [8]int
		nbBuf   [8]uint64
		curBuf  [1]uint64
		q       = qBuf[:0]  // queued count per group
		nb      = nbBuf[:0] // neighbourhood per group, words per entry
		cur     []uint64
		index   map[uint64]int // neighbourhood → group, once there are many groups (words == 1)
		unsched map[string]int
		nUnsch  int // sum of unsched, saturating
		total   int // schedulable queued work
		active  = in.BusyPods > 0
	)
	if words <= 1 {
		cur = curBuf[:words]
	} else {
		cur = make([]uint64, words)
	}
	for t, n := range in.Queued {
		if n == 0 {
			continue
		}
		if n < 0 {
			return Result{}, negativeQueued(in.Queued)
		}
		clear(cur)
		allowed := false
		for j := range in.Classes {
			if slices.Contains(in.Classes[j].Types, t) {
				cur[j/64] |= 1 << (j % 64)
				allowed = true
			}
		}
		if !allowed {
			// Work no slot can run never makes the pool active: a pod
			// started for it would sit idle (the store refuses such
			// submissions; this guards a policy changed under a queue).
			if unsched == nil {
				unsched = make(map[string]int)
			}
			unsched[t] = n
			nUnsch = satAdd(nUnsch, n)
			continue
		}
		if total > math.MaxInt-n {
			return Result{}, fmt.Errorf("%w: sum of schedulable Queued exceeds %d", ErrOverflow, math.MaxInt)
		}
		total += n
		active = true

		g := -1
		if index != nil {
			if i, ok := index[cur[0]]; ok {
				g = i
			}
		} else {
			for i := range q {
				if slices.Equal(nb[i*words:(i+1)*words], cur) {
					g = i
					break
				}
			}
		}
		if g >= 0 {
			q[g] += n // cannot overflow: total did not
			continue
		}
		q = append(q, n)
		nb = append(nb, cur...)
		if words == 1 && index == nil && len(q) > 32 {
			index = make(map[uint64]int, 2*len(q))
			for i, w := range nb {
				index[w] = i
			}
		} else if index != nil {
			index[cur[0]] = len(q) - 1
		}
	}

	free := in.FreeOnBusy
	if in.BusyPods == 0 {
		free = nil
	}
	bind := cur // the binding set of classes; cur is free again
	n := newPods(q, nb, words, in.Classes, free, total, solver, bind)

	// res is the named result, filled in place: Result is large since it
	// carries Why, and building it in a local cost a copy per call.
	res.NewPods, res.Active, res.Unschedulable = n, active, unsched
	want := 0
	if active {
		want = satAdd(satAdd(in.BusyPods, n), in.Warm)
	}
	res.Desired = clamp(in.Min, in.Max, want)
	if in.BusyPods == 0 {
		freeTotal = 0
	}
	explain(&res, &in, want, total, freeTotal, perPod, nUnsch, free, q, nb, words, bind)
	return res, nil
}

// validate checks in and returns the sums of Classes[].PerPod and of
// FreeOnBusy, which it proves fit in an int.
func validate(in Input) (perPod, freeOnBusy int, err error) {
	for _, f := range []struct {
		name string
		v    int
	}{{"BusyPods", in.BusyPods}, {"Min", in.Min}, {"Max", in.Max}, {"Warm", in.Warm}} {
		if f.v < 0 {
			return 0, 0, fmt.Errorf("%w: %s = %d", ErrNegativeCount, f.name, f.v)
		}
	}
	if in.Max > 0 && in.Min > in.Max {
		return 0, 0, fmt.Errorf("%w: Min = %d, Max = %d", ErrMinAboveMax, in.Min, in.Max)
	}
	if len(in.FreeOnBusy) != len(in.Classes) {
		return 0, 0, fmt.Errorf("%w: len(FreeOnBusy) = %d, len(Classes) = %d",
			ErrFreeOnBusyLength, len(in.FreeOnBusy), len(in.Classes))
	}
	perTotal, freeTotal := 0, 0
	for j, c := range in.Classes {
		if c.PerPod < 1 {
			return 0, 0, fmt.Errorf("%w: Classes[%d] %v: PerPod = %d, want >= 1", ErrInvalidClass, j, c.Types, c.PerPod)
		}
		if len(c.Types) == 0 {
			return 0, 0, fmt.Errorf("%w: Classes[%d] has no types", ErrInvalidClass, j)
		}
		if perTotal > math.MaxInt-c.PerPod {
			return 0, 0, fmt.Errorf("%w: sum of Classes[].PerPod exceeds %d", ErrOverflow, math.MaxInt)
		}
		perTotal += c.PerPod
	}
	for j, f := range in.FreeOnBusy {
		if f < 0 {
			return 0, 0, fmt.Errorf("%w: FreeOnBusy[%d] = %d", ErrNegativeCount, j, f)
		}
		if freeTotal > math.MaxInt-f {
			return 0, 0, fmt.Errorf("%w: sum of FreeOnBusy exceeds %d", ErrOverflow, math.MaxInt)
		}
		freeTotal += f
	}
	return perTotal, freeTotal, nil
}

// negativeQueued reports the first (by name) negative entry, so the message
// is deterministic. Only called on the error path.
func negativeQueued(queued map[string]int) error {
	var bad []string
	for t, n := range queued {
		if n < 0 {
			bad = append(bad, t)
		}
	}
	sort.Strings(bad)
	return fmt.Errorf("%w: Queued[%q] = %d", ErrNegativeCount, bad[0], queued[bad[0]])
}

func satAdd(a, b int) int { // a, b >= 0
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

func clamp(lo, hi, v int) int {
	if hi > 0 && v > hi {
		v = hi
	}
	if v < lo {
		v = lo
	}
	return v
}
