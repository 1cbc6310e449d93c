package history

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidWindow is a window other than Hour or Day.
var ErrInvalidWindow = errors.New("invalid history window")

// Sample is a pool at one moment: a recorded sample, or the mean of the
// samples of a coarse interval (whose counts may then be fractions).
type Sample struct {
	At time.Time
	// DesiredPods is the capacity model's count for the pool's work (the
	// dashboard's desired_pods): before a trigger's warmPods and the HPA
	// nudge, which only the KEDA request carries.
	DesiredPods float64
	// LivePods are the pods an HPA sees: expected, active and cordoned.
	LivePods float64
	// BusyPods hold a running or reserved slot; IdlePods are active pods
	// whose every slot is idle.
	BusyPods     float64
	IdlePods     float64
	CordonedPods float64
	DrainingPods float64
	// ReservedSlots wait for an apply's approval.
	ReservedSlots float64
	// Queued counts queued tasks by type.
	Queued map[string]float64
	// OldestQueuedSeconds is the age of the oldest queued task, 0 when
	// nothing is queued; over a coarse interval, the largest.
	OldestQueuedSeconds float64
}

// QueuedTotal sums Queued over types.
func (s Sample) QueuedTotal() float64 {
	var n float64
	for _, t := range slices.Sorted(maps.Keys(s.Queued)) {
		n += s.Queued[t]
	}
	return n
}

// aggMean and aggMax are how a coarse sample combines a field: the record
// script reads them (one letter per field, in fields order).
const (
	aggMean = 'm'
	aggMax  = 'x'
)

// fields are a sample's numbers in their encoded order, with how a coarse
// sample combines each. The encoding and the record script follow this
// list; appending a field keeps old samples readable (it reads as 0).
var fields = []struct {
	name string
	agg  byte
	of   func(*Sample) *float64
}{
	{"desired", aggMean, func(s *Sample) *float64 { return &s.DesiredPods }},
	{"live", aggMean, func(s *Sample) *float64 { return &s.LivePods }},
	{"busy", aggMean, func(s *Sample) *float64 { return &s.BusyPods }},
	{"idle", aggMean, func(s *Sample) *float64 { return &s.IdlePods }},
	{"cordoned", aggMean, func(s *Sample) *float64 { return &s.CordonedPods }},
	{"draining", aggMean, func(s *Sample) *float64 { return &s.DrainingPods }},
	{"reserved", aggMean, func(s *Sample) *float64 { return &s.ReservedSlots }},
	{"oldest", aggMax, func(s *Sample) *float64 { return &s.OldestQueuedSeconds }},
}

// aggregation is the fields' combination letters, for the record script.
func aggregation() string {
	b := make([]byte, len(fields))
	for i, f := range fields {
		b[i] = f.agg
	}
	return string(b)
}

// encode writes a sample as space-separated tokens: its time in Unix
// milliseconds, the numbers of fields in order, then "<type>:<count>" per
// queued type. Compact (about 40 bytes) and cheap to parse in Lua.
func encode(s Sample) (string, error) {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(s.At.UnixMilli(), 10))
	for _, f := range fields {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(*f.of(&s), 'f', -1, 64))
	}
	for _, t := range slices.Sorted(maps.Keys(s.Queued)) {
		if t == "" || strings.ContainsAny(t, ": \t\r\n") {
			return "", fmt.Errorf("task type %q cannot be recorded (empty, or a colon or blank in it)", t)
		}
		b.WriteString(" " + t + ":" + strconv.FormatFloat(s.Queued[t], 'f', -1, 64))
	}
	return b.String(), nil
}

// decode reads what encode (or the record script's aggregation) wrote.
func decode(v string) (Sample, error) {
	tok := strings.Fields(v)
	if len(tok) == 0 {
		return Sample{}, errors.New("empty sample")
	}
	ms, err := strconv.ParseInt(tok[0], 10, 64)
	if err != nil {
		return Sample{}, fmt.Errorf("sample %q: time: %w", v, err)
	}
	s := Sample{At: time.UnixMilli(ms), Queued: map[string]float64{}}
	i := 1
	for _, f := range fields {
		if i >= len(tok) || strings.Contains(tok[i], ":") {
			break // an older, shorter sample: the rest reads as 0
		}
		n, err := strconv.ParseFloat(tok[i], 64)
		if err != nil {
			return Sample{}, fmt.Errorf("sample %q: %s: %w", v, f.name, err)
		}
		*f.of(&s) = n
		i++
	}
	for ; i < len(tok); i++ {
		t, c, ok := strings.Cut(tok[i], ":")
		if !ok {
			continue // a field appended by a newer release
		}
		n, err := strconv.ParseFloat(c, 64)
		if err != nil {
			return Sample{}, fmt.Errorf("sample %q: queued %s: %w", v, t, err)
		}
		s.Queued[t] = n
	}
	return s, nil
}

// round2 is the record script's rounding of means: two decimals.
func round2(x float64) float64 { return math.Floor(x*100+0.5) / 100 }

// Combine is the sample standing for samples, stamped at: their means
// (two decimals) and the largest oldest queued age, exactly as the record
// script combines a coarse interval (same order of sums, same rounding).
// Readers use it for the interval still being recorded; charts to draw
// fewer points than there are samples.
func Combine(at time.Time, samples []Sample) Sample {
	out := Sample{At: at, Queued: map[string]float64{}}
	if len(samples) == 0 {
		return out
	}
	n := float64(len(samples))
	for _, f := range fields {
		var acc float64
		for i, s := range samples {
			v := *f.of(&s)
			switch {
			case f.agg == aggMax && (i == 0 || v > acc):
				acc = v
			case f.agg == aggMean:
				acc += v
			}
		}
		if f.agg == aggMean {
			acc = round2(acc / n)
		}
		*f.of(&out) = acc
	}
	sums := map[string]float64{}
	for _, s := range samples {
		for _, t := range slices.Sorted(maps.Keys(s.Queued)) {
			sums[t] += s.Queued[t]
		}
	}
	for t, v := range sums {
		out.Queued[t] = round2(v / n)
	}
	return out
}
