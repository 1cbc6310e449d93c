package janitor

// controller_test.go: one sync of one pool, in the style of
// sample-controller's fixture tests. The informers' indexers are filled
// directly (no factory runs, no API server), the API is client-go's fake
// clientsets, the slot store is the real one on redis-server; each test
// compares the API calls the sync made with the calls it expects, in order.
// pass_test.go runs whole sequences of passes; these pin what a single
// decision does to the API.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// fixture is one pool, the objects the informers and the API hold, and the
// slot store.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	ap    *v1alpha1.AgentPool
	store *slots.Store
	rdb   *redis.Client
	// prefix is the store's key prefix.
	prefix string
	id     slots.PoolID
	gen    string // the pool's slot-store generation ("" until declared)
	hash   string // the pool's current template hash
	pods   []*corev1.Pod
	// wrap, when set, stands between the controller and the store.
	wrap func(Store) Store

	kube *kubefake.Clientset
	dyn  *dynfake.FakeDynamicClient
	m    *Metrics
}

// newFixture is the AgentPool ap (namespace "team") and an empty store.
func newFixture(t testing.TB, ap *v1alpha1.AgentPool) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, rdb, prefix := newTestStore(t, ctx)
	return newFixtureWith(t, ctx, ap, store, rdb, prefix)
}

// newFixtureWith is newFixture on a given store (rdb and prefix its
// client and key prefix).
func newFixtureWith(t testing.TB, ctx context.Context, ap *v1alpha1.AgentPool, store *slots.Store, rdb *redis.Client, prefix string) *fixture {
	t.Helper()
	ap.UID = "ap-uid"
	// A pool the janitor has seen carries its finalizer
	// (TestSyncAddsTheFinalizer covers the first pass).
	ap.Finalizers = append(ap.Finalizers, v1alpha1.Finalizer)
	ap.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind}
	s, err := settingsOf(ap)
	require.NoError(t, err)
	return &fixture{t: t, ctx: ctx, ap: ap, store: store, rdb: rdb, prefix: prefix, id: slots.PoolID{Namespace: ap.Namespace, Name: ap.Name},
		hash: templateHash(ap, s, Injection{})}
}

// declare declares the pool in the store as the janitor would.
func (f *fixture) declare() {
	f.t.Helper()
	s, err := settingsOf(f.ap)
	require.NoError(f.t, err)
	d, err := f.store.DeclarePool(f.ctx, f.id, s.Store)
	require.NoError(f.t, err)
	f.gen = d.Generation
}

// pod adds a Running, Ready pod of the pool's current template and
// generation, controlled by the pool, to the cache and the API.
func (f *fixture) pod(name string, opts ...podOpt) *corev1.Pod {
	p := pod(name, append([]podOpt{func(p *corev1.Pod) {
		p.Labels = map[string]string{LabelPool: f.ap.Name, LabelTemplateHash: f.hash}
		p.Annotations = map[string]string{AnnotationGeneration: f.gen}
		p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(f.ap, v1alpha1.GroupVersionKind)}
	}}, opts...)...)
	f.pods = append(f.pods, p)
	return p
}

// register writes the pod's record and registers its agent: an idle pod.
func (f *fixture) register(p *corev1.Pod) {
	f.t.Helper()
	require.NoError(f.t, f.store.ExpectPod(f.ctx, f.id, p.Name, string(p.UID)))
	_, err := f.store.RegisterPod(f.ctx, f.id, p.Name, string(p.UID))
	require.NoError(f.t, err)
}

func (f *fixture) record(name string) (slots.PodSnapshot, bool) {
	f.t.Helper()
	snap, err := f.store.Snapshot(f.ctx, f.id)
	require.NoError(f.t, err)
	for _, r := range snap.Pods {
		if r.Name == name {
			return r, true
		}
	}
	return slots.PodSnapshot{}, false
}

// apiCalls are the API actions of one sync, described by describeAction.
type apiCalls struct {
	Kube []string // pods
	Dyn  []string // AgentPools
}

