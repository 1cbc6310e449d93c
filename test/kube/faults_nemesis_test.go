package kube

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/internal/faultproxy"
)

// nemesis injects one fault at a time, chosen by its seeded random source,
// and logs each with its time and target: the log is evidence too (a pod the
// nemesis broke may lose its work; one it did not may not).
type nemesis struct {
	r   *faultRun
	rng *rand.Rand

	mu       sync.Mutex
	events   []nemEvent
	counts   map[string]int
	broken   map[string]time.Time // pod name -> when the nemesis first broke it
	timers   sync.WaitGroup       // faults that end by themselves (a freeze, a slow window)
	frozen   map[types.UID]bool
	healings []func()
}

type nemEvent struct {
	at           time.Time
	kind, target string
}

// storeLoss marks events after which the store may have lost writes.
var storeLoss = map[string]bool{"redis-flush": true, "redis-wipe": true, "redis-failover": true}

func (n *nemesis) log(kind, target string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, nemEvent{at: time.Now(), kind: kind, target: target})
	n.counts[kind]++
	n.r.t.Logf("nemesis: %s %s", kind, target)
}

func (n *nemesis) breakPod(kind string, pod *corev1.Pod) {
	n.breakPodNamed(pod.Name)
	n.log(kind, pod.Name)
}

func (n *nemesis) breakPodNamed(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.broken == nil {
		n.broken = map[string]time.Time{}
	}
	if _, ok := n.broken[name]; !ok {
		n.broken[name] = time.Now()
	}
}

// disrupted reports whether the nemesis broke the pod (killed or froze its
// agent, deleted or evicted it).
func (n *nemesis) disrupted(pod string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.broken[pod]
	return ok
}

// storeLossAfter returns the first event after t that may have lost store
// writes.
func (n *nemesis) storeLossAfter(t time.Time) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.events {
		if storeLoss[e.kind] && e.at.After(t) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

func (n *nemesis) summary() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return countsString(n.counts)
}

