package slots

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// ExpectPod records a pod the janitor created, before its agent registers.
// Idempotent for the same uid.
func (s *Store) ExpectPod(ctx context.Context, pool PoolID, pod, uid string) error {
	if err := validatePodUID(pod, uid); err != nil {
		return err
	}
	if _, err := s.run(ctx, "expect_pod", pool, pod, uid, ""); err != nil {
		return fmt.Errorf("expecting pod %s in %s: %w", pod, pool, err)
	}
	return nil
}

// ExpectStoppingPod writes the record of a terminating pod that has none
// (Redis lost it): its agent may register again with the work it still
// runs, into a cordon owned by the agent, so it never gets new work that
// would die with the pod.
func (s *Store) ExpectStoppingPod(ctx context.Context, pool PoolID, pod, uid string) error {
	if err := validatePodUID(pod, uid); err != nil {
		return err
	}
	if _, err := s.run(ctx, "expect_pod", pool, pod, uid, "1"); err != nil {
		return fmt.Errorf("expecting stopping pod %s in %s: %w", pod, pool, err)
	}
	return nil
}

// RegisterPod registers an agent. In managed pools only an expected record
// with the same uid is accepted. orphanSlots lists slots still running work
// Redis no longer knows (re-registration after Redis lost its data): they
// count as busy until a heartbeat no longer reports them. The pod's idle
// slots get queued work in the same script. Returns the pod's state.
func (s *Store) RegisterPod(ctx context.Context, pool PoolID, pod, uid string, orphanSlots ...int) (PodState, error) {
	return s.register(ctx, pool, pod, uid, false, orphanSlots)
}

// RegisterStoppingPod registers an agent that is stopping (it lost its
// record to data loss after SIGTERM) straight into a cordon it owns: its
// orphan slots finish, and no new work reaches it even for an instant.
func (s *Store) RegisterStoppingPod(ctx context.Context, pool PoolID, pod, uid string, orphanSlots ...int) (PodState, error) {
	return s.register(ctx, pool, pod, uid, true, orphanSlots)
}

func (s *Store) register(ctx context.Context, pool PoolID, pod, uid string, stopping bool, orphanSlots []int) (PodState, error) {
	if err := validatePodUID(pod, uid); err != nil {
		return "", err
	}
	os := make([]string, len(orphanSlots))
	for i, o := range orphanSlots {
		os[i] = strconv.Itoa(o)
	}
	flag := ""
	if stopping {
		flag = "1"
	}
	res, err := s.run(ctx, "register_pod", pool, pod, uid, strings.Join(os, ","), flag)
	if err != nil {
		return "", fmt.Errorf("registering pod %s in %s: %w", pod, pool, err)
	}
	st, _ := res.(string)
	s.log.Debug("pod registered", "pool", pool, "pod", pod, "uid", uid, "state", st)
	return PodState(st), nil
}

// RunningPhase is a phase an agent reports: claiming (Slot -1), running, or
// holding an unrecorded result for.
type RunningPhase struct {
	Slot  int
	Task  string
	Epoch string
}

// TaskRef names one assignment of a task.
type TaskRef struct {
	Task  string
	Epoch string
}

// HeartbeatReply tells the agent its pod's state and which executors to stop:
// phases it runs that Redis gave to nobody or to another epoch, and phases
// whose cancel was requested.
type HeartbeatReply struct {
	State PodState
	Stop  []TaskRef
}

// Heartbeat extends the pod's deadline and reconciles Redis with what the
// agent really runs: a started phase the agent does not report is lost (a
// plan requeued, an apply failed); orphan slots it no longer reports are
// freed; the reply lists reported phases the agent must stop.
//
// An unnumbered heartbeat judges by time: a phase is missing only if it
// started before the previous heartbeat reached Redis, which holds while
// heartbeats land in the order they were sent. An agent whose heartbeats
// can time out and land late uses HeartbeatNumbered.
func (s *Store) Heartbeat(ctx context.Context, pool PoolID, pod, uid string, running []RunningPhase) (HeartbeatReply, error) {
	return s.heartbeat(ctx, pool, pod, uid, 0, running)
}

// HeartbeatNumbered is Heartbeat for an agent that numbers its reports:
// seq grows with every report (and across restarts of the agent, e.g. from
// the clock), and the agent's Take claiming callback returned, for each
// phase, the first seq whose report includes it. A started phase is then
// judged missing only by a report numbered at least that: exact, whatever
// order heartbeats and claims land in (a heartbeat that timed out and lands
// after its successor, or after a claim, cannot lose a running phase).
func (s *Store) HeartbeatNumbered(ctx context.Context, pool PoolID, pod, uid string, seq int64, running []RunningPhase) (HeartbeatReply, error) {
	if seq <= 0 {
		return HeartbeatReply{}, fmt.Errorf("heartbeat of pod %s in %s: %w: report number %d must be positive", pod, pool, ErrInvalidPod, seq)
	}
	return s.heartbeat(ctx, pool, pod, uid, seq, running)
}

