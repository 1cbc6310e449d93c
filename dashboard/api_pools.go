package main

import (
	"net/http"
	"time"

	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func (s *server) listPools(w http.ResponseWriter, r *http.Request) {
	sums, err := s.poolSummaries(r.Context(), s.readable(r))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pools": sums})
}

// snapshotView is a pool snapshot as the API shows it, with the pool's
// desired count and why, read as the pool list reads them (just after the
// snapshot: the two may be a moment apart).
type snapshotView struct {
	Pool string    `json:"pool"`
	At   time.Time `json:"at"`
	Pods []podView `json:"pods"`
	// Queue lists the first queued tasks in dispatch order (at most
	// slots.SnapshotQueueList); Queued counts them all, by type.
	Queue       []queuedView     `json:"queue"`
	Queued      map[string]int   `json:"queued"`
	DesiredPods *int             `json:"desired_pods"`
	Explanation *explanationView `json:"explanation"`
	HPA         hpaView          `json:"hpa"`
	// Janitor is the janitor's report of the pool; null when there is
	// none (or it could not be read).
	Janitor *janitorView `json:"janitor"`
	// Webhooks is the delivery status of the webhooks that deliver the
	// pool's events (empty: none, or unreadable: the log says); the
	// receiver's host only, never its URL or a secret.
	Webhooks []notify.Status `json:"webhooks"`
}

type podView struct {
	Name              string     `json:"name"`
	UID               string     `json:"uid,omitempty"`
	State             string     `json:"state"`
	Created           time.Time  `json:"created"`
	Registered        *time.Time `json:"registered,omitempty"`
	HeartbeatDeadline *time.Time `json:"heartbeat_deadline,omitempty"`
	Slots             []slotView `json:"slots"`
}

type slotView struct {
	Index           int        `json:"index"`
	State           string     `json:"state"`
	Task            string     `json:"task,omitempty"`
	Type            string     `json:"type,omitempty"`
	Phase           string     `json:"phase,omitempty"`
	Epoch           string     `json:"epoch,omitempty"`
	Attempt         int        `json:"attempt,omitempty"`
	Since           *time.Time `json:"since,omitempty"`
	CancelRequested bool       `json:"cancel_requested,omitempty"`
	ReservedUntil   *time.Time `json:"reserved_until,omitempty"`
}

type queuedView struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	QueuedAt time.Time `json:"queued_at"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func viewSnapshot(snap slots.Snapshot, sum poolSummary) snapshotView {
	v := snapshotView{Pool: snap.Pool.String(), At: snap.At, Pods: []podView{}, Queue: []queuedView{}, Queued: map[string]int{},
		DesiredPods: sum.DesiredPods, Explanation: sum.Explanation, HPA: sum.HPA}
	for _, p := range snap.Pods {
		pv := podView{Name: p.Name, UID: p.UID, State: string(p.State), Created: p.Created,
			Registered: timePtr(p.Registered), HeartbeatDeadline: timePtr(p.HeartbeatDeadline), Slots: []slotView{}}
		for _, sl := range p.Slots {
			pv.Slots = append(pv.Slots, slotView{Index: sl.Index, State: string(sl.State), Task: sl.Task, Type: string(sl.Type),
				Phase: string(sl.Phase), Epoch: sl.Epoch, Attempt: sl.Attempt, Since: timePtr(sl.Since),
				CancelRequested: sl.CancelRequested, ReservedUntil: timePtr(sl.ReservedUntil)})
		}
		v.Pods = append(v.Pods, pv)
	}
	for _, q := range snap.Queue {
		v.Queue = append(v.Queue, queuedView{ID: q.ID, Type: string(q.Type), QueuedAt: q.QueuedAt})
	}
	for t, n := range snap.Queued {
		v.Queued[string(t)] = n
	}
	return v
}

// snapshot reads a pool that must exist (a snapshot of an unknown pool is
// an empty pool, so the config read tells them apart): the API's pool and
// the pool page's grid.
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

func (s *server) getPool(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	sum, err := s.poolSummary(r.Context(), snap.Pool)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	v := viewSnapshot(snap, sum)
	// An unreadable report leaves janitor null: the pool is still served.
	if rep, _ := s.janitorReport(r.Context(), snap.Pool); rep != nil {
		j := viewJanitor(*rep, sum.At)
		v.Janitor = &j
	}
	v.Webhooks, _ = s.webhookStatus(r.Context(), snap.Pool)
	if v.Webhooks == nil {
		v.Webhooks = []notify.Status{}
	}
	writeJSON(w, http.StatusOK, v)
}
