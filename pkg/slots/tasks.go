package slots

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TaskSpec is what a platform submits.
type TaskSpec struct {
	ID      string
	Type    TaskType
	Payload []byte
	// SubmittedBy is who submitted (the dashboard's authenticated
	// identity); "" when unknown. Kept with the task, so a pool may refuse
	// that the submitter approve their own task.
	SubmittedBy string
}

// SubmitResult says what Submit did: Created is false when the id existed
// (submit is idempotent by id). Pod and Slot are set when the task runs.
type SubmitResult struct {
	Created bool
	State   TaskState
	Epoch   string
	Pod     string
	Slot    int
}

// Submit creates a task and runs its plan phase in the best idle slot (the
// most specific slot class, then the oldest pod), or queues it. A queue at
// its limit refuses with ErrQueueFull.
func (s *Store) Submit(ctx context.Context, pool PoolID, spec TaskSpec) (SubmitResult, error) {
	if err := ValidateTaskID(spec.ID); err != nil {
		return SubmitResult{}, err
	}
	if err := ValidateTaskType(spec.Type); err != nil {
		return SubmitResult{}, err
	}
	if len(spec.Payload) > s.maxPayload {
		return SubmitResult{}, fmt.Errorf("%w: task %s payload is %d bytes, limit %d", ErrPayloadTooLarge, spec.ID, len(spec.Payload), s.maxPayload)
	}
	if err := validateActor(spec.SubmittedBy); err != nil {
		return SubmitResult{}, err
	}
	res, err := s.run(ctx, "submit", pool, spec.ID, string(spec.Type), spec.Payload, spec.SubmittedBy)
	if err != nil {
		return SubmitResult{}, fmt.Errorf("submitting task %s to %s: %w", spec.ID, pool, err)
	}
	f := toStrings(res)
	if len(f) != 5 {
		return SubmitResult{}, fmt.Errorf("submitting task %s to %s: unexpected reply %v", spec.ID, pool, res)
	}
	out := SubmitResult{Created: f[0] == "created", State: TaskState(f[1]), Epoch: f[2], Pod: f[3], Slot: -1}
	if f[4] != "" {
		out.Slot, _ = strconv.Atoi(f[4])
	}
	return out, nil
}

// MessageKind says what an inbox message asks of the agent.
type MessageKind int

const (
	// MsgAssignment: run a phase (already claimed: it counts as started).
	MsgAssignment MessageKind = iota + 1
	// MsgCancel: stop the executor of a running phase, then Complete it as cancelled.
	MsgCancel
)

// Message is one inbox entry.
type Message struct {
	Kind       MessageKind
	Task       string
	Epoch      string
	Assignment *Assignment // for MsgAssignment
}

// Assignment is a phase the agent must run now.
type Assignment struct {
	Task    string
	Type    TaskType
	Phase   Phase
	Slot    int
	Attempt int
	Epoch   string
	Payload []byte
	// WorkspaceDigest is, for an apply, the digest of the plan's workspace
	// the store kept with the task (Result.WorkspaceDigest); the agent
	// checks the workspace against it before it runs the apply.
	WorkspaceDigest string
}

