package janitor

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// t0 is "now" in every plan test.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	curHash = "cur"
	oldHash = "old"
)

// --- pod builder -----------------------------------------------------------

type podOpt func(*corev1.Pod)

// poolUID is the UID of the AgentPool in the plan tests.
const poolUID = "pool-uid"

// pod is a Running, Ready pod of the current template created an hour ago
// under the pool's current generation by the pool (poolUID), whose UID is
// name+"-uid".
func pod(name string, opts ...podOpt) *corev1.Pod {
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: "team",
			UID:       types.UID(name + "-uid"),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AgentPool",
				Name: "pool", UID: poolUID, Controller: &yes}},
			Labels:            map[string]string{LabelPool: "pool", LabelTemplateHash: curHash},
			Annotations:       map[string]string{AnnotationGeneration: curGen},
			CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour)),
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// static makes the pod a static agent's the pool takes over: no
// controller (its Deployment orphaned it), or the given kind's, no template
// hash or generation.
func static(controller string) podOpt {
	return func(p *corev1.Pod) {
		p.OwnerReferences = nil
		if controller != "" {
			yes := true
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: controller, Name: "agents", UID: "rs-uid", Controller: &yes}}
		}
		delete(p.Labels, LabelTemplateHash)
		delete(p.Annotations, AnnotationGeneration)
	}
}

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

// pending is a Pending pod that is not Ready.
func pending() podOpt {
	return func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending; p.Status.Conditions = nil }
}

func notReady() podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	}
}

func createdAgo(d time.Duration) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t0.Add(-d)) }
}

func hash(h string) podOpt { return func(p *corev1.Pod) { p.Labels[LabelTemplateHash] = h } }

func uid(u string) podOpt { return func(p *corev1.Pod) { p.UID = types.UID(u) } }

func terminating() podOpt {
	return func(p *corev1.Pod) { ts := metav1.NewTime(t0.Add(-time.Second)); p.DeletionTimestamp = &ts }
}

// annotated sets the do-not-evict annotations to the given values ("" leaves one out).
func annotated(safeToEvict, doNotDisrupt string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		delete(p.Annotations, AnnotationSafeToEvict)
		delete(p.Annotations, AnnotationDoNotDisrupt)
		if safeToEvict != "" {
			p.Annotations[AnnotationSafeToEvict] = safeToEvict
		}
		if doNotDisrupt != "" {
			p.Annotations[AnnotationDoNotDisrupt] = doNotDisrupt
		}
	}
}

// generation sets the slot-store generation the pod was created under.
func generation(g string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[AnnotationGeneration] = g
	}
}

// protected carries both do-not-evict annotations, as busy pods should.
func protected() podOpt {
	return func(p *corev1.Pod) {
		annotated("false", "true")(p)
		p.Labels[LabelBusy] = "true"
	}
}

func waiting(container, reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: container, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "back-off"}},
		})
	}
}

// agentRunning reports the agent container running since ago before t0.
func agentRunning(ago time.Duration) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: AgentContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0.Add(-ago))}},
		})
	}
}

func exited(container, reason string, code int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: container, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code}},
		})
	}
}

// --- record builder --------------------------------------------------------

// rec is a three-slot record of pod name (UID name+"-uid"), registered two
// hours ago and never busy since, whose first slots hold the given states.
func rec(name string, state slots.PodState, busy ...slots.SlotState) slots.PodSnapshot {
	r := slots.PodSnapshot{
		Name:    name,
		UID:     name + "-uid",
		State:   state,
		Created: t0.Add(-2 * time.Hour),
	}
	if state != slots.PodExpected {
		r.Registered = t0.Add(-2 * time.Hour)
	}
	for i := range 3 {
		s := slots.SlotSnapshot{Index: i, State: slots.SlotIdle}
		if i < len(busy) {
			s.State = busy[i]
			s.Task = fmt.Sprintf("task-%s-%d", name, i)
		}
		r.Slots = append(r.Slots, s)
	}
	return r
}

// idleAgo sets when the record's last busy slot freed: ago before t0.
func idleAgo(r slots.PodSnapshot, ago time.Duration) slots.PodSnapshot {
	r.LastBusy = t0.Add(-ago)
	return r
}

// byAgent marks a cordoned record as cordoned by its own stopping agent.
func byAgent(r slots.PodSnapshot) slots.PodSnapshot {
	r.CordonedBy = slots.CordonedByAgent
	return r
}

// byJanitor marks a cordoned record as cordoned by the janitor.
func byJanitor(r slots.PodSnapshot) slots.PodSnapshot {
	r.CordonedBy = slots.CordonedByJanitor
	return r
}

// tasks sets how many tasks the record's pod started.
func tasks(r slots.PodSnapshot, n int) slots.PodSnapshot {
	r.TasksStarted = n
	return r
}

func withUID(r slots.PodSnapshot, u string) slots.PodSnapshot {
	r.UID = u
	return r
}

const (
	running  = slots.SlotRunning
	assigned = slots.SlotAssigned
	reserved = slots.SlotReserved
)

// --- input and outcome -------------------------------------------------------

// input is a plan input at t0 for the current template, idleFor 60s and a
// deletion budget of 10.
func input(replicas int, pods []*corev1.Pod, records ...slots.PodSnapshot) planInput {
	return planInput{
		Now:          t0,
		Replicas:     replicas,
		TemplateHash: curHash,
		IdleFor:      time.Minute,
		DeleteBudget: 10,
		// The generation was declared long ago: no data-loss hold.
		Generation:       curGen,
		Declared:         t0.Add(-48 * time.Hour),
		HeartbeatTimeout: hbto,
		Pods:             pods,
		PoolUID:          poolUID,
		Records:          records,
	}
}

func pods(ps ...*corev1.Pod) []*corev1.Pod { return ps }

// Generations in the plan tests: gen-1 was the pool's generation before
// Redis lost its data, gen-2 the one declared since.
const (
	oldGen = "gen-1"
	curGen = "gen-2"
)

// hbto is the pools' heartbeat timeout in the plan tests.
const hbto = 30 * time.Second

// afterLoss is in, with the pool's current generation (curGen) declared
// declaredAgo before t0.
func afterLoss(in planInput, declaredAgo time.Duration) planInput {
	in.Generation = curGen
	in.Declared = t0.Add(-declaredAgo)
	return in
}

// outcome is planOutput by pod name, for comparing whole results. Lists are
// sorted (order is checked separately where it matters); empty lists are nil.
type outcome struct {
	Expect, ExpectStopping     []string
	Uncordon, Cordon, Drain    []string
	Remove                     []string // "name/uid reason"
	Dead                       []string // "name reason", plus " never-started"
	Create                     int
	Annotate                   map[string]bool
	WaitIdle, WaitRegistration time.Duration
	Deferred                   int
	Recycle                    []string // pod names
	HoldUntil                  time.Time
	Status                     podCounts
	StartFailures              []string // pod names
}

func names(ps []*corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

func outcomeOf(out planOutput) outcome {
	o := outcome{
		Expect:           names(out.Expect),
		ExpectStopping:   names(out.ExpectStopping),
		Uncordon:         names(out.Uncordon),
		Cordon:           names(out.Cordon),
		Drain:            names(out.Drain),
		Create:           out.Create,
		WaitIdle:         out.WaitIdle,
		WaitRegistration: out.WaitRegistration,
		Deferred:         out.Deferred,
		Status:           out.Status,
		HoldUntil:        out.HoldUntil,
	}
	for _, r := range out.Remove {
		o.Remove = append(o.Remove, r.Pod.Name+"/"+r.Pod.UID+" "+r.Reason)
	}
	slices.Sort(o.Remove)
	for _, d := range out.Dead {
		s := d.Pod.Name + " " + d.Reason
		if d.NeverStarted {
			s += " never-started"
		}
		o.Dead = append(o.Dead, s)
	}
	slices.Sort(o.Dead)
	for p, v := range out.Annotate {
		if o.Annotate == nil {
			o.Annotate = map[string]bool{}
		}
		o.Annotate[p.Name] = v
	}
	for p := range out.Recycle {
		o.Recycle = append(o.Recycle, p.Name)
	}
	slices.Sort(o.Recycle)
	for _, f := range out.StartFailures {
		name, _, _ := strings.Cut(f, ":")
		o.StartFailures = append(o.StartFailures, name)
	}
	slices.Sort(o.StartFailures)
	return o
}

type planCase struct {
	in   planInput
	want outcome
}

func runPlanCases(t *testing.T, cases map[string]planCase) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, tc.want, outcomeOf(plan(tc.in)))
		})
	}
}

// --- scale up ----------------------------------------------------------------

func TestPlanScalesUp(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"from zero creates replicas": {
			in:   input(3, nil),
			want: outcome{Create: 3},
		},
		"pods without a record are expected and count as pending replicas": {
			in: input(3, pods(pod("a", pending()), pod("b", pending()))),
			want: outcome{
				Expect: []string{"a", "b"},
				Create: 1,
				Status: podCounts{Replicas: 2},
			},
		},
		"expected records count as replicas but not ready": {
			in: input(2, pods(pod("a"), pod("b", pending())),
				rec("a", slots.PodExpected), rec("b", slots.PodExpected)),
			want: outcome{Status: podCounts{Replicas: 2}},
		},
		"registered ready pods at replicas need nothing": {
			in: input(2, pods(pod("a"), pod("b")),
				rec("a", slots.PodActive), rec("b", slots.PodActive)),
			want: outcome{Status: podCounts{Replicas: 2, Ready: 2, Idle: 2}},
		},
		"only the missing pods are created": {
			in: input(5, pods(pod("a"), pod("b", pending())),
				rec("a", slots.PodActive, running), rec("b", slots.PodExpected)),
			want: outcome{
				Create:   3,
				Annotate: map[string]bool{"a": true},
				Status:   podCounts{Replicas: 2, Ready: 1, Busy: 1},
			},
		},
	})
}

// --- scale down --------------------------------------------------------------

