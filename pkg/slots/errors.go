package slots

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors, every one a refusal (see Classify). Callers test them
// with errors.Is; the messages wrapping them say which pool, pod or task was
// involved.
var (
	ErrInvalidPool     = refusal("invalid pool")
	ErrInvalidPod      = refusal("invalid pod")
	ErrInvalidTask     = refusal("invalid task")
	ErrInvalidConfig   = refusal("invalid pool config")
	ErrPayloadTooLarge = refusal("payload too large")
	ErrNoSlotForType   = refusal("no slot in the policy runs this task type")

	ErrPoolNotFound    = refusal("pool not found")
	ErrPolicyChange    = refusal("slot policy cannot change while the pool has pods")
	ErrPodNotFound     = refusal("pod not found")
	ErrPodConflict     = refusal("pod name held by another incarnation")
	ErrTombstoned      = refusal("pod incarnation was removed")
	ErrNotExpected     = refusal("pod was not expected")
	ErrPodLost         = refusal("pod was declared lost")
	ErrPodState        = refusal("pod is not in a state that allows this")
	ErrPodBusy         = refusal("pod has running or reserved slots")
	ErrSelfCordoned    = refusal("pod was cordoned by its own stopping agent")
	ErrTaskNotFound    = refusal("task not found")
	ErrTaskConflict    = refusal("task id exists with another type")
	ErrQueueFull       = refusal("queue full")
	ErrStaleEpoch      = refusal("stale epoch")
	ErrNotReserved     = refusal("task is not reserved")
	ErrReservationLost = refusal("reservation lost")
	ErrTaskFinished    = refusal("task already finished")
	ErrNotStarted      = refusal("task phase was not started")
	ErrIncompatible    = refusal("redis holds an incompatible slotscaler data model")
	ErrPoolDeleting    = refusal("pool is being deleted")
)

// scriptErrors maps the codes Lua scripts return ("SSERR:<code> <detail>")
// to sentinels. Scripts validate before they write, so an error reply means
// nothing was written.
var scriptErrors = map[string]error{
	"nopool":       ErrPoolNotFound,
	"policy":       ErrPolicyChange,
	"nopod":        ErrPodNotFound,
	"conflict":     ErrPodConflict,
	"tombstoned":   ErrTombstoned,
	"notexpected":  ErrNotExpected,
	"lost":         ErrPodLost,
	"podstate":     ErrPodState,
	"busy":         ErrPodBusy,
	"selfcordoned": ErrSelfCordoned,
	"notask":       ErrTaskNotFound,
	"taskconflict": ErrTaskConflict,
	"full":         ErrQueueFull,
	"stale":        ErrStaleEpoch,
	"notreserved":  ErrNotReserved,
	"reslost":      ErrReservationLost,
	"finished":     ErrTaskFinished,
	"notstarted":   ErrNotStarted,
	"notype":       ErrNoSlotForType,
	"deleting":     ErrPoolDeleting,
}

// mapScriptError turns a script's error reply into a wrapped sentinel; other
// errors (network, context) pass through unchanged.
func mapScriptError(err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return err
	}
	msg := rerr.Error()
	i := strings.Index(msg, "SSERR:")
	if i < 0 {
		return err
	}
	code, detail, _ := strings.Cut(msg[i+len("SSERR:"):], " ")
	// Real Redis appends " script: <sha>, on @user_script:…" to error replies.
	if j := strings.Index(detail, " script:"); j >= 0 {
		detail = detail[:j]
	}
	if s, ok := scriptErrors[code]; ok {
		return &scriptError{sentinel: s, detail: detail, reply: err}
	}
	return err
}

// scriptError is a script's refusal: it matches its sentinel and, like any
// answer from Redis, redis.Error (so callers can tell it from a network
// failure, after which the script may or may not have run).
type scriptError struct {
	sentinel error
	detail   string
	reply    error
}

func (e *scriptError) Error() string {
	if e.detail == "" {
		return e.sentinel.Error()
	}
	return e.sentinel.Error() + ": " + e.detail
}

func (e *scriptError) Unwrap() []error { return []error{e.sentinel, e.reply} }

// refusalError is the type of every sentinel above, so that IsRefusal needs
// no list to keep in step with them.
type refusalError struct{ msg string }

func (e *refusalError) Error() string { return e.msg }

func refusal(msg string) error { return &refusalError{msg: msg} }

// Kind is what a failed store call means for its caller. It is the one
// classification of store errors: the agent, the scaler, the janitor and the
// dashboard all decide retry-or-give-up from it.
type Kind int

const (
	// KindNone: no error.
	KindNone Kind = iota
	// KindRefused: the store answered no (a script's refusal, or input
	// rejected before it reached Redis). Nothing was written, and the same
	// call gets the same answer until something else changes the store.
	KindRefused
	// KindUnavailable: no answer, or an answer that says "not now": the
	// network, a timeout, a closed or exhausted client, a server loading
	// its data or not a primary, a write no replica acknowledged,
	// credentials Redis does not accept (yet). The call
	// may or may not have taken effect; store calls are safe to retry.
	KindUnavailable
	// KindCanceled: the caller's context was canceled.
	KindCanceled
	// KindInternal: anything else: an unexpected reply, a bug.
	KindInternal
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "none"
	case KindRefused:
		return "refused"
	case KindUnavailable:
		return "unavailable"
	case KindCanceled:
		return "canceled"
	}
	return "internal"
}

// Classify says what err, returned by a Store method, means.
func Classify(err error) Kind {
	var ref *refusalError
	var ne net.Error
	switch {
	case err == nil:
		return KindNone
	case errors.As(err, &ref):
		return KindRefused
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, ErrNotReplicated),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		redis.IsLoadingError(err), redis.IsReadOnlyError(err), redis.IsMasterDownError(err),
		redis.IsClusterDownError(err), redis.IsTryAgainError(err),
		// Credentials not (yet) accepted: NOAUTH/WRONGPASS, or NOPERM.
		// With per-pool Redis users the janitor creates them, and creates
		// them again after Redis restarted without them: waiting is the way
		// on, as for a Redis that is down.
		redis.IsAuthError(err), redis.IsPermissionError(err):
		return KindUnavailable
	}
	return KindInternal
}

// IsRefusal reports whether the store answered no: retrying the same call
// will not help.
func IsRefusal(err error) bool { return Classify(err) == KindRefused }

// IsUnavailable reports whether the store gave no usable answer: the call
// may or may not have taken effect, and retrying it is the way on.
func IsUnavailable(err error) bool { return Classify(err) == KindUnavailable }
