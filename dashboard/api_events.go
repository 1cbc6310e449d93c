package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

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
