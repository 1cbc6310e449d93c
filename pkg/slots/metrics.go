package slots

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts keep cumulative counters of each pool for Prometheus in the
// pool's metrics hash (lua/lib.lua, K.metrics): queue waits and phase durations
// as histograms, finished tasks by type, state and reason. They are
// counted where the transition happens, inside the script that makes it,
// so every replica of an exporter reads the same exact numbers, a restart
// loses nothing, and the exporter keeps no state per task. Reading them is
// one HGETALL per pool (QueuePoolMetrics).

// QueueWaitBuckets are the upper bounds (seconds) of the queue wait
// histogram: how long a task waited in the queue before a slot took it (0
// when a slot was free).
var QueueWaitBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600}

// The scripts count each observation under its bucket's index: a changed
// list of bounds must come with a data model change (the old counts would
// land in the wrong buckets).

// PhaseDurationBuckets are the upper bounds (seconds) of the phase duration
// histogram: from the agent's claim of a phase to its recorded outcome.
var PhaseDurationBuckets = []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}

// Reasons the agent sends with a result the store does not define itself.
const (
	ReasonAgentShutdown    = "agent-shutdown"
	ReasonWorkspaceChanged = "workspace-changed"
)

// ReasonOther stands, in the finished-task counters, for every reason not
// in MetricReasons: a caller may give any text as a reason (a release's,
// a failed phase's), and each distinct one would be a new series.
const ReasonOther = "other"

// MetricReasons are the reasons the finished-task counters keep by name.
var MetricReasons = []string{"", ReasonAgentLost, ReasonReservationLost, ReasonQueueAge, ReasonReservationTTL,
	ReasonTimeout, ReasonExitCode, ReasonPoolDeleted, ReasonAgentShutdown, ReasonWorkspaceChanged}

// metricsPrelude is the Lua of the histogram bounds (in ms, as the scripts
// count time) and the reasons kept by name, after the shared names.
func metricsPrelude() string {
	ms := func(bounds []float64) string {
		parts := make([]string, len(bounds))
		for i, b := range bounds {
			parts[i] = strconv.FormatInt(int64(math.Round(b*1000)), 10)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	var b strings.Builder
	b.WriteString("local QW_BOUNDS = " + ms(QueueWaitBuckets) + "\n")
	b.WriteString("local PD_BOUNDS = " + ms(PhaseDurationBuckets) + "\n")
	b.WriteString("local METRIC_REASONS = {")
	for i, r := range MetricReasons {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("[" + strconv.Quote(r) + "] = true")
	}
	b.WriteString("}\n")
	return b.String()
}

// Histogram is a histogram the scripts keep: the count in each bucket of
// its bounds (not cumulative; one more than the bounds, for the
// observations beyond the last) and the sum of the observations.
type Histogram struct {
	Counts []uint64
	Sum    time.Duration
}

// Count is the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Cumulative returns Prometheus' buckets: upper bound (seconds) -> the
// observations at most that, without the +Inf bucket (Count).
func (h Histogram) Cumulative(bounds []float64) map[float64]uint64 {
	out := make(map[float64]uint64, len(bounds))
	var acc uint64
	for i, b := range bounds {
		if i < len(h.Counts) {
			acc += h.Counts[i]
		}
		out[b] = acc
	}
	return out
}

// PhaseKey names a phase duration histogram.
type PhaseKey struct {
	Type  TaskType
	Phase Phase
}

// FinishedKey names a finished-task counter.
type FinishedKey struct {
	Type   TaskType
	State  TaskState
	Reason string
}

// PoolMetrics are a pool's counters for Prometheus.
type PoolMetrics struct {
	QueueWait     map[TaskType]Histogram
	PhaseDuration map[PhaseKey]Histogram
	Finished      map[FinishedKey]uint64
	// NextReservationExpiry is when the first of the pool's reservations
	// expires unless approved (zero when none waits).
	NextReservationExpiry time.Time
}

// QueuePoolMetrics queues the read of a pool's counters for Prometheus
// (one HGETALL) and of its first reservation deadline (one ZRANGE).
// Neither is a script: a pool deleted meanwhile reads as all zeros.
func (s *Store) QueuePoolMetrics(ctx context.Context, pipe redis.Pipeliner, id PoolID) Pending[PoolMetrics] {
	if err := id.Validate(); err != nil {
		return failed[PoolMetrics](err)
	}
	base := s.base(id)
	counters := pipe.HGetAll(ctx, base+keyMetrics)
	first := pipe.ZRangeWithScores(ctx, base+keyResv, 0, 0)
	return Pending[PoolMetrics]{result: func() (PoolMetrics, error) {
		h, err := counters.Result()
		if err != nil {
			return PoolMetrics{}, fmt.Errorf("reading the metrics of pool %s: %w", id, err)
		}
		resv, err := first.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return PoolMetrics{}, fmt.Errorf("reading the reservations of pool %s: %w", id, err)
		}
		m := parsePoolMetrics(h)
		if len(resv) > 0 {
			m.NextReservationExpiry = time.UnixMilli(int64(resv[0].Score))
		}
		return m, nil
	}}
}

// parsePoolMetrics reads the fields lua/lib.lua writes to K.metrics. A field it
// does not know (a newer release's) is skipped.
func parsePoolMetrics(h map[string]string) PoolMetrics {
	m := PoolMetrics{QueueWait: map[TaskType]Histogram{}, PhaseDuration: map[PhaseKey]Histogram{}, Finished: map[FinishedKey]uint64{}}
	for k, v := range h {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		parts := strings.Split(k, ":")
		switch {
		case parts[0] == "qw" && len(parts) == 3:
			t := TaskType(parts[1])
			m.QueueWait[t] = histogramAdd(m.QueueWait[t], parts[2], n, len(QueueWaitBuckets))
		case parts[0] == "pd" && len(parts) == 4:
			pk := PhaseKey{Type: TaskType(parts[1]), Phase: Phase(parts[2])}
			m.PhaseDuration[pk] = histogramAdd(m.PhaseDuration[pk], parts[3], n, len(PhaseDurationBuckets))
		case parts[0] == "out" && len(parts) == 4:
			m.Finished[FinishedKey{Type: TaskType(parts[1]), State: TaskState(parts[2]), Reason: parts[3]}] += n
		}
	}
	return m
}

// histogramAdd sets a bucket's count ("0".."<bounds>") or the sum ("s", ms).
func histogramAdd(h Histogram, field string, n uint64, bounds int) Histogram {
	if h.Counts == nil {
		h.Counts = make([]uint64, bounds+1)
	}
	if field == "s" {
		h.Sum = time.Duration(n) * time.Millisecond
		return h
	}
	i, err := strconv.Atoi(field)
	if err != nil || i < 0 || i > bounds {
		return h
	}
	h.Counts[i] = n
	return h
}
