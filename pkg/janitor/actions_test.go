package janitor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The result labels of the errors each action can get, as operators have
// read them: only the store's guards are "refused", only a drain no replica
// acknowledged is "not-replicated".
func TestResultOf(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("draining pod a in team/pool-a: %w", err) }
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, resultSuccess},
		{wrap(slots.ErrPodBusy), resultRefused},
		{wrap(slots.ErrSelfCordoned), resultRefused},
		{wrap(fmt.Errorf("%w (1 replicas connected, waited 5s)", slots.ErrNotReplicated)), resultNotReplicated},
		{wrap(slots.ErrTombstoned), resultError},
		{wrap(slots.ErrPodState), resultError},
		{wrap(slots.ErrPodConflict), resultError},
		{wrap(slots.ErrPodNotFound), resultError},
		{wrap(slots.ErrPoolNotFound), resultError},
		{wrap(slots.ErrInvalidPod), resultError},
		{wrap(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), resultError},
		{wrap(context.Canceled), resultError},
		{wrap(context.DeadlineExceeded), resultError},
		{fmt.Errorf("creating pod a: %w", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "a", errors.New("quota"))), resultError},
		{errors.New("unexpected reply"), resultError},
	} {
		require.Equal(t, tc.want, resultOf(tc.err), "%v", tc.err)
	}
}
