package slots

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// historyOf returns the task's history as "state: detail" lines.
func (e *env) historyOf(id string) []string {
	e.t.Helper()
	var out []string
	for _, h := range e.task(id).History {
		out = append(out, h.State+": "+h.Detail)
	}
	return out
}

// The submitter is kept with the task; a repeated submit (idempotent by
// id) does not change it.
func TestSubmitKeepsTheSubmitter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		_, err := e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "t1", Type: Plan, SubmittedBy: "ci"})
		require.NoError(t, err)
		_, err = e.s.Submit(e.ctx, e.pool, TaskSpec{ID: "t1", Type: Plan, SubmittedBy: "someone-else"})
		require.NoError(t, err)
		assert.Equal(t, "ci", e.task("t1").SubmittedBy)
		e.submit("anon", Plan)
		assert.Empty(t, e.task("anon").SubmittedBy, "unknown when not given")
	})
}

// Each decision records who decided and their note: the note in the
// task's own field (never in Reason, a machine-readable code) and, with
// the name, in the history.
func TestDecisionsRecordWhoAndTheirNote(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")

		e.submit("ap", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		_, err := e.s.ApproveWith(e.ctx, e.pool, "ap", Decision{By: "alice", Note: "CHG-1234"})
		require.NoError(t, err)
		tk := e.task("ap")
		assert.Equal(t, "alice", tk.By)
		assert.Equal(t, "CHG-1234", tk.Note)
		assert.Contains(t, e.historyOf("ap"), "approved: by alice: CHG-1234")
		e.complete(e.take("agent-0", uid), OutcomeSuccess)

		e.submit("rj", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		require.NoError(t, e.s.RejectWith(e.ctx, e.pool, "rj", Decision{By: "bob", Note: "drops the prod database"}))
		tk = e.task("rj")
		assert.Equal(t, StateRejected, tk.State)
		assert.Equal(t, "bob", tk.By)
		assert.Equal(t, "drops the prod database", tk.Note)
		assert.Empty(t, tk.Reason, "the note is not the reason code")
		assert.Contains(t, e.historyOf("rj"), "rejected: by bob: drops the prod database")

		e.submit("rs", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		_, err = e.s.CancelWith(e.ctx, e.pool, "rs", Decision{By: "carol", Note: "superseded"})
		require.NoError(t, err)
		assert.Equal(t, "superseded", e.task("rs").Note)
		assert.Contains(t, e.historyOf("rs"), "cancelled: by carol: superseded")

		e.submit("run", Plan)
		a := e.take("agent-0", uid)
		_, err = e.s.CancelWith(e.ctx, e.pool, "run", Decision{By: "dave", Note: "stuck"})
		require.NoError(t, err)
		assert.Contains(t, e.historyOf("run"), "cancelling: by dave: stuck")
		assert.Equal(t, StateCancelled, e.complete(a, OutcomeCancelled))
		tk = e.task("run")
		assert.Equal(t, "dave", tk.By)
		assert.Equal(t, "stuck", tk.Note)

		e.submit("q1", Plan)
		e.submit("q2", Plan)
		e.submit("q3", Plan)
		e.submit("queued", Plan) // every plan slot is taken
		require.Equal(t, StateQueued, e.task("queued").State)
		_, err = e.s.Cancel(e.ctx, e.pool, "queued", "erin")
		require.NoError(t, err)
		tk = e.task("queued")
		assert.Empty(t, tk.Note)
		assert.Contains(t, e.historyOf("queued"), "cancelled: by erin", "a decision without a note names who decided")
		e.consistent()
	})
}

// A later decision's note replaces the earlier one on the task; the
// history keeps both.
func TestALaterDecisionReplacesTheNote(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		uid := e.pod("agent-0")
		e.submit("pa", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		_, err := e.s.ApproveWith(e.ctx, e.pool, "pa", Decision{By: "alice", Note: "go"})
		require.NoError(t, err)
		apply := e.take("agent-0", uid)
		_, err = e.s.CancelWith(e.ctx, e.pool, "pa", Decision{By: "bob"})
		require.NoError(t, err)
		assert.Equal(t, StateCancelled, e.complete(apply, OutcomeCancelled))
		tk := e.task("pa")
		assert.Equal(t, "bob", tk.By)
		assert.Empty(t, tk.Note)
		h := e.historyOf("pa")
		assert.Contains(t, h, "approved: by alice: go")
		assert.Contains(t, h, "cancelling: by bob")
	})
}
