package janitor

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var reportPool = slots.PoolID{Namespace: "team", Name: "pool"}

func at(t time.Time) *time.Time { return &t }

// The report's words for what a pass leaves for later: plan decides, from
// the plan tests' inputs, and summarise says it.
func TestSummariseSaysWhatTheJanitorWaitsFor(t *testing.T) {
	facts := reportFacts{Pool: reportPool, Janitor: "janitor-0", MaxDeletionsPerMinute: 6}
	pre := generation(oldGen)
	tests := map[string]struct {
		in      planInput
		facts   func(*reportFacts)
		summary string
		live    int
		waiting []janitorreport.Wait
	}{
		"nothing to do: at the desired size": {
			in:      input(2, pods(pod("a"), pod("b")), rec("a", slots.PodActive, running), rec("b", slots.PodActive)),
			summary: "At the desired size: 2 pods.", live: 2,
		},
		"a busy surplus pod is cordoned this pass": {
			in:      input(1, pods(pod("a"), pod("b")), rec("a", slots.PodActive, running), rec("b", slots.PodActive, running)),
			summary: "At the desired size (1 pod), with more to do.", live: 1,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitBusy, Pods: 1, Text: "1 surplus pod is busy: cordoned, it goes once idle."}},
		},
		"busy surplus pods cordoned by earlier passes": {
			in: input(1, pods(pod("a"), pod("b"), pod("c")), rec("a", slots.PodActive, running),
				byJanitor(rec("b", slots.PodCordoned, running)), byJanitor(rec("c", slots.PodCordoned, reserved))),
			summary: "At the desired size (1 pod), with more to do.", live: 1,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitBusy, Pods: 2, Text: "2 surplus pods are busy: cordoned, they go once idle."}},
		},
		"busy pods of an outdated template, and one whose agent is stopping": {
			in: input(2, pods(pod("a", hash(oldHash)), pod("b", hash(oldHash)), pod("c")),
				rec("a", slots.PodActive, running), byJanitor(rec("b", slots.PodCordoned, running)), byAgent(rec("c", slots.PodCordoned, running))),
			summary: "0 of 2 desired pods live: creating 2.",
			waiting: []janitorreport.Wait{
				{Kind: janitorreport.WaitBusy, Pods: 2, Text: "2 pods of an outdated template are busy: cordoned, they go once idle (replacements are created)."},
				{Kind: janitorreport.WaitBusy, Pods: 1, Text: "1 pod whose agent is stopping is busy: it goes once idle (replacements are created)."},
			},
		},
		"a surplus pod idle, not yet for idleFor": {
			in:      input(1, pods(pod("a"), pod("b")), rec("a", slots.PodActive, running), idleAgo(rec("b", slots.PodActive), 20*time.Second)),
			summary: "At the desired size (1 pod), with more to do.", live: 1,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitIdleFor, Pods: 1, Until: at(t0.Add(40 * time.Second)),
				Text: "1 surplus pod is idle, not yet for idleFor 1m0s."}},
		},
		"the deletion budget is spent": {
			in: func() planInput {
				in := input(0, pods(pod("a"), pod("b"), pod("c")),
					idleAgo(rec("a", slots.PodActive), time.Hour), idleAgo(rec("b", slots.PodActive), time.Hour), idleAgo(rec("c", slots.PodActive), time.Hour))
				in.DeleteBudget = 1
				return in
			}(),
			summary: "At the desired size (0 pods), with more to do.",
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitDeletionBudget, Pods: 2,
				Text: "Deletion budget reached: 2 pods to remove wait (maxDeletionsPerMinute 6)."}},
		},
		"Redis lost the pool's data: removals held": {
			in: afterLoss(input(1, pods(pod("a", pre), pod("b", pre)),
				idleAgo(rec("a", slots.PodActive), time.Hour), idleAgo(rec("b", slots.PodActive), time.Hour)), time.Second+300*time.Millisecond),
			summary: "At the desired size (1 pod), with more to do.", live: 1,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitDataLossHold, Pods: 1, Until: at(t0.Add(hbto - time.Second)),
				Text: "Redis lost this pool's data: nothing is removed until the agents have registered again (1 pod to remove waits)."}},
		},
		"pods cannot start: creation backs off": {
			in: func() planInput {
				in := input(2, nil)
				in.Clock = t0
				in.Streak = startStreak{Failures: 3, Last: t0.Add(-time.Second), NextCreate: t0.Add(40 * time.Second), Msg: "pool-x: agent exited Error (1)"}
				return in
			}(),
			summary: "0 of 2 desired pods live.",
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitCreateBackoff, Pods: 2, Until: at(t0.Add(40 * time.Second)),
				Text: "Pods of this template cannot start: creating 2 pods backs off after 3 start failures in a row (last: pool-x: agent exited Error (1))."}},
		},
		"a pod cannot start, before any failure is counted": {
			in:      input(1, pods(pod("a", pending(), waiting(AgentContainer, "ImagePullBackOff"))), rec("a", slots.PodExpected)),
			summary: "At the desired size (1 pod), with more to do.", live: 1,
			waiting: []janitorreport.Wait{
				{Kind: janitorreport.WaitCannotStart, Pods: 1, Text: "1 pod cannot start: a: agent ImagePullBackOff: back-off."},
				{Kind: janitorreport.WaitStarting, Pods: 1, Text: "Waiting for 1 pod's agent to register."},
			},
		},
		"pods starting": {
			in:      input(2, pods(pod("a", pending()), pod("b", pending())), rec("a", slots.PodExpected)),
			summary: "At the desired size (2 pods), with more to do.", live: 2,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitStarting, Pods: 2, Text: "Waiting for 2 pods' agents to register."}},
		},
		"a pod to remove whose agent may have registered": {
			in:      input(0, pods(pod("a", agentRunning(time.Hour))), rec("a", slots.PodExpected)),
			summary: "At the desired size (0 pods), with more to do.",
			waiting: []janitorreport.Wait{
				{Kind: janitorreport.WaitStarting, Pods: 1, Text: "Waiting for 1 pod's agent to register."},
				{Kind: janitorreport.WaitRegistration, Pods: 1, Until: at(t0.Add(hbto)),
					Text: "1 pod to remove has an expected record while the agent runs: it may have registered (a registration Redis lost), so it is removed only once that is settled."},
			},
		},
		"the pod policy refuses the template": {
			in: func() planInput {
				in := input(3, pods(pod("a")), rec("a", slots.PodActive))
				in.TemplateRefused = true
				return in
			}(),
			facts:   func(f *reportFacts) { f.Refused = errors.New("privileged containers are not allowed") },
			summary: "1 of 3 desired pods live.", live: 1,
			waiting: []janitorreport.Wait{{Kind: janitorreport.WaitTemplateRefused, Pods: 2,
				Text: "The pod policy refuses spec.template: no pod is created (2 missing); privileged containers are not allowed"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := facts
			if tc.facts != nil {
				tc.facts(&f)
			}
			got := summarise(tc.in, plan(tc.in), f)
			want := tc.waiting
			if want == nil {
				want = []janitorreport.Wait{}
			}
			assert.Equal(t, janitorreport.Content{Pool: "team/pool", Janitor: "janitor-0", Replicas: tc.in.Replicas, Live: tc.live,
				Summary: tc.summary, Waiting: want, Actions: []janitorreport.Action{}}, got)
		})
	}
}