func TestPlanScaleDownPicksCheapestVictims(t *testing.T) {
	all := func() []*corev1.Pod {
		return pods(
			pod("busy2", createdAgo(5*time.Hour)),
			pod("busy1", createdAgo(5*time.Hour)),
			pod("idle-short", createdAgo(5*time.Hour)),
			pod("idle-long", createdAgo(5*time.Hour)),
			pod("running-expected", createdAgo(5*time.Hour)),
			pod("pending-new", pending(), createdAgo(time.Minute)),
		)
	}
	records := []slots.PodSnapshot{
		rec("busy2", slots.PodActive, running, assigned),
		rec("busy1", slots.PodActive, running),
		idleAgo(rec("idle-short", slots.PodActive), 5*time.Minute),
		idleAgo(rec("idle-long", slots.PodActive), 50*time.Minute),
		rec("running-expected", slots.PodExpected),
		// pending-new has no record at all: it is expected by this pass.
	}
	// Removing k pods of 6 must take exactly the first k of this order.
	order := []string{"pending-new", "running-expected", "idle-long", "idle-short", "busy1", "busy2"}
	for k := 1; k <= len(order); k++ {
		t.Run(fmt.Sprintf("removing %d", k), func(t *testing.T) {
			out := plan(input(len(order)-k, all(), records...))
			var drained, cordoned []string
			for _, n := range order[:k] {
				if strings.HasPrefix(n, "busy") {
					cordoned = append(cordoned, n)
				} else {
					drained = append(drained, n)
				}
			}
			slices.Sort(drained)
			slices.Sort(cordoned)
			require.Equal(t, drained, names(out.Drain))
			require.Equal(t, cordoned, names(out.Cordon))
			require.Equal(t, len(order)-k, out.Status.Replicas)
			require.Zero(t, out.Create)
		})
	}
}

func TestVictimOrder(t *testing.T) {
	m := func(p *corev1.Pod, r slots.PodSnapshot) *member { return &member{pod: p, rec: &r} }
	members := []*member{
		m(pod("busy-2-new", createdAgo(time.Hour)), rec("busy-2-new", slots.PodActive, running, reserved)),
		m(pod("busy-1-old", createdAgo(3*time.Hour)), rec("busy-1-old", slots.PodActive, running)),
		m(pod("busy-1-new", createdAgo(time.Hour)), rec("busy-1-new", slots.PodActive, assigned)),
		m(pod("idle-10m-old", createdAgo(3*time.Hour)), idleAgo(rec("idle-10m-old", slots.PodActive), 10*time.Minute)),
		m(pod("idle-10m-new", createdAgo(time.Hour)), idleAgo(rec("idle-10m-new", slots.PodActive), 10*time.Minute)),
		m(pod("idle-30m", createdAgo(2*time.Hour)), idleAgo(rec("idle-30m", slots.PodActive), 30*time.Minute)),
		// Never ran work: idle since it registered, 90 minutes ago.
		m(pod("idle-never-busy", createdAgo(2*time.Hour)), func() slots.PodSnapshot {
			r := rec("idle-never-busy", slots.PodActive)
			r.Registered = t0.Add(-90 * time.Minute)
			return r
		}()),
		m(pod("expected-running-old", createdAgo(3*time.Hour)), rec("expected-running-old", slots.PodExpected)),
		m(pod("expected-running-new", createdAgo(time.Minute)), rec("expected-running-new", slots.PodExpected)),
		m(pod("expected-pending-old", pending(), createdAgo(2*time.Hour)), rec("expected-pending-old", slots.PodExpected)),
		m(pod("expected-pending-new", pending(), createdAgo(time.Minute)), rec("expected-pending-new", slots.PodExpected)),
		// Expected while its agent runs: maybe registered, and busy.
		func() *member {
			x := m(pod("maybe-busy-old", agentRunning(time.Hour), createdAgo(3*time.Hour)), rec("maybe-busy-old", slots.PodExpected))
			x.unconfirmedFor = time.Second
			return x
		}(),
		func() *member {
			x := m(pod("maybe-busy-new", agentRunning(time.Hour), createdAgo(time.Hour)), rec("maybe-busy-new", slots.PodExpected))
			x.unconfirmedFor = time.Second
			return x
		}(),
	}
	want := []string{
		"expected-pending-new", "expected-pending-old", // never registered, pending; newest first
		"expected-running-new", "expected-running-old", // never registered, running; newest first
		"idle-never-busy", "idle-30m", // idle longest first
		"idle-10m-new", "idle-10m-old", // same idle time: newest first
		"maybe-busy-new", "maybe-busy-old", // maybe registered and busy; newest first
		"busy-1-new", "busy-1-old", // least busy; newest first
		"busy-2-new",
	}
	// Any input order gives the same result.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		ms := slices.Clone(members)
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		victimOrder(ms)
		var got []string
		for _, x := range ms {
			got = append(got, x.pod.Name)
		}
		require.Equal(t, want, got)
	}
}

func TestPlanScalesDown(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"idle surplus pod idle for longer than idleFor is drained": {
			in: input(1, pods(pod("a"), pod("b")),
				idleAgo(rec("a", slots.PodActive), 5*time.Minute), idleAgo(rec("b", slots.PodActive), 2*time.Minute)),
			want: outcome{Drain: []string{"a"}, Status: podCounts{Replicas: 1, Ready: 1, Idle: 2}},
		},
		"idle victim younger than idleFor waits for the remaining time": {
			in: input(1, pods(pod("a"), pod("b")),
				idleAgo(rec("a", slots.PodActive), 10*time.Second), idleAgo(rec("b", slots.PodActive), 40*time.Second)),
			want: outcome{WaitIdle: 20 * time.Second, Status: podCounts{Replicas: 1, Ready: 1, Idle: 2}},
		},
		"WaitIdle is the smallest wait over the victims": {
			in: input(1, pods(pod("a"), pod("b"), pod("c")),
				idleAgo(rec("a", slots.PodActive), 10*time.Second),
				idleAgo(rec("b", slots.PodActive), 30*time.Second),
				idleAgo(rec("c", slots.PodActive), 50*time.Second)),
			want: outcome{WaitIdle: 10 * time.Second, Status: podCounts{Replicas: 1, Ready: 1, Idle: 3}},
		},
		"young idle victims wait while older ones are drained": {
			in: input(1, pods(pod("a"), pod("b"), pod("c")),
				idleAgo(rec("a", slots.PodActive), 10*time.Second),
				idleAgo(rec("b", slots.PodActive), 45*time.Second),
				idleAgo(rec("c", slots.PodActive), 2*time.Minute)),
			want: outcome{Drain: []string{"c"}, WaitIdle: 15 * time.Second, Status: podCounts{Replicas: 1, Ready: 1, Idle: 3}},
		},
		"a pod idle exactly idleFor is drained": {
			in:   input(0, pods(pod("a")), idleAgo(rec("a", slots.PodActive), time.Minute)),
			want: outcome{Drain: []string{"a"}, Status: podCounts{Idle: 1}},
		},
		"busy surplus pods are cordoned, never drained": {
			in: input(0, pods(pod("a", protected()), pod("b", protected())),
				rec("a", slots.PodActive, running), rec("b", slots.PodActive, assigned, running)),
			want: outcome{Cordon: []string{"a", "b"}, Status: podCounts{Busy: 2}},
		},
		"the least busy surplus pod is the one cordoned": {
			in: input(1, pods(pod("a", protected()), pod("b", protected())),
				rec("a", slots.PodActive, running, running), rec("b", slots.PodActive, running)),
			want: outcome{Cordon: []string{"b"}, Status: podCounts{Replicas: 1, Ready: 1, Busy: 2}},
		},
		"a reserved slot makes a pod busy": {
			in: input(0, pods(pod("a")), rec("a", slots.PodActive, reserved)),
			want: outcome{
				Cordon:   []string{"a"},
				Annotate: map[string]bool{"a": true},
				Status:   podCounts{Busy: 1},
			},
		},
		"an orphan slot makes a pod busy": {
			in:   input(0, pods(pod("a", protected())), rec("a", slots.PodActive, slots.SlotOrphan)),
			want: outcome{Cordon: []string{"a"}, Status: podCounts{Busy: 1}},
		},
		"never-registered surplus pods are drained without waiting idleFor": {
			in: input(0, pods(pod("a", pending(), createdAgo(time.Second)), pod("b", createdAgo(time.Second))),
				rec("a", slots.PodExpected)),
			want: outcome{Expect: []string{"b"}, Drain: []string{"a", "b"}},
		},
		"delete budget limits drains and defers the rest": {
			in: func() planInput {
				in := input(0, pods(pod("a", createdAgo(3*time.Hour)), pod("b", createdAgo(2*time.Hour)), pod("c", createdAgo(time.Hour))),
					rec("a", slots.PodActive), rec("b", slots.PodActive), rec("c", slots.PodActive))
				in.DeleteBudget = 2
				return in
			}(),
			// Equally idle: the newest go first.
			want: outcome{Drain: []string{"b", "c"}, Deferred: 1, Status: podCounts{Idle: 3}},
		},
		"zero delete budget drains nothing": {
			in: func() planInput {
				in := input(0, pods(pod("a"), pod("b", pending())), rec("a", slots.PodActive), rec("b", slots.PodExpected))
				in.DeleteBudget = 0
				return in
			}(),
			want: outcome{Deferred: 2, Status: podCounts{Idle: 1}},
		},
	})
}

// --- expected records of running agents -------------------------------------

// seen sets when the janitor first saw each pod's record expected, ago
// before t0 (pod UIDs are name+"-uid").
func seen(in planInput, ago map[string]time.Duration) planInput {
	in.ExpectedSince = map[types.UID]time.Time{}
	for name, d := range ago {
		in.ExpectedSince[types.UID(name+"-uid")] = t0.Add(-d)
	}
	return in
}

