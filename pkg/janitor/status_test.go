package janitor

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestQueueOfCountsQueuedByTypeAndReservedSlots(t *testing.T) {
	slot := func(st slots.SlotState) slots.SlotSnapshot { return slots.SlotSnapshot{State: st} }
	snap := slots.Snapshot{
		// Counted whole, not from the (bounded) list.
		Queue:  []slots.QueuedTask{{ID: "a", Type: slots.Plan}},
		Queued: map[slots.TaskType]int{slots.Plan: 2, slots.PlanAndApply: 1},
		Pods: []slots.PodSnapshot{
			{Name: "p1", Slots: []slots.SlotSnapshot{slot(slots.SlotReserved), slot(slots.SlotRunning), slot(slots.SlotIdle)}},
			{Name: "p2", Slots: []slots.SlotSnapshot{slot(slots.SlotReserved), slot(slots.SlotAssigned), slot(slots.SlotOrphan)}},
			{Name: "p3", State: slots.PodCordoned, Slots: []slots.SlotSnapshot{slot(slots.SlotReserved)}},
		},
	}
	require.Equal(t, queueCounts{Queued: 3, ByType: map[v1alpha1.TaskType]int32{"plan": 2, "plan_and_apply": 1}, Awaiting: 3},
		queueOf(snap), "a cordoned pod's reservation still awaits approval")
	require.Equal(t, queueCounts{}, queueOf(slots.Snapshot{}), "nothing queued: no map")
}

func TestPolicySummary(t *testing.T) {
	p, pa := slots.Plan, slots.PlanAndApply
	for _, tc := range []struct {
		slots [][]slots.TaskType
		want  string
	}{
		{slots.DefaultPolicy().Slots, "3 slots: 0=plan,plan_and_apply 1-2=plan"},
		{[][]slots.TaskType{{p}}, "1 slot: 0=plan"},
		{[][]slots.TaskType{{pa, p}, {p, pa}}, "2 slots: 0-1=plan,plan_and_apply"},
		{[][]slots.TaskType{{p}, {pa, p}, {p}, {p}}, "4 slots: 0=plan 1=plan,plan_and_apply 2-3=plan"},
		{[][]slots.TaskType{{p, p}, {p}}, "2 slots: 0-1=plan"},
	} {
		require.Equal(t, tc.want, policySummary(slots.SlotPolicy{Slots: tc.slots}))
	}
}

func TestObserveQueueWritesCountsOnlyChangesOncePerInterval(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { m := metav1.NewTime(t0.Add(d)); return &m }
	q3 := queueCounts{Queued: 3, ByType: map[v1alpha1.TaskType]int32{"plan": 3}, Awaiting: 1}
	shown := v1alpha1.AgentPoolStatus{Replicas: 2, QueuedTasks: 3, QueuedByType: map[v1alpha1.TaskType]int32{"plan": 3},
		AwaitingApproval: 1, QueueObservedTime: at(0)}
	for name, tc := range map[string]struct {
		old     v1alpha1.AgentPoolStatus
		replica int32 // st.Replicas, as the pass computed it
		q       queueCounts
		now     time.Duration
		want    v1alpha1.AgentPoolStatus // the queue fields of st afterwards
	}{
		"unchanged counts: kept with their time": {shown, 2, q3, time.Hour, shown},
		"only counts changed, within the interval: not written": {shown, 2,
			queueCounts{Queued: 4, ByType: map[v1alpha1.TaskType]int32{"plan": 4}, Awaiting: 1}, 4 * time.Second, shown},
		"only counts changed, after the interval": {shown, 2,
			queueCounts{Queued: 4, ByType: map[v1alpha1.TaskType]int32{"plan": 4}}, 5*time.Second + 700*time.Millisecond,
			v1alpha1.AgentPoolStatus{QueuedTasks: 4, QueuedByType: map[v1alpha1.TaskType]int32{"plan": 4}, QueueObservedTime: at(5 * time.Second)}},
		"something else changed: the counts ride along": {shown, 3, queueCounts{}, time.Second,
			v1alpha1.AgentPoolStatus{QueueObservedTime: at(time.Second)}},
		"Redis's clock went back: written": {shown, 2, queueCounts{Queued: 1, ByType: map[v1alpha1.TaskType]int32{"plan": 1}}, -time.Hour,
			v1alpha1.AgentPoolStatus{QueuedTasks: 1, QueuedByType: map[v1alpha1.TaskType]int32{"plan": 1}, QueueObservedTime: at(-time.Hour)}},
		"never observed: written": {v1alpha1.AgentPoolStatus{Replicas: 2}, 2, queueCounts{}, 0,
			v1alpha1.AgentPoolStatus{QueueObservedTime: at(0)}},
	} {
		t.Run(name, func(t *testing.T) {
			st := tc.old.DeepCopy()
			st.Replicas = tc.replica
			observeQueue(tc.old, st, tc.q, t0.Add(tc.now), 5*time.Second)
			got := v1alpha1.AgentPoolStatus{QueuedTasks: st.QueuedTasks, QueuedByType: st.QueuedByType,
				AwaitingApproval: st.AwaitingApproval, QueueObservedTime: st.QueueObservedTime}
			want := v1alpha1.AgentPoolStatus{QueuedTasks: tc.want.QueuedTasks, QueuedByType: tc.want.QueuedByType,
				AwaitingApproval: tc.want.AwaitingApproval, QueueObservedTime: tc.want.QueueObservedTime}
			require.Equal(t, want, got)
		})
	}
}

