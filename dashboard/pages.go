package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/a-h/templ"

	"github.com/slotscaler/slotscaler/pkg/history"
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

// age renders how long ago t was, as seen from now (both Redis times).
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return ageText(now.Sub(t))
}

// ageText renders a duration the way age does; a negative one reads as 0s.
func ageText(d time.Duration) string {
	d = max(0, d).Truncate(time.Second)
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

// overviewView builds the overview; recent holds each pool's newest
// history samples (its sparkline), nil when they could not be read.
func overviewView(sums []poolSummary, recent map[slots.PoolID][]history.Sample) web.OverviewView {
	v := web.OverviewView{Pools: []web.PoolRow{}}
	for _, p := range sums {
		row := web.PoolRow{Pool: p.Pool, Href: "/pools/" + p.Namespace + "/" + p.Name,
			SlotsIdle: p.SlotsIdle, SlotsRunning: p.SlotsRunning, SlotsReserved: p.SlotsReserved,
			QueuedTotal: p.QueuedTotal, LivePods: p.LivePods, DesiredPods: "?",
			Utilisation: fmt.Sprintf("%.0f%%", p.Utilisation*100), Bar: utilisationBar(p.Utilisation),
			Spark: sparkline(recent[slots.PoolID{Namespace: p.Namespace, Name: p.Name}])}
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
			row.OldestQueued = ageText(p.oldestAge)
		}
		if p.DesiredPods != nil {
			row.DesiredPods = fmt.Sprint(*p.DesiredPods)
		}
		v.Pools = append(v.Pools, row)
	}
	return v
}

func (s *server) overviewPage(w http.ResponseWriter, r *http.Request) {
	sums, err := s.poolSummaries(r.Context(), s.readable(r))
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	awaiting := 0
	for _, p := range sums {
		awaiting += p.SlotsReserved // a reserved slot is a plan awaiting its decision
	}
	var recent map[slots.PoolID][]history.Sample
	if s.history != nil {
		pools := make([]slots.PoolID, len(sums))
		for i, p := range sums {
			pools[i] = slots.PoolID{Namespace: p.Namespace, Name: p.Name}
		}
		// Without history the overview still shows the counters.
		if recent, err = s.history.Recent(r.Context(), pools, sparkSamples); err != nil {
			s.log.Warn("reading pool history for the overview", "err", err)
		}
	}
	v := overviewView(sums, recent)
	v.AwaitingApproval = awaiting
	s.render(w, r, http.StatusOK, web.OverviewPage(v))
}

// podsPerPage bounds the rows of one pool page, so a 1,000-pod pool stays usable.
const podsPerPage = 100

// podFilters are the ?state= values: busy/idle by slots, the rest by pod state.
var podFilters = []string{"all", "busy", "idle", "expected", "active", "cordoned", "draining", "lost"}

// gridQuery is what a pool page shows of the pool: a state filter and a page.
type gridQuery struct {
	State string // one of podFilters
	Page  int    // 1-based
}