// Take waits up to wait for the pod's next inbox message: one blocking
// reader per pod, not per slot. An assignment is claimed (validated against
// its epoch and marked started) before it is returned; a stale one is
// dropped and Take returns (nil, nil), as it does when nothing arrived.
// Redis blocks in whole seconds here (go-redis), so wait is rounded up to
// at least one second.
//
// claiming, when not nil, is called with an assignment before it is claimed:
// the agent adds it to what its heartbeats report (slot -1) and returns the
// number of the first report that includes it (HeartbeatNumbered; 0 if it
// does not number reports), so no heartbeat racing the claim, or landing
// late, reports the phase missing. If Take then returns no assignment for
// it, the agent drops it again.
//
// A claim whose reply was lost (network, deadline) is claimed again by the
// next Take of this pod with the same entry; claim.lua answers a claim that
// had landed with the same assignment, so the caller learns the outcome
// from Take alone and must not look it up another way (it would run the
// phase twice).
func (s *Store) Take(ctx context.Context, pool PoolID, pod, uid string, wait time.Duration, claiming func(TaskRef) int64) (*Message, error) {
	if err := validatePodUID(pod, uid); err != nil {
		return nil, err
	}
	wait = max(wait.Round(time.Second), time.Second)
	base := s.base(pool)
	proc := base + keyProc + pod
	// An entry left in the processing list by a claim that never reached
	// Redis comes first. Only the first take of a pod in this process, and
	// one after a failed claim, can find one: others skip the round trip.
	var entry string
	var err error = redis.Nil
	if e, ok := s.retryClaim.LoadAndDelete(proc); ok {
		// The previous claim of this entry may have landed with its reply
		// lost: claim it again (idempotent for this pod and epoch).
		entry, err = e.(string), nil
	} else if _, clean := s.procClean.Load(proc); !clean {
		entry, err = s.rdb.LIndex(ctx, proc, 0).Result()
		if errors.Is(err, redis.Nil) {
			s.procClean.Store(proc, struct{}{})
		}
	}
	if errors.Is(err, redis.Nil) {
		entry, err = s.rdb.BLMove(ctx, base+keyInbox+pod, proc, "LEFT", "RIGHT", wait).Result()
		if err != nil {
			// A move whose reply was lost (a deadline; or a broken
			// connection, which go-redis answers by sending BLMOVE again, so
			// the retry moves the next entry or none) leaves an entry in the
			// processing list that no reply named: look there next time.
			// After an empty wait this costs one LINDEX per idle wait.
			s.procClean.Delete(proc)
		}
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("taking from inbox of pod %s in %s: %w", pod, pool, err)
	}
	kind, rest, _ := strings.Cut(entry, "|")
	id, epoch, _ := strings.Cut(rest, "|")
	switch kind {
	case "c":
		// Cancels are rare: look at the processing list again after one
		// rather than count what it holds.
		s.procClean.Delete(proc)
		if err := s.rdb.LRem(ctx, proc, 1, entry).Err(); err != nil {
			return nil, fmt.Errorf("acknowledging cancel of task %s on pod %s: %w", id, pod, err)
		}
		return &Message{Kind: MsgCancel, Task: id, Epoch: epoch}, nil
	case "a":
		var hbs int64
		if claiming != nil {
			hbs = claiming(TaskRef{Task: id, Epoch: epoch})
		}
		res, _, err := s.replicatedRun(ctx, s.claimWait, "claim", pool, pod, uid, id, epoch, entry, hbs)
		if err != nil {
			s.procClean.Delete(proc)
			if !IsRefusal(err) {
				// No answer (network, deadline), or an answer no replica has
				// yet: the claim may have run, or may not survive a failover.
				// The next Take claims this very entry again (idempotent) and
				// waits for a replica again.
				s.retryClaim.Store(proc, entry)
			}
			return nil, fmt.Errorf("claiming task %s on pod %s in %s: %w", id, pod, pool, err)
		}
		arr, _ := res.([]any)
		if len(arr) > 0 && asInt(arr[len(arr)-1]) > 0 {
			s.procClean.Delete(proc) // an entry whose move reply was lost waits there
		}
		if len(arr) == 2 && asString(arr[0]) == "" {
			s.log.Debug("dropped stale inbox entry", "pool", pool, "pod", pod, "task", id, "epoch", epoch)
			return nil, nil
		}
		if len(arr) != 7 {
			return nil, fmt.Errorf("claiming task %s: unexpected reply %v", id, res)
		}
		a := &Assignment{Task: id, Epoch: epoch}
		a.Type = TaskType(asString(arr[0]))
		a.Phase = Phase(asString(arr[1]))
		a.Slot, _ = strconv.Atoi(asString(arr[2]))
		a.Attempt = int(asInt(arr[3]))
		a.Payload = []byte(asString(arr[4]))
		a.WorkspaceDigest = asString(arr[6])
		return &Message{Kind: MsgAssignment, Task: id, Epoch: epoch, Assignment: a}, nil
	default:
		// Not ours to interpret: drop it rather than block the inbox forever.
		s.log.Warn("dropping malformed inbox entry", "pool", pool, "pod", pod, "entry", entry)
		if err := s.rdb.LRem(ctx, proc, 1, entry).Err(); err != nil {
			s.procClean.Delete(proc)
			return nil, fmt.Errorf("dropping malformed entry on pod %s: %w", pod, err)
		}
		return nil, nil
	}
}

