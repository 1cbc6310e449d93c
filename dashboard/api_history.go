package main

import (
	"errors"
	"net/http"
	"time"

	"github.com/slotscaler/slotscaler/pkg/history"
)

// poolHistoryView is a pool's history as the API shows it.
type poolHistoryView struct {
	Pool   string `json:"pool"`
	Window string `json:"window"`
	// ResolutionSeconds: each sample of the 24h window is the mean of this
	// many seconds; null for 1h, whose samples are as recorded.
	ResolutionSeconds *float64     `json:"resolution_seconds"`
	Samples           []sampleView `json:"samples"`
}

type sampleView struct {
	At                     time.Time          `json:"at"`
	DesiredPods            float64            `json:"desired_pods"`
	LivePods               float64            `json:"live_pods"`
	BusyPods               float64            `json:"busy_pods"`
	IdlePods               float64            `json:"idle_pods"`
	CordonedPods           float64            `json:"cordoned_pods"`
	DrainingPods           float64            `json:"draining_pods"`
	ReservedSlots          float64            `json:"reserved_slots"`
	Queued                 map[string]float64 `json:"queued"`
	OldestQueuedAgeSeconds float64            `json:"oldest_queued_age_seconds"`
}

func viewSample(s history.Sample) sampleView {
	q := s.Queued
	if q == nil {
		q = map[string]float64{}
	}
	return sampleView{At: s.At.UTC(), DesiredPods: s.DesiredPods, LivePods: s.LivePods, BusyPods: s.BusyPods, IdlePods: s.IdlePods,
		CordonedPods: s.CordonedPods, DrainingPods: s.DrainingPods, ReservedSlots: s.ReservedSlots, Queued: q,
		OldestQueuedAgeSeconds: s.OldestQueuedSeconds}
}

// getHistory answers GET /pools/{ns}/{name}/history?window=1h|24h.
func (s *server) getHistory(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err == nil {
		_, _, err = s.store.Pool(r.Context(), pool)
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	win, err := history.ParseWindow(r.URL.Query().Get("window"))
	if errors.Is(err, history.ErrInvalidWindow) {
		writeError(w, http.StatusBadRequest, "invalid_window", err.Error())
		return
	}
	v := poolHistoryView{Pool: pool.String(), Window: string(win), Samples: []sampleView{}}
	if s.history != nil {
		samples, err := s.history.Window(r.Context(), pool, win, time.Now())
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		for _, smp := range samples {
			v.Samples = append(v.Samples, viewSample(smp))
		}
		if win == history.Day {
			res := s.history.Layout().CoarseInterval.Seconds()
			v.ResolutionSeconds = &res
		}
	}
	writeJSON(w, http.StatusOK, v)
}
