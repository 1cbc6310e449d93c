package janitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

const privilegedRule = `spec.template.spec.containers[0]: privileged: container "agent" must not set securityContext.privileged=true (restricted)`

func privileged(on bool) func(*v1alpha1.AgentPool) {
	return func(ap *v1alpha1.AgentPool) {
		c := &ap.Spec.Template.Spec.Containers[0]
		c.SecurityContext = nil
		if on {
			c.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		}
	}
}

// A pool whose template the policy refuses gets no pod, a status and an
// event naming the field and the rule; fixed, it gets its pods.
func TestPassCreatesNoPodFromARefusedTemplate(t *testing.T) {
	e := newPassEnv(t, testPool(2, privileged(true)))
	e.pass()
	e.pass()
	require.Empty(t, e.podNames())
	allowed := condition(e.pool(), v1alpha1.ConditionTemplateAllowed)
	require.NotNil(t, allowed)
	require.Equal(t, metav1.ConditionFalse, allowed.Status)
	require.Equal(t, "PolicyViolation", allowed.Reason)
	require.Contains(t, allowed.Message, privilegedRule)
	degraded := condition(e.pool(), v1alpha1.ConditionDegraded)
	require.Equal(t, metav1.ConditionTrue, degraded.Status)
	require.Equal(t, "PolicyViolation", degraded.Reason)
	evs := eventsWith(e.drainEvents(), "PolicyViolation")
	require.Len(t, evs, 1, "one event per template, not per pass")
	require.Contains(t, evs[0], "Warning PolicyViolation no pod is created: "+privilegedRule)

	e.updatePool(privileged(false))
	e.pass()
	require.Len(t, e.podNames(), 2)
	allowed = condition(e.pool(), v1alpha1.ConditionTemplateAllowed)
	require.Equal(t, metav1.ConditionTrue, allowed.Status)
	require.Equal(t, "AsExpected", condition(e.pool(), v1alpha1.ConditionDegraded).Reason)
	require.Len(t, eventsWith(e.drainEvents(), "TemplateAllowed"), 1)

	// The pods carry the policy's defaults for what the template left unset.
	for _, p := range e.podObjects() {
		require.Equal(t, ptr.To(false), p.Spec.AutomountServiceAccountToken)
		require.Equal(t, ptr.To(true), p.Spec.SecurityContext.RunAsNonRoot)
		require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, p.Spec.SecurityContext.SeccompProfile.Type)
		require.Equal(t, ptr.To(false), p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation)
		require.Equal(t, []corev1.Capability{"ALL"}, p.Spec.Containers[0].SecurityContext.Capabilities.Drop)
	}
}

// A template changed into one the policy refuses leaves the pods of the
// old one alone (no successor could be created for them), while idle
// surplus still goes as always.
func TestPassKeepsThePodsOfARefusedTemplate(t *testing.T) {
	e := newPassEnv(t, testPool(2))
	e.pass()
	before := e.podNames()
	require.Len(t, before, 2)
	for _, p := range e.podObjects() {
		e.run(p)
		_, err := e.slots.RegisterPod(e.ctx, e.id, p.Name, string(p.UID))
		require.NoError(t, err)
	}

	e.updatePool(privileged(true))
	e.pass()
	e.pass()
	require.Equal(t, before, e.podNames(), "idle pods of the old template are not replaced by nothing")
	for _, name := range before {
		r, ok := e.record(name)
		require.True(t, ok)
		require.Equal(t, slots.PodActive, r.State, "not drained")
	}

	e.scaleTo(1)
	e.pass()
	require.Eventually(t, func() bool { e.pass(); return len(e.podNames()) == 1 }, 10*time.Second, 20*time.Millisecond,
		"idle surplus is removed as before")
	require.Subset(t, before, e.podNames(), "and nothing new is created")
}
