package main

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// janitorReader is what the dashboard needs of the janitor's reports
// (pkg/janitorreport's Store).
type janitorReader interface {
	Read(ctx context.Context, pool slots.PoolID) (janitorreport.Report, bool, error)
}

// janitorView is the janitor's report of a pool as the API shows it: the
// report, its age and whether it is stale, judged on Redis's clock (the
// report's and the pool counters').
type janitorView struct {
	At         time.Time `json:"at"`
	AgeSeconds float64   `json:"age_seconds"`
	Changed    time.Time `json:"changed"`
	// Stale: the janitor did not write the report again by its
	// stale_after: no janitor is working on the pool now.
	Stale      bool                   `json:"stale"`
	StaleAfter time.Time              `json:"stale_after"`
	Janitor    string                 `json:"janitor"`
	Replicas   int                    `json:"replicas"`
	Live       int                    `json:"live"`
	Summary    string                 `json:"summary"`
	Waiting    []janitorreport.Wait   `json:"waiting"`
	Actions    []janitorreport.Action `json:"actions"`
}

func viewJanitor(r janitorreport.Report, now time.Time) janitorView {
	v := janitorView{At: r.At, AgeSeconds: max(0, now.Sub(r.At)).Seconds(), Changed: r.Changed,
		Stale: now.After(r.StaleAfter), StaleAfter: r.StaleAfter, Janitor: r.Janitor, Replicas: r.Replicas, Live: r.Live,
		Summary: r.Summary, Waiting: r.Waiting, Actions: r.Actions}
	if v.Waiting == nil {
		v.Waiting = []janitorreport.Wait{}
	}
	if v.Actions == nil {
		v.Actions = []janitorreport.Action{}
	}
	return v
}

// janitorReport reads a pool's report for the page and the API; nil when
// there is none. An unreadable report is not the page's failure: it is
// logged, and said where the report would be.
func (s *server) janitorReport(ctx context.Context, pool slots.PoolID) (*janitorreport.Report, error) {
	if s.janitor == nil {
		return nil, nil
	}
	r, found, err := s.janitor.Read(ctx, pool)
	if err != nil {
		s.log.Warn("reading the janitor report", "pool", pool.String(), "err", err)
		return nil, err
	}
	if !found {
		return nil, nil
	}
	return &r, nil
}

// janitorPanel is the pool page's Janitor block; now is Redis's clock.
func janitorPanel(r *janitorreport.Report, err error, now time.Time) web.JanitorView {
	switch {
	case err != nil:
		return web.JanitorView{State: "error"} // logged by janitorReport
	case r == nil:
		return web.JanitorView{State: "none"}
	}
	v := web.JanitorView{State: "fresh", Age: ageText(now.Sub(r.At)), At: stamp(r.At), Janitor: r.Janitor, Summary: r.Summary}
	if now.After(r.StaleAfter) {
		v.State = "stale"
	}
	for _, w := range r.Waiting {
		jw := web.JanitorWait{Kind: w.Kind, Text: w.Text}
		if w.Until != nil {
			jw.Until = stamp(*w.Until)
			if left := w.Until.Sub(now); left > 0 {
				jw.In = ageText(left)
			}
		}
		v.Waiting = append(v.Waiting, jw)
	}
	for _, a := range r.Actions {
		pods := strings.Join(a.Pods, ", ")
		if more := a.Count - len(a.Pods); more > 0 {
			pods += " and " + strconv.Itoa(more) + " more"
		}
		if len(a.Pods) == 0 {
			pods = strconv.Itoa(a.Count) + " " + plural(a.Count, "pod", "pods")
		}
		v.Actions = append(v.Actions, web.JanitorAction{At: stamp(a.At), Ago: ageText(now.Sub(a.At)), Kind: a.Kind, Pods: pods, Reason: a.Reason})
	}
	return v
}
