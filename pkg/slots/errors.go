package slots

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Sentinel errors. Callers test them with errors.Is; the messages wrapping
// them say which pool, pod or task was involved.
var (
	ErrInvalidPool     = errors.New("invalid pool")
	ErrInvalidPod      = errors.New("invalid pod")
	ErrInvalidTask     = errors.New("invalid task")
	ErrInvalidConfig   = errors.New("invalid pool config")
	ErrPayloadTooLarge = errors.New("payload too large")
	ErrNoSlotForType   = errors.New("no slot in the policy runs this task type")

	ErrPoolNotFound    = errors.New("pool not found")
	ErrPolicyChange    = errors.New("slot policy cannot change while the pool has pods")
	ErrPodNotFound     = errors.New("pod not found")
	ErrPodConflict     = errors.New("pod name held by another incarnation")
	ErrTombstoned      = errors.New("pod incarnation was removed")
	ErrNotExpected     = errors.New("pod was not expected")
	ErrPodLost         = errors.New("pod was declared lost")
	ErrPodState        = errors.New("pod is not in a state that allows this")
	ErrPodBusy         = errors.New("pod has running or reserved slots")
	ErrSelfCordoned    = errors.New("pod was cordoned by its own stopping agent")
	ErrTaskNotFound    = errors.New("task not found")
	ErrTaskConflict    = errors.New("task id exists with another type")
	ErrQueueFull       = errors.New("queue full")
	ErrStaleEpoch      = errors.New("stale epoch")
	ErrNotReserved     = errors.New("task is not reserved")
	ErrReservationLost = errors.New("reservation lost")
	ErrTaskFinished    = errors.New("task already finished")
	ErrNotStarted      = errors.New("task phase was not started")
	ErrIncompatible    = errors.New("redis holds an incompatible slotscaler data model")
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
