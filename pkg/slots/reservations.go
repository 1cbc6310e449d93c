package slots

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reservation is a plan_and_apply whose plan succeeded: it holds its slot
// and waits for a decision (approve, reject, cancel) until Until, when the
// reaper expires it.
type Reservation struct {
	Pool  PoolID
	Task  string
	Until time.Time
}

// Reservations lists the tasks awaiting approval in the given pools, each
// pool's in deadline order, with the Redis time they were read at (to say
// how long each has left). One pipelined round trip, read-only: a pool that
// does not exist has none.
func (s *Store) Reservations(ctx context.Context, pools ...PoolID) ([]Reservation, time.Time, error) {
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			return nil, time.Time{}, err
		}
	}
	pipe := s.rdb.Pipeline()
	now := pipe.Time(ctx)
	ranges := make([]*redis.ZSliceCmd, len(pools))
	for i, p := range pools {
		ranges[i] = pipe.ZRangeWithScores(ctx, s.base(p)+keyResv, 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, time.Time{}, fmt.Errorf("reading reservations of %d pools: %w", len(pools), err)
	}
	var out []Reservation
	for i, p := range pools {
		for _, z := range ranges[i].Val() {
			id, _ := z.Member.(string)
			out = append(out, Reservation{Pool: p, Task: id, Until: time.UnixMilli(int64(z.Score))})
		}
	}
	return out, now.Val(), nil
}
