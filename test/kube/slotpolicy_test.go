package kube

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// A spec.slots change made while the pool has pods waits for it to have
// none (SlotPolicyPending in the status, on the real API server with the
// CRD's schema), the rest of the edit applies at once, and the new slots
// land when the pool is scaled to 0. Before the fix the whole declaration
// was refused and never retried: maxAttempts stayed, and the slots never
// changed while that janitor ran.
func TestSlotPolicyChangeWaitsForZeroPods(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1)
	c.startJanitor()
	c.waitActive("ns", "p", 1)
	id := slots.PoolID{Namespace: "ns", Name: "p"}

	c.updatePool("ns", "p", func(ap *v1alpha1.AgentPool) {
		ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan", "plan_and_apply"}}, {Types: []v1alpha1.TaskType{"plan"}}}
		attempts := int32(7)
		ap.Spec.MaxAttempts = &attempts
	})
	require.Eventually(t, func() bool {
		return cond(c.getPool("ns", "p"), v1alpha1.ConditionSlotPolicyPending) == metav1.ConditionTrue
	}, 30*time.Second, 20*time.Millisecond)
	cfg, _, err := c.store.Pool(c.ctx, id)
	require.NoError(t, err)
	require.Equal(t, 7, cfg.MaxAttempts, "the rest of the edit applies at once")
	require.Len(t, cfg.Policy.Slots, 3, "the old slots stay while the pool has pods")
	require.Len(t, c.events("ns", "SlotPolicyPending"), 1)

	c.scaleTo("ns", "p", 0)
	require.Eventually(t, func() bool {
		return cond(c.getPool("ns", "p"), v1alpha1.ConditionSlotPolicyPending) == metav1.ConditionFalse
	}, 60*time.Second, 20*time.Millisecond, "the new slots never landed")
	cfg, _, err = c.store.Pool(c.ctx, id)
	require.NoError(t, err)
	require.Equal(t, [][]slots.TaskType{{slots.Plan, slots.PlanAndApply}, {slots.Plan}}, cfg.Policy.Slots)

	c.scaleTo("ns", "p", 1)
	pods := c.waitActive("ns", "p", 1)
	require.Len(t, pods[0].Slots, 2, "new pods get the new slots")
	c.audit.check(t)
}
