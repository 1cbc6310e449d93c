package janitor

// pass_test.go: whole passes of the controller over one pool, against a
// real Redis (the slot store as it runs) and client-go's fake clientsets.
// No workers run: each test runs passes itself, once the informers show
// everything the API holds, so what one pass decides is deterministic.

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var podsGVR = corev1.SchemeGroupVersion.WithResource("pods")

// passEnv is one pool, its slot store and a janitor whose passes the test runs.
type passEnv struct {
	t      *testing.T
	ctx    context.Context
	kube   *kubefake.Clientset
	dyn    *dynfake.FakeDynamicClient
	rdb    *redis.Client
	store  Store // what the janitor uses (the real store, or a wrapper)
	slots  *slots.Store
	prefix string
	key    string
	id     slots.PoolID

	c       *Controller
	m       *Metrics
	events  *record.FakeRecorder
	stopCtl context.CancelFunc
	// ignoreHPAs starts janitors with Options.IgnoreHPAs.
	ignoreHPAs bool
	// reports, identity and log, when set, start janitors with them.
	reports  Reports
	identity string
	log      *slog.Logger
	webhooks WebhookDeclarations
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestStore is a slot store on the test binary's redis-server, under a
// key prefix of its own, and its client.
func newTestStore(t testing.TB, ctx context.Context) (*slots.Store, *redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix(t)
	st, err := slots.New(ctx, rdb, slots.Options{Prefix: prefix, Logger: quietLog()})
	require.NoError(t, err)
	return st, rdb, prefix
}

// newPassEnv creates the AgentPool ap (namespace "team") in the fake API
// and starts a janitor's informers.
func newPassEnv(t *testing.T, ap *v1alpha1.AgentPool) *passEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, rdb, prefix := newTestStore(t, ctx)
	e := &passEnv{t: t, ctx: ctx, rdb: rdb, slots: st, store: st, prefix: prefix,
		key: ap.Namespace + "/" + ap.Name, id: slots.PoolID{Namespace: ap.Namespace, Name: ap.Name}}
	e.kube = kubefake.NewSimpleClientset()
	// What the API server sets and the fake tracker does not.
	e.kube.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.UID = uuid.NewUUID()
		p.CreationTimestamp = metav1.Now()
		return false, nil, nil
	})
	e.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.GroupVersionResource: v1alpha1.Kind + "List"})
	ap.UID = types.UID("ap-uid")
	ap.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	require.NoError(t, err)
	_, err = e.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ap.Namespace).
		Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	require.NoError(t, err)
	e.startJanitor()
	return e
}

// startJanitor starts a new Controller (stopping the previous one): a
// janitor process that remembers nothing.
func (e *passEnv) startJanitor() {
	e.t.Helper()
	if e.stopCtl != nil {
		e.stopCtl()
	}
	e.m = NewMetrics(nil)
	log := e.log
	if log == nil {
		log = quietLog()
	}
	c, err := New(e.kube, e.dyn, e.store, Options{SyncInterval: time.Hour, Logger: log, Metrics: e.m,
		Inject: Injection{KeyPrefix: e.prefix}, IgnoreHPAs: e.ignoreHPAs, Reports: e.reports, Identity: e.identity, Webhooks: e.webhooks})
	require.NoError(e.t, err)
	e.events = record.NewFakeRecorder(1000)
	c.recorder = e.events
	ctx, cancel := context.WithCancel(e.ctx)
	c.startInformers(ctx.Done())
	require.True(e.t, cache.WaitForCacheSync(ctx.Done(), c.informersSynced()...))
	e.c = c
	e.stopCtl = func() {
		cancel()
		c.shutdownInformers()
	}
	e.t.Cleanup(e.stopCtl)
}

// pass runs one pass once the janitor's caches hold what the API holds.
func (e *passEnv) pass() {
	e.t.Helper()
	require.Eventually(e.t, func() bool { return e.c.exp.Satisfied(e.key) && e.cachesCurrent() },
		10*time.Second, 5*time.Millisecond, "the informers never caught up")
	_, err := e.c.sync(e.ctx, e.key)
	require.NoError(e.t, err)
}

