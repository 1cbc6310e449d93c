package notify

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Payload is the JSON body of a delivery (format json).
type Payload struct {
	// ID is stable per event: the same on every attempt, from every
	// replica. Receivers deduplicate on it (delivery is at least once).
	ID    string `json:"id"`
	Event string `json:"event"`
	Pool  string `json:"pool"`
	Task  string `json:"task"`
	// Type, State and Reason are the task's (State and Reason as the
	// event recorded them; Type read from the task when it was sent, ""
	// when it is gone).
	Type   string `json:"type,omitempty"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// At is when the event happened (Redis's clock).
	At time.Time `json:"at"`
	// Deadline is when the reservation ends (awaiting-approval,
	// reservation-expiring).
	Deadline *time.Time `json:"deadline,omitempty"`
	// URL is the task's page on the dashboard (when the notifier knows
	// the dashboard's address).
	URL string `json:"url,omitempty"`
}

// TaskURL is the dashboard's page of a task under base ("" without a base).
func TaskURL(base string, pool slots.PoolID, task string) string {
	if base == "" {
		return ""
	}
	return strings.TrimSuffix(base, "/") + "/pools/" + url.PathEscape(pool.Namespace) + "/" +
		url.PathEscape(pool.Name) + "/tasks/" + url.PathEscape(task)
}

// Body renders the payload in a webhook's format.
func (p Payload) Body(format string) ([]byte, error) {
	if format == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{p.SlackText()})
	}
	return json.Marshal(p)
}

// SlackText is the one-message summary of the slack format (Slack's mrkdwn:
// <url|text> is a link).
func (p Payload) SlackText() string {
	task := "`" + p.Task + "`"
	if p.URL != "" {
		task = "<" + p.URL + "|" + p.Task + ">"
	}
	typ := ""
	if p.Type != "" {
		typ = " (" + p.Type + ")"
	}
	what := ""
	switch p.Event {
	case EventAwaitingApproval:
		what = "awaits approval"
		if p.Deadline != nil {
			what += " until " + p.Deadline.UTC().Format(time.RFC3339)
		}
	case EventReservationExpiring:
		what = "awaits approval; its reservation expires"
		if p.Deadline != nil {
			what += " at " + p.Deadline.UTC().Format(time.RFC3339)
		}
	case EventSucceeded:
		what = "succeeded"
	case EventFailed:
		what = "failed"
	case EventExpired:
		what = "expired"
	default:
		what = p.Event
	}
	if p.Reason != "" && p.Event != EventSucceeded {
		what += ": " + p.Reason
	}
	return fmt.Sprintf("Task %s%s in pool %s %s", task, typ, p.Pool, what)
}

// eventOf maps a task state in the pool's event stream to the event kind
// it is; "" for states no webhook hears of (queued, running, cancelled…).
func eventOf(state string) string {
	switch slots.TaskState(state) {
	case slots.StateReserved:
		return EventAwaitingApproval
	case slots.StateSucceeded:
		return EventSucceeded
	case slots.StateFailed:
		return EventFailed
	case slots.StateExpired:
		return EventExpired
	}
	return ""
}