// Outcome is how a phase ended.
type Outcome string

const (
	OutcomeSuccess   Outcome = "success"
	OutcomeFailure   Outcome = "failure"
	OutcomeTimeout   Outcome = "timeout"
	OutcomeCancelled Outcome = "cancelled"
)

// Result is what an agent reports when a phase ends.
type Result struct {
	Task     string
	Epoch    string
	Outcome  Outcome
	ExitCode int
	Reason   string // for failures; "exit-code" when empty
	Output   []byte // the tail is kept, up to the store's MaxOutput
	// WorkspaceDigest is the digest of the task's workspace when a plan
	// ended (empty when not computed); kept with the task for the apply.
	WorkspaceDigest string
}

// MaxWorkspaceDigest bounds Result.WorkspaceDigest.
const MaxWorkspaceDigest = 128

// Complete records the outcome of a started phase and returns the task's
// new state: reserved after a successful plan of a plan_and_apply, else
// terminal with the slot freed and given queued work in the same script. A
// repeat with an epoch already recorded returns the first outcome; any
// other epoch is ErrStaleEpoch.
func (s *Store) Complete(ctx context.Context, pool PoolID, r Result) (TaskState, error) {
	if err := ValidateTaskID(r.Task); err != nil {
		return "", err
	}
	switch r.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeTimeout, OutcomeCancelled:
	default:
		return "", fmt.Errorf("%w: task %s: unknown outcome %q", ErrInvalidTask, r.Task, r.Outcome)
	}
	if r.Epoch == "" {
		return "", fmt.Errorf("%w: task %s: epoch is required", ErrInvalidTask, r.Task)
	}
	if len(r.WorkspaceDigest) > MaxWorkspaceDigest {
		return "", fmt.Errorf("%w: task %s: workspace digest is %d bytes, limit %d", ErrInvalidTask, r.Task, len(r.WorkspaceDigest), MaxWorkspaceDigest)
	}
	out := r.Output
	if len(out) > s.maxOutput {
		out = out[len(out)-s.maxOutput:]
	}
	res, err := s.run(ctx, "complete", pool, r.Task, r.Epoch, string(r.Outcome), r.ExitCode, r.Reason, out, r.WorkspaceDigest)
	if err != nil {
		return "", fmt.Errorf("completing task %s epoch %s in %s: %w", r.Task, r.Epoch, pool, err)
	}
	return TaskState(asString(res)), nil
}

// Decision is a person's (or a system's) decision about a task: approve,
// reject or cancel. By is who decided; Note is what they add (a reject's
// reason, a ticket). The note is free text: it is kept in the task's own
// note field and in its history, never in Reason, which stays a short
// machine-readable code.
type Decision struct {
	By   string
	Note string
}

func (d Decision) validate() error {
	if err := validateActor(d.By); err != nil {
		return err
	}
	return validateNote(d.Note)
}

// Approve runs the apply of a reserved task in the slot that ran its plan
// (also on a cordoned pod). A reservation that ended is ErrReservationLost or
// ErrNotReserved. Returns the apply's epoch.
func (s *Store) Approve(ctx context.Context, pool PoolID, task, by string) (string, error) {
	return s.ApproveWith(ctx, pool, task, Decision{By: by})
}

