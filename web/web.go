// Package web holds the dashboard's templ components, the flat view models
// they render and the embedded static files (CSS, vendored htmx). Components
// never call services: handlers build the view models.
package web

import (
	"embed"
	"io/fs"
)

//go:generate go tool templ generate

//go:embed static
var staticFS embed.FS

// Static is the content of web/static, served under /static/.
var Static = mustSub(staticFS, "static")

func mustSub(f fs.FS, dir string) fs.FS {
	s, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return s
}

// Count is a number shown with its label (pods by state, queued by type).
type Count struct {
	Label string
	N     int
}

// OverviewView is the pools overview.
type OverviewView struct {
	Pools []PoolRow
	Error string // shown instead of the table when the store could not be read
}

// PoolRow is one pool on the overview.
type PoolRow struct {
	Pool          string // namespace/name
	Href          string
	Pods          []Count // by state, fixed order
	SlotsIdle     int
	SlotsRunning  int
	SlotsReserved int
	Queued        []Count // by type
	QueuedTotal   int
	OldestQueued  string // age, "" when nothing is queued
	DesiredPods   string // "?" when the capacity model refused the input
	LivePods      int
	Utilisation   string // "42%"
}

// PoolView is the pool page.
type PoolView struct {
	Pool     string
	Overview string // link back
	LiveURL  string // the SSE stream of grid fragments (htmx's sse extension)
	Grid     GridView
}

// GridView is the live part of the pool page: the pod × slot grid and the queue.
type GridView struct {
	At      string // snapshot time
	Filters []Link // by pod state; Current marks the one applied
	Pages   []Link // empty when everything fits on one page
	// Shown pods of Matching (after the filter) of Total in the pool.
	Shown, Matching, Total int
	Pods                   []PodRow
	Queue                  []QueueRow
}

// Link is a filter or page link.
type Link struct {
	Label   string
	Href    string
	Current bool
}

// PodRow is one pod and its slots.
type PodRow struct {
	Name  string
	State string
	// Flag is set for pods not taking new work normally (expected,
	// cordoned, draining, lost): the row is marked.
	Flag  bool
	Slots []SlotCell
}

// SlotCell is one slot: its state is shown as colour (class) and text.
type SlotCell struct {
	Index           int
	State           string
	Task            string
	Type            string
	Phase           string
	Age             string
	CancelRequested bool
	TaskHref        string // the task page, "" for an idle slot
}

// QueueRow is one queued task.
type QueueRow struct {
	ID   string
	Href string // the task page
	Type string
	Age  string
}

// TaskView is the task page.
type TaskView struct {
	Pool            string
	PoolHref        string
	ID              string
	Type            string
	State           string
	Phase           string
	Pod             string // "" when it never ran
	Slot            string // "" when not in a slot
	Attempt         int
	Reason          string
	ExitCode        string // "" when no exit code is known
	By              string // who approved, rejected or cancelled
	CancelRequested bool
	PayloadSize     int
	Created         string
	Updated         string
	History         []HistoryRow
	Output          string // the tail of the output
	OutputCut       int    // bytes cut from the front of Output, 0 when whole
}

// HistoryRow is one state change of a task.
type HistoryRow struct {
	At     string
	State  string
	Detail string
}

// LoginView is the 401 page's login form.
type LoginView struct {
	Next  string // where to go after logging in
	Error string // "" unless a token was refused
}
