package janitor

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The janitor's report of each pool (pkg/janitorreport) is what the
// dashboard shows of the janitor: what it waits for and what it did last.
// summarise and groupActions turn a pass into the report's content (pure);
// report writes it when it changed.

// Reports is where the janitor leaves its report of each pool
// (janitorreport.Store).
type Reports interface {
	Write(ctx context.Context, pool slots.PoolID, r janitorreport.Report) error
	Read(ctx context.Context, pool slots.PoolID) (janitorreport.Report, bool, error)
}

// maxWaitText bounds a wait's words that quote an error or a pod's
// status, which nobody bounds for us.
const maxWaitText = 500

// reportFacts is what a report says beside the plan.
type reportFacts struct {
	Pool    slots.PoolID
	Janitor string
	// MaxDeletionsPerMinute is the pool's (the deletion budget's refill).
	MaxDeletionsPerMinute int
	// Refused is the pod policy's refusal of the template, or nil.
	Refused error
	// Deleting is the Deleting condition of a deleted pool, or nil.
	Deleting *metav1.Condition
}

// leavingOrder is the order busy leaving pods are reported in, with the
// words for them (one pod, several pods).
var leavingOrder = []struct{ group, one, many, how string }{
	{goSurplus, "surplus pod is", "surplus pods are", "cordoned, %s once idle"},
	{goOutdated, "pod of an outdated template is", "pods of an outdated template are", "cordoned, %s once idle (replacements are created)"},
	{goRecycle, "pod due for recycling is", "pods due for recycling are", "cordoned, %s once idle (replacements are created)"},
	{goForeign, "foreign pod (not the AgentPool's own) is", "foreign pods (not the AgentPool's own) are", "cordoned, %s once idle"},
	{goStopping, "pod whose agent is stopping is", "pods whose agents are stopping are", "%s once idle (replacements are created)"},
}

