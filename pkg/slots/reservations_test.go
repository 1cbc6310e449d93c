package slots

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReservationsListsWhatAwaitsApproval(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b, func(c *PoolConfig) { c.ReservationTTL = time.Hour })
		uid := e.pod("agent-0")
		none, _, err := e.s.Reservations(e.ctx, e.pool, PoolID{Namespace: "team-a", Name: "undeclared"})
		require.NoError(t, err)
		assert.Empty(t, none)

		e.submit("pa", PlanAndApply)
		e.complete(e.take("agent-0", uid), OutcomeSuccess)
		e.submit("plan", Plan) // running, not reserved
		res, now, err := e.s.Reservations(e.ctx, e.pool)
		require.NoError(t, err)
		require.Len(t, res, 1)
		assert.Equal(t, Reservation{Pool: e.pool, Task: "pa", Until: res[0].Until}, res[0])
		left := res[0].Until.Sub(now)
		assert.True(t, left > 59*time.Minute && left <= time.Hour, "the reservation has its TTL left, has %v", left)

		require.NoError(t, e.s.Reject(e.ctx, e.pool, "pa", "bob"))
		res, _, err = e.s.Reservations(e.ctx, e.pool)
		require.NoError(t, err)
		assert.Empty(t, res, "a decided task no longer waits")

		_, _, err = e.s.Reservations(e.ctx, PoolID{Namespace: "Bad_NS", Name: "x"})
		assert.ErrorIs(t, err, ErrInvalidPool)
	})
}