// TestPlanExpectedPodsWhoseAgentRuns: an expected record whose agent
// container runs may be a registration an asynchronous failover lost (same
// generation, no data-loss hold). Before the fix such a pod ranked first
// among surplus pods and was drained at once as never registered — a busy
// pod deleted before its agent's next heartbeat could register it again.
func TestPlanExpectedPodsWhoseAgentRuns(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"a surplus pod whose registration was lost is not drained before its agent can register again": {
			in: input(0, pods(pod("idle"), pod("lost-reg", agentRunning(2*time.Hour))),
				idleAgo(rec("idle", slots.PodActive), time.Hour), rec("lost-reg", slots.PodExpected)),
			want: outcome{
				Drain:            []string{"idle"},
				WaitRegistration: hbto, // first seen expected now
				Status:           podCounts{Idle: 1},
			},
		},
		"a record expected for less than a heartbeat timeout of passes waits the rest": {
			in: seen(input(0, pods(pod("a", agentRunning(2*time.Hour))), rec("a", slots.PodExpected)),
				map[string]time.Duration{"a": 10 * time.Second}),
			want: outcome{WaitRegistration: hbto - 10*time.Second},
		},
		"a record expected for a heartbeat timeout while the agent ran is never registered: a hung agent's pod goes": {
			in: seen(input(0, pods(pod("a", agentRunning(2*time.Hour))), rec("a", slots.PodExpected)),
				map[string]time.Duration{"a": hbto}),
			want: outcome{Drain: []string{"a"}},
		},
		"a heartbeat timeout from the container's start, however long the record was seen expected": {
			in: seen(input(0, pods(pod("a", agentRunning(5*time.Second))), rec("a", slots.PodExpected)),
				map[string]time.Duration{"a": time.Hour}),
			want: outcome{WaitRegistration: hbto - 5*time.Second},
		},
		"a pod whose record was lost entirely and whose agent runs waits too": {
			in:   input(0, pods(pod("a", agentRunning(time.Hour)))),
			want: outcome{Expect: []string{"a"}, WaitRegistration: hbto},
		},
		"the agent not running (pending, or its container waiting or ended) is drained at once": {
			in: input(0, pods(
				pod("pending", pending()),
				pod("waiting", pending(), waiting(AgentContainer, "ContainerCreating")),
				pod("ended", exited(AgentContainer, "Completed", 0), func(p *corev1.Pod) {
					p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
						Name: "sidecar", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0.Add(-time.Hour))}}})
				})),
				rec("pending", slots.PodExpected), rec("waiting", slots.PodExpected), rec("ended", slots.PodExpected)),
			want: outcome{Drain: []string{"ended", "pending", "waiting"}},
		},
		"without a container named agent, the first container is the agent's": {
			in: input(0, pods(pod("a", func(p *corev1.Pod) {
				p.Spec.Containers = []corev1.Container{{Name: "main"}, {Name: "sidecar"}}
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main",
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0.Add(-time.Hour))}}}}
			})), rec("a", slots.PodExpected)),
			want: outcome{WaitRegistration: hbto},
		},
		"an outdated pod whose agent may have registered is neither drained nor cordoned; its replacement is created": {
			in:   input(1, pods(pod("a", hash(oldHash), agentRunning(time.Hour))), rec("a", slots.PodExpected)),
			want: outcome{Create: 1, WaitRegistration: hbto},
		},
		"it counts as a replica while it is not surplus": {
			in:   input(1, pods(pod("a", agentRunning(time.Hour))), rec("a", slots.PodExpected)),
			want: outcome{Status: podCounts{Replicas: 1}},
		},
		"surplus picks idle pods before pods that may be busy": {
			in: input(1, pods(pod("idle", createdAgo(3*time.Hour)), pod("maybe", agentRunning(time.Hour), createdAgo(time.Hour))),
				idleAgo(rec("idle", slots.PodActive), time.Hour), rec("maybe", slots.PodExpected)),
			want: outcome{Drain: []string{"idle"}, Status: podCounts{Replicas: 1, Idle: 1}},
		},
		"surplus picks pods that may be busy before busy ones": {
			in: input(1, pods(pod("busy", protected()), pod("maybe", agentRunning(time.Hour))),
				rec("busy", slots.PodActive, running), rec("maybe", slots.PodExpected)),
			want: outcome{WaitRegistration: hbto, Status: podCounts{Replicas: 1, Ready: 1, Busy: 1}},
		},
	})
}

func TestObserveExpected(t *testing.T) {
	at := t0
	earlier := t0.Add(-time.Minute)
	prev := map[types.UID]time.Time{"still-uid": earlier, "registered-uid": earlier, "gone-uid": earlier, "new-incarnation-uid": earlier}
	got := observeExpected(prev,
		pods(pod("still"), pod("registered"), pod("fresh"), pod("missing"), pod("new-incarnation", uid("new-incarnation-2")),
			pod("terminating", terminating()), pod("ended", phase(corev1.PodFailed))),
		[]slots.PodSnapshot{rec("still", slots.PodExpected), rec("registered", slots.PodActive), rec("fresh", slots.PodExpected),
			rec("new-incarnation", slots.PodExpected), rec("terminating", slots.PodExpected), rec("ended", slots.PodExpected)},
		at)
	require.Equal(t, map[types.UID]time.Time{
		"still-uid":         earlier, // the run goes on
		"fresh-uid":         at,      // a run starts
		"missing-uid":       at,      // no record is like expected
		"new-incarnation-2": at,      // another incarnation: its own run (its record is the old one's)
		// registered: the run is broken; gone, terminating, ended: dropped.
	}, got)
	require.Equal(t, earlier, prev["registered-uid"], "prev is not changed")
}

// --- hold ----------------------------------------------------------------------

func TestPlanHoldDeletesAndRemovesNothing(t *testing.T) {
	// Every pod was created under the generation Redis lost.
	pre := generation(oldGen)
	in := afterLoss(input(0,
		pods(pod("idle", pre), pod("lost", pre), pod("failed", phase(corev1.PodFailed), pre), pod("new", pending(), pre),
			pod("busy", protected(), pre), pod("old", hash(oldHash), pre)),
		rec("idle", slots.PodActive), rec("lost", slots.PodLost), rec("failed", slots.PodActive),
		rec("busy", slots.PodActive, running), rec("old", slots.PodActive),
		rec("gone", slots.PodActive), rec("gone-draining", slots.PodDraining),
	), time.Second)
	require.Equal(t, outcome{
		// "new" has no record yet: a heartbeat timeout from now.
		HoldUntil: t0.Add(hbto),
		// Records are being rebuilt: pods without one still get one.
		Expect: []string{"new"},
		Cordon: []string{"busy"},
		// Dead pods are listed; the pass deletes them only when not holding.
		Dead:     []string{"failed pod-Failed", "lost agent-lost"},
		Deferred: 3, // idle, new, old
		Status:   podCounts{Busy: 1, Idle: 2},
	}, outcomeOf(plan(in)))
}

// TestPlanHoldsAfterDataLoss: the hold is derived from the snapshot and the
// pods, so a janitor that starts after Redis lost its data holds too. Before
// the fix the hold came only from the janitor's memory of an earlier
// generation: a fresh janitor (the first case) drained and deleted every
// surplus pod at once, busy ones included, their records being "expected".
func TestPlanHoldsAfterDataLoss(t *testing.T) {
	pre := generation(oldGen)
	runPlanCases(t, map[string]planCase{
		"a fresh janitor after the loss: pods of the lost generation, no records yet, replicas lowered": {
			in: afterLoss(input(1, pods(pod("a", pre), pod("b", pre), pod("c", pre))), 200*time.Millisecond),
			want: outcome{
				Expect:    []string{"a", "b", "c"},
				Deferred:  2,
				HoldUntil: t0.Add(hbto), // no record yet: a heartbeat timeout from now
				Status:    podCounts{Replicas: 1},
			},
		},
		"records rebuilt, agents registering again with their work: busy pods are cordoned, none drained": {
			in: afterLoss(input(0, pods(pod("busy", pre, protected()), pod("idle", pre), pod("silent", pre)),
				rec("busy", slots.PodActive, slots.SlotOrphan), idleAgo(rec("idle", slots.PodActive), time.Hour),
				func() slots.PodSnapshot {
					r := rec("silent", slots.PodExpected)
					r.Created = t0.Add(-5 * time.Second)
					return r
				}()),
				6*time.Second),
			want: outcome{
				Cordon:    []string{"busy"},
				Deferred:  2,
				HoldUntil: t0.Add(hbto - 5*time.Second), // silent's record was written 5 s ago
				Status:    podCounts{Busy: 1, Idle: 1},
			},
		},
		"the hold ends a heartbeat timeout after the declaration once every agent registered again": {
			in: afterLoss(input(0, pods(pod("a", pre), pod("b", pre)),
				idleAgo(rec("a", slots.PodActive), time.Hour), idleAgo(rec("b", slots.PodActive), time.Hour)), hbto),
			want: outcome{Drain: []string{"a", "b"}, Status: podCounts{Idle: 2}},
		},
		"a rebuilt record whose agent has not registered yet holds a heartbeat timeout from its creation": {
			in: afterLoss(input(0, pods(pod("a", pre)),
				func() slots.PodSnapshot {
					r := rec("a", slots.PodExpected)
					r.Created = t0.Add(-10 * time.Second)
					return r
				}()),
				10*time.Minute),
			want: outcome{Deferred: 1, HoldUntil: t0.Add(hbto - 10*time.Second), Status: podCounts{}},
		},
		"a rebuilt record older than a heartbeat timeout no longer holds": {
			in: afterLoss(input(0, pods(pod("a", pre, pending())),
				func() slots.PodSnapshot { r := rec("a", slots.PodExpected); r.Created = t0.Add(-hbto); return r }()),
				10*time.Minute),
			want: outcome{Drain: []string{"a"}},
		},
		// The janitor crashed between declaring the pool and writing the
		// records: the agents had nothing to register against until now.
		"a pod of the lost generation still without a record holds, however old the declaration": {
			in:   afterLoss(input(0, pods(pod("a", pre))), 10*time.Minute),
			want: outcome{Expect: []string{"a"}, Deferred: 1, HoldUntil: t0.Add(hbto)},
		},
		"a pod created by an earlier janitor (no annotation) counts as predating": {
			in: afterLoss(input(0, pods(pod("a", func(p *corev1.Pod) { p.Annotations = nil }))), time.Second),
			want: outcome{
				Expect: []string{"a"}, Deferred: 1, HoldUntil: t0.Add(hbto),
			},
		},
		// A pool declared for the first time: the janitor creates pods at
		// once, annotated with the generation it just read. Their
		// creationTimestamp, truncated to the second, is before the
		// declaration; the annotation, not the clock, says they are not
		// older than the generation.
		"pods created at the first declaration never hold": {
			in: func() planInput {
				in := afterLoss(input(0, pods(
					pod("a", pending(), generation(curGen), createdAgo(time.Second)),
					pod("b", pending(), generation(curGen), createdAgo(0)),
				), rec("a", slots.PodExpected), rec("b", slots.PodExpected)), 500*time.Millisecond)
				return in
			}(),
			want: outcome{Drain: []string{"a", "b"}},
		},
		"ended pods of the lost generation do not hold": {
			in: afterLoss(input(1, pods(pod("a", pre, phase(corev1.PodFailed)), pod("b", pending())),
				rec("b", slots.PodExpected)), time.Second),
			want: outcome{Dead: []string{"a pod-Failed never-started"}, StartFailures: []string{"a"}, Status: podCounts{Replicas: 1}},
		},
		"terminating pods of the lost generation hold within a heartbeat timeout of the declaration": {
			in: afterLoss(input(0, pods(pod("a", pre, terminating()), pod("b", pending())),
				rec("a", slots.PodCordoned, running), rec("b", slots.PodExpected)), time.Second),
			want: outcome{Deferred: 1, HoldUntil: t0.Add(hbto - time.Second)},
		},
		"terminating pods of the lost generation do not extend the hold": {
			in: afterLoss(input(0, pods(pod("a", pre, terminating()), pod("b", pending())), rec("b", slots.PodExpected)),
				hbto),
			want: outcome{ExpectStopping: []string{"a"}, Drain: []string{"b"}},
		},
		"an undeclared pool (dry run) never holds": {
			in: func() planInput {
				in := input(0, pods(pod("a", pre, pending())))
				in.Generation, in.Declared = "", time.Time{}
				return in
			}(),
			want: outcome{Expect: []string{"a"}, Drain: []string{"a"}},
		},
	})
}