func (s *Store) heartbeat(ctx context.Context, pool PoolID, pod, uid string, seq int64, running []RunningPhase) (HeartbeatReply, error) {
	if err := validatePodUID(pod, uid); err != nil {
		return HeartbeatReply{}, err
	}
	args := []any{pod, uid, seq}
	for _, r := range running {
		args = append(args, strconv.Itoa(r.Slot)+"|"+r.Task+"|"+r.Epoch)
	}
	res, err := s.run(ctx, "heartbeat", pool, args...)
	if err != nil {
		return HeartbeatReply{}, fmt.Errorf("heartbeat of pod %s in %s: %w", pod, pool, err)
	}
	arr, _ := res.([]any)
	var reply HeartbeatReply
	for i, v := range arr {
		str, _ := v.(string)
		if i == 0 {
			reply.State = PodState(str)
			continue
		}
		id, ep, _ := strings.Cut(str, "|")
		reply.Stop = append(reply.Stop, TaskRef{Task: id, Epoch: ep})
	}
	return reply, nil
}

// Cordon stops new work reaching a pod. uid may be empty.
func (s *Store) Cordon(ctx context.Context, pool PoolID, pod, uid string) error {
	return s.podOp(ctx, "cordon", "cordoning", pool, pod, uid, string(CordonedByJanitor))
}

// CordonSelf is the cordon of a stopping agent: like Cordon, but owned by
// the agent, so Uncordon refuses to lift it (ErrSelfCordoned). It takes
// over a janitor's cordon.
func (s *Store) CordonSelf(ctx context.Context, pool PoolID, pod, uid string) error {
	return s.podOp(ctx, "cordon", "cordoning", pool, pod, uid, string(CordonedByAgent))
}

// Uncordon lets a cordoned pod take work again; its idle slots get queued
// work in the same script. A pod cordoned by its own stopping agent stays
// cordoned: ErrSelfCordoned.
func (s *Store) Uncordon(ctx context.Context, pool PoolID, pod, uid string) error {
	return s.podOp(ctx, "uncordon", "uncordoning", pool, pod, uid)
}

// Drain atomically proves a pod idle (no running, reserved or orphan slot)
// and takes it out of service for good: ErrPodBusy otherwise. Works on
// expected pods too. Only a drained pod may be deleted by the janitor.
func (s *Store) Drain(ctx context.Context, pool PoolID, pod, uid string) error {
	return s.podOp(ctx, "drain", "draining", pool, pod, uid)
}

// HandBack requeues the phases assigned to a pod that its agent has not
// started, without spending an attempt. A stopping agent calls it after
// Cordon. Returns the task ids handed back.
func (s *Store) HandBack(ctx context.Context, pool PoolID, pod, uid string) ([]string, error) {
	if err := validatePodUID(pod, uid); err != nil {
		return nil, err
	}
	res, err := s.run(ctx, "handback", pool, pod, uid)
	if err != nil {
		return nil, fmt.Errorf("handing back work of pod %s in %s: %w", pod, pool, err)
	}
	return toStrings(res), nil
}

// RemovePod deletes a pod's record once its pod object is gone: the uid is
// tombstoned (a later register or heartbeat is refused), plans it ran are
// requeued (or failed when out of attempts), applies and reservations fail.
// Idempotent: removing a tombstoned uid again succeeds.
func (s *Store) RemovePod(ctx context.Context, pool PoolID, pod, uid, reason string) error {
	if err := validatePod(pod, uid); err != nil {
		return err
	}
	if _, err := s.run(ctx, "remove_pod", pool, pod, uid, reason); err != nil {
		return fmt.Errorf("removing pod %s in %s: %w", pod, pool, err)
	}
	s.log.Info("pod removed", "pool", pool, "pod", pod, "uid", uid, "reason", reason)
	return nil
}

func (s *Store) podOp(ctx context.Context, script, verb string, pool PoolID, pod, uid string, args ...any) error {
	if err := validatePod(pod, uid); err != nil {
		return err
	}
	if _, err := s.run(ctx, script, pool, append([]any{pod, uid}, args...)...); err != nil {
		return fmt.Errorf("%s pod %s in %s: %w", verb, pod, pool, err)
	}
	return nil
}

func toStrings(res any) []string {
	arr, _ := res.([]any)
	out := make([]string, 0, len(arr))
	for _, v := range arr {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
