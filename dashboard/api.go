package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// apiError is every error body of the API.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

// errorStatus maps a store error to an HTTP status and error code.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, slots.ErrInvalidPool):
		return http.StatusBadRequest, "invalid_pool"
	case errors.Is(err, slots.ErrInvalidTask):
		return http.StatusBadRequest, "invalid_task"
	case errors.Is(err, slots.ErrPayloadTooLarge):
		return http.StatusBadRequest, "payload_too_large"
	case errors.Is(err, slots.ErrNoSlotForType):
		return http.StatusBadRequest, "no_slot_for_type"
	case errors.Is(err, slots.ErrPoolNotFound):
		return http.StatusNotFound, "pool_not_found"
	case errors.Is(err, slots.ErrTaskNotFound):
		return http.StatusNotFound, "task_not_found"
	case errors.Is(err, slots.ErrReservationLost):
		return http.StatusConflict, "reservation_lost"
	case errors.Is(err, slots.ErrNotReserved):
		return http.StatusConflict, "not_reserved"
	case errors.Is(err, slots.ErrTaskFinished):
		return http.StatusConflict, "task_finished"
	case errors.Is(err, slots.ErrTaskConflict):
		return http.StatusConflict, "task_conflict"
	case errors.Is(err, slots.ErrPodLost), errors.Is(err, slots.ErrPodState):
		return http.StatusConflict, "pod_state"
	case errors.Is(err, slots.ErrQueueFull):
		return http.StatusTooManyRequests, "queue_full"
	case unavailable(err):
		return http.StatusServiceUnavailable, "redis_unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

// unavailable reports whether err says Redis could not be reached.
func unavailable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection pool timeout")
}

// storeError answers a failed store call.
func (s *server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	msg := err.Error()
	switch status {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "5")
	case http.StatusServiceUnavailable:
		s.log.Warn("redis unavailable", "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "5")
		msg = "slot store unavailable"
	case http.StatusInternalServerError:
		s.log.Error("store call failed", "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	writeError(w, status, code, msg)
}

func poolOf(r *http.Request) (slots.PoolID, error) {
	p := slots.PoolID{Namespace: chi.URLParam(r, "ns"), Name: chi.URLParam(r, "name")}
	return p, p.Validate()
}

// decodeBody decodes a JSON body strictly: unknown fields, trailing data
// and bodies over limit are errors. An empty body is allowed when
// optional is true.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, optional bool) (int, string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF) && optional:
			return 0, "", nil
		case errors.Is(err, io.EOF):
			return http.StatusBadRequest, "bad_json", errors.New("request body is empty")
		case errors.As(err, &mbe):
			return http.StatusBadRequest, "body_too_large", fmt.Errorf("request body is larger than %d bytes", mbe.Limit)
		case errors.As(err, &se):
			return http.StatusBadRequest, "bad_json", fmt.Errorf("malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			return http.StatusBadRequest, "bad_json", fmt.Errorf("field %q must be %s", te.Field, te.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return http.StatusBadRequest, "unknown_field", fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return http.StatusBadRequest, "bad_json", fmt.Errorf("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return http.StatusBadRequest, "bad_json", errors.New("request body holds more than one JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusBadRequest, "body_too_large", fmt.Errorf("request body is larger than %d bytes", mbe.Limit)
		}
	}
	return 0, "", nil
}

// submitRequest is the body of a submit.
type submitRequest struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// taskView is a task as the API shows it.
type taskView struct {
	ID              string        `json:"id"`
	Pool            string        `json:"pool"`
	Type            string        `json:"type"`
	State           string        `json:"state"`
	Phase           string        `json:"phase,omitempty"`
	Pod             string        `json:"pod,omitempty"`
	Slot            *int          `json:"slot,omitempty"`
	Epoch           string        `json:"epoch,omitempty"`
	Attempt         int           `json:"attempt"`
	Reason          string        `json:"reason,omitempty"`
	ExitCode        int           `json:"exit_code"`
	Output          string        `json:"output,omitempty"`
	By              string        `json:"by,omitempty"`
	Payload         string        `json:"payload"`
	CancelRequested bool          `json:"cancel_requested"`
	Created         time.Time     `json:"created"`
	Updated         time.Time     `json:"updated"`
	History         []historyView `json:"history"`
}

type historyView struct {
	At     time.Time `json:"at"`
	State  string    `json:"state"`
	Detail string    `json:"detail,omitempty"`
}

func slotPtr(i int) *int {
	if i < 0 {
		return nil
	}
	return &i
}

func viewTask(t slots.Task) taskView {
	v := taskView{ID: t.ID, Pool: t.Pool.String(), Type: string(t.Type), State: string(t.State), Phase: string(t.Phase),
		Pod: t.Pod, Slot: slotPtr(t.Slot), Epoch: t.Epoch, Attempt: t.Attempt, Reason: t.Reason, ExitCode: t.ExitCode,
		Output: t.Output, By: t.By, Payload: string(t.Payload), CancelRequested: t.CancelRequested,
		Created: t.Created, Updated: t.Updated, History: []historyView{}}
	for _, h := range t.History {
		v.History = append(v.History, historyView{At: h.At, State: h.State, Detail: h.Detail})
	}
	return v
}

// payloadBytes turns the payload field into the bytes stored: a JSON
// string is stored as its text, an object as its JSON.
func payloadBytes(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	case '{':
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, errors.New(`field "payload" must be a JSON string or object`)
}

func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	var req submitRequest
	if status, code, err := decodeBody(w, r, int64(s.maxPayload)+64<<10, &req, false); err != nil {
		writeError(w, status, code, err.Error())
		return
	}
	payload, err := payloadBytes(req.Payload)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_payload", err.Error())
		return
	}
	if len(payload) > s.maxPayload {
		writeError(w, http.StatusBadRequest, "payload_too_large", fmt.Sprintf("payload is %d bytes, limit %d", len(payload), s.maxPayload))
		return
	}
	res, err := s.store.Submit(r.Context(), pool, slots.TaskSpec{ID: req.ID, Type: slots.TaskType(req.Type), Payload: payload})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	w.Header().Set("Location", fmt.Sprintf("%s/pools/%s/%s/tasks/%s", apiPrefix, pool.Namespace, pool.Name, req.ID))
	writeJSON(w, status, map[string]any{"id": req.ID, "pool": pool.String(), "created": res.Created,
		"state": res.State, "epoch": res.Epoch, "pod": res.Pod, "slot": slotPtr(res.Slot)})
}

