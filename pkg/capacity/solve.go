package capacity

import (
	"math"
	"math/bits"
)

// The core question: given groups of queued work (group i: q[i] tasks that
// may run in the classes of its neighbourhood nb[i]), class capacities
// free[j] + N*per[j], what is the smallest N ≥ 0 for which everything fits?
//
// By Hall's theorem (transportation form) the work fits iff for every
// non-empty set S of groups, q(S) ≤ free(Γ(S)) + N·per(Γ(S)), where Γ(S) is
// the union of the neighbourhoods. Each constraint is linear in N, so
//
//	N = max(0, max_S ceil((q(S) − free(Γ(S))) / per(Γ(S)))).
//
// per(Γ(S)) ≥ 1 because every group has at least one class and PerPod ≥ 1.
// No binary search is needed.
//
// Equivalently one may enumerate sets K of classes with the constraint
// q({i : nb[i] ⊆ K}) ≤ free(K) + N·per(K); enumerating the smaller side is
// enough. When both sides are too large to enumerate (never for realistic
// policies), a max-flow feasibility test with binary search over N is used.

type strategy int

const (
	auto strategy = iota
	hallGroups
	hallClasses
	maxFlow
)

// hallBudget bounds the work of subset enumeration (subsets × inner loop);
// beyond it the max-flow fallback is used.
const hallBudget = 1 << 22

// newPods returns the smallest N. q and nb describe the groups (words uint64
// per neighbourhood), free may be nil (all zero), total = sum(q). When N > 0
// it writes into bind (words long) a set of classes K whose Hall constraint
// asks for exactly N: the binding one, which Explanation puts in words. Among
// several, the enumerations keep the one with the fewest slots per pod (the
// most specific), then the lowest class bitset, whatever the order of the
// groups; max-flow (policies too large to enumerate) keeps the one its
// minimum cut finds, which may depend on the order of the groups.
func newPods(q []int, nb []uint64, words int, classes []Class, free []int, total int, s strategy, bind []uint64) int {
	if len(q) == 0 {
		return 0
	}
	if s == auto {
		s = maxFlow
		if words == 1 {
			k, m := len(q), len(classes)
			w := k + m
			if cg := enumCost(k, w); cg <= hallBudget && cg <= enumCost(m, w) {
				s = hallGroups
			} else if enumCost(m, w) <= hallBudget {
				s = hallClasses
			}
		}
	}
	if words != 1 { // subset enumeration uses single-word bitsets
		s = maxFlow
	}
	var n int
	switch s {
	case hallGroups:
		n, bind[0] = hallOverGroups(q, nb, classes, free)
	case hallClasses:
		n, bind[0] = hallOverClasses(q, nb, classes, free)
	default:
		n = minByFlow(q, nb, words, classes, free, total, bind)
	}
	return n
}

func enumCost(n, w int) int {
	if n >= 40 {
		return math.MaxInt
	}
	return (1 << n) * w
}

// need is the N required by one Hall constraint; ≤ 0 means none.
func need(q, free, per int) int {
	d := q - free // q, free ∈ [0, MaxInt]: no overflow
	if d <= 0 {
		return 0
	}
	n := d / per
	if d%per != 0 {
		n++
	}
	return n
}

// capacityOf sums free and per over the classes in mask (words == 1).
func capacityOf(mask uint64, classes []Class, free []int) (f, p int) {
	for b := mask; b != 0; b &= b - 1 {
		j := bits.TrailingZeros64(b)
		if free != nil {
			f += free[j]
		}
		p += classes[j].PerPod
	}
	return f, p
}

// hallOverGroups enumerates subsets of groups. Requires words == 1. It
// returns N and the neighbourhood of a binding subset (0 when N is 0).
func hallOverGroups(q []int, nb []uint64, classes []Class, free []int) (int, uint64) {
	best, bestPer, bestMask := 0, 0, uint64(0)
	for s := uint64(1); s < 1<<len(q); s++ {
		sum, mask := 0, uint64(0)
		for b := s; b != 0; b &= b - 1 {
			i := bits.TrailingZeros64(b)
			sum += q[i]
			mask |= nb[i]
		}
		f, p := capacityOf(mask, classes, free)
		if n := need(sum, f, p); n > best || n == best && n > 0 && (p < bestPer || p == bestPer && mask < bestMask) {
			best, bestPer, bestMask = n, p, mask
		}
	}
	return best, bestMask
}

// hallOverClasses enumerates subsets of classes. Requires words == 1. It
// returns N and a binding set of classes (0 when N is 0); k ascends, so
// among ties of N and slots per pod the lowest bitset is kept.
func hallOverClasses(q []int, nb []uint64, classes []Class, free []int) (int, uint64) {
	best, bestPer, bestMask := 0, 0, uint64(0)
	for k := uint64(1); k < 1<<len(classes); k++ {
		sum := 0
		for i, g := range nb {
			if g&^k == 0 {
				sum += q[i]
			}
		}
		if sum == 0 {
			continue
		}
		f, p := capacityOf(k, classes, free)
		if n := need(sum, f, p); n > best || n == best && n > 0 && p < bestPer {
			best, bestPer, bestMask = n, p, k
		}
	}
	return best, bestMask
}