// ApproveWith is Approve with a note kept with the decision.
func (s *Store) ApproveWith(ctx context.Context, pool PoolID, task string, d Decision) (string, error) {
	if err := ValidateTaskID(task); err != nil {
		return "", err
	}
	if err := d.validate(); err != nil {
		return "", err
	}
	res, err := s.run(ctx, "approve", pool, task, d.By, d.Note)
	if err != nil {
		return "", fmt.Errorf("approving task %s in %s: %w", task, pool, err)
	}
	f := toStrings(res)
	if len(f) < 1 {
		return "", fmt.Errorf("approving task %s: unexpected reply %v", task, res)
	}
	s.log.Info("task approved", "pool", pool, "task", task, "by", d.By, "epoch", f[0])
	return f[0], nil
}

// Reject ends a reservation without applying; the slot is freed.
func (s *Store) Reject(ctx context.Context, pool PoolID, task, by string) error {
	return s.RejectWith(ctx, pool, task, Decision{By: by})
}

// RejectWith is Reject with a note (the rejection's reason, in words).
func (s *Store) RejectWith(ctx context.Context, pool PoolID, task string, d Decision) error {
	return s.endReservation(ctx, pool, task, d, "reject", "")
}

// ReleaseReservation lets a stopping agent give a reservation up: the task
// fails with reason (e.g. "agent-shutdown") and the slot is freed.
func (s *Store) ReleaseReservation(ctx context.Context, pool PoolID, task, reason string) error {
	return s.endReservation(ctx, pool, task, Decision{By: "agent"}, "release", reason)
}

func (s *Store) endReservation(ctx context.Context, pool PoolID, task string, d Decision, mode, reason string) error {
	if err := ValidateTaskID(task); err != nil {
		return err
	}
	if err := d.validate(); err != nil {
		return err
	}
	if _, err := s.run(ctx, "reject", pool, task, d.By, mode, reason, d.Note); err != nil {
		return fmt.Errorf("ending reservation of task %s in %s (%s): %w", task, pool, mode, err)
	}
	s.log.Info("reservation ended", "pool", pool, "task", task, "by", d.By, "mode", mode, "reason", reason)
	return nil
}

// Cancel ends a queued, unstarted or reserved task now (StateCancelled), or
// asks the agent running it to stop the executor (returns StateRunning; the
// task becomes cancelled when the agent completes it). A finished task is
// ErrTaskFinished.
func (s *Store) Cancel(ctx context.Context, pool PoolID, task, by string) (TaskState, error) {
	return s.CancelWith(ctx, pool, task, Decision{By: by})
}

// CancelWith is Cancel with a note kept with the decision.
func (s *Store) CancelWith(ctx context.Context, pool PoolID, task string, d Decision) (TaskState, error) {
	if err := ValidateTaskID(task); err != nil {
		return "", err
	}
	if err := d.validate(); err != nil {
		return "", err
	}
	res, err := s.run(ctx, "cancel", pool, task, d.By, d.Note)
	if err != nil {
		return "", fmt.Errorf("cancelling task %s in %s: %w", task, pool, err)
	}
	if asString(res) == "cancelling" {
		return StateRunning, nil
	}
	return StateCancelled, nil
}

// Task returns a task with its history.
func (s *Store) Task(ctx context.Context, pool PoolID, id string) (Task, error) {
	if err := pool.Validate(); err != nil {
		return Task{}, err
	}
	if err := ValidateTaskID(id); err != nil {
		return Task{}, err
	}
	pipe := s.rdb.Pipeline()
	rd := s.queueTask(ctx, pipe, pool, id)
	if _, err := pipe.Exec(ctx); err != nil {
		return Task{}, fmt.Errorf("reading task %s in %s: %w", id, pool, err)
	}
	return rd.task()
}

// TaskKey names a task of a pool.
type TaskKey struct {
	Pool PoolID
	ID   string
}

