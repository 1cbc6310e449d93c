package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// maxApprovals bounds the approvals page (and a pool page's list): the
// soonest to expire first, so what needs a decision most is never cut.
const maxApprovals = 200

// Of each plan's output the approvals lists show the last lines: enough to
// see "Plan: 1 to add, 0 to change, 2 to destroy"; the task page has more.
const (
	approvalTailLines = 30
	approvalTailBytes = 4 << 10
)

// readable is the filter of the pools the request may read.
func (s *server) readable(r *http.Request) func(slots.PoolID) bool {
	return func(p slots.PoolID) bool { return s.mayRead(r, p) }
}

// approvalsPage lists what awaits approval in the pools the identity may read.
func (s *server) approvalsPage(w http.ResponseWriter, r *http.Request) {
	pools, err := s.store.Pools(r.Context())
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	pools = slices.DeleteFunc(pools, func(p slots.PoolID) bool { return !s.mayRead(r, p) })
	rows, more, err := s.awaiting(r, pools, maxApprovals)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, web.ApprovalsPage(web.ApprovalsView{Rows: rows, More: more}))
}

// awaiting reads the reserved tasks of pools, the soonest to expire first,
// at most limit of them (more says how many were left out), each with its
// plan's output tail and the decision forms the identity may use.
func (s *server) awaiting(r *http.Request, pools []slots.PoolID, limit int) ([]web.ApprovalRow, int, error) {
	ctx := r.Context()
	if len(pools) == 0 {
		return nil, 0, nil
	}
	res, now, err := s.store.Reservations(ctx, pools...)
	if err != nil {
		return nil, 0, err
	}
	slices.SortStableFunc(res, func(a, b slots.Reservation) int { return a.Until.Compare(b.Until) })
	more := max(0, len(res)-limit)
	res = res[:min(len(res), limit)]
	id := identityOf(ctx)
	keys := make([]slots.TaskKey, len(res))
	until := make(map[slots.TaskKey]time.Time, len(res))
	for i, rv := range res {
		keys[i] = slots.TaskKey{Pool: rv.Pool, ID: rv.Task}
		until[keys[i]] = rv.Until
	}
	// One pipeline for all of them (up to maxApprovals), not a round trip
	// each; purged tasks and deleted pools are left out.
	tasks, err := s.store.Tasks(ctx, keys)
	if err != nil {
		return nil, 0, fmt.Errorf("reading reserved tasks: %w", err)
	}
	rows := make([]web.ApprovalRow, 0, len(tasks))
	for _, t := range tasks {
		if t.State != slots.StateReserved {
			continue // decided since the list was read
		}
		rv := slots.Reservation{Pool: t.Pool, Task: t.ID, Until: until[slots.TaskKey{Pool: t.Pool, ID: t.ID}]}
		tail, cut := outputTailLines(t.Output, approvalTailLines, approvalTailBytes)
		rows = append(rows, web.ApprovalRow{Task: t.ID, TaskHref: taskHref(rv.Pool, t.ID), Pool: rv.Pool.String(), PoolHref: poolHref(rv.Pool),
			SubmittedBy: t.SubmittedBy, Age: ageText(now.Sub(reservedAt(t))), TimeLeft: ageText(rv.Until.Sub(now)),
			WorkspaceDigest: t.WorkspaceDigest, OutputTail: tail, OutputCut: cut, Decisions: s.decisionsView(id, t)})
	}
	return rows, more, nil
}

// reservedAt is when the task's plan ended and its reservation began: its
// last "reserved" history entry (else its last update).
func reservedAt(t slots.Task) time.Time {
	for _, h := range slices.Backward(t.History) {
		if h.State == string(slots.StateReserved) {
			return h.At
		}
	}
	return t.Updated
}

// outputTailLines is the end of out: its last lines, at most maxBytes of
// them; cut says whether anything was left out.
func outputTailLines(out string, lines, maxBytes int) (string, bool) {
	out = strings.TrimRight(out, "\n")
	start := max(0, len(out)-maxBytes)
	// Begin on a line, not inside one (or inside a UTF-8 sequence).
	if start > 0 {
		if i := strings.IndexByte(out[start:], '\n'); i >= 0 {
			start += i + 1
		}
	}
	for i, n := len(out), 0; i > start; i-- {
		if out[i-1] == '\n' {
			if n++; n == lines {
				start = i
				break
			}
		}
	}
	return out[start:], start > 0
}

// decisionsView says which decisions id may take on t as it stands.
func (s *server) decisionsView(id *identity, t slots.Task) web.DecisionsView {
	v := web.DecisionsView{Task: t.ID}
	if id == nil {
		return v
	}
	base := taskHref(t.Pool, t.ID)
	if t.State == slots.StateReserved && id.can(verbApprove, t.Pool) {
		v.ApproveURL, v.RejectURL = base+"/approve", base+"/reject"
		if s.separateApprover.matches(t.Pool) {
			switch t.SubmittedBy {
			case "":
				v.ApproveURL, v.Blocked = "", "This pool wants an approver other than the submitter, and this task's submitter is unknown: it cannot be approved."
			case id.actor():
				v.ApproveURL, v.Blocked = "", "You submitted this task: in this pool someone else approves it."
			}
		}
	}
	if !t.State.Terminal() && !t.CancelRequested && id.can(verbCancel, t.Pool) {
		v.CancelURL = base + "/cancel"
	}
	return v
}
