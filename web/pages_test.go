package web

import (
	"bytes"
	"strings"
	"testing"

	"github.com/PuerkitoBio/goquery"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, b *bytes.Buffer) *goquery.Document {
	t.Helper()
	doc, err := goquery.NewDocumentFromReader(b)
	require.NoError(t, err)
	return doc
}

func TestGridShowsSlotStateAsClassAndText(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Grid(GridView{At: "now", Pods: []PodRow{{
		Name: "agent-1", State: "draining", Flag: true,
		Slots: []SlotCell{
			{Index: 0, State: "running", Task: "t-1", Type: "plan_and_apply", Phase: "apply", Age: "3s", CancelRequested: true, TaskHref: "/pools/a/b/tasks/t-1"},
			{Index: 1, State: "idle"},
		},
	}}, Queue: []QueueRow{{ID: "q<1>", Type: "plan", Age: "1m00s"}}}).Render(t.Context(), &b))
	doc := parse(t, &b)
	pod := doc.Find(`[data-testid="pod"]`)
	assert.True(t, pod.HasClass("flagged"))
	assert.Equal(t, "draining", pod.Find(`[data-testid="pod-state"]`).Text())
	s0 := doc.Find(`[data-testid="slot"][data-slot="0"]`)
	assert.True(t, s0.HasClass("slot-running"))
	assert.Equal(t, "running", s0.Find(`[data-testid="slot-state"]`).Text())
	assert.Equal(t, "t-1", s0.Find(`[data-testid="slot-task"]`).Text())
	assert.Equal(t, "/pools/a/b/tasks/t-1", s0.Find(`[data-testid="slot-task"]`).AttrOr("href", ""), "a busy slot links to its task")
	assert.Equal(t, "apply", s0.Find(`[data-testid="slot-phase"]`).Text())
	assert.Equal(t, "3s", s0.Find(`[data-testid="slot-age"]`).Text())
	assert.Equal(t, 1, s0.Find(`[data-testid="slot-cancel"]`).Length())
	s1 := doc.Find(`[data-testid="slot"][data-slot="1"]`)
	assert.Equal(t, 0, s1.Find(`[data-testid="slot-task"]`).Length(), "an idle slot shows no task")
	assert.Equal(t, "q<1>", doc.Find(`[data-testid="queued-task"]`).AttrOr("data-task", ""), "text is escaped, not markup")
}

func TestOverviewShowsTheStoreError(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, OverviewPage(OverviewView{Error: "redis down"}).Render(t.Context(), &b))
	doc := parse(t, &b)
	assert.Equal(t, "redis down", doc.Find(`[data-testid="error"]`).Text())
	assert.Equal(t, 0, doc.Find(`[data-testid="pools"]`).Length())
}

func TestEmptyOverviewSaysSo(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, OverviewPage(OverviewView{}).Render(t.Context(), &b))
	assert.Equal(t, 1, parse(t, &b).Find(`[data-testid="no-pools"]`).Length())
}

func TestPagesLoadStylesAndHtmxFromStatic(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, PoolPage(PoolView{Pool: "a/b", Overview: "/"}).Render(t.Context(), &b))
	doc := parse(t, &b)
	assert.Equal(t, "/static/style.css", doc.Find(`link[rel="stylesheet"]`).AttrOr("href", ""))
	assert.Equal(t, "/static/htmx.min.js", doc.Find(`script`).First().AttrOr("src", ""))
	assert.Equal(t, "/static/sse.js", doc.Find(`script`).Eq(1).AttrOr("src", ""), "htmx's SSE extension, after htmx")
	for _, f := range []string{"style.css", "htmx.min.js", "sse.js"} {
		_, err := Static.Open(f)
		assert.NoError(t, err, f)
	}
}

func TestTaskPageShowsOutputAsTextInPre(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, TaskPage(TaskView{ID: "t1", State: "failed", Output: "<b>boom</b>\nline 2", OutputCut: 10,
		History: []HistoryRow{{At: "x", State: "queued"}, {At: "y", State: "failed", Detail: "exit-code"}}}).Render(t.Context(), &b))
	doc := parse(t, &b)
	assert.Equal(t, "<b>boom</b>\nline 2", doc.Find(`pre[data-testid="output"]`).Text(), "output is escaped text")
	assert.Equal(t, 0, doc.Find(`pre b`).Length())
	assert.Contains(t, doc.Find(`[data-testid="output-cut"]`).Text(), "10 bytes")
	assert.Equal(t, 2, doc.Find(`[data-testid="history-row"]`).Length())
	assert.Equal(t, 0, doc.Find(`[data-testid="task-by"]`).Length(), "no decider, no row")
}

func TestJanitorBlockEscapesTheReportAndSaysWhenThereIsNone(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Janitor(JanitorView{State: "fresh", Age: "3s", At: "2026-03-01 12:00:00Z", Summary: "At the desired size: 1 pod.",
		Waiting: []JanitorWait{{Kind: "template-refused", Text: `The pod policy refuses spec.template: <script>x</script>`}}}).Render(t.Context(), &b))
	doc := parse(t, &b)
	assert.Equal(t, `The pod policy refuses spec.template: <script>x</script>`, strings.TrimSpace(doc.Find(`[data-testid="janitor-wait"]`).Text()), "text, not markup")
	assert.Equal(t, 0, doc.Find(`script`).Length())
	assert.Equal(t, "(as of 3s ago, at 2026-03-01 12:00:00Z)", doc.Find(`[data-testid="janitor-as-of"]`).Text(), "no janitor named: no \"by\"")
	assert.Equal(t, 1, doc.Find(`[data-testid="janitor-actions-none"]`).Length())

	b.Reset()
	require.NoError(t, Janitor(JanitorView{State: "none"}).Render(t.Context(), &b))
	doc = parse(t, &b)
	assert.Equal(t, 1, doc.Find(`[data-testid="janitor-none"]`).Length())
	assert.Equal(t, 0, doc.Find(`[data-testid="janitor-waiting-none"]`).Length())
}