// --- records and pods that disagree -----------------------------------------

func TestPlanRemovesRecordsWhosePodIsGone(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"reason follows the record's state": {
			in: input(0, nil,
				rec("draining", slots.PodDraining),
				rec("lost", slots.PodLost, running),
				rec("active", slots.PodActive),
				rec("busy", slots.PodActive, running),
				rec("expected", slots.PodExpected),
				rec("cordoned", slots.PodCordoned)),
			want: outcome{Remove: []string{
				"active/active-uid pod-gone",
				"busy/busy-uid pod-gone",
				"cordoned/cordoned-uid pod-gone",
				"draining/draining-uid scaled-down",
				"expected/expected-uid pod-gone",
				"lost/lost-uid agent-lost",
			}},
		},
		"a record of another incarnation is removed and the new pod expected": {
			in: input(1, pods(pod("a", uid("a-new"), pending())),
				withUID(rec("a", slots.PodActive, running), "a-old")),
			want: outcome{
				Expect: []string{"a"},
				Remove: []string{"a/a-old pod-gone"},
				Status: podCounts{Replicas: 1},
			},
		},
		"a draining record of another incarnation is removed as scaled-down": {
			in: input(1, pods(pod("a", uid("a-new"), pending())),
				withUID(rec("a", slots.PodDraining), "a-old")),
			want: outcome{
				Expect: []string{"a"},
				Remove: []string{"a/a-old scaled-down"},
				Status: podCounts{Replicas: 1},
			},
		},
		"records of terminating pods are kept until the object is gone": {
			in:   input(0, pods(pod("a", terminating())), rec("a", slots.PodDraining)),
			want: outcome{},
		},
	})
}

func TestPlanIgnoresTerminatingPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"terminating pods are not counted and not acted on": {
			in: input(2,
				pods(
					pod("busy", terminating()),
					pod("unrecorded", terminating(), pending()),
					pod("failed", terminating(), phase(corev1.PodFailed)),
					pod("lost", terminating()),
					pod("cordoned", terminating(), protected()),
					pod("live"),
				),
				rec("busy", slots.PodActive, running), rec("lost", slots.PodLost),
				rec("cordoned", slots.PodCordoned), rec("failed", slots.PodExpected), rec("live", slots.PodActive)),
			// Only the record a terminating pod lacks is written (below).
			want: outcome{ExpectStopping: []string{"unrecorded"}, Create: 1, Status: podCounts{Replicas: 1, Ready: 1, Idle: 1}},
		},
		// After Redis lost its data a terminating pod's agent may still
		// finish a phase in its grace period; without a record it cannot
		// register again, gives up after its register timeout and kills the
		// phase. Before the fix no record was written for it.
		"terminating pods without a record get a stopping record; the rest are left alone": {
			in: input(1,
				pods(
					pod("no-record", terminating(), protected()),
					pod("no-record-pending", terminating(), pending()),
					pod("other-incarnation", terminating(), uid("other-incarnation-new")),
					pod("recorded", terminating()),
					pod("ended", terminating(), phase(corev1.PodSucceeded)),
					pod("failed", terminating(), phase(corev1.PodFailed)),
					pod("live"),
				),
				rec("recorded", slots.PodCordoned, running), rec("live", slots.PodActive),
				withUID(rec("other-incarnation", slots.PodActive), "other-incarnation-old")),
			want: outcome{
				ExpectStopping: []string{"no-record", "no-record-pending", "other-incarnation"},
				Remove:         []string{"other-incarnation/other-incarnation-old pod-gone"},
				Status:         podCounts{Replicas: 1, Ready: 1, Idle: 1},
			},
		},
		"terminating pods without a record get a stopping record while holding": {
			in:   afterLoss(input(0, pods(pod("a", terminating(), generation(oldGen)))), time.Second),
			want: outcome{ExpectStopping: []string{"a"}, HoldUntil: t0.Add(hbto - time.Second)},
		},
		"terminating surplus pods do not make others surplus": {
			in: input(1, pods(pod("a", terminating()), pod("b")),
				rec("a", slots.PodActive), rec("b", slots.PodActive)),
			want: outcome{Status: podCounts{Replicas: 1, Ready: 1, Idle: 1}},
		},
	})
}

// --- pods that cannot run -------------------------------------------------

func TestPlanDeadPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"failed pod of an expected record never started": {
			in: input(1, pods(pod("a", phase(corev1.PodFailed), exited("agent", "Error", 1))), rec("a", slots.PodExpected)),
			want: outcome{
				Dead:          []string{"a pod-Failed never-started"},
				Create:        1,
				StartFailures: []string{"a"},
			},
		},
		"failed pod without a record never started and is not expected": {
			in: input(1, pods(pod("a", phase(corev1.PodFailed)))),
			want: outcome{
				Dead:          []string{"a pod-Failed never-started"},
				Create:        1,
				StartFailures: []string{"a"},
			},
		},
		"succeeded pod of a registered agent is dead but started": {
			in: input(1, pods(pod("a", phase(corev1.PodSucceeded), protected())), rec("a", slots.PodActive, running)),
			want: outcome{
				Dead:   []string{"a pod-Succeeded"},
				Create: 1,
			},
		},
		"failed pod whose record belongs to another incarnation never started": {
			in: input(1, pods(pod("a", uid("a-2"), phase(corev1.PodFailed))), withUID(rec("a", slots.PodActive), "a-1")),
			want: outcome{
				Remove:        []string{"a/a-1 pod-gone"},
				Dead:          []string{"a pod-Failed never-started"},
				Create:        1,
				StartFailures: []string{"a"},
			},
		},
		"lost agent's pod is dead with reason agent-lost and replaced": {
			in: input(2, pods(pod("a", notReady()), pod("b")),
				rec("a", slots.PodLost), rec("b", slots.PodActive)),
			want: outcome{
				Dead:   []string{"a agent-lost"},
				Create: 1,
				Status: podCounts{Replicas: 1, Ready: 1, Idle: 1},
			},
		},
		"lost agent's pod is not re-annotated": {
			in:   input(0, pods(pod("a", protected())), rec("a", slots.PodLost)),
			want: outcome{Dead: []string{"a agent-lost"}},
		},
		"image pull back-off is a start failure but the pod still counts": {
			in: input(2, pods(pod("a", pending(), waiting("agent", "ImagePullBackOff")), pod("b", pending(), waiting("agent", "ContainerCreating"))),
				rec("a", slots.PodExpected), rec("b", slots.PodExpected)),
			want: outcome{StartFailures: []string{"a"}, Status: podCounts{Replicas: 2}},
		},
		"waiting failure of a pod without a record is a start failure": {
			in:   input(1, pods(pod("a", pending(), waiting("agent", "CreateContainerConfigError")))),
			want: outcome{Expect: []string{"a"}, StartFailures: []string{"a"}, Status: podCounts{Replicas: 1}},
		},
		"waiting failure after the agent registered is not a start failure": {
			in:   input(1, pods(pod("a", notReady(), waiting("agent", "CrashLoopBackOff"))), rec("a", slots.PodActive)),
			want: outcome{Status: podCounts{Replicas: 1, Idle: 1}},
		},
	})
}

func TestPlanStartFailureNamesPodAndReason(t *testing.T) {
	failed := pod("a", phase(corev1.PodFailed), exited("agent", "Error", 3))
	backoff := pod("b", pending(), func(p *corev1.Pod) {
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{
			Name: "init", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "no such image"}},
		}}
	})
	evicted := pod("c", phase(corev1.PodFailed), func(p *corev1.Pod) { p.Status.Reason, p.Status.Message = "Evicted", "low on memory" })
	out := plan(input(3, pods(failed, backoff, evicted), rec("a", slots.PodExpected), rec("b", slots.PodExpected)))
	slices.Sort(out.StartFailures)
	require.Len(t, out.StartFailures, 3)
	require.Contains(t, out.StartFailures[0], "a: agent exited Error (3)")
	require.Contains(t, out.StartFailures[1], "b: init ErrImagePull: no such image")
	require.Contains(t, out.StartFailures[2], "c: Evicted: low on memory")
}

// streakOutcome is what plan decides about the start-failure streak;
// Degraded is the message of the condition ("" when there is none).
type streakOutcome struct {
	Streak   startStreak
	Backoff  createBackoff
	Ended    int
	Degraded string
}

