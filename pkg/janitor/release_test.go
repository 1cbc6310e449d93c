package janitor

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DrainIdle removes only idle, uncontrolled pods the store knows: a busy one
// is cordoned and left, one with a controller or without a record is never
// touched.
func TestDrainIdleRemovesOnlyIdleUncontrolledPods(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, _, _ := newTestStore(t, ctx)
	id := slots.PoolID{Namespace: "team", Name: "pool"}
	// Managed first: the janitor left a drained record and a never-registered
	// one whose pods are gone.
	managed := slots.DefaultPoolConfig()
	managed.Managed = true
	_, err := st.DeclarePool(ctx, id, managed)
	require.NoError(t, err)
	require.NoError(t, st.ExpectPod(ctx, id, "ghost", "ghost-uid"))
	require.NoError(t, st.ExpectPod(ctx, id, "drained", "drained-uid"))
	_, err = st.DrainReplicated(ctx, id, "drained", "drained-uid", time.Second)
	require.NoError(t, err)
	_, err = st.DeclarePool(ctx, id, slots.DefaultPoolConfig()) // static again, as after a rollback
	require.NoError(t, err)

	yes := true
	mk := func(name string, controlled bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team", UID: types.UID(name + "-uid"),
			Labels: map[string]string{LabelPool: "pool"}}}
		if controlled {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "agents", UID: "rs", Controller: &yes}}
		}
		return p
	}
	kube := kubefake.NewSimpleClientset(mk("busy", false), mk("idle", false), mk("deployment", true), mk("unknown", false))
	for _, name := range []string{"busy", "idle", "deployment"} {
		_, err := st.RegisterPod(ctx, id, name, name+"-uid")
		require.NoError(t, err)
		if name == "busy" {
			_, err = st.Submit(ctx, id, slots.TaskSpec{ID: "work", Type: slots.Plan})
			require.NoError(t, err)
		}
	}

	res, err := DrainIdle(ctx, kube, st, id, DrainIdleOptions{Selector: LabelPool + "=pool", ReplicaWait: time.Second})
	require.NoError(t, err)
	require.Equal(t, []string{"idle"}, res.Removed)
	require.Equal(t, []string{"busy"}, res.Busy)
	require.ElementsMatch(t, []string{"deployment", "unknown"}, res.Skipped)
	require.ElementsMatch(t, []string{"ghost", "drained"}, res.Forgotten, "records of gone pods are removed")
	require.Equal(t, 1, res.Left())

	_, err = kube.CoreV1().Pods("team").Get(ctx, "idle", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the idle pod is deleted")
	for _, name := range []string{"busy", "deployment", "unknown"} {
		_, err = kube.CoreV1().Pods("team").Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err, "pod %s stays", name)
	}
	snap, err := st.Snapshot(ctx, id)
	require.NoError(t, err)
	states := map[string]slots.PodState{}
	for _, r := range snap.Pods {
		states[r.Name] = r.State
	}
	require.Equal(t, map[string]slots.PodState{"busy": slots.PodCordoned, "deployment": slots.PodActive}, states,
		"the idle pod's record is removed, the busy one cordoned, the Deployment's untouched")

	_, err = DrainIdle(ctx, kube, st, id, DrainIdleOptions{})
	require.Error(t, err, "a selector is required")
}
