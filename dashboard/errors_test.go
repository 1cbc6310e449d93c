package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// TestErrorStatusMapsEachStoreError feeds errorStatus the errors a store
// really returns where they can be had (a refusal, a killed Redis, a closed
// client, an expired deadline) and wrapped sentinels for the rest, as the
// store wraps them.
func TestErrorStatusMapsEachStoreError(t *testing.T) {
	srv := redistest.Start(t)
	f := newFixtureOn(t, srv.URL())
	f.submit("t1", slots.Plan)

	_, refused := f.store.Task(f.ctx, f.pool, "missing")
	require.Error(t, refused)
	expired, cancel := context.WithDeadline(f.ctx, time.Now().Add(-time.Second))
	defer cancel()
	_, late := f.store.Task(expired, f.pool, "t1")
	require.Error(t, late)
	canceled, cancelNow := context.WithCancel(f.ctx)
	cancelNow()
	_, gone := f.store.Task(canceled, f.pool, "t1")
	require.Error(t, gone)
	closed := closedClientError(t)

	srv.Kill(t)
	_, down := f.store.Task(f.ctx, f.pool, "t1")
	require.Error(t, down)
	_, downStats := f.store.Stats(f.ctx, f.pool)
	require.Error(t, downStats)

	wrap := func(sentinel error) error { return fmt.Errorf("pool ci/terraform: %w", sentinel) }
	tests := map[string]struct {
		err      error
		want     int
		wantCode string
	}{
		"invalid pool":          {wrap(slots.ErrInvalidPool), http.StatusBadRequest, "invalid_pool"},
		"invalid task":          {wrap(slots.ErrInvalidTask), http.StatusBadRequest, "invalid_task"},
		"payload too large":     {wrap(slots.ErrPayloadTooLarge), http.StatusBadRequest, "payload_too_large"},
		"no slot for type":      {wrap(slots.ErrNoSlotForType), http.StatusBadRequest, "no_slot_for_type"},
		"pool not found":        {wrap(slots.ErrPoolNotFound), http.StatusNotFound, "pool_not_found"},
		"task not found":        {refused, http.StatusNotFound, "task_not_found"},
		"reservation lost":      {wrap(slots.ErrReservationLost), http.StatusConflict, "reservation_lost"},
		"not reserved":          {wrap(slots.ErrNotReserved), http.StatusConflict, "not_reserved"},
		"task finished":         {wrap(slots.ErrTaskFinished), http.StatusConflict, "task_finished"},
		"task conflict":         {wrap(slots.ErrTaskConflict), http.StatusConflict, "task_conflict"},
		"pool deleting":         {wrap(slots.ErrPoolDeleting), http.StatusConflict, "pool_deleting"},
		"pod lost":              {wrap(slots.ErrPodLost), http.StatusConflict, "pod_state"},
		"pod state":             {wrap(slots.ErrPodState), http.StatusConflict, "pod_state"},
		"queue full":            {wrap(slots.ErrQueueFull), http.StatusTooManyRequests, "queue_full"},
		"redis killed":          {down, http.StatusServiceUnavailable, "redis_unavailable"},
		"redis killed, stats":   {downStats, http.StatusServiceUnavailable, "redis_unavailable"},
		"client closed":         {closed, http.StatusServiceUnavailable, "redis_unavailable"},
		"deadline passed":       {late, http.StatusServiceUnavailable, "redis_unavailable"},
		"client pool exhausted": {fmt.Errorf("reading task: %w", redis.ErrPoolTimeout), http.StatusServiceUnavailable, "redis_unavailable"},
		"caller went away":      {gone, http.StatusInternalServerError, "internal"},
		"anything else":         {errors.New("unexpected reply"), http.StatusInternalServerError, "internal"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, code := errorStatus(tc.err)
			assert.Equal(t, tc.want, status, "err: %v", tc.err)
			assert.Equal(t, tc.wantCode, code, "err: %v", tc.err)
		})
	}
}

// closedClientError is what a store call returns once its client is closed
// (a dashboard shutting down while a request is still being served).
func closedClientError(t *testing.T) error {
	t.Helper()
	opt, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: redistest.Prefix(t), MaxPayload: testMaxPayload, Logger: quiet()})
	require.NoError(t, err)
	require.NoError(t, rdb.Close())
	_, err = store.Task(t.Context(), slots.PoolID{Namespace: "ci", Name: "terraform"}, "t1")
	require.Error(t, err)
	return err
}