func TestPlanStartFailureStreak(t *testing.T) {
	failed := func(name string) *corev1.Pod { return pod(name, phase(corev1.PodFailed), exited("agent", "Error", 1)) }
	exitMsg := func(name string) string { return name + ": agent exited Error (1)" }
	counted := func(names ...string) map[types.UID]bool {
		m := map[types.UID]bool{}
		for _, n := range names {
			m[types.UID(n+"-uid")] = true
		}
		return m
	}
	with := func(in planInput, prev startStreak) planInput { in.Streak = prev; return in }
	registeredAgo := func(r slots.PodSnapshot, ago time.Duration) slots.PodSnapshot { r.Registered = t0.Add(-ago); return r }
	long := startStreak{Failures: 2, Last: t0.Add(-time.Minute), NextCreate: t0.Add(3 * time.Second), Counted: counted(), Msg: "x: gone"}

	cases := map[string]struct {
		in   planInput
		want streakOutcome
	}{
		"no failure, no streak": {
			in:   input(1, pods(pod("a")), rec("a", slots.PodActive)),
			want: streakOutcome{Streak: startStreak{Counted: counted()}},
		},
		"a pod that never started starts a streak and backs creation off 2s": {
			in: input(1, pods(failed("a")), rec("a", slots.PodExpected)),
			want: streakOutcome{
				Streak:   startStreak{Failures: 1, Last: t0, NextCreate: t0.Add(2 * time.Second), Counted: counted("a"), Msg: exitMsg("a")},
				Backoff:  createBackoff{Wait: 2 * time.Second, Failures: 1},
				Degraded: "1 pods cannot start; " + exitMsg("a"),
			},
		},
		"a failed pod is counted once however many passes see it": {
			in: with(input(1, pods(failed("a")), rec("a", slots.PodExpected)),
				startStreak{Failures: 1, Last: t0.Add(-time.Second), NextCreate: t0.Add(time.Second), Counted: counted("a"), Msg: exitMsg("a")}),
			want: streakOutcome{
				Streak:   startStreak{Failures: 1, Last: t0.Add(-time.Second), NextCreate: t0.Add(time.Second), Counted: counted("a"), Msg: exitMsg("a")},
				Backoff:  createBackoff{Wait: time.Second, Failures: 1},
				Degraded: "1 pods cannot start; " + exitMsg("a"),
			},
		},
		"each failure in a row doubles the wait": {
			in: with(input(1, pods(failed("b"))),
				startStreak{Failures: 3, Last: t0.Add(-time.Minute), NextCreate: t0.Add(-52 * time.Second), Counted: counted(), Msg: exitMsg("a")}),
			want: streakOutcome{
				Streak:   startStreak{Failures: 4, Last: t0, NextCreate: t0.Add(16 * time.Second), Counted: counted("b"), Msg: exitMsg("b")},
				Backoff:  createBackoff{Wait: 16 * time.Second, Failures: 4},
				Degraded: "1 pods cannot start; " + exitMsg("b"),
			},
		},
		"two failures in one pass count twice; the first by name is reported": {
			in: input(2, pods(failed("b"), failed("a"))),
			want: streakOutcome{
				Streak:   startStreak{Failures: 2, Last: t0, NextCreate: t0.Add(4 * time.Second), Counted: counted("a", "b"), Msg: exitMsg("a")},
				Backoff:  createBackoff{Wait: 4 * time.Second, Failures: 2},
				Degraded: "2 pods cannot start; " + exitMsg("a"),
			},
		},
		"the wait stops doubling at 5 minutes, however long the streak": {
			in: with(input(1, pods(failed("a"))), startStreak{Failures: 70, Counted: counted()}),
			want: streakOutcome{
				Streak:   startStreak{Failures: 71, Last: t0, NextCreate: t0.Add(maxStartBackoff), Counted: counted("a"), Msg: exitMsg("a")},
				Backoff:  createBackoff{Wait: maxStartBackoff, Failures: 71},
				Degraded: "1 pods cannot start; " + exitMsg("a"),
			},
		},
		"a data-loss hold deletes nothing, so counts nothing, but reports": {
			in: afterLoss(input(2, pods(failed("a"), pod("b", generation(oldGen))), rec("a", slots.PodExpected)), 10*time.Second),
			want: streakOutcome{
				Streak:   startStreak{Counted: counted(), Msg: exitMsg("a")},
				Degraded: "1 pods cannot start; " + exitMsg("a"),
			},
		},
		"an agent registering after the last failure ends the streak, from the next pass on": {
			in: with(input(1, pods(pod("b")), registeredAgo(rec("b", slots.PodActive), 30*time.Second)), long),
			want: streakOutcome{
				Streak:  startStreak{Last: t0.Add(-time.Minute), Counted: counted()},
				Backoff: createBackoff{Wait: 3 * time.Second, Failures: 2},
				Ended:   2,
			},
		},
		"a registration before the last failure does not end it; the pool stays degraded": {
			in: with(input(1, pods(pod("b")), rec("b", slots.PodActive)), long),
			want: streakOutcome{
				Streak:   long,
				Backoff:  createBackoff{Wait: 3 * time.Second, Failures: 2},
				Degraded: "2 pods in a row ended before their agent registered (last: x: gone); replacements back off",
			},
		},
		"a pod that ended after its agent registered is no start failure": {
			in:   input(1, pods(pod("a", phase(corev1.PodFailed))), rec("a", slots.PodActive)),
			want: streakOutcome{Streak: startStreak{Counted: counted()}},
		},
		"a pod that cannot pull its image is reported, not counted (it is not deleted)": {
			in: input(1, pods(pod("a", pending(), waiting("agent", "ImagePullBackOff"))), rec("a", slots.PodExpected)),
			want: streakOutcome{
				Streak:   startStreak{Counted: counted(), Msg: "a: agent ImagePullBackOff: back-off"},
				Degraded: "1 pods cannot start; a: agent ImagePullBackOff: back-off",
			},
		},
		"pods gone from the cache are forgotten": {
			in: with(input(1, pods(failed("a"))),
				startStreak{Failures: 2, Last: t0.Add(-time.Second), NextCreate: t0.Add(3 * time.Second), Counted: counted("a", "gone"), Msg: exitMsg("a")}),
			want: streakOutcome{
				Streak:   startStreak{Failures: 2, Last: t0.Add(-time.Second), NextCreate: t0.Add(3 * time.Second), Counted: counted("a"), Msg: exitMsg("a")},
				Backoff:  createBackoff{Wait: 3 * time.Second, Failures: 2},
				Degraded: "1 pods cannot start; " + exitMsg("a"),
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tc.in.Clock = t0
			out := plan(tc.in)
			got := streakOutcome{Streak: out.Streak, Backoff: out.Backoff, Ended: out.StreakEnded}
			if d := out.Degraded; d != nil {
				require.Equal(t, v1alpha1.ConditionDegraded, d.Type)
				require.Equal(t, metav1.ConditionTrue, d.Status)
				require.Equal(t, "PodsCannotStart", d.Reason)
				got.Degraded = d.Message
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// --- draining, cordoned and outdated pods -------------------------------------

func TestPlanDrainingPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"a draining record with its pod is drained (deleted) again and not counted": {
			in:   input(1, pods(pod("a")), rec("a", slots.PodDraining)),
			want: outcome{Drain: []string{"a"}, Create: 1, Status: podCounts{Draining: 1}},
		},
		"retrying a drained pod's deletion needs no budget": {
			in: func() planInput {
				in := input(0, pods(pod("a"), pod("b")), rec("a", slots.PodDraining), rec("b", slots.PodActive))
				in.DeleteBudget = 0
				return in
			}(),
			want: outcome{Drain: []string{"a"}, Deferred: 1, Status: podCounts{Draining: 1, Idle: 1}},
		},
		"a draining pod keeps its annotations as they are": {
			in:   input(0, pods(pod("a", protected())), rec("a", slots.PodDraining)),
			want: outcome{Drain: []string{"a"}, Status: podCounts{Draining: 1}},
		},
	})
}

func TestPlanCordonedPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"cordoned pods are uncordoned when replicas rise": {
			in: input(3, pods(pod("a"), pod("b", protected()), pod("c")),
				rec("a", slots.PodActive), rec("b", slots.PodCordoned, running), rec("c", slots.PodCordoned)),
			want: outcome{
				Uncordon: []string{"b", "c"},
				Status:   podCounts{Replicas: 3, Ready: 3, Busy: 1, Idle: 2, Cordoned: 2},
			},
		},
		"the busiest cordoned pods are uncordoned first; idle ones not needed are drained": {
			in: input(2, pods(pod("a"), pod("b", protected()), pod("c", protected()), pod("d")),
				rec("a", slots.PodActive), rec("b", slots.PodCordoned, running),
				rec("c", slots.PodCordoned, running, running), idleAgo(rec("d", slots.PodCordoned), time.Second)),
			want: outcome{
				Uncordon: []string{"c"},
				Drain:    []string{"d"},
				Status:   podCounts{Replicas: 2, Ready: 2, Busy: 2, Idle: 2, Cordoned: 3},
			},
		},
		"only cordoned pods of the current template are uncordoned": {
			in: input(2, pods(pod("a"), pod("b", hash(oldHash), protected()), pod("c", hash(oldHash))),
				rec("a", slots.PodActive), rec("b", slots.PodCordoned, running), rec("c", slots.PodCordoned)),
			want: outcome{
				Drain:  []string{"c"},
				Create: 1,
				Status: podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 2, Cordoned: 2},
			},
		},
		"idle cordoned pods not needed are drained without waiting idleFor": {
			in: input(1, pods(pod("a"), pod("b")),
				rec("a", slots.PodActive), idleAgo(rec("b", slots.PodCordoned), time.Second)),
			want: outcome{Drain: []string{"b"}, Status: podCounts{Replicas: 1, Ready: 1, Idle: 2, Cordoned: 1}},
		},
		"busy cordoned pods not needed are left alone": {
			in: input(1, pods(pod("a"), pod("b", protected())),
				rec("a", slots.PodActive), rec("b", slots.PodCordoned, reserved)),
			want: outcome{Status: podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 1, Cordoned: 1}},
		},
		// A pod its own agent cordoned is stopping (SIGTERM without a
		// deletion the janitor sees: eviction, node shutdown, informer lag).
		// Before cordons had owners the janitor took it back as a replica
		// (uncordon), created nothing, and the work it then got died with
		// the pod.
		"a pod its stopping agent cordoned is never uncordoned; a replacement is created": {
			in: input(2, pods(pod("a"), pod("b", protected())),
				rec("a", slots.PodActive), byAgent(rec("b", slots.PodCordoned, running))),
			want: outcome{
				Create: 1,
				Status: podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 1, Cordoned: 1},
			},
		},
		"replicas rising take back the janitor's cordons, never the agent's": {
			in: input(3, pods(pod("a", protected()), pod("b", protected()), pod("c", protected())),
				byJanitor(rec("a", slots.PodCordoned, running)), byAgent(rec("b", slots.PodCordoned, running, running)),
				byAgent(rec("c", slots.PodCordoned, running))),
			want: outcome{
				Uncordon: []string{"a"},
				Create:   2,
				Status:   podCounts{Replicas: 1, Ready: 1, Busy: 3, Cordoned: 3},
			},
		},
		"an idle pod its agent cordoned is drained at once, even when replicas need a pod": {
			in: input(1, pods(pod("a")), byAgent(idleAgo(rec("a", slots.PodCordoned), time.Second))),
			want: outcome{
				Drain:  []string{"a"},
				Create: 1,
				Status: podCounts{Idle: 1, Cordoned: 1},
			},
		},
		"an outdated pod its agent cordoned is never uncordoned and is drained once idle": {
			in: input(1, pods(pod("a", hash(oldHash)), pod("b", hash(oldHash), protected())),
				byAgent(rec("a", slots.PodCordoned)), byAgent(rec("b", slots.PodCordoned, reserved))),
			want: outcome{
				Drain:  []string{"a"},
				Create: 1,
				Status: podCounts{Busy: 1, Idle: 1, Cordoned: 2},
			},
		},
		"draining an idle pod its agent cordoned takes budget": {
			in: func() planInput {
				in := input(0, pods(pod("a")), byAgent(rec("a", slots.PodCordoned)))
				in.DeleteBudget = 0
				return in
			}(),
			want: outcome{Deferred: 1, Status: podCounts{Idle: 1, Cordoned: 1}},
		},
		"draining an idle cordoned pod takes budget": {
			in: func() planInput {
				in := input(1, pods(pod("a"), pod("b")), rec("a", slots.PodActive), rec("b", slots.PodCordoned))
				in.DeleteBudget = 0
				return in
			}(),
			want: outcome{Deferred: 1, Status: podCounts{Replicas: 1, Ready: 1, Idle: 2, Cordoned: 1}},
		},
	})
}

func TestPlanReplacesOutdatedPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"idle outdated pods are drained, busy ones cordoned, replacements created": {
			in: input(3, pods(pod("idle", hash(oldHash)), pod("busy", hash(oldHash)), pod("new", pending(), hash(oldHash)), pod("cur")),
				idleAgo(rec("idle", slots.PodActive), time.Second), rec("busy", slots.PodActive, running),
				rec("new", slots.PodExpected), rec("cur", slots.PodActive)),
			want: outcome{
				Drain:    []string{"idle", "new"},
				Cordon:   []string{"busy"},
				Create:   2,
				Annotate: map[string]bool{"busy": true},
				Status:   podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 2},
			},
		},
		"outdated drains take budget": {
			in: func() planInput {
				in := input(2, pods(pod("a", hash(oldHash)), pod("b", hash(oldHash))), rec("a", slots.PodActive), rec("b", slots.PodActive))
				in.DeleteBudget = 1
				return in
			}(),
			want: outcome{Drain: []string{"a"}, Deferred: 1, Create: 2, Status: podCounts{Idle: 2}},
		},
		"pods without a template hash are outdated": {
			in:   input(1, pods(pod("a", func(p *corev1.Pod) { delete(p.Labels, LabelTemplateHash) })), rec("a", slots.PodActive)),
			want: outcome{Drain: []string{"a"}, Create: 1, Status: podCounts{Idle: 1}},
		},
	})
}

// recycle is in with spec.recycle set (0: not by that measure).
func recycle(in planInput, afterTasks int, afterAge time.Duration) planInput {
	in.RecycleAfterTasks, in.RecycleAfterAge = afterTasks, afterAge
	return in
}

func withBudget(in planInput, budget int) planInput {
	in.DeleteBudget = budget
	return in
}

func TestPlanRecyclesLongLivedPods(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"an idle pod past afterTasks is drained at once and replaced": {
			in: recycle(input(2, pods(pod("a"), pod("b")),
				tasks(rec("a", slots.PodActive), 5), tasks(rec("b", slots.PodActive), 4)), 5, 0),
			want: outcome{
				Drain:   []string{"a"},
				Create:  1,
				Recycle: []string{"a"},
				Status:  podCounts{Replicas: 1, Ready: 1, Idle: 2},
			},
		},
		"a busy pod past afterTasks is cordoned, keeps its work and gets a successor beside it": {
			in: recycle(input(2, pods(pod("a", protected()), pod("b")),
				tasks(rec("a", slots.PodActive, running, reserved), 9), rec("b", slots.PodActive)), 5, 0),
			want: outcome{
				Cordon:  []string{"a"},
				Create:  1,
				Recycle: []string{"a"},
				Status:  podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 1},
			},
		},
		"a pod past afterAge is replaced; younger ones stay": {
			in: recycle(input(2, pods(pod("old", createdAgo(25*time.Hour)), pod("young", createdAgo(23*time.Hour))),
				rec("old", slots.PodActive), rec("young", slots.PodActive)), 0, 24*time.Hour),
			want: outcome{
				Drain:   []string{"old"},
				Create:  1,
				Recycle: []string{"old"},
				Status:  podCounts{Replicas: 1, Ready: 1, Idle: 2},
			},
		},
		"either measure recycles": {
			in: recycle(input(2, pods(pod("many", createdAgo(time.Minute)), pod("old", createdAgo(48*time.Hour))),
				tasks(rec("many", slots.PodActive), 100), tasks(rec("old", slots.PodActive), 1)), 100, 24*time.Hour),
			want: outcome{
				Drain:   []string{"many", "old"},
				Create:  2,
				Recycle: []string{"many", "old"},
				Status:  podCounts{Idle: 2},
			},
		},
		"off by default": {
			in:   input(1, pods(pod("a", createdAgo(1000*time.Hour))), tasks(rec("a", slots.PodActive), 1000000)),
			want: outcome{Status: podCounts{Replicas: 1, Ready: 1, Idle: 1}},
		},
		"a recycled pod that became idle is drained, never uncordoned, though replicas need a pod": {
			in: recycle(input(2, pods(pod("a"), pod("b")),
				tasks(byJanitor(idleAgo(rec("a", slots.PodCordoned), time.Second)), 5), rec("b", slots.PodActive)), 5, 0),
			want: outcome{
				Drain:  []string{"a"},
				Create: 1,
				Status: podCounts{Replicas: 1, Ready: 1, Idle: 2, Cordoned: 1},
			},
		},
		"a recycled pod still busy stays cordoned; its successor exists": {
			in: recycle(input(2, pods(pod("a", protected()), pod("b"), pod("succ", pending())),
				tasks(byJanitor(rec("a", slots.PodCordoned, running)), 5), rec("b", slots.PodActive), rec("succ", slots.PodExpected)), 5, 0),
			want: outcome{Status: podCounts{Replicas: 2, Ready: 1, Busy: 1, Idle: 1, Cordoned: 1}},
		},
		"recycling drains no more pods than the deletion budget; the rest keep working": {
			in: withBudget(recycle(input(3, pods(pod("a", createdAgo(3*time.Hour)), pod("b", createdAgo(2*time.Hour)), pod("c", createdAgo(4*time.Hour))),
				tasks(rec("a", slots.PodActive), 5), tasks(rec("b", slots.PodActive), 5), tasks(rec("c", slots.PodActive), 5)), 5, 0), 2),
			want: outcome{
				Drain:    []string{"a", "c"}, // the oldest
				Create:   2,
				Deferred: 1,
				Recycle:  []string{"a", "c"},
				Status:   podCounts{Replicas: 1, Ready: 1, Idle: 3},
			},
		},
		"cordoning busy pods for recycling takes budget too, idle ones first": {
			in: withBudget(recycle(input(3, pods(pod("busy1", protected(), createdAgo(9*time.Hour)), pod("busy2", protected()), pod("idle")),
				tasks(rec("busy1", slots.PodActive, running), 5), tasks(rec("busy2", slots.PodActive, running), 5), tasks(rec("idle", slots.PodActive), 5)), 5, 0), 2),
			want: outcome{
				Drain:    []string{"idle"},
				Cordon:   []string{"busy1"},
				Create:   2,
				Deferred: 1,
				Recycle:  []string{"busy1", "idle"},
				Status:   podCounts{Replicas: 1, Ready: 1, Busy: 2, Idle: 1},
			},
		},
		"recycled pods still cordoned hold their share of the budget": {
			in: withBudget(recycle(input(2, pods(pod("waiting", protected()), pod("a")),
				tasks(byJanitor(rec("waiting", slots.PodCordoned, running)), 5), tasks(rec("a", slots.PodActive), 5)), 5, 0), 1),
			want: outcome{
				Create:   1,
				Deferred: 1,
				Status:   podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 1, Cordoned: 1},
			},
		},
		"a data-loss hold recycles nothing": {
			in: recycle(afterLoss(input(1, pods(pod("a", generation(oldGen))), tasks(rec("a", slots.PodActive), 5)), 10*time.Second), 5, 0),
			want: outcome{
				Deferred:  1,
				HoldUntil: t0.Add(hbto - 10*time.Second),
				Status:    podCounts{Replicas: 1, Ready: 1, Idle: 1},
			},
		},
		"nothing is recycled while the pod policy refuses the template": {
			in: func() planInput {
				in := recycle(input(1, pods(pod("a")), tasks(rec("a", slots.PodActive), 5)), 5, 0)
				in.TemplateRefused = true
				return in
			}(),
			want: outcome{Status: podCounts{Replicas: 1, Ready: 1, Idle: 1}},
		},
		"an outdated pod past afterTasks is replaced once, as outdated": {
			in:   recycle(input(1, pods(pod("a", hash(oldHash))), tasks(rec("a", slots.PodActive), 5)), 5, 0),
			want: outcome{Drain: []string{"a"}, Create: 1, Status: podCounts{Idle: 1}},
		},
		"a pod whose agent has not registered is not recycled by age": {
			in:   recycle(input(1, pods(pod("a", pending(), createdAgo(48*time.Hour))), rec("a", slots.PodExpected)), 0, 24*time.Hour),
			want: outcome{Status: podCounts{Replicas: 1}},
		},
	})
}