// minByFlow binary-searches N with a max-flow feasibility test. N = total is
// always feasible: every group has a class whose capacity is then ≥ total.
// When N > 0 it writes a binding set of classes into bind (see bindingCut).
func minByFlow(q []int, nb []uint64, words int, classes []Class, free []int, total int, bind []uint64) int {
	k, m := len(q), len(classes)
	src, sink := 0, 1+k+m
	g := newFlowNet(sink + 1)
	for i := range q {
		g.addEdge(src, 1+i, q[i])
		for j := 0; j < m; j++ {
			if nb[i*words+j/64]&(1<<(j%64)) != 0 {
				g.addEdge(1+i, 1+k+j, q[i])
			}
		}
	}
	classEdge := make([]int, m)
	for j := 0; j < m; j++ {
		classEdge[j] = g.addEdge(1+k+j, sink, 0)
	}
	feasible := func(n int) bool {
		g.reset()
		for j := 0; j < m; j++ {
			c := total // capacity beyond total is irrelevant
			if per := classes[j].PerPod; n <= total/per {
				c = n * per // ≤ total: no overflow
				if free != nil {
					c = min(satAdd(c, free[j]), total)
				}
			}
			g.setCap(classEdge[j], c)
		}
		return g.maxFlow(src, sink, total) >= total
	}
	lo, hi := 0, total // invariant: hi feasible; answer in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		if feasible(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo > 0 {
		feasible(lo - 1)
		bindingCut(g, q, nb, words, bind)
	}
	return lo
}

// bindingCut reads a violated Hall set off the residual network of an
// infeasible N−1: the groups S still reachable from the source. No edge from
// S leads to a class outside the reachable set (such an edge would carry all
// of its group's flow, leaving the group unreachable), so the minimum cut
// is q(not S) + cap(Γ(S)) < total, i.e. q(S) > cap(Γ(S)) at N−1: Γ(S) asks
// for N. Γ(S) goes into bind. maxFlow stopped on a failed BFS (the flow
// fell short of total), so g.level marks exactly the reachable nodes.
func bindingCut(g *flowNet, q []int, nb []uint64, words int, bind []uint64) {
	clear(bind)
	for i := range q {
		if g.level[1+i] < 0 {
			continue
		}
		for w := range words {
			bind[w] |= nb[i*words+w]
		}
	}
}

// flowNet is a small Dinic max-flow network.
type flowNet struct {
	head, level, iter []int
	to, next, cap     []int
	orig              []int
}

func newFlowNet(n int) *flowNet {
	g := &flowNet{head: make([]int, n), level: make([]int, n), iter: make([]int, n)}
	for i := range g.head {
		g.head[i] = -1
	}
	return g
}

func (g *flowNet) addEdge(u, v, c int) int {
	e := len(g.to)
	g.to = append(g.to, v, u)
	g.cap = append(g.cap, c, 0)
	g.orig = append(g.orig, c, 0)
	g.next = append(g.next, g.head[u], g.head[v])
	g.head[u], g.head[v] = e, e+1
	return e
}

func (g *flowNet) setCap(e, c int) { g.orig[e] = c; g.cap[e] = c }

func (g *flowNet) reset() { copy(g.cap, g.orig) }

func (g *flowNet) bfs(s, t int) bool {
	for i := range g.level {
		g.level[i] = -1
	}
	g.level[s] = 0
	queue := []int{s}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for e := g.head[u]; e >= 0; e = g.next[e] {
			if v := g.to[e]; g.cap[e] > 0 && g.level[v] < 0 {
				g.level[v] = g.level[u] + 1
				queue = append(queue, v)
			}
		}
	}
	return g.level[t] >= 0
}

func (g *flowNet) dfs(u, t, f int) int {
	if u == t {
		return f
	}
	for ; g.iter[u] >= 0; g.iter[u] = g.next[g.iter[u]] {
		e := g.iter[u]
		v := g.to[e]
		if g.cap[e] > 0 && g.level[v] == g.level[u]+1 {
			if d := g.dfs(v, t, min(f, g.cap[e])); d > 0 {
				g.cap[e] -= d
				g.cap[e^1] += d
				return d
			}
		}
	}
	return 0
}

// maxFlow returns the max flow from s to t, stopping once limit is reached.
func (g *flowNet) maxFlow(s, t, limit int) int {
	flow := 0
	for flow < limit && g.bfs(s, t) {
		copy(g.iter, g.head)
		for flow < limit {
			d := g.dfs(s, t, limit-flow)
			if d == 0 {
				break
			}
			flow += d
		}
	}
	return flow
}
