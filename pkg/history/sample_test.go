package history

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSampleEncodingRoundTrips(t *testing.T) {
	s := Sample{At: time.UnixMilli(1_700_000_123_456), DesiredPods: 4, LivePods: 3, BusyPods: 2, IdlePods: 1,
		CordonedPods: 1, DrainingPods: 0, ReservedSlots: 1, OldestQueuedSeconds: 12.345,
		Queued: map[string]float64{"plan": 7, "plan_and_apply": 2}}
	enc, err := encode(s)
	require.NoError(t, err)
	assert.Equal(t, "1700000123456 4 3 2 1 1 0 1 12.345 plan:7 plan_and_apply:2", enc)
	got, err := decode(enc)
	require.NoError(t, err)
	assert.True(t, got.At.Equal(s.At))
	got.At = s.At
	assert.Equal(t, s, got)
}

func TestSampleDecoding(t *testing.T) {
	cases := []struct {
		name, in string
		want     Sample
		wantErr  string
	}{
		{name: "a shorter sample of an older release reads the missing fields as 0", in: "1000 4 3 plan:2",
			want: Sample{At: time.UnixMilli(1000), DesiredPods: 4, LivePods: 3, Queued: map[string]float64{"plan": 2}}},
		{name: "coarse means", in: "1000 2.33 2.5 1 0.67 0 0 0 30 plan:1.5",
			want: Sample{At: time.UnixMilli(1000), DesiredPods: 2.33, LivePods: 2.5, BusyPods: 1, IdlePods: 0.67, OldestQueuedSeconds: 30, Queued: map[string]float64{"plan": 1.5}}},
		{name: "empty", in: "", wantErr: "empty sample"},
		{name: "bad time", in: "x 1", wantErr: "time"},
		{name: "bad field", in: "1000 1 y", wantErr: "live"},
		{name: "bad queue count", in: "1000 1 1 1 1 1 1 1 1 plan:z", wantErr: "queued plan"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.in)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want.At.UnixMilli(), got.At.UnixMilli())
			got.At = tc.want.At
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEncodeRefusesTypesThatBreakTheEncoding(t *testing.T) {
	for _, bad := range []string{"", "a:b", "a b"} {
		_, err := encode(Sample{At: time.UnixMilli(1), Queued: map[string]float64{bad: 1}})
		assert.Error(t, err, "type %q", bad)
	}
}

func TestAggregateIsTheMeanAndTheOldestAgeTheMaximum(t *testing.T) {
	at := time.UnixMilli(300_000)
	got := Combine(at, []Sample{
		{DesiredPods: 1, LivePods: 2, BusyPods: 1, OldestQueuedSeconds: 5, Queued: map[string]float64{"plan": 1}},
		{DesiredPods: 2, LivePods: 2, BusyPods: 2, OldestQueuedSeconds: 40, Queued: map[string]float64{"plan": 2, "plan_and_apply": 1}},
		{DesiredPods: 4, LivePods: 3, BusyPods: 2, OldestQueuedSeconds: 10, Queued: map[string]float64{}},
	})
	assert.Equal(t, Sample{At: at, DesiredPods: 2.33, LivePods: 2.33, BusyPods: 1.67, OldestQueuedSeconds: 40,
		Queued: map[string]float64{"plan": 1, "plan_and_apply": 0.33}}, got)
}

func TestParseWindow(t *testing.T) {
	for in, want := range map[string]Window{"": Hour, "1h": Hour, "24h": Day} {
		got, err := ParseWindow(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ParseWindow("7d")
	assert.ErrorIs(t, err, ErrInvalidWindow)
}

func TestLayoutValidate(t *testing.T) {
	require.NoError(t, DefaultLayout.Validate())
	assert.Error(t, Layout{FineRetention: time.Minute, CoarseInterval: 5 * time.Minute, CoarseRetention: time.Hour}.Validate())
	assert.Error(t, Layout{FineRetention: time.Hour, CoarseInterval: 5 * time.Minute, CoarseRetention: time.Minute}.Validate())
	assert.Error(t, Layout{FineRetention: time.Hour, CoarseRetention: time.Hour}.Validate())
}