func (e *passEnv) cachesCurrent() bool {
	list, err := e.kube.CoreV1().Pods(e.id.Namespace).List(e.ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != len(e.c.watchOf(e.id.Namespace).pods.GetIndexer().List()) {
		return false
	}
	for i := range list.Items {
		got, ok, _ := e.c.watchOf(e.id.Namespace).pods.GetIndexer().GetByKey(e.id.Namespace + "/" + list.Items[i].Name)
		if !ok || !equality.Semantic.DeepEqual(got, &list.Items[i]) {
			return false
		}
	}
	u, err := e.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(e.id.Namespace).Get(e.ctx, e.id.Name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	got, ok, _ := e.c.watchOf(e.id.Namespace).pools.GetIndexer().GetByKey(e.key)
	return ok && equality.Semantic.DeepEqual(got, u)
}

func (e *passEnv) pool() *v1alpha1.AgentPool {
	e.t.Helper()
	u, err := e.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(e.id.Namespace).Get(e.ctx, e.id.Name, metav1.GetOptions{})
	require.NoError(e.t, err)
	ap := &v1alpha1.AgentPool{}
	require.NoError(e.t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ap))
	return ap
}

func (e *passEnv) updatePool(mutate func(*v1alpha1.AgentPool)) {
	e.t.Helper()
	ap := e.pool()
	mutate(ap)
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	require.NoError(e.t, err)
	_, err = e.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(e.id.Namespace).
		Update(e.ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
	require.NoError(e.t, err)
}

func (e *passEnv) scaleTo(n int32) {
	e.t.Helper()
	e.updatePool(func(ap *v1alpha1.AgentPool) { ap.Spec.Replicas = &n })
}

// podObjects lists the pool's pod objects by name.
func (e *passEnv) podObjects() map[string]corev1.Pod {
	e.t.Helper()
	list, err := e.kube.CoreV1().Pods(e.id.Namespace).List(e.ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		out[p.Name] = p
	}
	return out
}

// podNames lists the pool's pod objects' names, sorted.
func (e *passEnv) podNames() []string {
	e.t.Helper()
	var out []string
	for name := range e.podObjects() {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (e *passEnv) snapshot() slots.Snapshot {
	e.t.Helper()
	snap, err := e.slots.Snapshot(e.ctx, e.id)
	require.NoError(e.t, err)
	return snap
}

func (e *passEnv) record(pod string) (slots.PodSnapshot, bool) {
	e.t.Helper()
	for _, r := range e.snapshot().Pods {
		if r.Name == pod {
			return r, true
		}
	}
	return slots.PodSnapshot{}, false
}

// run plays the kubelet's part for a pod: its agent container runs.
func (e *passEnv) run(p corev1.Pod) { e.runSince(p, 0) }

// runSince: the pod's agent container has run for ago.
func (e *passEnv) runSince(p corev1.Pod, ago time.Duration) {
	e.t.Helper()
	now := metav1.NewTime(time.Now().Add(-ago))
	p.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: AgentContainer, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	_, err := e.kube.CoreV1().Pods(p.Namespace).UpdateStatus(e.ctx, &p, metav1.UpdateOptions{})
	require.NoError(e.t, err)
}

// loseData deletes every key of this test's store: Redis lost its data.
func (e *passEnv) loseData() {
	e.t.Helper()
	keys, err := e.rdb.Keys(e.ctx, e.prefix+":*").Result()
	require.NoError(e.t, err)
	require.NotEmpty(e.t, keys)
	require.NoError(e.t, e.rdb.Del(e.ctx, keys...).Err())
}

// drainEvents returns the events recorded so far.
func (e *passEnv) drainEvents() []string {
	var out []string
	for {
		select {
		case ev := <-e.events.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func eventsWith(evs []string, reason string) []string {
	var out []string
	for _, ev := range evs {
		if strings.Contains(ev, " "+reason+" ") {
			out = append(out, ev)
		}
	}
	return out
}

func actions(m *Metrics, action, result string) int {
	return int(testutil.ToFloat64(m.Actions.WithLabelValues(action, result)))
}

// testPool is an AgentPool in namespace "team" with a short heartbeat
// timeout (data-loss holds end quickly) and idleFor.
func testPool(replicas int32, muts ...func(*v1alpha1.AgentPool)) *v1alpha1.AgentPool {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Replicas = &replicas
		ap.Spec.HeartbeatTimeout = dur(time.Second)
		ap.Spec.IdleFor = dur(time.Millisecond)
	})
	for _, m := range muts {
		m(ap)
	}
	return ap
}

// A janitor that starts after Redis lost its data holds removals, like one
// that ran through the loss: the hold comes from the snapshot and the pods'
// generation, not from memory. Before the fix the new janitor declared the
// pool, wrote expected records for pods whose agents still ran work, took
// them for never-registered pods and deleted the surplus in its first pass.
func TestPassFreshJanitorAfterDataLossDeletesNothingUntilAgentsReregister(t *testing.T) {
	e := newPassEnv(t, testPool(3))
	e.pass()
	objs := e.podObjects()
	require.Len(t, objs, 3)
	gen := e.snapshot().Generation
	for _, p := range objs {
		require.Equal(t, gen, p.Annotations[AnnotationGeneration], "pods carry the generation they were created under")
		// No container status: the kubelet's reports lag (the hold alone
		// protects these pods, not the wait for a running agent's
		// registration, see TestPassExpectedPodWhoseAgentRuns...).
		_, err := e.slots.RegisterPod(e.ctx, e.id, p.Name, string(p.UID))
		require.NoError(t, err)
	}
	// Two pods get work.
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		_, err := e.slots.Submit(e.ctx, e.id, slots.TaskSpec{ID: id, Type: slots.Plan})
		require.NoError(t, err)
	}
	busy := map[string]bool{}
	for _, r := range e.snapshot().Pods {
		if r.Busy() {
			busy[r.Name] = true
		}
	}
	require.Len(t, busy, 2)

	// Redis loses its data; a new janitor starts; the HPA lowers replicas.
	e.loseData()
	e.scaleTo(1)
	before := e.podNames()
	e.startJanitor()
	e.pass()
	require.Equal(t, before, e.podNames(), "nothing deleted while the agents re-register")
	snap := e.snapshot()
	require.NotEqual(t, gen, snap.Generation)
	require.Len(t, snap.Pods, 3, "records rebuilt")
	for _, r := range snap.Pods {
		require.Equal(t, slots.PodExpected, r.State)
	}
	require.Zero(t, actions(e.m, "drain", resultSuccess))
	require.Len(t, eventsWith(e.drainEvents(), "RedisDataLoss"), 1)
	e.pass()
	require.Empty(t, eventsWith(e.drainEvents(), "RedisDataLoss"), "one event per generation")

	// The agents register again, the busy ones with the work they still run.
	for name, p := range e.podObjects() {
		var orphans []int
		if busy[name] {
			orphans = []int{1}
		}
		_, err := e.slots.RegisterPod(e.ctx, e.id, name, string(p.UID), orphans...)
		require.NoError(t, err)
	}
	// Once the hold is over the idle surplus pod goes; the busy ones stay,
	// cordoned.
	require.Eventually(t, func() bool {
		e.pass()
		return len(e.podObjects()) == 2
	}, 10*time.Second, 50*time.Millisecond)
	for name := range e.podObjects() {
		require.True(t, busy[name], "pod %s left, a busy one was deleted", name)
	}
}

// An expected record whose agent container runs may be a registration an
// asynchronous failover lost: the pod is not drained as never registered
// until the janitor has seen the record expected for a heartbeat timeout of
// passes. A janitor that restarts forgets, and so waits again, never less.
func TestPassExpectedPodWhoseAgentRunsIsDrainedOnlyAfterAHeartbeatTimeoutOfPasses(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	objs := e.podObjects()
	require.Len(t, objs, 1)
	for _, p := range objs {
		e.runSince(p, time.Hour) // its container started long ago
	}
	e.scaleTo(0)
	e.pass()
	require.Len(t, e.podObjects(), 1, "first seen expected by this janitor: not drained")
	require.Zero(t, actions(e.m, "drain", resultSuccess))

	e.startJanitor()
	e.pass()
	require.Len(t, e.podObjects(), 1, "a new janitor starts the wait over")

	require.Eventually(t, func() bool {
		e.pass()
		return len(e.podObjects()) == 0
	}, 10*time.Second, 50*time.Millisecond, "a hung agent's pod goes after a heartbeat timeout")
}

func condition(ap *v1alpha1.AgentPool, typ string) *metav1.Condition {
	for i := range ap.Status.Conditions {
		if ap.Status.Conditions[i].Type == typ {
			return &ap.Status.Conditions[i]
		}
	}
	return nil
}

// A spec.slots change made while the pool has pods waits for it to have
// none, and everything else in the same edit applies at once. Before the
// fix the store refused the whole declaration and the janitor marked the
// spec declared anyway: the other fields were dropped and the policy never
// applied, even at 0 pods, until the janitor restarted; nothing in the
// status said so.
func TestPassSlotPolicyChangeWaitsForZeroPodsAndTheRestAppliesAtOnce(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	require.Len(t, e.podObjects(), 1)
	cfg, _, err := e.slots.Pool(e.ctx, e.id)
	require.NoError(t, err)
	require.Len(t, cfg.Policy.Slots, 3)
	require.Equal(t, metav1.ConditionFalse, condition(e.pool(), v1alpha1.ConditionSlotPolicyPending).Status)

	e.updatePool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan", "plan_and_apply"}}, {Types: []v1alpha1.TaskType{"plan"}}}
		ap.Spec.MaxAttempts = i32(7)
	})
	e.pass()
	cfg, _, err = e.slots.Pool(e.ctx, e.id)
	require.NoError(t, err)
	require.Equal(t, 7, cfg.MaxAttempts, "the rest of the edit applies at once")
	require.Len(t, cfg.Policy.Slots, 3, "the old policy stays while the pool has pods")
	pending := condition(e.pool(), v1alpha1.ConditionSlotPolicyPending)
	require.Equal(t, metav1.ConditionTrue, pending.Status)
	require.Equal(t, "PoolHasPods", pending.Reason)
	require.Contains(t, pending.Message, "pool has 1 pods")
	require.Len(t, eventsWith(e.drainEvents(), "SlotPolicyPending"), 1)
	e.pass()
	require.Empty(t, eventsWith(e.drainEvents(), "SlotPolicyPending"), "one event per spec")
	require.Equal(t, metav1.ConditionTrue, condition(e.pool(), v1alpha1.ConditionSlotPolicyPending).Status)

	// Scaled to 0: the pod goes, its record goes, and the policy lands.
	e.scaleTo(0)
	require.Eventually(t, func() bool {
		e.pass()
		return condition(e.pool(), v1alpha1.ConditionSlotPolicyPending).Status == metav1.ConditionFalse
	}, 10*time.Second, 20*time.Millisecond)
	require.Empty(t, e.podObjects())
	cfg, _, err = e.slots.Pool(e.ctx, e.id)
	require.NoError(t, err)
	require.Equal(t, [][]slots.TaskType{{slots.Plan, slots.PlanAndApply}, {slots.Plan}}, cfg.Policy.Slots)
	require.Equal(t, 7, cfg.MaxAttempts)
	require.Len(t, eventsWith(e.drainEvents(), "SlotPolicyApplied"), 1)

	// New pods run the new policy.
	e.scaleTo(1)
	e.pass()
	for name, p := range e.podObjects() {
		_, err := e.slots.RegisterPod(e.ctx, e.id, name, string(p.UID))
		require.NoError(t, err)
		r, ok := e.record(name)
		require.True(t, ok)
		require.Len(t, r.Slots, 2)
	}
}

// selfCordonRace is the store, with the pod's agent cordoning itself (it
// got SIGTERM) between the janitor's snapshot and its uncordon.
type selfCordonRace struct{ *slots.Store }

func (s selfCordonRace) Uncordon(ctx context.Context, id slots.PoolID, pod, uid string) error {
	if err := s.CordonSelf(ctx, id, pod, uid); err != nil {
		return err
	}
	return s.Store.Uncordon(ctx, id, pod, uid)
}

// An uncordon refused because the pod's own stopping agent cordoned it is
// an expected refusal (result "refused", not "error"), and the next pass
// replaces the pod instead of counting it.
func TestPassUncordonRefusedBySelfCordonIsARefusalAndThePodIsReplaced(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	var pod corev1.Pod
	for _, p := range e.podObjects() {
		pod = p
	}
	_, err := e.slots.RegisterPod(e.ctx, e.id, pod.Name, string(pod.UID))
	require.NoError(t, err)
	_, err = e.slots.Submit(e.ctx, e.id, slots.TaskSpec{ID: "work", Type: slots.Plan})
	require.NoError(t, err)
	e.scaleTo(0)
	e.pass()
	r, _ := e.record(pod.Name)
	require.Equal(t, slots.PodCordoned, r.State, "a busy surplus pod is cordoned")
	require.Equal(t, slots.CordonedByJanitor, r.CordonedBy)

	e.store = selfCordonRace{e.slots}
	e.startJanitor()
	e.scaleTo(1)
	e.pass()
	require.Equal(t, 1, actions(e.m, "uncordon", resultRefused))
	require.Zero(t, actions(e.m, "uncordon", resultError))
	require.Len(t, eventsWith(e.drainEvents(), "UncordonRefused"), 1)
	e.pass()
	require.Len(t, e.podObjects(), 2, "the pod its agent cordoned is replaced")
	r, _ = e.record(pod.Name)
	require.Equal(t, slots.PodCordoned, r.State)
	require.Equal(t, slots.CordonedByAgent, r.CordonedBy)
}

// After Redis lost its data, a terminating pod gets a record its agent
// registers into cordoned, with the work it still runs.
func TestPassTerminatingPodGetsAStoppingRecordAfterDataLoss(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	var pod corev1.Pod
	for _, p := range e.podObjects() {
		pod = p
	}
	e.run(pod)
	_, err := e.slots.RegisterPod(e.ctx, e.id, pod.Name, string(pod.UID))
	require.NoError(t, err)
	// The pod is being deleted (its grace period runs) when Redis loses
	// its data.
	cur, err := e.kube.CoreV1().Pods(pod.Namespace).Get(e.ctx, pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	now := metav1.Now()
	cur.DeletionTimestamp = &now
	require.NoError(t, e.kube.Tracker().Update(podsGVR, cur, cur.Namespace))
	e.loseData()
	e.pass()
	r, ok := e.record(pod.Name)
	require.True(t, ok, "the terminating pod has a record again")
	require.Equal(t, slots.PodExpected, r.State)
	require.Equal(t, slots.CordonedByAgent, r.CordonedBy)
	require.Equal(t, 1, actions(e.m, "expect-stopping", resultSuccess))

	st, err := e.slots.RegisterPod(e.ctx, e.id, pod.Name, string(pod.UID), 0)
	require.NoError(t, err, "its agent registers again with the phase it finishes")
	require.Equal(t, slots.PodCordoned, st)
	r, _ = e.record(pod.Name)
	require.True(t, r.Busy())
	e.pass()
	require.Zero(t, actions(e.m, "expect-stopping", resultError))
	require.Contains(t, e.podNames(), pod.Name, "the janitor leaves a terminating pod alone")
}

// A pod that started spec.recycle.afterTasks tasks is replaced idle-only:
// busy, it is cordoned (its work goes on) and a successor is created beside
// it; idle, it is drained and deleted. One Recycling event on the pod.
func TestPassRecyclesAPodAfterItsTasksIdleOnly(t *testing.T) {
	e := newPassEnv(t, testPool(1, func(ap *v1alpha1.AgentPool) {
		ap.Spec.Recycle = &v1alpha1.RecycleSpec{AfterTasks: i32(1)}
	}))
	e.pass()
	var pod corev1.Pod
	for _, p := range e.podObjects() {
		pod = p
	}
	_, err := e.slots.RegisterPod(e.ctx, e.id, pod.Name, string(pod.UID))
	require.NoError(t, err)
	_, err = e.slots.Submit(e.ctx, e.id, slots.TaskSpec{ID: "t1", Type: slots.Plan})
	require.NoError(t, err)
	e.pass()
	require.Empty(t, eventsWith(e.drainEvents(), "Recycling"), "assigned is not started: nothing recycled")
	require.Len(t, e.podObjects(), 1)
	msg, err := e.slots.Take(e.ctx, e.id, pod.Name, string(pod.UID), time.Second, nil)
	require.NoError(t, err)
	require.Equal(t, "t1", msg.Assignment.Task)

	e.pass()
	r, _ := e.record(pod.Name)
	require.Equal(t, slots.PodCordoned, r.State, "busy: cordoned, not drained")
	require.Equal(t, 1, r.TasksStarted)
	require.Len(t, e.podObjects(), 2, "a successor beside it")
	evs := e.drainEvents()
	require.Len(t, eventsWith(evs, "Recycling"), 1, "%v", evs)
	require.Contains(t, eventsWith(evs, "Recycling")[0], "started 1 tasks (spec.recycle.afterTasks 1)")
	e.pass()
	require.Contains(t, e.podNames(), pod.Name, "still busy")
	require.Empty(t, eventsWith(e.drainEvents(), "Recycling"), "one event per pod")

	_, err = e.slots.Complete(e.ctx, e.id, slots.Result{Task: "t1", Epoch: msg.Assignment.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	e.pass()
	require.NotContains(t, e.podNames(), pod.Name, "idle: drained and deleted")
	require.Len(t, e.podObjects(), 1)
	require.Equal(t, 1, actions(e.m, "drain", resultSuccess))
}

// A static agent's pod (a Deployment's, orphaned) registered in the pool
// before its AgentPool existed: its record is neither removed nor counted.
// The janitor labels the pod so its informer sees it, cordons it while its
// plan runs, and drains and deletes it once idle.
func TestPassTakesOverAStaticAgentsPod(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	own := e.podNames()
	require.Len(t, own, 1)

	dep, err := e.kube.CoreV1().Pods("team").Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agents-x1", Namespace: "team", Labels: map[string]string{"app": "agents"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "agent"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	e.run(*dep)
	uid := string(dep.UID)
	require.NoError(t, e.slots.ExpectPod(e.ctx, e.id, dep.Name, uid)) // as its self-registration did
	_, err = e.slots.RegisterPod(e.ctx, e.id, dep.Name, uid)
	require.NoError(t, err)
	_, err = e.slots.Submit(e.ctx, e.id, slots.TaskSpec{ID: "work", Type: slots.Plan})
	require.NoError(t, err)
	r, _ := e.record(dep.Name)
	require.True(t, r.Busy(), "the static agent runs the plan")

	sync := func() {
		t.Helper()
		_, err := e.c.sync(e.ctx, e.key)
		require.NoError(t, err)
	}
	sync()
	got, err := e.kube.CoreV1().Pods("team").Get(e.ctx, dep.Name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, e.id.Name, got.Labels[LabelPool], "the pod is labelled with its pool")
	require.Len(t, eventsWith(e.drainEvents(), "TakenOver"), 1)
	r, ok := e.record(dep.Name)
	require.True(t, ok, "its record is kept")
	require.Equal(t, slots.PodActive, r.State)

	e.pass() // the informer shows the labelled pod now
	r, _ = e.record(dep.Name)
	require.Equal(t, slots.PodCordoned, r.State, "busy: cordoned, not drained")
	require.Contains(t, e.podNames(), dep.Name)
	require.Equal(t, int32(1), e.pool().Status.Replicas, "the foreign pod does not count")

	// The plan finishes: the pod is idle, and goes.
	m, err := e.slots.Take(e.ctx, e.id, dep.Name, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	_, err = e.slots.Complete(e.ctx, e.id, slots.Result{Task: "work", Epoch: m.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	// (The pool was declared under a heartbeat timeout ago, and the foreign
	// pod has no generation: that holds removals until the timeout ends, as
	// after a data loss.)
	require.Eventually(t, func() bool {
		e.pass()
		return !slices.Contains(e.podNames(), dep.Name)
	}, 10*time.Second, 50*time.Millisecond, "idle: drained and deleted")
	st, ok := e.record(dep.Name)
	require.True(t, !ok || st.State == slots.PodDraining, "drained before its deletion")
	require.Equal(t, own, e.podNames(), "the pool's own pod stays")
}
