package slots

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClassifyAnswersFromRedis classifies what real store calls return on
// every backend: a script's refusal, a refusal before Redis, a canceled
// caller and an error the store cannot explain.
func TestClassifyAnswersFromRedis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b string) {
		e := newEnv(t, b)
		canceled, cancel := context.WithCancel(e.ctx)
		cancel()
		cases := []struct {
			name string
			call func() error
			want Kind
		}{
			{"success", func() error { _, err := e.s.Stats(e.ctx, e.pool); return err }, KindNone},
			{"script refusal", func() error {
				_, err := e.s.Heartbeat(e.ctx, e.pool, "no-such-pod", "u", nil)
				return err
			}, KindRefused},
			{"undeclared pool", func() error {
				_, err := e.s.Submit(e.ctx, PoolID{Namespace: "ns", Name: "undeclared"}, TaskSpec{ID: "t", Type: Plan})
				return err
			}, KindRefused},
			{"invalid input", func() error { _, err := e.s.Stats(e.ctx, PoolID{Name: "Bad Name"}); return err }, KindRefused},
			{"canceled caller", func() error { _, err := e.s.Stats(canceled, e.pool); return err }, KindCanceled},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := c.call()
				assert.Equal(t, c.want, Classify(err), "%v", err)
				assert.Equal(t, c.want == KindRefused, IsRefusal(err))
				assert.False(t, IsUnavailable(err))
			})
		}
	})
}

func TestClassifyWrappedErrors(t *testing.T) {
	cases := []struct {
		err  error
		want Kind
	}{
		{fmt.Errorf("draining pod p: %w", ErrPodBusy), KindRefused},
		{fmt.Errorf("draining pod p: %w", ErrNotReplicated), KindUnavailable},
		{fmt.Errorf("reading: %w", context.DeadlineExceeded), KindUnavailable},
		{fmt.Errorf("reading: %w", context.Canceled), KindCanceled},
		{errors.New("unexpected reply"), KindInternal},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, Classify(c.err), "%v", c.err)
	}
	require.Equal(t, "refused", KindRefused.String())
}