// A pool waiting for the same things reports the same content pass after
// pass, so the report is written once per change: waits say until when,
// not for how long.
func TestSummariseIsTheSameWhileThePoolWaits(t *testing.T) {
	in := func(now time.Time) planInput {
		in := input(1, pods(pod("a"), pod("b"), pod("c", agentRunning(time.Hour))),
			rec("a", slots.PodActive, running), idleAgo(rec("b", slots.PodActive), 20*time.Second), rec("c", slots.PodExpected))
		in.Now, in.Clock = now, now
		in.ExpectedSince = map[types.UID]time.Time{"c-uid": t0}
		return in
	}
	first := summarise(in(t0), plan(in(t0)), reportFacts{Pool: reportPool})
	require.Len(t, first.Waiting, 3, "%+v", first.Waiting) // starting, idle-for, registration
	for _, later := range []time.Duration{time.Second, 10*time.Second + 300*time.Millisecond, 19 * time.Second} {
		got := summarise(in(t0.Add(later)), plan(in(t0.Add(later))), reportFacts{Pool: reportPool})
		assert.True(t, janitorreport.Same(first, got), "%v later: %+v, first %+v", later, got.Waiting, first.Waiting)
	}
	// Once b has been idle for idleFor it is drained: that is a change.
	done := summarise(in(t0.Add(41*time.Second)), plan(in(t0.Add(41*time.Second))), reportFacts{Pool: reportPool})
	assert.False(t, janitorreport.Same(first, done))
}

