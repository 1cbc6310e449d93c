package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

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
	Note            string        `json:"note,omitempty"`
	SubmittedBy     string        `json:"submitted_by,omitempty"`
	Payload         string        `json:"payload"`
	CancelRequested bool          `json:"cancel_requested"`
	WorkspaceDigest string        `json:"workspace_digest,omitempty"`
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
		Output: t.Output, By: t.By, Note: t.Note, SubmittedBy: t.SubmittedBy, Payload: string(t.Payload), CancelRequested: t.CancelRequested,
		WorkspaceDigest: t.WorkspaceDigest,
		Created:         t.Created, Updated: t.Updated, History: []historyView{}}
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
	spec := slots.TaskSpec{ID: req.ID, Type: slots.TaskType(req.Type), Payload: payload}
	if id := identityOf(r.Context()); id != nil {
		spec.SubmittedBy = id.actor()
	}
	res, err := s.store.Submit(r.Context(), pool, spec)
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

// task reads the task the route names, for the API and the task page.
func (s *server) task(r *http.Request) (slots.Task, error) {
	pool, err := poolOf(r)
	if err != nil {
		return slots.Task{}, err
	}
	return s.store.Task(r.Context(), pool, chi.URLParam(r, "id"))
}

func (s *server) getTask(w http.ResponseWriter, r *http.Request) {
	t, err := s.task(r)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewTask(t))
}
