package main

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/a-h/templ"

	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// podStates is the order pods by state are shown in.
var podStates = []slots.PodState{slots.PodExpected, slots.PodActive, slots.PodCordoned, slots.PodDraining, slots.PodLost}

func (s *server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := c.Render(r.Context(), w); err != nil {
		s.log.Warn("rendering page", "path", r.URL.Path, "err", err)
	}
}

// pageError renders a store error as an HTML page.
func (s *server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	status, _ := errorStatus(err)
	msg := err.Error()
	switch status {
	case http.StatusServiceUnavailable:
		s.log.Warn("redis unavailable", "path", r.URL.Path, "err", err)
		msg = "The slot store (Redis) is unavailable."
	case http.StatusInternalServerError:
		s.log.Error("store call failed", "path", r.URL.Path, "err", err)
		msg = "Internal error."
	}
	s.render(w, r, status, web.ErrorPage(status, msg))
}

// age renders how long ago t was, as seen from now (both Redis times).
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := max(0, now.Sub(t)).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func overviewView(sums []poolSummary) web.OverviewView {
	v := web.OverviewView{Pools: []web.PoolRow{}}
	for _, p := range sums {
		row := web.PoolRow{Pool: p.Pool, Href: "/pools/" + p.Namespace + "/" + p.Name,
			SlotsIdle: p.SlotsIdle, SlotsRunning: p.SlotsRunning, SlotsReserved: p.SlotsReserved,
			QueuedTotal: p.QueuedTotal, LivePods: p.LivePods, DesiredPods: "?",
			Utilisation: fmt.Sprintf("%.0f%%", p.Utilisation*100)}
		for _, st := range podStates {
			row.Pods = append(row.Pods, web.Count{Label: string(st), N: p.Pods[string(st)]})
		}
		types := make([]string, 0, len(p.Queued))
		for t := range p.Queued {
			types = append(types, t)
		}
		slices.Sort(types)
		for _, t := range types {
			row.Queued = append(row.Queued, web.Count{Label: t, N: p.Queued[t]})
		}
		if p.OldestQueued != nil {
			row.OldestQueued = age(p.At, *p.OldestQueued)
		}
		if p.DesiredPods != nil {
			row.DesiredPods = fmt.Sprint(*p.DesiredPods)
		}
		v.Pools = append(v.Pools, row)
	}
	return v
}

func (s *server) overviewPage(w http.ResponseWriter, r *http.Request) {
	pools, err := s.store.Pools(r.Context())
	if err == nil {
		var sums []poolSummary
		if sums, err = s.summarise(r.Context(), pools); err == nil {
			s.render(w, r, http.StatusOK, web.OverviewPage(overviewView(sums)))
			return
		}
	}
	s.pageError(w, r, err)
}

func gridView(snap slots.Snapshot) web.GridView {
	p := snap.Pool
	v := web.GridView{URL: "/pools/" + p.Namespace + "/" + p.Name + "/grid", At: snap.At.UTC().Format(time.RFC3339)}
	for _, pod := range snap.Pods {
		row := web.PodRow{Name: pod.Name, State: string(pod.State), Flag: pod.State != slots.PodActive}
		for _, sl := range pod.Slots {
			row.Slots = append(row.Slots, web.SlotCell{Index: sl.Index, State: string(sl.State), Task: sl.Task,
				Type: string(sl.Type), Phase: string(sl.Phase), Age: age(snap.At, sl.Since), CancelRequested: sl.CancelRequested})
		}
		v.Pods = append(v.Pods, row)
	}
	for _, q := range snap.Queue {
		v.Queue = append(v.Queue, web.QueueRow{ID: q.ID, Type: string(q.Type), Age: age(snap.At, q.QueuedAt)})
	}
	return v
}

// snapshot reads a pool that must exist (a snapshot of an unknown pool is
// an empty pool, so the config read tells them apart).
func (s *server) snapshot(r *http.Request) (slots.Snapshot, error) {
	pool, err := poolOf(r)
	if err != nil {
		return slots.Snapshot{}, err
	}
	if _, _, err := s.store.Pool(r.Context(), pool); err != nil {
		return slots.Snapshot{}, err
	}
	return s.store.Snapshot(r.Context(), pool)
}

func (s *server) poolPage(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, web.PoolPage(web.PoolView{Pool: snap.Pool.String(), Overview: "/", Grid: gridView(snap)}))
}

// poolGrid serves the grid fragment htmx polls.
func (s *server) poolGrid(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r)
	if err != nil {
		if errors.Is(err, slots.ErrPoolNotFound) || errors.Is(err, slots.ErrInvalidPool) {
			s.pageError(w, r, err)
			return
		}
		// Keep polling through a Redis outage: answer with an error status
		// (htmx does not swap it) so the last grid stays on screen.
		status, _ := errorStatus(err)
		w.WriteHeader(status)
		return
	}
	s.render(w, r, http.StatusOK, web.Grid(gridView(snap)))
}
