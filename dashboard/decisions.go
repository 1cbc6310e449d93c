package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// action is a decision about a task.
type action string

const (
	actionApprove action = "approve"
	actionReject  action = "reject"
	actionCancel  action = "cancel"
)

// verb is the scope an action needs: approve covers approve and reject.
func (a action) verb() verb {
	if a == actionCancel {
		return verbCancel
	}
	return verbApprove
}

// decisionRequest is the optional JSON body of approve, reject and cancel.
type decisionRequest struct {
	// By is kept for older clients: who decided is the authenticated
	// identity, and a body naming anyone else is refused (by_mismatch).
	By string `json:"by"`
	// Note is kept with the decision: a reject's reason, a change ticket.
	Note string `json:"note"`
}

// decisionOutcome is what a decision did to the task.
type decisionOutcome struct {
	State slots.TaskState
	Phase slots.Phase // approve: the apply
	Epoch string      // approve: the apply's epoch
}

// result names an outcome in audit lines: approved, rejected, cancelled,
// or cancelling (the agent stops the executor first).
func (a action) result(o decisionOutcome) string {
	switch {
	case a == actionApprove:
		return "approved"
	case a == actionReject:
		return "rejected"
	case o.State == slots.StateRunning:
		return "cancelling"
	}
	return "cancelled"
}

// decide takes a decision as id, after the scope check (the route's allow):
// the pool's separate-approver rule, then the store. Every decision, taken
// or refused here, writes one audit line.
func (s *server) decide(r *http.Request, id *identity, a action, pool slots.PoolID, task, note string) (decisionOutcome, *refusal) {
	ctx := r.Context()
	d := slots.Decision{By: id.actor(), Note: note}
	refuse := func(rf *refusal, extra ...slog.Attr) (decisionOutcome, *refusal) {
		s.audit(r, id, string(a), a.verb(), pool, task, rf.code, append(extra, slog.String("note", note))...)
		return decisionOutcome{}, rf
	}
	if a == actionApprove && s.separateApprover.matches(pool) {
		t, err := s.store.Task(ctx, pool, task)
		if err != nil {
			return refuse(s.refusalOf(r, err))
		}
		submitter := slog.String("submitter", t.SubmittedBy)
		switch t.SubmittedBy {
		case "":
			return refuse(&refusal{status: http.StatusForbidden, code: "submitter_unknown",
				msg: fmt.Sprintf("pool %s needs an approver other than the submitter (--separate-approver-pools), and task %s has no recorded submitter: reject or cancel it and submit it again", pool, task)}, submitter)
		case id.actor():
			return refuse(&refusal{status: http.StatusForbidden, code: "own_task",
				msg: fmt.Sprintf("pool %s needs an approver other than the submitter (--separate-approver-pools): %s submitted task %s", pool, id.describe(), task)}, submitter)
		}
	}
	var out decisionOutcome
	var err error
	switch a {
	case actionApprove:
		out.State, out.Phase = slots.StateRunning, slots.PhaseApply
		out.Epoch, err = s.store.ApproveWith(ctx, pool, task, d)
	case actionReject:
		out.State = slots.StateRejected
		err = s.store.RejectWith(ctx, pool, task, d)
	case actionCancel:
		out.State, err = s.store.CancelWith(ctx, pool, task, d)
	}
	if err != nil {
		return refuse(s.refusalOf(r, err))
	}
	s.audit(r, id, string(a), a.verb(), pool, task, a.result(out), slog.String("note", note))
	return out, nil
}

// decideAPI answers POST /api/v1/pools/{ns}/{name}/tasks/{id}/{action}.
func (s *server) decideAPI(a action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pool, err := poolOf(r)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		var req decisionRequest
		if status, code, err := decodeBody(w, r, 64<<10, &req, true); err != nil {
			writeError(w, status, code, err.Error())
			return
		}
		id, task := identityOf(r.Context()), chi.URLParam(r, "id")
		if by := strings.TrimSpace(req.By); by != "" && by != id.actor() {
			s.audit(r, id, string(a), a.verb(), pool, task, "by_mismatch", slog.String("body_by", by))
			writeError(w, http.StatusBadRequest, "by_mismatch", fmt.Sprintf(
				`the body says "by": %q, but the request is authenticated as %s: who decided is recorded from the identity alone; drop "by" (put a remark in "note")`, by, id.describe()))
			return
		}
		out, rf := s.decide(r, id, a, pool, task, req.Note)
		if rf != nil {
			writeRefusal(w, rf)
			return
		}
		body := map[string]any{"id": task, "state": out.State, "by": id.actor()}
		if req.Note != "" {
			body["note"] = req.Note
		}
		status := http.StatusOK
		switch {
		case a == actionApprove:
			body["phase"], body["epoch"] = out.Phase, out.Epoch
		case a == actionCancel && out.State == slots.StateRunning:
			status = http.StatusAccepted // the agent stops the executor, then the task is cancelled
		}
		writeJSON(w, status, body)
	}
}

// maxDecisionForm bounds a decision form's body (a note of
// slots.MaxNoteLen, percent-encoded, and little else).
const maxDecisionForm = 16 << 10

// decidePage answers a decision form of the task, pool or approvals page.
// Taken: to the task page, where the new state shows (htmx: HX-Redirect;
// without JS: 303). Refused: the reason, as a fragment htmx swaps into the
// form (static/decisions.js lets it swap a 4xx), or as an error page.
func (s *server) decidePage(a action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		htmx := r.Header.Get("HX-Request") == "true"
		fail := func(rf *refusal) {
			if htmx {
				s.render(w, r, rf.status, web.DecisionError(rf.msg))
				return
			}
			s.render(w, r, rf.status, web.ErrorPage(rf.status, rf.msg))
		}
		pool, err := poolOf(r)
		if err != nil {
			fail(s.refusalOf(r, err))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxDecisionForm)
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			msg := "bad decision form"
			if errors.As(err, &mbe) {
				msg = fmt.Sprintf("the form is larger than %d bytes", mbe.Limit)
			}
			fail(&refusal{status: http.StatusBadRequest, code: "bad_form", msg: msg})
			return
		}
		task := chi.URLParam(r, "id")
		if _, rf := s.decide(r, identityOf(r.Context()), a, pool, task, strings.TrimSpace(r.PostForm.Get("note"))); rf != nil {
			fail(rf)
			return
		}
		next := taskHref(pool, task)
		if htmx {
			w.Header().Set("HX-Redirect", next)
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
	}
}

// crossOriginPage answers a page post from another origin (CSRF).
func (s *server) crossOriginPage(w http.ResponseWriter, r *http.Request) {
	s.log.Warn("refused a cross-origin post", "path", r.URL.Path, "origin", r.Header.Get("Origin"),
		"sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "client", clientIP(r))
	msg := "This form was posted from another site; open the dashboard and try again."
	if r.Header.Get("HX-Request") == "true" {
		s.render(w, r, http.StatusForbidden, web.DecisionError(msg))
		return
	}
	s.render(w, r, http.StatusForbidden, web.ErrorPage(http.StatusForbidden, msg))
}