// sync builds a controller over the fixture's objects and runs one sync of
// key, returning the API calls it made.
func (f *fixture) sync(key string, opts Options) apiCalls {
	f.t.Helper()
	c := f.controller(opts)
	_, err := c.sync(f.ctx, key)
	require.NoError(f.t, err)
	return apiCalls{Kube: describeActions(f.t, f.kube.Actions()), Dyn: describeActions(f.t, f.dyn.Actions())}
}

// controller builds a controller over the fixture's objects, its
// informers' indexers filled, none of them running.
func (f *fixture) controller(opts Options) *Controller {
	f.t.Helper()
	var kubeObjs []runtime.Object
	for _, p := range f.pods {
		kubeObjs = append(kubeObjs, p)
	}
	f.kube = kubefake.NewSimpleClientset(kubeObjs...)
	// What the API server sets and the fake tracker does not.
	f.kube.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.UID = uuid.NewUUID()
		return false, nil, nil
	})
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(f.ap)
	require.NoError(f.t, err)
	pool := &unstructured.Unstructured{Object: u}
	f.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.GroupVersionResource: v1alpha1.Kind + "List"}, pool)

	podInformers := informers.NewSharedInformerFactory(f.kube, 0).Core().V1().Pods()
	poolInformers := dynamicinformer.NewDynamicSharedInformerFactory(f.dyn, 0).ForResource(v1alpha1.GroupVersionResource)
	var store Store = f.store
	if f.wrap != nil {
		store = f.wrap(f.store)
	}
	f.m = NewMetrics(nil)
	opts.SyncInterval, opts.Logger, opts.Metrics = time.Hour, quietLog(), f.m
	// One call at a time: the order of the calls is part of what is checked.
	opts.Parallelism = 1
	c, err := NewController(f.kube, f.dyn, podInformers, poolInformers, store, opts)
	require.NoError(f.t, err)
	c.recorder = record.NewFakeRecorder(100)
	for _, p := range f.pods {
		require.NoError(f.t, podInformers.Informer().GetIndexer().Add(p))
	}
	require.NoError(f.t, poolInformers.Informer().GetIndexer().Add(pool))
	return c
}

// describeActions describes the actions that are not list or watch (an
// informer's, none of which runs here) one per line: verb, resource,
// namespace/name and what the janitor must get right. A pod the janitor
// named is "<pool>-?????": the suffix is random.
func describeActions(t testing.TB, actions []k8stesting.Action) []string {
	t.Helper()
	var out []string
	for _, a := range actions {
		if a.GetVerb() == "list" || a.GetVerb() == "watch" {
			continue
		}
		res := a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			res += "/" + sub
		}
		d := a.GetVerb() + " " + res + " " + a.GetNamespace() + "/"
		switch a := a.(type) {
		case k8stesting.CreateAction:
			obj, err := meta.Accessor(a.GetObject())
			require.NoError(t, err)
			name := obj.GetName()
			if pool := obj.GetLabels()[LabelPool]; strings.HasPrefix(name, pool+"-") && len(name) == len(pool)+6 {
				name = pool + "-?????"
			}
			d += name
		case k8stesting.UpdateAction:
			obj, err := meta.Accessor(a.GetObject())
			require.NoError(t, err)
			d += obj.GetName()
		case k8stesting.DeleteAction:
			d += a.GetName()
			if pre := a.GetDeleteOptions().Preconditions; pre != nil && pre.UID != nil {
				d += " uid=" + string(*pre.UID)
			}
		case k8stesting.PatchAction:
			d += a.GetName() + " " + string(a.GetPatch())
		case k8stesting.GetAction:
			d += a.GetName()
		default:
			t.Fatalf("unexpected action %#v", a)
		}
		out = append(out, d)
	}
	return out
}