func (s *server) getTask(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	t, err := s.store.Task(r.Context(), pool, chi.URLParam(r, "id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewTask(t))
}

// actionRequest is the optional body of cancel, approve and reject.
type actionRequest struct {
	By string `json:"by"`
}

// actor decodes an action body and says who acts: the body's "by", else
// the token's name, else "api".
func (s *server) actor(w http.ResponseWriter, r *http.Request) (slots.PoolID, string, bool) {
	pool, err := poolOf(r)
	if err != nil {
		s.storeError(w, r, err)
		return pool, "", false
	}
	var req actionRequest
	if status, code, err := decodeBody(w, r, 64<<10, &req, true); err != nil {
		writeError(w, status, code, err.Error())
		return pool, "", false
	}
	by := strings.TrimSpace(req.By)
	if by == "" {
		by = tokenName(r.Context())
	}
	if by == "" {
		by = "api"
	}
	return pool, by, true
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	pool, by, ok := s.actor(w, r)
	if !ok {
		return
	}
	id := chi.URLParam(r, "id")
	st, err := s.store.Cancel(r.Context(), pool, id, by)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	status := http.StatusOK
	if st == slots.StateRunning {
		status = http.StatusAccepted // the agent stops the executor, then the task is cancelled
	}
	writeJSON(w, status, map[string]any{"id": id, "state": st, "by": by})
}

func (s *server) approve(w http.ResponseWriter, r *http.Request) {
	pool, by, ok := s.actor(w, r)
	if !ok {
		return
	}
	id := chi.URLParam(r, "id")
	epoch, err := s.store.Approve(r.Context(), pool, id, by)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "state": slots.StateRunning, "phase": slots.PhaseApply, "epoch": epoch, "by": by})
}

func (s *server) reject(w http.ResponseWriter, r *http.Request) {
	pool, by, ok := s.actor(w, r)
	if !ok {
		return
	}
	id := chi.URLParam(r, "id")
	if err := s.store.Reject(r.Context(), pool, id, by); err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "state": slots.StateRejected, "by": by})
}

// poolSummary is one pool's counters and the capacity model's answer.
type poolSummary struct {
	Pool          string         `json:"pool"`
	Namespace     string         `json:"namespace"`
	Name          string         `json:"name"`
	Pods          map[string]int `json:"pods"`
	TotalPods     int            `json:"total_pods"`
	LivePods      int            `json:"live_pods"`
	BusyPods      int            `json:"busy_pods"`
	IdlePods      int            `json:"idle_pods"`
	SlotsIdle     int            `json:"slots_idle"`
	SlotsRunning  int            `json:"slots_running"`
	SlotsReserved int            `json:"slots_reserved"`
	Queued        map[string]int `json:"queued"`
	QueuedTotal   int            `json:"queued_total"`
	OldestQueued  *time.Time     `json:"oldest_queued,omitempty"`
	OldestQueuedS float64        `json:"oldest_queued_age_seconds"`
	DesiredPods   *int           `json:"desired_pods"`
	Unschedulable map[string]int `json:"unschedulable,omitempty"`
	Utilisation   float64        `json:"utilisation"`
	At            time.Time      `json:"at"`
}

