package janitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// agentPool is pool-a in namespace team with a one-container template.
func agentPool(muts ...func(*v1alpha1.AgentPool)) *v1alpha1.AgentPool {
	ap := &v1alpha1.AgentPool{
		ObjectMeta: metav1.ObjectMeta{Name: "pool-a", Namespace: "team", UID: types.UID("ap-uid")},
		Spec: v1alpha1.AgentPoolSpec{
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: AgentContainer, Image: "agent:1"}},
				},
			},
		},
	}
	for _, m := range muts {
		m(ap)
	}
	return ap
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func i32(v int32) *int32 { return &v }

func TestSettingsOfAppliesDefaults(t *testing.T) {
	s, err := settingsOf(agentPool())
	require.NoError(t, err)

	store := slots.DefaultPoolConfig()
	store.Managed = true
	require.Equal(t, settings{
		Store:                 store,
		Replicas:              0,
		IdleFor:               60 * time.Second,
		MaxDeletionsPerMinute: 60,
		PlanTimeout:           time.Hour,
		ApplyTimeout:          time.Hour,
		DeletionTimeout:       time.Hour, // the longer phase timeout
	}, s)
	require.True(t, s.Store.Managed)
	require.Equal(t, slots.DefaultPolicy(), s.Store.Policy)
	require.Len(t, s.Store.Policy.Slots, 3)
	require.Equal(t, time.Hour, s.longestPhase())
}

func TestSettingsOfTakesEveryField(t *testing.T) {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		sp := &ap.Spec
		sp.Replicas = i32(7)
		sp.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan_and_apply"}}, {Types: []v1alpha1.TaskType{"plan", "plan_and_apply"}}}
		sp.IdleFor = dur(5 * time.Minute)
		sp.MaxDeletionsPerMinute = i32(3)
		sp.ReservationTTL = dur(10 * time.Minute)
		sp.HeartbeatTimeout = dur(15 * time.Second)
		sp.PhaseTimeouts = v1alpha1.PhaseTimeouts{Plan: dur(20 * time.Minute), Apply: dur(2 * time.Hour)}
		sp.MaxAttempts = i32(5)
		sp.Queue = v1alpha1.QueueSpec{Limit: i32(50), MaxAge: dur(time.Hour)}
		sp.Deletion = v1alpha1.DeletionSpec{Timeout: dur(3 * time.Hour)}
		sp.Recycle = &v1alpha1.RecycleSpec{AfterTasks: i32(100), AfterAge: dur(24 * time.Hour)}
	})
	s, err := settingsOf(ap)
	require.NoError(t, err)

	store := slots.DefaultPoolConfig()
	store.Managed = true
	store.Policy = slots.SlotPolicy{Slots: [][]slots.TaskType{{slots.PlanAndApply}, {slots.Plan, slots.PlanAndApply}}}
	store.ReservationTTL = 10 * time.Minute
	store.HeartbeatTimeout = 15 * time.Second
	store.MaxAttempts = 5
	store.QueueLimit = 50
	store.MaxQueueAge = time.Hour
	require.Equal(t, settings{
		Store:                 store,
		Replicas:              7,
		IdleFor:               5 * time.Minute,
		MaxDeletionsPerMinute: 3,
		PlanTimeout:           20 * time.Minute,
		ApplyTimeout:          2 * time.Hour,
		DeletionTimeout:       3 * time.Hour,
		RecycleAfterTasks:     100,
		RecycleAfterAge:       24 * time.Hour,
	}, s)
	require.Equal(t, 2*time.Hour, s.longestPhase())
}

func TestSettingsOfDoesNotChangeThePool(t *testing.T) {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan"}}}
		ap.Spec.IdleFor = dur(time.Second)
	})
	before := ap.DeepCopy()
	_, err := settingsOf(ap)
	require.NoError(t, err)
	require.Equal(t, before, ap)
}