// poolStatus is the pool the sync wrote back, or nil when it wrote none.
func (f *fixture) poolStatus() *v1alpha1.AgentPool {
	f.t.Helper()
	for _, a := range f.dyn.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetSubresource() == "status" {
			ap := &v1alpha1.AgentPool{}
			require.NoError(f.t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.GetObject().(*unstructured.Unstructured).Object, ap))
			return ap
		}
	}
	return nil
}

// controllerPool is pool-a with a heartbeat timeout that no test outlives
// and an idleFor any registered pod has been idle for.
func controllerPool(replicas int32) *v1alpha1.AgentPool {
	return agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Replicas = &replicas
		ap.Spec.HeartbeatTimeout = dur(time.Minute)
		ap.Spec.IdleFor = dur(time.Millisecond)
	})
}

const statusUpdate = "update agentpools/status team/pool-a"

// A pool short of pods gets them, in slow-start batches (1, then 2), each
// with its expected record, and a status.
func TestSyncCreatesMissingPods(t *testing.T) {
	f := newFixture(t, controllerPool(3))
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{
		Kube: []string{"create pods team/pool-a-?????", "create pods team/pool-a-?????", "create pods team/pool-a-?????"},
		Dyn:  []string{statusUpdate},
	}, got)
	snap, err := f.store.Snapshot(f.ctx, f.id)
	require.NoError(t, err)
	require.Len(t, snap.Pods, 3)
	for _, r := range snap.Pods {
		require.Equal(t, slots.PodExpected, r.State)
	}
	require.Equal(t, 3, actions(f.m, "create", resultSuccess))
	require.Equal(t, 3, actions(f.m, "expect", resultSuccess))
}

// A surplus pod idle for idleFor is drained in the store and deleted with
// its UID as precondition: a pod of the same name created since is not
// touched.
func TestSyncDeletesAnIdleSurplusPodWithAUIDPrecondition(t *testing.T) {
	f := newFixture(t, controllerPool(0))
	f.declare()
	a := f.pod("a")
	f.register(a)
	time.Sleep(10 * time.Millisecond) // idle for longer than idleFor
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{Kube: []string{"delete pods team/a uid=a-uid"}, Dyn: []string{statusUpdate}}, got)
	r, ok := f.record("a")
	require.True(t, ok, "the record goes once the pod object is gone, not before")
	require.Equal(t, slots.PodDraining, r.State)
}

// A busy surplus pod is cordoned in the store and protected from eviction;
// it is never deleted.
func TestSyncNeverDeletesABusyPod(t *testing.T) {
	f := newFixture(t, controllerPool(0))
	f.declare()
	a := f.pod("a")
	f.register(a)
	_, err := f.store.Submit(f.ctx, f.id, slots.TaskSpec{ID: "work", Type: slots.Plan})
	require.NoError(t, err)
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{
		Kube: []string{`patch pods team/a {"metadata":{"annotations":{"` + AnnotationSafeToEvict + `":"false","` + AnnotationDoNotDisrupt + `":"true"},"labels":{"` + LabelBusy + `":"true"}}}`},
		Dyn:  []string{statusUpdate},
	}, got)
	r, _ := f.record("a")
	require.Equal(t, slots.PodCordoned, r.State)
	require.Zero(t, actions(f.m, "drain", resultSuccess)+actions(f.m, "delete", resultSuccess))
}

// busyBeforeDrain is the store with work arriving on the pod between the
// janitor's snapshot and its drain.
type busyBeforeDrain struct {
	*slots.Store
}

func (s busyBeforeDrain) DrainReplicated(ctx context.Context, id slots.PoolID, pod, uid string, wait time.Duration) (int, error) {
	if _, err := s.Submit(ctx, id, slots.TaskSpec{ID: "late", Type: slots.Plan}); err != nil {
		return 0, fmt.Errorf("submitting: %w", err)
	}
	return s.Store.DrainReplicated(ctx, id, pod, uid, wait)
}