// summarise reads every pool's counters and config and computes desired pods.
func (s *server) summarise(ctx context.Context, pools []slots.PoolID) ([]poolSummary, error) {
	if len(pools) == 0 {
		return []poolSummary{}, nil
	}
	stats, err := s.store.Stats(ctx, pools...)
	if err != nil {
		return nil, err
	}
	out := make([]poolSummary, 0, len(stats))
	for _, ps := range stats {
		if ps.Err != nil {
			if errors.Is(ps.Err, slots.ErrPoolNotFound) {
				continue // removed between listing and reading
			}
			return nil, ps.Err
		}
		cfg, err := s.configs.Get(ctx, ps.Pool)
		if errors.Is(err, slots.ErrPoolNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, summarise(cfg, ps.Stats))
	}
	return out, nil
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

func summarise(cfg slots.PoolConfig, st slots.Stats) poolSummary {
	p := poolSummary{Pool: st.Pool.String(), Namespace: st.Pool.Namespace, Name: st.Pool.Name,
		Pods: map[string]int{}, TotalPods: st.TotalPods, LivePods: st.LivePods(), BusyPods: st.BusyPods, IdlePods: st.IdlePods,
		SlotsIdle: sum(st.IdleSlots), SlotsRunning: sum(st.RunningSlots), SlotsReserved: st.Reserved,
		Queued: map[string]int{}, QueuedTotal: st.QueuedTotal(), At: st.Now}
	for k, v := range st.Pods {
		p.Pods[string(k)] = v
	}
	for _, t := range slots.TaskTypes {
		p.Queued[string(t)] = st.Queued[t]
	}
	for t, n := range st.Queued {
		p.Queued[string(t)] = n
	}
	if !st.OldestQueued.IsZero() {
		o := st.OldestQueued
		p.OldestQueued = &o
		p.OldestQueuedS = max(0, st.Now.Sub(o).Seconds())
	}
	// desired_pods stays null when the capacity model refuses the input.
	if res, err := capacity.Desired(slots.CapacityInput(cfg, st, 0)); err == nil {
		d := res.Desired
		p.DesiredPods = &d
		p.Unschedulable = res.Unschedulable
	}
	// Utilisation: slots holding work (running or reserved) over the slots
	// that could (those plus the idle slots of active pods).
	if busy := p.SlotsRunning + p.SlotsReserved; busy+p.SlotsIdle > 0 {
		p.Utilisation = float64(busy) / float64(busy+p.SlotsIdle)
	}
	return p
}

func (s *server) listPools(w http.ResponseWriter, r *http.Request) {
	pools, err := s.store.Pools(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	sums, err := s.summarise(r.Context(), pools)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pools": sums})
}

// snapshotView is a pool snapshot as the API shows it.
type snapshotView struct {
	Pool  string       `json:"pool"`
	At    time.Time    `json:"at"`
	Pods  []podView    `json:"pods"`
	Queue []queuedView `json:"queue"`
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

func viewSnapshot(snap slots.Snapshot) snapshotView {
	v := snapshotView{Pool: snap.Pool.String(), At: snap.At, Pods: []podView{}, Queue: []queuedView{}}
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
	return v
}

func (s *server) getPool(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	// Snapshot of an unknown pool is an empty pool; the config read tells.
	if _, _, err := s.store.Pool(r.Context(), pool); err != nil {
		s.storeError(w, r, err)
		return
	}
	snap, err := s.store.Snapshot(r.Context(), pool)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewSnapshot(snap))
}

type eventView struct {
	Cursor  string            `json:"cursor"`
	At      time.Time         `json:"at"`
	Kind    string            `json:"kind"`
	Subject string            `json:"subject"`
	Fields  map[string]string `json:"fields"`
}

// events returns the events after cursor, waiting up to wait seconds for
// the first one (long poll).
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	q := r.URL.Query()
	cursor := q.Get("cursor")
	if cursor != "" {
		g, seq, ok := strings.Cut(cursor, ":")
		if _, err := strconv.ParseUint(seq, 10, 64); !ok || g == "" || err != nil {
			writeError(w, http.StatusBadRequest, "invalid_cursor", fmt.Sprintf("cursor %q must be a cursor this API returned", cursor))
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be 1-1000")
			return
		}
		limit = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		// Compared in seconds: n*time.Second overflows for huge n and would
		// wrap to a negative wait that passes the check.
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > int(s.maxWait/time.Second) {
			writeError(w, http.StatusBadRequest, "invalid_wait", fmt.Sprintf("wait must be 0-%d seconds", int(s.maxWait.Seconds())))
			return
		}
		wait = time.Duration(n) * time.Second
	}
	ctx := r.Context()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		page, err := s.store.Events(ctx, pool, cursor, limit)
		if err != nil {
			if ctx.Err() != nil {
				return // the client went away
			}
			s.storeError(w, r, err)
			return
		}
		if len(page.Events) > 0 || page.Gap || wait == 0 {
			writeJSON(w, http.StatusOK, viewEvents(page))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			wait = 0 // one last read, then answer
		case <-s.stopping:
			wait = 0 // shutting down: answer now
		case <-time.After(s.pollInterval):
		}
	}
}

func viewEvents(page slots.EventPage) map[string]any {
	evs := make([]eventView, 0, len(page.Events))
	for _, e := range page.Events {
		evs = append(evs, eventView{Cursor: e.Cursor, At: e.At, Kind: e.Kind, Subject: e.Subject, Fields: e.Fields})
	}
	return map[string]any{"events": evs, "next": page.Next, "gap": page.Gap}
}