// --- annotations and status -------------------------------------------------

func TestPlanAnnotatesBusyPodsAgainstEviction(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"busy pods get the annotations, idle pods lose them, the rest are left": {
			in: input(8,
				pods(
					pod("busy-bare"),
					pod("busy-done", protected()),
					pod("busy-half", annotated("", "true")),
					pod("idle-protected", protected()),
					pod("idle-half", annotated("false", "")),
					pod("idle-bare", annotated("true", "false")),
					// The busy label alone (a PDB selects by it) counts as
					// marked, and a busy pod without it is marked again.
					pod("idle-label-only", func(p *corev1.Pod) { p.Labels[LabelBusy] = "true" }),
					pod("busy-no-label", annotated("false", "true")),
				),
				rec("busy-bare", slots.PodActive, running),
				rec("busy-done", slots.PodActive, reserved),
				rec("busy-half", slots.PodCordoned, running),
				rec("idle-protected", slots.PodActive),
				rec("idle-half", slots.PodCordoned),
				rec("idle-bare", slots.PodActive),
				rec("idle-label-only", slots.PodActive),
				rec("busy-no-label", slots.PodActive, running)),
			want: outcome{
				Uncordon: []string{"busy-half", "idle-half"},
				Annotate: map[string]bool{"busy-bare": true, "busy-half": true, "busy-no-label": true,
					"idle-protected": false, "idle-half": false, "idle-label-only": false},
				Status: podCounts{Replicas: 8, Ready: 8, Busy: 4, Idle: 4, Cordoned: 2},
			},
		},
		"never-registered pods carrying the annotations lose them": {
			in: input(1, pods(pod("a", pending(), protected()))),
			want: outcome{
				Expect:   []string{"a"},
				Annotate: map[string]bool{"a": false},
				Status:   podCounts{Replicas: 1},
			},
		},
	})
}

func TestPlanStatusCounts(t *testing.T) {
	runPlanCases(t, map[string]planCase{
		"ready counts only registered active ready pods; replicas exclude surplus and cordoned": {
			in: input(3,
				pods(
					pod("ready-idle"),
					pod("ready-busy", protected()),
					pod("registered-not-ready", notReady()),
					pod("expected-ready"),
					pod("cordoned-busy", hash(oldHash), protected()),
					pod("draining"),
					pod("surplus-young-idle", createdAgo(time.Minute)),
				),
				idleAgo(rec("ready-idle", slots.PodActive), 10*time.Second),
				rec("ready-busy", slots.PodActive, running),
				idleAgo(rec("registered-not-ready", slots.PodActive), 10*time.Second),
				rec("expected-ready", slots.PodExpected),
				rec("cordoned-busy", slots.PodCordoned, running),
				rec("draining", slots.PodDraining),
				idleAgo(rec("surplus-young-idle", slots.PodActive), 30*time.Second)),
			// current: ready-idle, ready-busy, registered-not-ready,
			// expected-ready, surplus-young-idle: 2 surplus, the expected
			// pod (drained) and the longest idle of the rest.
			want: outcome{
				Drain:    []string{"draining", "expected-ready"},
				WaitIdle: 30 * time.Second,
				Status:   podCounts{Replicas: 3, Ready: 2, Busy: 2, Idle: 3, Cordoned: 1, Draining: 1},
			},
		},
	})
}

// TestPlanIsPure: the same input gives the same output, and the input is
// not changed.
func TestPlanIsPure(t *testing.T) {
	in := input(1, pods(pod("a"), pod("b", protected()), pod("c", hash(oldHash)), pod("d", pending())),
		rec("a", slots.PodActive), rec("b", slots.PodCordoned, running), rec("c", slots.PodActive), rec("x", slots.PodActive))
	before := deepCopyInput(in)
	first := outcomeOf(plan(in))
	require.Equal(t, before, in)
	require.Equal(t, first, outcomeOf(plan(in)))
}

func deepCopyInput(in planInput) planInput {
	out := in
	out.Pods = nil
	for _, p := range in.Pods {
		out.Pods = append(out.Pods, p.DeepCopy())
	}
	out.Records = nil
	for _, r := range in.Records {
		r.Slots = slices.Clone(r.Slots)
		out.Records = append(out.Records, r)
	}
	return out
}

// --- properties over random pools --------------------------------------------

// randomInput builds a pool of random pods and records. Records in the
// draining and expected states are idle, as the store keeps them.
func randomInput(rng *rand.Rand) planInput {
	in := planInput{
		Now:          t0,
		Replicas:     rng.IntN(10),
		TemplateHash: curHash,
		IdleFor:      time.Duration(rng.IntN(120)) * time.Second,
		DeleteBudget: rng.IntN(5),
		Generation:   curGen,
		// Mostly long ago; sometimes within a heartbeat timeout (a data
		// loss, or a first declaration).
		Declared:         t0.Add(-48 * time.Hour),
		HeartbeatTimeout: hbto,
		PoolUID:          poolUID,
	}
	if rng.IntN(4) == 0 {
		in.Declared = t0.Add(-time.Duration(rng.IntN(40)) * time.Second)
	}
	if rng.IntN(2) == 0 {
		in.RecycleAfterTasks = rng.IntN(4)
		in.RecycleAfterAge = time.Duration(rng.IntN(3)) * time.Hour
	}
	slotStates := []slots.SlotState{slots.SlotIdle, slots.SlotIdle, running, assigned, reserved, slots.SlotOrphan}
	podStates := []slots.PodState{slots.PodExpected, slots.PodActive, slots.PodActive, slots.PodCordoned, slots.PodDraining, slots.PodLost}
	phases := []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodRunning, corev1.PodRunning, corev1.PodFailed, corev1.PodSucceeded}
	n := rng.IntN(12)
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		opts := []podOpt{phase(phases[rng.IntN(len(phases))]), createdAgo(time.Duration(rng.IntN(7200)) * time.Second)}
		if rng.IntN(4) == 0 {
			opts = append(opts, hash(oldHash))
		}
		if rng.IntN(8) == 0 {
			opts = append(opts, terminating())
		}
		switch rng.IntN(12) {
		case 0: // a static agent's pod the pool takes over
			opts = append(opts, static(""))
		case 1:
			opts = append(opts, static("ReplicaSet"))
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, notReady())
		}
		if rng.IntN(3) == 0 {
			opts = append(opts, protected())
		}
		if rng.IntN(10) == 0 {
			opts = append(opts, waiting("agent", "ImagePullBackOff"))
		} else if rng.IntN(2) == 0 {
			opts = append(opts, agentRunning(time.Duration(rng.IntN(60))*time.Second))
		}
		if rng.IntN(2) == 0 {
			if in.ExpectedSince == nil {
				in.ExpectedSince = map[types.UID]time.Time{}
			}
			in.ExpectedSince[types.UID(name+"-uid")] = t0.Add(-time.Duration(rng.IntN(60)) * time.Second)
		}
		switch rng.IntN(4) {
		case 0: // created by an earlier janitor: no annotation
			opts = append(opts, func(p *corev1.Pod) { delete(p.Annotations, AnnotationGeneration) })
		case 1:
			opts = append(opts, generation(oldGen))
		default:
			opts = append(opts, generation(curGen))
		}
		in.Pods = append(in.Pods, pod(name, opts...))
		switch rng.IntN(8) {
		case 0: // no record
			continue
		case 1: // a record of another incarnation
			in.Records = append(in.Records, withUID(rec(name, slots.PodActive), name+"-old"))
			continue
		}
		state := podStates[rng.IntN(len(podStates))]
		var busy []slots.SlotState
		if state != slots.PodExpected && state != slots.PodDraining {
			for range rng.IntN(4) {
				busy = append(busy, slotStates[rng.IntN(len(slotStates))])
			}
		}
		r := rec(name, state, busy...)
		if state == slots.PodCordoned {
			r.CordonedBy = []slots.CordonOwner{"", slots.CordonedByJanitor, slots.CordonedByAgent}[rng.IntN(3)]
		}
		if rng.IntN(2) == 0 {
			r = idleAgo(r, time.Duration(rng.IntN(180))*time.Second)
		}
		r.TasksStarted = rng.IntN(5)
		in.Records = append(in.Records, r)
	}
	for i := range rng.IntN(3) {
		in.Records = append(in.Records, rec(fmt.Sprintf("gone%d", i), podStates[rng.IntN(len(podStates))]))
	}
	rng.Shuffle(len(in.Pods), func(i, j int) { in.Pods[i], in.Pods[j] = in.Pods[j], in.Pods[i] })
	return in
}

