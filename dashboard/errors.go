package main

import (
	"errors"
	"net/http"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// apiError is every error body of the API.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Scope and Pool name what a 403 (code forbidden) lacked: the verb
	// and the pool it was refused in.
	Scope string `json:"scope,omitempty"`
	Pool  string `json:"pool,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

// errorStatus maps a store error to an HTTP status and error code. The
// refusals a caller can act on get their own status; whatever slots.Classify
// calls unavailable is a 503, so clients retry instead of giving up.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, slots.ErrInvalidPool):
		return http.StatusBadRequest, "invalid_pool"
	case errors.Is(err, slots.ErrInvalidTask):
		return http.StatusBadRequest, "invalid_task"
	case errors.Is(err, slots.ErrPayloadTooLarge):
		return http.StatusBadRequest, "payload_too_large"
	case errors.Is(err, slots.ErrNoSlotForType):
		return http.StatusBadRequest, "no_slot_for_type"
	case errors.Is(err, slots.ErrPoolNotFound):
		return http.StatusNotFound, "pool_not_found"
	case errors.Is(err, slots.ErrTaskNotFound):
		return http.StatusNotFound, "task_not_found"
	case errors.Is(err, slots.ErrReservationLost):
		return http.StatusConflict, "reservation_lost"
	case errors.Is(err, slots.ErrNotReserved):
		return http.StatusConflict, "not_reserved"
	case errors.Is(err, slots.ErrTaskFinished):
		return http.StatusConflict, "task_finished"
	case errors.Is(err, slots.ErrTaskConflict):
		return http.StatusConflict, "task_conflict"
	case errors.Is(err, slots.ErrPoolDeleting):
		return http.StatusConflict, "pool_deleting"
	case errors.Is(err, slots.ErrPodLost), errors.Is(err, slots.ErrPodState):
		return http.StatusConflict, "pod_state"
	case errors.Is(err, slots.ErrQueueFull):
		return http.StatusTooManyRequests, "queue_full"
	case slots.IsUnavailable(err):
		return http.StatusServiceUnavailable, "redis_unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

// refusal is a request refused, as the API and the decision forms answer
// it: status, error code and a message safe to show.
type refusal struct {
	status    int
	code, msg string
}

// refusalOf turns a store error into a refusal; an outage or an internal
// error is logged here and shown without its details.
func (s *server) refusalOf(r *http.Request, err error) *refusal {
	status, code := errorStatus(err)
	msg := err.Error()
	switch status {
	case http.StatusServiceUnavailable:
		s.log.Warn("redis unavailable", "path", r.URL.Path, "err", err)
		msg = "slot store unavailable"
	case http.StatusInternalServerError:
		s.log.Error("store call failed", "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	return &refusal{status: status, code: code, msg: msg}
}

// writeRefusal answers an API request with a refusal; one a client should
// retry gets Retry-After.
func writeRefusal(w http.ResponseWriter, rf *refusal) {
	if rf.status == http.StatusTooManyRequests || rf.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	writeError(w, rf.status, rf.code, rf.msg)
}

// storeError answers a failed store call.
func (s *server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	writeRefusal(w, s.refusalOf(r, err))
}

// pageError renders a store error as an HTML page.
func (s *server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	status, _ := errorStatus(err)
	msg := err.Error()
	switch status {
	case http.StatusServiceUnavailable:
		s.log.Warn("redis unavailable", "path", r.URL.Path, "err", err)
		msg = "The slot store (Redis) is unavailable."
	case http.StatusInternalServerError:
		s.log.Error("store call failed", "path", r.URL.Path, "err", err)
		msg = "Internal error."
	}
	s.render(w, r, status, web.ErrorPage(status, msg))
}
