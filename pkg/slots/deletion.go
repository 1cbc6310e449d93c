package slots

import (
	"context"
	"fmt"
	"time"
)

// deletionBatch bounds the work of one deletion script (queued tasks failed,
// finished tasks purged), so deleting a pool with a long queue or a long
// history never stalls other pools' scripts.
const deletionBatch = 500

// Deletion is where a pool's deletion stands (BeginDeletion).
type Deletion struct {
	// Since is when the deletion began, on Redis's clock.
	Since time.Time
	// FailedQueued is how many queued tasks this call failed with
	// ReasonPoolDeleted.
	FailedQueued int
	// Pods and BusyPods count the pool's pod records and those with a
	// running, assigned or reserved slot.
	Pods, BusyPods int
}

// BeginDeletion marks a pool as being deleted (idempotent: the first call's
// time stays) and fails every queued task with ReasonPoolDeleted. From then
// on Submit refuses new tasks (ErrPoolDeleting); running phases go on and
// reservations may still be decided. ErrPoolNotFound: Redis has no state of
// the pool (never declared, already purged, or lost).
func (s *Store) BeginDeletion(ctx context.Context, pool PoolID) (Deletion, error) {
	var d Deletion
	for {
		res, err := s.run(ctx, "delete_pool", pool, deletionBatch)
		if err != nil {
			return d, fmt.Errorf("deleting pool %s: %w", pool, err)
		}
		arr, _ := res.([]any)
		if len(arr) != 5 {
			return d, fmt.Errorf("deleting pool %s: unexpected reply %v", pool, res)
		}
		d.FailedQueued += int(asInt(arr[0]))
		d.Pods, d.BusyPods = int(asInt(arr[2])), int(asInt(arr[3]))
		d.Since = time.UnixMilli(asInt(arr[4]))
		if asInt(arr[1]) == 0 {
			return d, nil
		}
	}
}

// Abandon ends a deleting pool's work on one pod once the deletion timed
// out: its running phases and reservation fail with ReasonPoolDeleted and
// its slots are freed (a cordoned pod stays cordoned; an active one is
// cordoned), so the pod can be drained and deleted. It returns the task ids
// it ended. ErrPodState when the pool is not being deleted.
func (s *Store) Abandon(ctx context.Context, pool PoolID, pod, uid string) ([]string, error) {
	if err := validatePodUID(pod, uid); err != nil {
		return nil, err
	}
	res, err := s.run(ctx, "abandon", pool, pod, uid)
	if err != nil {
		return nil, fmt.Errorf("abandoning the work of pod %s in %s: %w", pod, pool, err)
	}
	return toStrings(res), nil
}

// Purge deletes a deleting pool's state once it has no pod records, in
// bounded batches, and takes it out of the pool registry. It returns how
// many finished tasks it deleted. ErrPodBusy while pods remain; ErrPodState
// when the pool is not being deleted. Purging a pool already gone is a
// no-op.
func (s *Store) Purge(ctx context.Context, pool PoolID) (int, error) {
	total := 0
	for {
		res, err := s.run(ctx, "purge", pool, deletionBatch)
		if err != nil {
			return total, fmt.Errorf("purging pool %s: %w", pool, err)
		}
		arr, _ := res.([]any)
		if len(arr) != 2 {
			return total, fmt.Errorf("purging pool %s: unexpected reply %v", pool, res)
		}
		total += int(asInt(arr[0]))
		if asInt(arr[1]) == 0 {
			break
		}
	}
	// The registry is another key (another Cluster slot): removed last, so
	// a purge interrupted before it is found and finished again.
	if err := s.rdb.SRem(ctx, s.poolsKey(), pool.String()).Err(); err != nil {
		return total, fmt.Errorf("purging pool %s: removing it from the registry: %w", pool, err)
	}
	s.log.Info("pool purged", "pool", pool, "tasks", total)
	return total, nil
}
