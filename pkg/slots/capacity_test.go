package slots

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/capacity"
)

// TestCapacityFromLiveCounters runs the adapter on counters the store
// really keeps: slot 0s occupied by plans while a plan_and_apply waits
// needs one more pod; the busy pods' free plan slots cannot take it.
func TestCapacityFromLiveCounters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		e.pod("agent-0")
		e.pod("agent-1")
		for i := 0; i < 6; i++ {
			e.submit(fmt.Sprintf("plan-%d", i), Plan)
		}
		e.submit("pa", PlanAndApply)
		st := e.stats()
		in := CapacityInput(e.cfg, st, 0)
		assert.Equal(t, 2, in.BusyPods)
		assert.Equal(t, []int{0, 0}, in.FreeOnBusy)
		assert.Equal(t, map[string]int{"plan": 0, "plan_and_apply": 1}, in.Queued)
		res, err := capacity.Desired(in)
		require.NoError(t, err)
		assert.Equal(t, 3, res.Desired)
		assert.True(t, res.Active)
		assert.Equal(t, 2, st.LivePods())
	})
}