// summarise is the content of the janitor's report of one pass: the pool's
// size and what the janitor waits for, in words. Pure. It holds no number
// that moves from pass to pass by itself: waits say until when, so a pool
// waiting for the same things reports the same content (see
// janitorreport.Due). Every time is in UTC, rounded up to the second.
func summarise(in planInput, out planOutput, f reportFacts) janitorreport.Content {
	c := janitorreport.Content{Pool: f.Pool.String(), Janitor: f.Janitor, Replicas: in.Replicas, Live: out.Status.Replicas,
		Waiting: []janitorreport.Wait{}, Actions: []janitorreport.Action{}}
	add := func(kind string, pods int, until time.Time, text string, args ...any) {
		w := janitorreport.Wait{Kind: kind, Pods: pods, Text: clip(fmt.Sprintf(text, args...))}
		if !until.IsZero() {
			u := ceilSecond(until)
			w.Until = &u
		}
		c.Waiting = append(c.Waiting, w)
	}
	missing := max(0, in.Replicas-out.Status.Replicas)
	hold := !out.HoldUntil.IsZero()

	if f.Deleting != nil {
		add(janitorreport.WaitDeleting, out.Status.Busy, time.Time{}, "The AgentPool is deleted: its pods go once idle; %s.", f.Deleting.Message)
	}
	if hold {
		text := "Redis lost this pool's data: nothing is removed until the agents have registered again"
		if out.Deferred > 0 {
			text += fmt.Sprintf(" (%s to remove %s)", count(out.Deferred, "pod", "pods"), pick(out.Deferred, "waits", "wait"))
		}
		add(janitorreport.WaitDataLossHold, out.Deferred, out.HoldUntil, "%s.", text)
	}
	if f.Refused != nil {
		add(janitorreport.WaitTemplateRefused, missing, time.Time{},
			"The pod policy refuses spec.template: no pod is created (%d missing); %v", missing, f.Refused)
	}
	if out.Create > 0 && out.Backoff.Wait > 0 {
		text := fmt.Sprintf("Pods of this template cannot start: creating %s backs off after %s in a row",
			count(out.Create, "pod", "pods"), count(out.Backoff.Failures, "start failure", "start failures"))
		if out.Streak.Msg != "" {
			text += " (last: " + out.Streak.Msg + ")"
		}
		add(janitorreport.WaitCreateBackoff, out.Create, in.Now.Add(out.Backoff.Wait), "%s.", text)
	} else if len(out.StartFailures) > 0 {
		add(janitorreport.WaitCannotStart, len(out.StartFailures), time.Time{}, "%s start: %s.",
			count(len(out.StartFailures), "pod cannot", "pods cannot"), out.StartFailures[0])
	}
	if out.Starting > 0 {
		add(janitorreport.WaitStarting, out.Starting, time.Time{}, "Waiting for %s to register.",
			count(out.Starting, "pod's agent", "pods' agents"))
	}
	if out.Deferred > 0 && !hold {
		add(janitorreport.WaitDeletionBudget, out.Deferred, time.Time{},
			"Deletion budget reached: %s to remove %s (maxDeletionsPerMinute %d).",
			count(out.Deferred, "pod", "pods"), pick(out.Deferred, "waits", "wait"), f.MaxDeletionsPerMinute)
	}
	for _, l := range leavingOrder {
		if n := out.Leaving[l.group]; n > 0 {
			add(janitorreport.WaitBusy, n, time.Time{}, "%d %s busy: "+l.how+".", n, pick(n, l.one, l.many), pick(n, "it goes", "they go"))
		}
	}
	if out.IdleWaiting > 0 {
		add(janitorreport.WaitIdleFor, out.IdleWaiting, in.Now.Add(out.WaitIdle), "%s idle, not yet for idleFor %v.",
			count(out.IdleWaiting, "surplus pod is", "surplus pods are"), in.IdleFor)
	}
	if out.Unconfirmed > 0 {
		add(janitorreport.WaitRegistration, out.Unconfirmed, in.Now.Add(out.WaitRegistration),
			"%s to remove %s an expected record while the agent runs: it may have registered (a registration Redis lost), so it is removed only once that is settled.",
			count(out.Unconfirmed, "pod", "pods"), pick(out.Unconfirmed, "has", "have"))
	}

	switch {
	case in.Replicas == c.Live && len(c.Waiting) == 0:
		c.Summary = fmt.Sprintf("At the desired size: %s.", count(c.Live, "pod", "pods"))
	case in.Replicas == c.Live:
		c.Summary = fmt.Sprintf("At the desired size (%s), with more to do.", count(c.Live, "pod", "pods"))
	case out.Create > 0 && out.Backoff.Wait == 0:
		c.Summary = fmt.Sprintf("%d of %d desired pods live: creating %d.", c.Live, in.Replicas, out.Create)
	default:
		c.Summary = fmt.Sprintf("%d of %d desired pods live.", c.Live, in.Replicas)
	}
	return c
}

// invalidSpecContent is the report of a pool whose spec is invalid.
func invalidSpecContent(f reportFacts, err error) janitorreport.Content {
	return janitorreport.Content{Pool: f.Pool.String(), Janitor: f.Janitor, Replicas: -1,
		Summary: "The AgentPool's spec is invalid: nothing is done until it is fixed.",
		Waiting: []janitorreport.Wait{{Kind: janitorreport.WaitInvalidSpec, Text: clip("Invalid spec: " + err.Error())}},
		Actions: []janitorreport.Action{}}
}

// doneAction is one pod action a pass carried out.
type doneAction struct {
	Kind, Pod, Reason string
}

// actionOrder is the order a pass's actions are reported in: the order a
// pass carries them out.
var actionOrder = []string{janitorreport.ActionRemovedRecord, janitorreport.ActionDeleted, janitorreport.ActionUncordoned,
	janitorreport.ActionCordoned, janitorreport.ActionRecycled, janitorreport.ActionDrained, janitorreport.ActionCreated}