func TestPlanInvariantsOverRandomPools(t *testing.T) {
	rng := rand.New(rand.NewPCG(2026, 3))
	for i := range 5000 {
		in := randomInput(rng)
		before := deepCopyInput(in)
		out := plan(in)
		desc := fmt.Sprintf("case %d: %s", i, describeInput(in))

		recOf := map[string]*slots.PodSnapshot{}
		for j := range in.Records {
			recOf[in.Records[j].Name] = &in.Records[j]
		}
		record := func(p *corev1.Pod) *slots.PodSnapshot {
			if r := recOf[p.Name]; r != nil && r.UID == string(p.UID) {
				return r
			}
			return nil
		}

		// No pod is in a list twice, nor in two of Drain, Cordon, Uncordon, Dead.
		seen := map[string]string{}
		for list, ps := range map[string][]*corev1.Pod{"drain": out.Drain, "cordon": out.Cordon, "uncordon": out.Uncordon, "dead": deadPods(out.Dead)} {
			for _, p := range ps {
				prev, dup := seen[p.Name]
				require.Falsef(t, dup, "%s: pod %s in %s and %s", desc, p.Name, prev, list)
				seen[p.Name] = list
			}
		}

		// Nothing busy is drained; only busy pods are cordoned; only cordoned
		// pods of the current template are uncordoned.
		newDrains := 0
		for _, p := range out.Drain {
			r := record(p)
			require.Falsef(t, r != nil && r.Busy(), "%s: busy pod %s drained", desc, p.Name)
			if r == nil || r.State != slots.PodDraining {
				newDrains++
			}
			// An expected record whose agent runs is drained only after a
			// heartbeat timeout of it, and of the janitor seeing it so.
			if started := agentStartedAt(p); (r == nil || r.State == slots.PodExpected) && !started.IsZero() {
				since, ok := in.ExpectedSince[p.UID]
				require.Truef(t, ok && !in.Now.Before(since.Add(in.HeartbeatTimeout)) && !in.Now.Before(started.Add(in.HeartbeatTimeout)),
					"%s: pod %s drained as never registered while its agent may have registered", desc, p.Name)
			}
		}
		for _, p := range out.Cordon {
			r := record(p)
			require.Truef(t, r != nil && r.Busy() && r.State == slots.PodActive, "%s: pod %s cordoned", desc, p.Name)
		}
		for _, p := range out.Uncordon {
			r := record(p)
			require.Truef(t, r != nil && r.State == slots.PodCordoned && p.Labels[LabelTemplateHash] == curHash, "%s: pod %s uncordoned", desc, p.Name)
			require.NotEqualf(t, slots.CordonedByAgent, r.CordonedBy, "%s: pod %s uncordoned though its stopping agent cordoned it", desc, p.Name)
			require.Emptyf(t, recycleDue(in, &member{pod: p, rec: r}), "%s: pod %s uncordoned though due for recycling", desc, p.Name)
		}

		// Recycling takes out only pods due, each drained (idle) or cordoned
		// (busy), and no more than the deletion budget.
		require.LessOrEqualf(t, len(out.Recycle), max(in.DeleteBudget, 0), "%s: recycled %d", desc, len(out.Recycle))
		for p := range out.Recycle {
			r := record(p)
			require.Truef(t, r != nil && recycleDue(in, &member{pod: p, rec: r}) != "", "%s: pod %s recycled though not due", desc, p.Name)
			require.Truef(t, slices.Contains(out.Drain, p) != slices.Contains(out.Cordon, p), "%s: recycled pod %s neither drained nor cordoned", desc, p.Name)
		}

		// The deletion budget bounds new drains; a hold stops them and
		// removals. A live pod that predates the generation holds within a
		// heartbeat timeout of the declaration.
		require.LessOrEqualf(t, newDrains, max(in.DeleteBudget, 0), desc)
		for _, p := range in.Pods {
			if foreign(p, in.PoolUID) && record(p) == nil {
				continue // not the pool's: ignored
			}
			if !ended(p) && p.Annotations[AnnotationGeneration] != in.Generation && in.Now.Before(in.Declared.Add(in.HeartbeatTimeout)) {
				require.Falsef(t, out.HoldUntil.IsZero(), "%s: pod %s predates a generation declared %v ago, and no hold", desc, p.Name, in.Now.Sub(in.Declared))
			}
		}
		if !out.HoldUntil.IsZero() {
			require.Truef(t, out.HoldUntil.After(in.Now), desc)
			require.Zerof(t, newDrains, "%s: drained under hold", desc)
			require.Emptyf(t, out.Remove, "%s: removed under hold", desc)
		}

		// Surplus pods are not in status, so status plus creations is exactly
		// the desired count: below it pods are created, above it the surplus
		// is left out.
		require.LessOrEqualf(t, out.Status.Replicas, in.Replicas, desc)
		require.GreaterOrEqualf(t, out.Create, 0, desc)
		require.Equalf(t, in.Replicas, out.Status.Replicas+out.Create, desc)
		require.LessOrEqualf(t, out.Status.Ready, out.Status.Replicas, desc)

		// Terminating pods are in no action list but ExpectStopping, and
		// there only without a record of their own.
		for _, p := range out.ExpectStopping {
			require.NotNilf(t, p.DeletionTimestamp, "%s: live pod %s expected as stopping", desc, p.Name)
			require.Nilf(t, record(p), "%s: pod %s expected as stopping though it has a record", desc, p.Name)
		}
		acted := slices.Concat(out.Expect, out.Drain, out.Cordon, out.Uncordon, deadPods(out.Dead))
		for p := range out.Annotate {
			acted = append(acted, p)
		}
		for _, p := range acted {
			require.Nilf(t, p.DeletionTimestamp, "%s: terminating pod %s acted on", desc, p.Name)
			// A foreign pod is the pool's only with a record, and never
			// taken back into it.
			if foreign(p, in.PoolUID) {
				require.NotNilf(t, record(p), "%s: foreign pod %s without a record acted on", desc, p.Name)
				require.NotContainsf(t, slices.Concat(out.Uncordon, out.Expect), p, "%s: foreign pod %s uncordoned or expected", desc, p.Name)
			}
		}

		require.GreaterOrEqualf(t, out.WaitIdle, time.Duration(0), desc)
		require.LessOrEqualf(t, out.WaitIdle, in.IdleFor, desc)

		require.Equalf(t, before, in, "%s: input changed", desc)
	}
}

func deadPods(ds []deadPod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, d := range ds {
		out = append(out, d.Pod)
	}
	return out
}

func describeInput(in planInput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicas=%d budget=%d declared=%v ago idleFor=%v recycle=%d/%v pods=[", in.Replicas, in.DeleteBudget, in.Now.Sub(in.Declared), in.IdleFor,
		in.RecycleAfterTasks, in.RecycleAfterAge)
	for _, p := range in.Pods {
		fmt.Fprintf(&b, " %s/%s/%s/%s/gen=%s term=%v", p.Name, p.UID, p.Status.Phase, p.Labels[LabelTemplateHash], p.Annotations[AnnotationGeneration], p.DeletionTimestamp != nil)
	}
	b.WriteString(" ] records=[")
	for _, r := range in.Records {
		var busy []string
		for _, s := range r.Slots {
			busy = append(busy, string(s.State))
		}
		fmt.Fprintf(&b, " %s/%s/%s/%v/tasks=%d", r.Name, r.UID, r.State, busy, r.TasksStarted)
	}
	b.WriteString(" ]")
	return b.String()
}

// --- taking over a static pool's pods (a migration from a Deployment) -------

func TestPlanTakesOverForeignPods(t *testing.T) {
	budget0 := input(1, pods(pod("dep-a", static(""))), rec("dep-a", slots.PodActive))
	budget0.DeleteBudget = 0
	runPlanCases(t, map[string]planCase{
		"a busy foreign pod is cordoned, kept, and does not count": {
			in: input(2, pods(pod("dep-a", static(""))), rec("dep-a", slots.PodActive, running)),
			want: outcome{
				Cordon:   []string{"dep-a"},
				Create:   2,
				Annotate: map[string]bool{"dep-a": true},
				Status:   podCounts{Busy: 1},
			},
		},
		"a reservation keeps it: cordoned, approvals still reach it": {
			in: input(1, pods(pod("dep-a", static(""), protected())), rec("dep-a", slots.PodActive, reserved)),
			want: outcome{
				Cordon: []string{"dep-a"},
				Create: 1,
				Status: podCounts{Busy: 1},
			},
		},
		"a cordoned busy foreign pod is left to finish": {
			in: input(1, pods(pod("dep-a", static(""), protected()), pod("own")),
				byJanitor(rec("dep-a", slots.PodCordoned, running)), rec("own", slots.PodActive)),
			want: outcome{
				Status: podCounts{Replicas: 1, Ready: 1, Busy: 1, Idle: 1, Cordoned: 1},
			},
		},
		"an idle foreign pod is drained at once, without idleFor": {
			in: input(1, pods(pod("dep-a", static("")), pod("own")),
				idleAgo(rec("dep-a", slots.PodActive), time.Second), rec("own", slots.PodActive)),
			want: outcome{
				Drain:  []string{"dep-a"},
				Status: podCounts{Replicas: 1, Ready: 1, Idle: 2},
			},
		},
		"a pod still controlled by a ReplicaSet is taken over all the same": {
			in: input(0, pods(pod("dep-a", static("ReplicaSet"))), byJanitor(rec("dep-a", slots.PodCordoned))),
			want: outcome{
				Drain:  []string{"dep-a"},
				Status: podCounts{Idle: 1, Cordoned: 1},
			},
		},
		"foreign drains take the deletion budget": {
			in: budget0,
			want: outcome{
				Create:   1,
				Deferred: 1,
				Status:   podCounts{Idle: 1},
			},
		},
		"a foreign pod without a record is not the pool's: left alone": {
			in: input(1, pods(pod("dep-a", static("")), pod("dep-b", static("")), pod("own")),
				withUID(rec("dep-b", slots.PodActive), "other"), rec("own", slots.PodActive)),
			want: outcome{
				Remove: []string{"dep-b/other pod-gone"},
				Status: podCounts{Replicas: 1, Ready: 1, Idle: 1},
			},
		},
		"a lost foreign pod is deleted, its record removed once the pod is gone": {
			in: input(0, pods(pod("dep-a", static(""))), rec("dep-a", slots.PodLost, running)),
			want: outcome{
				Dead:   []string{"dep-a agent-lost"},
				Status: podCounts{Busy: 1},
			},
		},
		"an ended foreign pod is no start failure of the template": {
			in: input(0, pods(pod("dep-a", static(""), phase(corev1.PodFailed))), rec("dep-a", slots.PodExpected)),
			want: outcome{
				Dead: []string{"dep-a pod-Failed"},
			},
		},
		"a foreign pod whose registration may be lost waits like an own one": {
			in: input(0, pods(pod("dep-a", static(""), agentRunning(5*time.Second))), rec("dep-a", slots.PodExpected)),
			want: outcome{
				WaitRegistration: hbto, // first seen expected now
			},
		},
		"a foreign pod predating the generation holds removals after a data loss": {
			in: afterLoss(input(0, pods(pod("dep-a", static(""))), rec("dep-a", slots.PodActive)), 10*time.Second),
			want: outcome{
				Deferred:  1,
				HoldUntil: t0.Add(20 * time.Second),
				Status:    podCounts{Idle: 1},
			},
		},
	})
}