// A pass writes the queue, the approvals waiting and the slot policy from
// the snapshot it reads anyway; a pending slot policy change leaves the
// policy in force on show.
func TestPassStatusShowsQueueAwaitingApprovalAndSlotPolicy(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	ap := e.pool()
	require.Equal(t, "3 slots: 0=plan,plan_and_apply 1-2=plan", ap.Status.SlotPolicy)
	require.Zero(t, ap.Status.QueuedTasks)
	require.NotNil(t, ap.Status.QueueObservedTime)

	objs := e.podObjects()
	require.Len(t, objs, 1)
	var pod, uid string
	for name, p := range objs {
		pod, uid = name, string(p.UID)
		_, err := e.slots.RegisterPod(e.ctx, e.id, name, uid)
		require.NoError(t, err)
		e.run(p)
	}
	submit := func(id string, typ slots.TaskType) {
		_, err := e.slots.Submit(e.ctx, e.id, slots.TaskSpec{ID: id, Type: typ})
		require.NoError(t, err)
	}
	// The plan_and_apply takes slot 0; its plan runs and succeeds: the
	// slot is reserved, awaiting approval.
	submit("pa", slots.PlanAndApply)
	m, err := e.slots.Take(e.ctx, e.id, pod, uid, time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	require.Equal(t, "pa", m.Task)
	state, err := e.slots.Complete(e.ctx, e.id, slots.Result{Task: "pa", Epoch: m.Epoch, Outcome: slots.OutcomeSuccess})
	require.NoError(t, err)
	require.Equal(t, slots.StateReserved, state)
	for _, id := range []string{"p1", "p2", "p3", "p4"} {
		submit(id, slots.Plan) // two run, two wait
	}
	submit("pa2", slots.PlanAndApply)

	e.pass() // the pod became ready and busy: the counts ride along
	st := e.pool().Status
	require.Equal(t, int32(1), st.BusyReplicas)
	require.Equal(t, int32(3), st.QueuedTasks)
	require.Equal(t, map[v1alpha1.TaskType]int32{"plan": 2, "plan_and_apply": 1}, st.QueuedByType)
	require.Equal(t, int32(1), st.AwaitingApproval)

	// Only the queue changes: within the sync interval (an hour here)
	// the status is not written again.
	submit("p5", slots.Plan)
	e.pass()
	require.Equal(t, int32(3), e.pool().Status.QueuedTasks)
	e.c.opts.SyncInterval = time.Millisecond
	time.Sleep(2 * time.Millisecond)
	e.pass()
	require.Equal(t, int32(4), e.pool().Status.QueuedTasks)

	// A slot policy change waits for the pool to have no pods: the status
	// keeps the policy the pool runs.
	e.updatePool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Slots = []v1alpha1.SlotSpec{{Types: []v1alpha1.TaskType{"plan_and_apply", "plan"}}, {Types: []v1alpha1.TaskType{"plan"}}}
	})
	e.pass()
	ap = e.pool()
	require.Equal(t, metav1.ConditionTrue, condition(ap, v1alpha1.ConditionSlotPolicyPending).Status)
	require.Equal(t, "3 slots: 0=plan,plan_and_apply 1-2=plan", ap.Status.SlotPolicy)

	// An invalid spec reads no snapshot: the counts and the policy stay.
	e.updatePool(func(ap *v1alpha1.AgentPool) { ap.Spec.IdleFor = dur(-time.Second) })
	e.pass()
	ap = e.pool()
	require.Equal(t, "InvalidSpec", condition(ap, v1alpha1.ConditionDegraded).Reason)
	require.Equal(t, int32(4), ap.Status.QueuedTasks)
	require.Equal(t, int32(1), ap.Status.AwaitingApproval)
	require.Equal(t, "3 slots: 0=plan,plan_and_apply 1-2=plan", ap.Status.SlotPolicy)
}

// slotscaler_janitor_pool_degraded follows the pool's Degraded condition
// and goes with the pool.
func TestDegradedGaugeFollowsTheConditionAndGoesWithThePool(t *testing.T) {
	e := newPassEnv(t, testPool(1))
	e.pass()
	gauge := func() float64 { return testutil.ToFloat64(e.m.Degraded.WithLabelValues(e.id.String())) }
	require.Equal(t, metav1.ConditionFalse, condition(e.pool(), v1alpha1.ConditionDegraded).Status)
	require.Equal(t, 0.0, gauge())

	e.updatePool(func(ap *v1alpha1.AgentPool) { ap.Spec.IdleFor = dur(-time.Second) })
	e.pass()
	require.Equal(t, "InvalidSpec", condition(e.pool(), v1alpha1.ConditionDegraded).Reason)
	require.Equal(t, 1.0, gauge())

	require.NoError(t, e.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(e.id.Namespace).Delete(e.ctx, e.id.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, exists, _ := e.c.watchOf(e.id.Namespace).pools.GetIndexer().GetByKey(e.key)
		return !exists
	}, 10*time.Second, 5*time.Millisecond)
	_, err := e.c.sync(e.ctx, e.key)
	require.NoError(t, err)
	require.Zero(t, testutil.CollectAndCount(e.m.Degraded), "a deleted pool's series go")
}
