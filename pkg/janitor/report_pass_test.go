package janitor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// countingReports counts the reports written to the real store, and fails
// every call while down is set (Redis unreachable).
type countingReports struct {
	store  *janitorreport.Store
	writes atomic.Int32
	down   atomic.Bool
}

var errRedisDown = errors.New("dial tcp: connection refused")

func (r *countingReports) Write(ctx context.Context, pool slots.PoolID, rep janitorreport.Report) error {
	if r.down.Load() {
		return errRedisDown
	}
	r.writes.Add(1)
	return r.store.Write(ctx, pool, rep)
}

func (r *countingReports) Read(ctx context.Context, pool slots.PoolID) (janitorreport.Report, bool, error) {
	if r.down.Load() {
		return janitorreport.Report{}, false, errRedisDown
	}
	return r.store.Read(ctx, pool)
}

func newReportEnv(t *testing.T, replicas int32) (*passEnv, *countingReports) {
	t.Helper()
	e := newPassEnv(t, testPool(replicas))
	reports := &countingReports{store: janitorreport.NewStore(e.rdb, e.prefix)}
	e.reports, e.identity = reports, "janitor-a"
	e.startJanitor()
	return e, reports
}

func (e *passEnv) report() janitorreport.Report {
	e.t.Helper()
	r, found, err := janitorreport.NewStore(e.rdb, e.prefix).Read(e.ctx, e.id)
	require.NoError(e.t, err)
	require.True(e.t, found, "a report in Redis")
	return r
}

func (e *passEnv) registerAll() {
	e.t.Helper()
	for name, p := range e.podObjects() {
		_, err := e.slots.RegisterPod(e.ctx, e.id, name, string(p.UID))
		require.NoError(e.t, err)
	}
}

func kinds(as []janitorreport.Action) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Kind)
	}
	return out
}

// The janitor writes a pool's report when what it says changes, not on
// every pass: passes over a pool at rest cost no write.
func TestPassWritesTheReportOncePerChange(t *testing.T) {
	e, reports := newReportEnv(t, 2)

	e.pass()
	require.Len(t, e.podObjects(), 2)
	require.EqualValues(t, 1, reports.writes.Load(), "the first pass writes the report")
	r := e.report()
	assert.Equal(t, "janitor-a", r.Janitor)
	assert.Equal(t, "team/pool-a", r.Pool)
	assert.Equal(t, "0 of 2 desired pods live: creating 2.", r.Summary)
	require.Len(t, r.Actions, 1)
	assert.Equal(t, janitorreport.ActionCreated, r.Actions[0].Kind)
	assert.Equal(t, 2, r.Actions[0].Count)
	assert.Equal(t, "2 desired, 0 live", r.Actions[0].Reason)
	assert.Equal(t, r.At, r.Changed)
	assert.True(t, r.StaleAfter.After(r.At))

	e.pass()
	require.EqualValues(t, 2, reports.writes.Load(), "the pods exist, their agents have not registered: a change")
	r = e.report()
	assert.Equal(t, "At the desired size (2 pods), with more to do.", r.Summary)
	assert.Equal(t, []janitorreport.Wait{{Kind: janitorreport.WaitStarting, Pods: 2, Text: "Waiting for 2 pods' agents to register."}}, r.Waiting)
	for range 3 {
		e.pass()
	}
	require.EqualValues(t, 2, reports.writes.Load(), "nothing changed: nothing written")

	e.registerAll()
	e.pass()
	require.EqualValues(t, 3, reports.writes.Load())
	r = e.report()
	assert.Equal(t, "At the desired size: 2 pods.", r.Summary)
	assert.Empty(t, r.Waiting)
	for range 3 {
		e.pass()
	}
	require.EqualValues(t, 3, reports.writes.Load(), "a pool at rest: no write")
	assert.EqualValues(t, 3, testutil.ToFloat64(e.m.ReportWrites.WithLabelValues(resultSuccess)))

	// A janitor that takes over goes on with the report: the same actions,
	// its own name.
	e.identity = "janitor-b"
	e.startJanitor()
	e.pass()
	require.EqualValues(t, 4, reports.writes.Load(), "another janitor: a change")
	r = e.report()
	assert.Equal(t, "janitor-b", r.Janitor)
	assert.Equal(t, []string{janitorreport.ActionCreated}, kinds(r.Actions), "the actions the last janitor reported are kept")
	e.pass()
	require.EqualValues(t, 4, reports.writes.Load())

	// Scaled down: the idle surplus pod is drained and deleted, then its
	// record removed. Each is a change, written once.
	e.scaleTo(1)
	require.Eventually(t, func() bool {
		e.pass()
		return len(e.podObjects()) == 1
	}, 10*time.Second, 20*time.Millisecond)
	e.pass() // the record of the deleted pod goes
	r = e.report()
	assert.Equal(t, []string{janitorreport.ActionRemovedRecord, janitorreport.ActionDrained, janitorreport.ActionCreated}, kinds(r.Actions))
	assert.Equal(t, ReasonScaledDown, r.Actions[0].Reason)
	assert.Equal(t, "surplus, idle for idleFor 1ms", r.Actions[1].Reason)
	assert.Equal(t, "At the desired size: 1 pod.", r.Summary)
	n := reports.writes.Load()
	for range 3 {
		e.pass()
	}
	require.Equal(t, n, reports.writes.Load(), "at rest again: no write")
}

// A report that cannot be written never fails the pass: the janitor says
// so once, and writes it, with the actions it could not report, once Redis
// takes writes again.
func TestPassGoesOnWhenTheReportCannotBeWritten(t *testing.T) {
	e := newPassEnv(t, testPool(2))
	reports := &countingReports{store: janitorreport.NewStore(e.rdb, e.prefix)}
	var logs syncBuffer
	e.reports, e.log = reports, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.startJanitor()
	e.pass()
	require.EqualValues(t, 1, reports.writes.Load())

	reports.down.Store(true)
	e.scaleTo(3)
	e.pass()
	require.Len(t, e.podObjects(), 3, "the pass did its work")
	e.pass()
	assert.Equal(t, 1, strings.Count(logs.String(), "cannot write the janitor report"), "said once: %s", logs.String())
	assert.EqualValues(t, 1, reports.writes.Load())
	assert.EqualValues(t, 2, testutil.ToFloat64(e.m.ReportWrites.WithLabelValues(resultError)))

	reports.down.Store(false)
	e.pass()
	require.EqualValues(t, 2, reports.writes.Load())
	r := e.report()
	require.Equal(t, []string{janitorreport.ActionCreated, janitorreport.ActionCreated}, kinds(r.Actions))
	assert.Equal(t, "3 desired, 2 live", r.Actions[0].Reason, "the pod created while the report could not be written")
	assert.Equal(t, 1, r.Actions[0].Count)
	assert.Equal(t, 1, strings.Count(logs.String(), "janitor report written again"))
}

// syncBuffer is a bytes.Buffer the janitor's workers may log to at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