// A pod the pass saw idle but that got work before its drain is refused by
// the store, and then nothing deletes it.
func TestSyncDoesNotDeleteAPodWhoseDrainWasRefused(t *testing.T) {
	f := newFixture(t, controllerPool(0))
	f.declare()
	f.register(f.pod("a"))
	time.Sleep(10 * time.Millisecond)
	f.wrap = func(s Store) Store { return busyBeforeDrain{s.(*slots.Store)} }
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{Dyn: []string{statusUpdate}}, got)
	require.Equal(t, 1, actions(f.m, "drain", resultRefused))
	r, _ := f.record("a")
	require.Equal(t, slots.PodActive, r.State)
	require.True(t, r.Busy())
}

// A pod that ended before its agent registered is deleted (no drain:
// nothing runs there), its replacement waits for the start backoff, and the
// pool says why.
func TestSyncDeletesAPodThatCouldNotStartAndBacksOff(t *testing.T) {
	f := newFixture(t, controllerPool(1))
	f.declare()
	a := f.pod("a", phase(corev1.PodFailed), exited(AgentContainer, "Error", 1))
	require.NoError(t, f.store.ExpectPod(f.ctx, f.id, a.Name, string(a.UID)))
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{Kube: []string{"delete pods team/a uid=a-uid"}, Dyn: []string{statusUpdate}}, got)
	degraded := meta.FindStatusCondition(f.poolStatus().Status.Conditions, v1alpha1.ConditionDegraded)
	require.NotNil(t, degraded)
	require.Equal(t, metav1.ConditionTrue, degraded.Status)
	require.Equal(t, "PodsCannotStart", degraded.Reason)
	require.Equal(t, "1 pods cannot start; a: agent exited Error (1)", degraded.Message)
}

// A record whose pod is missing from the cache is removed only once an
// uncached read says the pod is gone.
func TestSyncRemovesARecordAfterReadingThatItsPodIsGone(t *testing.T) {
	f := newFixture(t, controllerPool(0))
	f.declare()
	require.NoError(t, f.store.ExpectPod(f.ctx, f.id, "gone", "gone-uid"))
	got := f.sync("team/pool-a", Options{})
	require.Equal(t, apiCalls{Kube: []string{"get pods team/gone"}, Dyn: []string{statusUpdate}}, got)
	_, ok := f.record("gone")
	require.False(t, ok)
	require.Equal(t, 1, actions(f.m, "remove", resultSuccess))
}

// Dry-run decides but writes nothing: no pod, no status, no store write.
func TestSyncDryRunWritesNothing(t *testing.T) {
	t.Run("deficit", func(t *testing.T) {
		f := newFixture(t, controllerPool(2))
		got := f.sync("team/pool-a", Options{DryRun: true})
		require.Equal(t, apiCalls{}, got)
		_, err := f.store.Snapshot(f.ctx, f.id)
		require.ErrorIs(t, err, slots.ErrPoolNotFound, "not even declared")
		require.Equal(t, 2, actions(f.m, "create", resultDryRun))
	})
	t.Run("idle surplus", func(t *testing.T) {
		f := newFixture(t, controllerPool(0))
		f.declare()
		f.register(f.pod("a"))
		time.Sleep(10 * time.Millisecond)
		got := f.sync("team/pool-a", Options{DryRun: true})
		require.Equal(t, apiCalls{}, got)
		r, _ := f.record("a")
		require.Equal(t, slots.PodActive, r.State, "not drained")
		require.Equal(t, 1, actions(f.m, "drain", resultDryRun))
	})
}

// A pool the cache no longer holds was deleted: its pods go with it (owner
// references), so nothing is called, and it is no error.
func TestSyncOfADeletedPoolDoesNothing(t *testing.T) {
	f := newFixture(t, controllerPool(1))
	f.declare()
	f.pod("a")
	got := f.sync("team/other", Options{})
	require.Equal(t, apiCalls{}, got)
	_, err := f.store.Snapshot(f.ctx, slots.PoolID{Namespace: "team", Name: "other"})
	require.ErrorIs(t, err, slots.ErrPoolNotFound)
}