// parseGridQuery reads ?state= and ?page=; unknown values fall back to all
// and page 1 rather than failing a page someone bookmarked.
func parseGridQuery(r *http.Request) gridQuery {
	q := gridQuery{State: r.URL.Query().Get("state"), Page: 1}
	if !slices.Contains(podFilters, q.State) {
		q.State = "all"
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && n > 0 {
		q.Page = n
	}
	return q
}

func (q gridQuery) values(state string, page int) string {
	v := url.Values{}
	if state != "all" {
		v.Set("state", state)
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func (q gridQuery) matches(p slots.PodSnapshot) bool {
	switch q.State {
	case "all":
		return true
	case "busy":
		return p.Busy()
	case "idle":
		return !p.Busy()
	}
	return string(p.State) == q.State
}

func poolHref(p slots.PoolID) string {
	return "/pools/" + url.PathEscape(p.Namespace) + "/" + url.PathEscape(p.Name)
}

func taskHref(p slots.PoolID, id string) string {
	return poolHref(p) + "/tasks/" + url.PathEscape(id)
}

func gridView(snap slots.Snapshot, q gridQuery) web.GridView {
	p := snap.Pool
	base := poolHref(p)
	v := web.GridView{At: snap.At.UTC().Format(time.RFC3339), Total: len(snap.Pods)}
	for _, f := range podFilters {
		v.Filters = append(v.Filters, web.Link{Label: f, Href: base + q.values(f, 1), Current: f == q.State})
	}
	var matching []slots.PodSnapshot
	for _, pod := range snap.Pods {
		if q.matches(pod) {
			matching = append(matching, pod)
		}
	}
	v.Matching = len(matching)
	pages := max(1, (len(matching)+podsPerPage-1)/podsPerPage)
	page := min(q.Page, pages)
	if pages > 1 {
		for n := 1; n <= pages; n++ {
			v.Pages = append(v.Pages, web.Link{Label: strconv.Itoa(n), Href: base + q.values(q.State, n), Current: n == page})
		}
	}
	shown := matching[(page-1)*podsPerPage : min(len(matching), page*podsPerPage)]
	v.Shown = len(shown)
	for _, pod := range shown {
		row := web.PodRow{Name: pod.Name, State: string(pod.State), Flag: pod.State != slots.PodActive}
		for _, sl := range pod.Slots {
			cell := web.SlotCell{Index: sl.Index, State: string(sl.State), Task: sl.Task,
				Type: string(sl.Type), Phase: string(sl.Phase), Age: age(snap.At, sl.Since), CancelRequested: sl.CancelRequested}
			if sl.Task != "" {
				cell.TaskHref = taskHref(p, sl.Task)
			}
			row.Slots = append(row.Slots, cell)
		}
		v.Pods = append(v.Pods, row)
	}
	v.Queued = snap.QueuedTotal()
	for _, t := range snap.Queue {
		v.Queue = append(v.Queue, web.QueueRow{ID: t.ID, Href: taskHref(p, t.ID), Type: string(t.Type), Age: age(snap.At, t.QueuedAt)})
	}
	return v
}

func scalingView(p poolSummary) web.ScalingView {
	v := web.ScalingView{Desired: "?", Live: p.LivePods, At: p.At.UTC().Format(time.RFC3339), HPA: p.HPA.Text}
	if p.DesiredPods != nil {
		v.Desired = strconv.Itoa(*p.DesiredPods)
	}
	if p.Explanation != nil {
		v.Explanation = p.Explanation.Text
	}
	return v
}

func (s *server) poolPage(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	sum, err := s.poolSummary(r.Context(), snap.Pool)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	approvals, _, err := s.awaiting(r, []slots.PoolID{snap.Pool}, maxApprovals)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	q := parseGridQuery(r)
	chart, _ := s.poolChart(r, snap.Pool, chartWindow(r))
	rep, err := s.janitorReport(r.Context(), snap.Pool)
	hooks, hooksErr := s.webhookStatus(r.Context(), snap.Pool)
	s.render(w, r, http.StatusOK, web.PoolPage(web.PoolView{Pool: snap.Pool.String(), Overview: "/",
		LiveURL: poolHref(snap.Pool) + "/live" + q.values(q.State, q.Page), Scaling: scalingView(sum),
		Janitor: janitorPanel(rep, err, sum.At), Webhooks: webhooksPanel(hooks, hooksErr),
		Chart: chart, Grid: gridView(snap, q), Approvals: approvals}))
}

// chartWindow reads ?window=; an unknown one falls back to the hour rather
// than failing a page someone bookmarked.
func chartWindow(r *http.Request) history.Window {
	w, err := history.ParseWindow(r.URL.Query().Get("window"))
	if err != nil {
		return history.Hour
	}
	return w
}

// chartFragment serves the chart alone: htmx re-fetches it and swaps it
// in (its refresh, the window toggle).
func (s *server) chartFragment(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err == nil {
		_, _, err = s.store.Pool(r.Context(), pool)
	}
	if err != nil {
		s.fragmentError(w, r, err)
		return
	}
	chart, err := s.poolChart(r, pool, chartWindow(r))
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	s.render(w, r, http.StatusOK, web.PoolChart(chart))
}

// fragmentError answers a fragment htmx polls (grid, chart): a pool that
// is gone or invalid gets the error page; anything else (a Redis outage)
// only an error status, which htmx does not swap, so the last fragment
// stays on screen and polling goes on.
func (s *server) fragmentError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, slots.ErrPoolNotFound) || errors.Is(err, slots.ErrInvalidPool) {
		s.pageError(w, r, err)
		return
	}
	status, _ := errorStatus(err)
	w.WriteHeader(status)
}

// poolGrid serves the grid fragment htmx polls.
func (s *server) poolGrid(w http.ResponseWriter, r *http.Request) {
	snap, err := s.snapshot(r)
	if err != nil {
		s.fragmentError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, web.Grid(gridView(snap, parseGridQuery(r))))
}

// outputTail is how much of a task's output the task page shows.
const outputTail = 64 << 10

func taskPageView(t slots.Task) web.TaskView {
	v := web.TaskView{Pool: t.Pool.String(), PoolHref: poolHref(t.Pool), ID: t.ID, Type: string(t.Type),
		State: string(t.State), Phase: string(t.Phase), Pod: t.Pod, Attempt: t.Attempt, Reason: t.Reason,
		By: t.By, Note: t.Note, SubmittedBy: t.SubmittedBy, CancelRequested: t.CancelRequested, PayloadSize: len(t.Payload), WorkspaceDigest: t.WorkspaceDigest,
		Created: stamp(t.Created), Updated: stamp(t.Updated), Output: t.Output}
	if t.Slot >= 0 && t.Pod != "" {
		v.Slot = strconv.Itoa(t.Slot)
	}
	// An exit code means something only when the executor ran to its end.
	if t.Started && (t.State == slots.StateSucceeded || t.State == slots.StateFailed && t.Reason == slots.ReasonExitCode) {
		v.ExitCode = strconv.Itoa(t.ExitCode)
	}
	if len(v.Output) > outputTail {
		v.OutputCut = len(v.Output) - outputTail
		v.Output = v.Output[v.OutputCut:]
	}
	for _, h := range t.History {
		v.History = append(v.History, web.HistoryRow{At: stamp(h.At), State: h.State, Detail: h.Detail})
	}
	return v
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func (s *server) taskPage(w http.ResponseWriter, r *http.Request) {
	t, err := s.task(r)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	v := taskPageView(t)
	v.Decisions = s.decisionsView(identityOf(r.Context()), t)
	s.render(w, r, http.StatusOK, web.TaskPage(v))
}

// live streams the pool's grid fragment over SSE (event "grid") each time
// the pool hub reads the pool. It has no overall timeout: it ends when the
// viewer leaves or the server stops (--max-streams-per-client bounds how
// many one client holds).
func (s *server) live(w http.ResponseWriter, r *http.Request) {
	pool, err := poolOf(r)
	if err == nil {
		_, _, err = s.store.Pool(r.Context(), pool)
	}
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	q := parseGridQuery(r)
	rc := http.NewResponseController(w)
	// The server's read and write timeouts would cut the stream: no read
	// deadline (nothing more to read), and a write deadline per event so a
	// viewer that stops reading is dropped.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	sub := s.hub.subscribe(pool)
	defer sub.close()
	var buf bytes.Buffer
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case snap := <-sub.C:
			buf.Reset()
			if err := web.Grid(gridView(snap, q)).Render(r.Context(), &buf); err != nil {
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			if err := writeSSE(w, "grid", buf.Bytes()); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// writeSSE writes one event; each line of data gets its own data: field.
func writeSSE(w io.Writer, event string, data []byte) error {
	var b bytes.Buffer
	b.WriteString("event: " + event + "\n")
	for line := range bytes.Lines(data) {
		b.WriteString("data: ")
		b.Write(bytes.TrimRight(line, "\r\n"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}
