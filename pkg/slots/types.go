package slots

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/capacity"
)

// PoolID names a pool: the namespace and name of its AgentPool. Two pools
// with the same name in different namespaces are different pools.
type PoolID struct {
	Namespace string
	Name      string
}

func (p PoolID) String() string { return p.Namespace + "/" + p.Name }

// ParsePoolID parses "namespace/name" and validates both parts.
func ParsePoolID(s string) (PoolID, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return PoolID{}, fmt.Errorf("%w: %q is not namespace/name", ErrInvalidPool, s)
	}
	p := PoolID{Namespace: ns, Name: name}
	return p, p.Validate()
}

// TaskType is what a task does. Every type has a plan phase; PlanAndApply
// also has an apply phase that runs, after approval, in the slot that ran the plan.
type TaskType string

const (
	Plan         TaskType = "plan"
	PlanAndApply TaskType = "plan_and_apply"
)

// TaskTypes lists every type the store knows, in a fixed order.
var TaskTypes = []TaskType{Plan, PlanAndApply}

// Phase is the part of a task a slot runs.
type Phase string

const (
	PhasePlan  Phase = "plan"
	PhaseApply Phase = "apply"
)

// TaskState is where a task is in its state machine.
type TaskState string

const (
	StateQueued    TaskState = "queued"
	StateRunning   TaskState = "running"
	StateReserved  TaskState = "reserved"
	StateSucceeded TaskState = "succeeded"
	StateFailed    TaskState = "failed"
	StateCancelled TaskState = "cancelled"
	StateRejected  TaskState = "rejected"
	StateExpired   TaskState = "expired"
)

// Terminal reports whether no further transition can happen.
func (s TaskState) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCancelled, StateRejected, StateExpired:
		return true
	}
	return false
}

// PodState is where a pod is in its lifecycle (README, "Pod lifecycle").
type PodState string

const (
	PodExpected PodState = "expected" // created by the janitor, agent not registered yet
	PodActive   PodState = "active"
	PodCordoned PodState = "cordoned" // no new work; reservations may still be approved
	PodDraining PodState = "draining" // proven idle; never gets work again
	PodLost     PodState = "lost"     // heartbeat expired; waits for the pod object to go
)

// CordonOwner says who cordoned a pod. The janitor lifts its own cordons
// when replicas rise; a stopping agent's cordon is never lifted.
type CordonOwner string

const (
	CordonedByJanitor CordonOwner = "janitor"
	CordonedByAgent   CordonOwner = "agent"
)

// Failure reasons the store itself records.
const (
	ReasonAgentLost       = "agent-lost"
	ReasonReservationLost = "reservation-lost"
	ReasonQueueAge        = "queue-age"
	ReasonReservationTTL  = "reservation-ttl"
	ReasonTimeout         = "timeout"
	ReasonExitCode        = "exit-code"
	ReasonPoolDeleted     = "pool-deleted"
)

// SlotPolicy lists, for each slot index of a pod, the task types it may run.
type SlotPolicy struct {
	Slots [][]TaskType
}

// DefaultPolicy is three slots: slot 0 runs anything, slots 1-2 only plans.
func DefaultPolicy() SlotPolicy {
	return SlotPolicy{Slots: [][]TaskType{{Plan, PlanAndApply}, {Plan}, {Plan}}}
}

// Class is a set of slots that run exactly the same task types.
type Class struct {
	Types  []TaskType
	PerPod int
}

// Classes groups the policy's slots by their (order-insensitive) type sets,
// in order of first appearance, and returns each slot's class index.
func (p SlotPolicy) Classes() (classes []Class, slotClass []int) {
	bySlot := make([][]string, len(p.Slots))
	for i, types := range p.Slots {
		for _, t := range types {
			bySlot[i] = append(bySlot[i], string(t))
		}
	}
	grouped, slotClass := capacity.ClassesOf(bySlot)
	classes = make([]Class, len(grouped))
	for i, c := range grouped {
		types := make([]TaskType, len(c.Types))
		for j, t := range c.Types {
			types[j] = TaskType(t)
		}
		classes[i] = Class{Types: types, PerPod: c.PerPod}
	}
	return classes, slotClass
}

// allocationOrder returns, for a task type, the classes that may run it with
// the most specific first (fewest allowed types), so a plan takes a plan-only
// slot before a slot 0 that could also serve a plan_and_apply.
func allocationOrder(classes []Class, t TaskType) []int {
	var order []int
	for i, c := range classes {
		if slices.Contains(c.Types, t) {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(classes[a].Types) - len(classes[b].Types) })
	return order
}

// PoolConfig is everything the store enforces for one pool.
type PoolConfig struct {
	Policy SlotPolicy
	// Managed pools accept registrations only against an expected pod record
	// written by the janitor; static pools let agents self-register.
	Managed bool
	// HeartbeatTimeout: an agent silent this long is lost.
	HeartbeatTimeout time.Duration
	// ReservationTTL: how long the slot that ran a plan_and_apply's plan
	// stays reserved waiting for approval.
	ReservationTTL time.Duration
	// MaxAttempts: how many times a plan phase may start before agent loss fails it.
	MaxAttempts int
	// QueueLimit: queued tasks beyond this are refused with ErrQueueFull.
	QueueLimit int
	// MaxQueueAge: a task waiting longer than this expires (0: never).
	MaxQueueAge time.Duration
	// Retention and RetentionCount bound how long and how many finished tasks are kept.
	Retention      time.Duration
	RetentionCount int
	// EventCap bounds the pool's event stream, approximately: Redis trims
	// whole stream nodes (100 entries), so up to ~100 more are kept.
	EventCap int
	// HPATolerance is the scale-up tolerance of the HPA in front of the
	// pool, as the janitor found it (zero: unknown). The scaler reads it
	// with every poll (Stats.HPATolerance).
	HPATolerance HPATolerance
}

// DefaultPoolConfig returns the defaults every field falls back to.
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{
		Policy:           DefaultPolicy(),
		Managed:          false,
		HeartbeatTimeout: 30 * time.Second,
		ReservationTTL:   time.Hour,
		MaxAttempts:      3,
		QueueLimit:       10000,
		MaxQueueAge:      0,
		Retention:        24 * time.Hour,
		RetentionCount:   10000,
		EventCap:         10000,
	}
}

// Task is a task as stored, with its history.
type Task struct {
	ID       string
	Pool     PoolID
	Type     TaskType
	State    TaskState
	Phase    Phase  // current or last phase
	Pod      string // pod holding it (running/reserved), or the last one
	Slot     int    // -1 when not in a slot
	Epoch    string
	Attempt  int // how many times the current phase started
	Started  bool
	Reason   string
	ExitCode int
	Output   string
	By       string // who approved, rejected or cancelled
	Payload  []byte
	Created  time.Time
	Updated  time.Time
	// CancelRequested is set while a cancel waits for the agent to stop the executor.
	CancelRequested bool
	// WorkspaceDigest is the digest of the task's workspace when its plan
	// ended (empty when the agent computed none): an apply runs only in a
	// workspace with this digest.
	WorkspaceDigest string
	History         []HistoryEntry
	// Note is what the last decision (approve, reject, cancel) added in
	// words; the history keeps every decision's note.
	Note string
	// SubmittedBy is who submitted the task ("" when unknown).
	SubmittedBy string
}

// HistoryEntry is one state change of a task.
type HistoryEntry struct {
	At     time.Time
	State  string
	Detail string
}