// Tasks reads several tasks with their histories in one pipeline (one
// round trip per Redis node), in the order asked. A task that is gone
// (purged, or its pool deleted) is left out.
func (s *Store) Tasks(ctx context.Context, keys []TaskKey) ([]Task, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	reads := make([]taskRead, 0, len(keys))
	for _, k := range keys {
		if err := k.Pool.Validate(); err != nil {
			return nil, err
		}
		if err := ValidateTaskID(k.ID); err != nil {
			return nil, err
		}
		reads = append(reads, s.queueTask(ctx, pipe, k.Pool, k.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading %d tasks: %w", len(keys), err)
	}
	out := make([]Task, 0, len(reads))
	for _, rd := range reads {
		t, err := rd.task()
		if errors.Is(err, ErrTaskNotFound) || errors.Is(err, ErrPoolNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// taskRead is one task's reads queued on a pipeline.
type taskRead struct {
	pool PoolID
	id   string
	pc   *redis.IntCmd
	hc   *redis.MapStringStringCmd
	lc   *redis.StringSliceCmd
}

func (s *Store) queueTask(ctx context.Context, pipe redis.Pipeliner, pool PoolID, id string) taskRead {
	base := s.base(pool)
	return taskRead{pool: pool, id: id,
		pc: pipe.Exists(ctx, base+keyCfg),
		hc: pipe.HGetAll(ctx, base+keyTask+id),
		lc: pipe.LRange(ctx, base+keyHistory+id, 0, -1)}
}

// task decodes the reads once the pipeline ran.
func (rd taskRead) task() (Task, error) {
	id, pool := rd.id, rd.pool
	if rd.pc.Val() == 0 {
		return Task{}, fmt.Errorf("%w: %s", ErrPoolNotFound, pool)
	}
	h := rd.hc.Val()
	if len(h) == 0 || h["type"] == "" {
		return Task{}, fmt.Errorf("%w: %s in %s", ErrTaskNotFound, id, pool)
	}
	t := Task{
		ID:              id,
		Pool:            pool,
		Type:            TaskType(h["type"]),
		State:           TaskState(h["st"]),
		Phase:           Phase(h["phase"]),
		Pod:             h["pod"],
		Slot:            -1,
		Epoch:           h["ep"],
		Started:         h["started"] == "1",
		Reason:          h["reason"],
		Output:          h["out"],
		By:              h["by"],
		Note:            h["note"],
		SubmittedBy:     h["sub"],
		Payload:         []byte(h["payload"]),
		CancelRequested: h["cx"] == "1",
		WorkspaceDigest: h["wsd"],
		Created:         msTime(h["created"]),
		Updated:         msTime(h["upd"]),
	}
	if h["slot"] != "" {
		t.Slot, _ = strconv.Atoi(h["slot"])
	}
	t.Attempt, _ = strconv.Atoi(h["attempt"])
	t.ExitCode, _ = strconv.Atoi(h["exit"])
	for _, e := range rd.lc.Val() {
		parts := strings.SplitN(e, "|", 3)
		if len(parts) != 3 {
			continue
		}
		t.History = append(t.History, HistoryEntry{At: msTime(parts[0]), State: parts[1], Detail: parts[2]})
	}
	return t, nil
}

// TaskPlacement is where a task stands: its state, its current phase and
// the pod holding it (or the last one), in one HMGET, a command an agent's
// pool user may send. An agent holding a reservation asks it to learn
// whether the reservation ended without an apply on its pod.
type TaskPlacement struct {
	State TaskState
	Phase Phase
	Pod   string
}

// Placement reads a task's TaskPlacement; ErrTaskNotFound when it is gone.
func (s *Store) Placement(ctx context.Context, pool PoolID, id string) (TaskPlacement, error) {
	if err := pool.Validate(); err != nil {
		return TaskPlacement{}, err
	}
	if err := ValidateTaskID(id); err != nil {
		return TaskPlacement{}, err
	}
	v, err := s.rdb.HMGet(ctx, s.base(pool)+keyTask+id, "st", "phase", "pod").Result()
	if err != nil {
		return TaskPlacement{}, fmt.Errorf("reading where task %s in %s stands: %w", id, pool, err)
	}
	if len(v) != 3 || asString(v[0]) == "" {
		return TaskPlacement{}, fmt.Errorf("%w: %s in %s", ErrTaskNotFound, id, pool)
	}
	return TaskPlacement{State: TaskState(asString(v[0])), Phase: Phase(asString(v[1])), Pod: asString(v[2])}, nil
}

func msTime(s string) time.Time {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}
