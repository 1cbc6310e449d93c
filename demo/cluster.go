package main

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	dynfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
)

// fakeAPI is the in-memory Kubernetes API: client-go's fake clientsets
// (typed for pods and events, dynamic for AgentPools) with reactors that add
// what the janitor relies on from a real API server and the plain object
// tracker lacks:
//
//   - create sets uid, creationTimestamp, resourceVersion and generation
//     (and a name from generateName);
//   - update refuses a stale resourceVersion (409 Conflict), and keeps the
//     status subresource apart: an update leaves status alone, an
//     UpdateStatus changes only status (so the HPA's spec.replicas and the
//     janitor's status never overwrite each other);
//   - patch bumps resourceVersion;
//   - delete honours preconditions (uid, resourceVersion), and deletes a
//     pod gracefully: it gets a deletionTimestamp, and goes only when the
//     kubelet confirms with grace 0 (or at once when it has ended).
//
// Watches are the fake tracker's own: every change reaches the informers.
type fakeAPI struct {
	Kube *kubefake.Clientset
	Dyn  *dynfake.FakeDynamicClient
	rv   atomic.Int64
}

var (
	podsGVR = corev1.SchemeGroupVersion.WithResource("pods")
	// statusSubresource lists the resources whose status is a subresource.
	statusSubresource = map[string]bool{"pods": true, v1alpha1.Resource: true}
)

func newFakeAPI() *fakeAPI {
	a := &fakeAPI{
		Kube: kubefake.NewSimpleClientset(),
		Dyn: dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
			map[schema.GroupVersionResource]string{v1alpha1.GroupVersionResource: v1alpha1.Kind + "List"}),
	}
	a.Kube.PrependReactor("*", "*", a.reactor(a.Kube.Tracker()))
	a.Dyn.PrependReactor("*", "*", a.reactor(a.Dyn.Tracker()))
	return a
}

func (a *fakeAPI) nextRV() string { return strconv.FormatInt(a.rv.Add(1), 10) }

// stampTracker bumps resourceVersion on patches (the default reaction
// computes the patched object and hands it to Patch).
type stampTracker struct {
	k8stesting.ObjectTracker
	a *fakeAPI
}

func (t stampTracker) Patch(gvr schema.GroupVersionResource, obj runtime.Object, ns string, opts ...metav1.PatchOptions) error {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetResourceVersion(t.a.nextRV())
	}
	return t.ObjectTracker.Patch(gvr, obj, ns, opts...)
}

func (a *fakeAPI) reactor(t k8stesting.ObjectTracker) k8stesting.ReactionFunc {
	inner := k8stesting.ObjectReaction(stampTracker{t, a})
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		switch act := action.(type) {
		case k8stesting.CreateActionImpl:
			if act.GetSubresource() == "" {
				return a.create(t, act)
			}
		case k8stesting.UpdateActionImpl:
			if s := act.GetSubresource(); s == "" || s == "status" {
				return a.update(t, act)
			}
		case k8stesting.DeleteActionImpl:
			return a.delete(t, act)
		}
		return inner(action)
	}
}

func (a *fakeAPI) create(t k8stesting.ObjectTracker, act k8stesting.CreateActionImpl) (bool, runtime.Object, error) {
	obj := act.GetObject().DeepCopyObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return true, nil, err
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + utilrand.String(5))
	}
	if m.GetNamespace() == "" {
		m.SetNamespace(act.GetNamespace())
	}
	m.SetUID(uuid.NewUUID())
	m.SetCreationTimestamp(metav1.Now())
	m.SetResourceVersion(a.nextRV())
	m.SetGeneration(1)
	if err := t.Create(act.GetResource(), obj, act.GetNamespace()); err != nil {
		return true, nil, err
	}
	return true, obj.DeepCopyObject(), nil
}