func TestGroupActionsOnePerKindAndReason(t *testing.T) {
	now := time.Date(2026, 3, 1, 13, 0, 0, 0, time.FixedZone("CET", 3600))
	got := groupActions([]doneAction{
		{janitorreport.ActionCreated, "p-3", "3 desired, 1 live"},
		{janitorreport.ActionDrained, "p-9", "surplus, idle for idleFor 1m0s"},
		{janitorreport.ActionCreated, "p-2", "3 desired, 1 live"},
		{janitorreport.ActionRemovedRecord, "p-0", ReasonScaledDown},
		{janitorreport.ActionDeleted, "p-1", "agent-lost"},
		{janitorreport.ActionDrained, "p-8", goOutdated},
		{janitorreport.ActionCordoned, "p-7", goSurplus + ", busy"},
		{janitorreport.ActionRecycled, "p-6", "recycling: started 3 tasks (spec.recycle.afterTasks 3)"},
	}, now)
	u := now.UTC()
	assert.Equal(t, []janitorreport.Action{
		{At: u, Kind: janitorreport.ActionRemovedRecord, Pods: []string{"p-0"}, Count: 1, Reason: ReasonScaledDown},
		{At: u, Kind: janitorreport.ActionDeleted, Pods: []string{"p-1"}, Count: 1, Reason: "agent-lost"},
		{At: u, Kind: janitorreport.ActionCordoned, Pods: []string{"p-7"}, Count: 1, Reason: "surplus, busy"},
		{At: u, Kind: janitorreport.ActionRecycled, Pods: []string{"p-6"}, Count: 1, Reason: "recycling: started 3 tasks (spec.recycle.afterTasks 3)"},
		{At: u, Kind: janitorreport.ActionDrained, Pods: []string{"p-8"}, Count: 1, Reason: "outdated template"},
		{At: u, Kind: janitorreport.ActionDrained, Pods: []string{"p-9"}, Count: 1, Reason: "surplus, idle for idleFor 1m0s"},
		{At: u, Kind: janitorreport.ActionCreated, Pods: []string{"p-2", "p-3"}, Count: 2, Reason: "3 desired, 1 live"},
	}, got)

	var many []doneAction
	for _, n := range []string{"g", "f", "e", "d", "c", "b", "a"} {
		many = append(many, doneAction{janitorreport.ActionCreated, n, "7 desired, 0 live"})
	}
	assert.Equal(t, []janitorreport.Action{{At: u, Kind: janitorreport.ActionCreated, Pods: []string{"a", "b", "c", "d", "e"}, Count: 7,
		Reason: "7 desired, 0 live"}}, groupActions(many, now), "names are capped, the count is not")
	assert.Empty(t, groupActions(nil, now))
}

func TestSummaryClipsLongWords(t *testing.T) {
	in := input(1, pods(pod("a")), rec("a", slots.PodActive))
	in.TemplateRefused = true
	long := make([]byte, 2000)
	for i := range long {
		long[i] = 'x'
	}
	got := summarise(in, plan(in), reportFacts{Pool: reportPool, Refused: errors.New("é" + string(long))})
	require.Len(t, got.Waiting, 1)
	assert.LessOrEqual(t, len(got.Waiting[0].Text), maxWaitText+len("…"))
	assert.True(t, utf8.ValidString(got.Waiting[0].Text))
}