// groupActions turns a pass's actions into the report's: one per kind and
// reason, pods by name, stamped at (UTC). Pure.
func groupActions(done []doneAction, at time.Time) []janitorreport.Action {
	type key struct{ kind, reason string }
	pods := map[key][]string{}
	for _, d := range done {
		k := key{d.Kind, d.Reason}
		pods[k] = append(pods[k], d.Pod)
	}
	keys := make([]key, 0, len(pods))
	for k := range pods {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := cmp.Compare(slices.Index(actionOrder, a.kind), slices.Index(actionOrder, b.kind)); c != 0 {
			return c
		}
		return strings.Compare(a.reason, b.reason)
	})
	out := make([]janitorreport.Action, 0, len(keys))
	for _, k := range keys {
		names := slices.Sorted(slices.Values(pods[k]))
		out = append(out, janitorreport.Action{At: at.UTC(), Kind: k.kind, Count: len(names),
			Pods: names[:min(len(names), janitorreport.MaxPodNames)], Reason: k.reason})
	}
	return out
}

// did notes an action of this pass for the report (actions run in
// parallel).
func (p *pass) did(kind, pod, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = append(p.done, doneAction{Kind: kind, Pod: pod, Reason: reason})
}

// leaveKind is the action kind of taking pod out: recycled when this pass
// recycles it, def otherwise.
func (p *pass) leaveKind(pod *corev1.Pod, def string) string {
	if _, ok := p.recycle[pod]; ok {
		return janitorreport.ActionRecycled
	}
	return def
}

// report writes the pool's report when its content changed, or to refresh
// it (janitorreport.Due). now is the pass's snapshot time (Redis's clock).
// A failed write never fails the pass: it is logged once per failure
// streak, and the next pass tries again (its actions kept meanwhile).
func (p *pass) report(now time.Time, content janitorreport.Content) {
	reports := p.c.opts.Reports
	if reports == nil || p.c.opts.DryRun || now.IsZero() {
		return
	}
	st := p.st
	now = now.UTC()
	if !st.reportRead {
		// A janitor that just started, or took over, goes on with the
		// actions the last one reported.
		last, found, err := reports.Read(p.ctx, p.id)
		if err != nil {
			p.reportFailed(err)
			st.reportActions = janitorreport.Merge(groupActions(p.done, now), st.reportActions)
			return
		}
		st.reportRead = true
		if found {
			st.report = &last
			st.reportActions = janitorreport.Merge(st.reportActions, last.Actions)
		}
	}
	st.reportActions = janitorreport.Merge(groupActions(p.done, now), st.reportActions)
	content.Actions = slices.Clone(st.reportActions)
	write, changed := janitorreport.Due(st.report, content, now, p.c.reportRefresh)
	if !write {
		return
	}
	r := janitorreport.Report{At: now, Changed: now, StaleAfter: now.Add(p.c.reportStaleAfter()), Content: content}
	if !changed {
		r.Changed = st.report.Changed
	}
	err := reports.Write(p.ctx, p.id, r)
	p.c.m.ReportWrites.WithLabelValues(resultOf(err)).Inc()
	if err != nil {
		p.reportFailed(err)
		return
	}
	if st.reportFailing {
		p.log.Info("janitor report written again")
	}
	st.reportFailing = false
	st.report = &r
}

func (p *pass) reportFailed(err error) {
	if !p.st.reportFailing {
		p.log.Warn("cannot write the janitor report for the dashboard (the pool is managed all the same)", "err", err)
	} else {
		p.log.Debug("janitor report still not written", "err", err)
	}
	p.st.reportFailing = true
}

// reportStaleAfter is how long a report stays fresh: the janitor writes it
// again within a refresh interval, or a sync interval when that is longer,
// of passes; three of them allow for a busy workqueue.
func (c *Controller) reportStaleAfter() time.Duration {
	return 3 * max(c.reportRefresh, c.opts.SyncInterval)
}

func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

func clip(s string) string {
	if len(s) <= maxWaitText {
		return s
	}
	cut := maxWaitText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func count(n int, one, many string) string { return fmt.Sprintf("%d %s", n, pick(n, one, many)) }

// pick is the word (or words) for n things.
func pick(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