func TestSettingsOfErrorNamesTheInvalidField(t *testing.T) {
	for name, tc := range map[string]struct {
		mut   func(*v1alpha1.AgentPool)
		field string
	}{
		"negative replicas": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.Replicas = i32(-1) }, field: "spec.replicas",
		},
		"no containers": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.Containers = nil }, field: "spec.template.spec.containers",
		},
		"zero idleFor": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.IdleFor = dur(0) }, field: "spec.idleFor",
		},
		"negative idleFor": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.IdleFor = dur(-time.Second) }, field: "spec.idleFor",
		},
		"zero reservationTTL": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.ReservationTTL = dur(0) }, field: "spec.reservationTTL",
		},
		"zero heartbeatTimeout": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.HeartbeatTimeout = dur(0) }, field: "spec.heartbeatTimeout",
		},
		"zero plan timeout": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.PhaseTimeouts.Plan = dur(0) }, field: "spec.phaseTimeouts.plan",
		},
		"zero apply timeout": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.PhaseTimeouts.Apply = dur(0) }, field: "spec.phaseTimeouts.apply",
		},
		"zero queue maxAge": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.Queue.MaxAge = dur(0) }, field: "spec.queue.maxAge",
		},
		"zero maxDeletionsPerMinute": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.MaxDeletionsPerMinute = i32(0) }, field: "spec.maxDeletionsPerMinute",
		},
		"zero maxAttempts": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.MaxAttempts = i32(0) }, field: "spec.maxAttempts",
		},
		"zero queue limit": {
			mut: func(ap *v1alpha1.AgentPool) { ap.Spec.Queue.Limit = i32(0) }, field: "spec.queue.limit",
		},
		"zero recycle afterTasks": {
			mut:   func(ap *v1alpha1.AgentPool) { ap.Spec.Recycle = &v1alpha1.RecycleSpec{AfterTasks: i32(0)} },
			field: "spec.recycle.afterTasks",
		},
		"zero recycle afterAge": {
			mut:   func(ap *v1alpha1.AgentPool) { ap.Spec.Recycle = &v1alpha1.RecycleSpec{AfterAge: dur(0)} },
			field: "spec.recycle.afterAge",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := settingsOf(agentPool(tc.mut))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.field)
		})
	}
}

// Errors name the spec field, also for what the store itself validates.
func TestSettingsOfNamesSpecFieldForStoreValidationErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		mut   func(*v1alpha1.AgentPool)
		field string
	}{
		"a slot with no task type": {
			mut: func(ap *v1alpha1.AgentPool) {
				ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan"}}, {}}
			},
			field: "spec.slots",
		},
		"an unknown task type": {
			mut: func(ap *v1alpha1.AgentPool) {
				ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"destroy"}}}
			},
			field: "spec.slots",
		},
		"a heartbeat timeout below the store's 1ms": {
			mut:   func(ap *v1alpha1.AgentPool) { ap.Spec.HeartbeatTimeout = dur(time.Microsecond) },
			field: "spec.heartbeatTimeout",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := settingsOf(agentPool(tc.mut))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.field)
		})
	}
}

// A policy where no slot runs a plan could never run a task.
func TestSettingsOfRejectsSlotPolicyThatCannotRunPlan(t *testing.T) {
	_, err := settingsOf(agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan_and_apply"}}, {Types: []v1alpha1.TaskType{"plan_and_apply"}}}
	}))
	require.Error(t, err)
	require.ErrorContains(t, err, "spec.slots")
}

func TestSettingsOfReportsEveryInvalidField(t *testing.T) {
	_, err := settingsOf(agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Replicas = i32(-2)
		ap.Spec.IdleFor = dur(0)
		ap.Spec.MaxDeletionsPerMinute = i32(-1)
	}))
	require.Error(t, err)
	for _, field := range []string{"spec.replicas", "spec.idleFor", "spec.maxDeletionsPerMinute"} {
		require.ErrorContains(t, err, field)
	}
}