func (a *fakeAPI) update(t k8stesting.ObjectTracker, act k8stesting.UpdateActionImpl) (bool, runtime.Object, error) {
	gvr, ns, sub := act.GetResource(), act.GetNamespace(), act.GetSubresource()
	obj := act.GetObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return true, nil, err
	}
	cur, err := t.Get(gvr, ns, m.GetName())
	if err != nil {
		return true, nil, err
	}
	cm, err := meta.Accessor(cur)
	if err != nil {
		return true, nil, err
	}
	if rv := m.GetResourceVersion(); rv != "" && rv != cm.GetResourceVersion() {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(),
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	if uid := m.GetUID(); uid != "" && uid != cm.GetUID() {
		return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(),
			fmt.Errorf("precondition failed: uid %s, object has %s", uid, cm.GetUID()))
	}
	curMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err != nil {
		return true, nil, err
	}
	newMap, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return true, nil, err
	}
	out := newMap
	switch {
	case sub == "status":
		out = curMap
		setOrDelete(out, "status", newMap["status"])
	case statusSubresource[gvr.Resource]:
		setOrDelete(out, "status", curMap["status"])
	}
	u := &unstructured.Unstructured{Object: out}
	// System fields are the server's.
	u.SetUID(cm.GetUID())
	u.SetCreationTimestamp(cm.GetCreationTimestamp())
	u.SetDeletionTimestamp(cm.GetDeletionTimestamp())
	u.SetDeletionGracePeriodSeconds(cm.GetDeletionGracePeriodSeconds())
	u.SetGeneration(cm.GetGeneration())
	if sub == "" && !equality.Semantic.DeepEqual(curMap["spec"], out["spec"]) {
		u.SetGeneration(cm.GetGeneration() + 1)
	}
	u.SetResourceVersion(a.nextRV())

	var res runtime.Object = u
	if _, ok := cur.(*unstructured.Unstructured); !ok {
		typed, ok := reflect.New(reflect.TypeOf(cur).Elem()).Interface().(runtime.Object)
		if !ok {
			return true, nil, fmt.Errorf("updating %s: cannot make a %T", gvr.Resource, cur)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(out, typed); err != nil {
			return true, nil, err
		}
		res = typed
	}
	if err := t.Update(gvr, res, ns); err != nil {
		return true, nil, err
	}
	return true, res.DeepCopyObject(), nil
}

func setOrDelete(m map[string]any, key string, v any) {
	if v == nil {
		delete(m, key)
		return
	}
	m[key] = v
}

func (a *fakeAPI) delete(t k8stesting.ObjectTracker, act k8stesting.DeleteActionImpl) (bool, runtime.Object, error) {
	gvr, ns, name := act.GetResource(), act.GetNamespace(), act.GetName()
	cur, err := t.Get(gvr, ns, name)
	if err != nil {
		return true, nil, err
	}
	cm, err := meta.Accessor(cur)
	if err != nil {
		return true, nil, err
	}
	if p := act.DeleteOptions.Preconditions; p != nil {
		if p.UID != nil && *p.UID != cm.GetUID() {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), name,
				fmt.Errorf("precondition failed: UID in precondition: %s, UID in object meta: %s", *p.UID, cm.GetUID()))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != cm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), name,
				fmt.Errorf("precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", *p.ResourceVersion, cm.GetResourceVersion()))
		}
	}
	if pod, ok := cur.(*corev1.Pod); ok && gvr == podsGVR {
		if grace := podGrace(pod, act.DeleteOptions); grace > 0 {
			if pod.DeletionTimestamp != nil {
				return true, pod, nil // already terminating
			}
			p := pod.DeepCopy()
			now := metav1.NewTime(time.Now())
			p.DeletionTimestamp = &now
			p.DeletionGracePeriodSeconds = &grace
			p.ResourceVersion = a.nextRV()
			if err := t.Update(gvr, p, ns); err != nil {
				return true, nil, err
			}
			return true, p.DeepCopy(), nil
		}
	}
	if err := t.Delete(gvr, ns, name); err != nil {
		return true, nil, err
	}
	return true, nil, nil
}

// podGrace is the grace period a pod deletion gets, as the API server's pod
// strategy decides it: the request's, else the pod's; 0 for a pod that has
// ended.
func podGrace(pod *corev1.Pod, opts metav1.DeleteOptions) int64 {
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return 0
	}
	if opts.GracePeriodSeconds != nil {
		return max(0, *opts.GracePeriodSeconds)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return max(0, *g)
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}