// countsString is "a=1 b=2", keys sorted.
func countsString(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

func (n *nemesis) sleep(ctx context.Context, lo, hi time.Duration) bool {
	d := lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (n *nemesis) span(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
}

// later runs fn after d, counted in timers so heal waits for it.
func (n *nemesis) later(d time.Duration, fn func()) {
	n.timers.Add(1)
	go func() {
		defer n.timers.Done()
		time.Sleep(d)
		fn()
	}()
}

type nemKind struct {
	name   string
	weight int
	loss   bool // only in data-loss runs
	do     func(n *nemesis)
}

var nemKinds = []nemKind{
	{"agent-kill", 3, false, (*nemesis).agentKill},
	{"agent-freeze", 2, false, (*nemesis).agentFreeze},
	{"janitor-leader-kill", 2, false, (*nemesis).janitorKill},
	{"redis-restart", 1, false, func(n *nemesis) { n.log("redis-restart", ""); n.r.redis.restart() }},
	{"lost-replies", 3, false, (*nemesis).lostReplies},
	{"slow-redis", 2, false, (*nemesis).slowRedis},
	{"redis-stall", 1, false, (*nemesis).stall},
	{"pod-delete", 1, false, (*nemesis).podDelete},
	{"pod-evict", 1, false, (*nemesis).podEvict},
	{"redis-flush", 1, true, func(n *nemesis) { n.log("redis-flush", ""); _ = n.r.redis.do("FLUSHALL") }},
	{"redis-wipe", 1, true, func(n *nemesis) { n.log("redis-wipe", ""); n.r.redis.wipe() }},
	{"redis-failover", 1, true, func(n *nemesis) {
		n.log("redis-failover", "")
		n.r.redis.failover(n.span(200*time.Millisecond, 800*time.Millisecond))
	}},
}

func (n *nemesis) run(ctx context.Context, dur time.Duration) {
	var kinds []nemKind
	total := 0
	for _, k := range nemKinds {
		if k.loss && !n.r.dataLoss {
			continue
		}
		kinds = append(kinds, k)
		total += k.weight
	}
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		if !n.sleep(ctx, 300*time.Millisecond, 2*time.Second) {
			return
		}
		pick := n.rng.IntN(total)
		for _, k := range kinds {
			if pick < k.weight {
				k.do(n)
				break
			}
			pick -= k.weight
		}
	}
}

// heal ends every fault: timed ones run out, proxies are cleared, frozen
// agents resumed, janitors started again.
func (n *nemesis) heal() {
	n.timers.Wait()
	n.r.redis.heal()
	n.r.janitors.restartAll()
	n.mu.Lock()
	frozen := slices.Collect(maps.Keys(n.frozen))
	n.mu.Unlock()
	for _, uid := range frozen {
		n.r.c.kubelet.signalAgent(uid, syscall.SIGCONT)
	}
}

// livePod picks a running pod of the pool, or nil.
func (n *nemesis) livePod() *corev1.Pod {
	pods := n.r.c.livePods(n.r.ns, n.r.pool)
	var running []corev1.Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning {
			running = append(running, p)
		}
	}
	if len(running) == 0 {
		return nil
	}
	slices.SortFunc(running, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	p := running[n.rng.IntN(len(running))]
	return &p
}

func (n *nemesis) agentKill() {
	if p := n.livePod(); p != nil && n.r.c.kubelet.signalAgent(p.UID, syscall.SIGKILL) {
		n.breakPod("agent-kill", p)
	}
}

// agentFreeze stops an agent (and only it: its executors run on) for a while,
// sometimes past its heartbeat timeout.
func (n *nemesis) agentFreeze() {
	p := n.livePod()
	if p == nil || !n.r.c.kubelet.signalAgent(p.UID, syscall.SIGSTOP) {
		return
	}
	n.breakPod("agent-freeze", p)
	n.mu.Lock()
	if n.frozen == nil {
		n.frozen = map[types.UID]bool{}
	}
	n.frozen[p.UID] = true
	n.mu.Unlock()
	uid := p.UID
	n.later(n.span(500*time.Millisecond, 4*time.Second), func() {
		n.r.c.kubelet.signalAgent(uid, syscall.SIGCONT)
		n.mu.Lock()
		delete(n.frozen, uid)
		n.mu.Unlock()
	})
}

func (n *nemesis) janitorKill() {
	id := n.r.janitors.leader()
	if id == "" || !n.r.janitors.kill(id) {
		return
	}
	n.log("janitor-leader-kill", id)
	n.later(n.span(200*time.Millisecond, 3*time.Second), func() { n.r.janitors.start(id) })
}

func (n *nemesis) component() (string, *faultproxy.Proxy) {
	c := components[n.rng.IntN(len(components))]
	return c, n.r.redis.proxies[c]
}

// lostReplies: a few script calls of one component run in Redis, and their
// replies never arrive (the connection is cut after the command went through).
func (n *nemesis) lostReplies() {
	c, p := n.component()
	cmd := "EVALSHA"
	if c == compAgents && n.rng.IntN(3) == 0 {
		cmd = "BLMOVE"
	}
	f := p.Add(faultproxy.Rule{Command: cmd, Times: 1 + n.rng.IntN(3), Action: faultproxy.CutAfterForward})
	n.log("lost-replies", c+" "+cmd)
	n.later(3*time.Second, f.Remove)
}

// slowRedis: one component's script replies arrive late, often after the
// caller gave up (each component's Redis timeout is about a second).
func (n *nemesis) slowRedis() {
	c, p := n.component()
	d := n.span(200*time.Millisecond, 1500*time.Millisecond)
	f := p.Add(faultproxy.Rule{Command: "EVALSHA", Action: faultproxy.DelayReply(d)})
	n.log("slow-redis", fmt.Sprintf("%s %v", c, d))
	n.later(n.span(time.Second, 3*time.Second), f.Remove)
}

// stall: one component's Redis traffic stops for under a heartbeat timeout.
func (n *nemesis) stall() {
	c, p := n.component()
	p.Stall(true)
	d := n.span(200*time.Millisecond, time.Second)
	n.log("redis-stall", fmt.Sprintf("%s %v", c, d))
	n.later(d, func() { p.Stall(false) })
}

// podDelete: someone else deletes a pod (a user, a controller).
func (n *nemesis) podDelete() {
	p := n.livePod()
	if p == nil {
		return
	}
	n.breakPod("pod-delete", p)
	if err := n.r.c.kube.CoreV1().Pods(p.Namespace).Delete(n.r.ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		n.r.t.Logf("nemesis: deleting pod %s: %v", p.Name, err)
	}
}

// podEvict: the eviction API (a node drain).
func (n *nemesis) podEvict() {
	p := n.livePod()
	if p == nil {
		return
	}
	n.breakPod("pod-evict", p)
	err := n.r.c.kube.CoreV1().Pods(p.Namespace).EvictV1(n.r.ctx, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
	if err != nil {
		n.r.t.Logf("nemesis: evicting pod %s: %v", p.Name, err)
	}
}

// signalAgent sends sig to a pod's agent; false when it has none running.
func (k *kubelet) signalAgent(uid types.UID, sig syscall.Signal) bool {
	k.mu.Lock()
	a, ok := k.agents[uid]
	k.mu.Unlock()
	return ok && a.signal(sig)
}
