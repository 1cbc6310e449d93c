package web

// ChartView is a pool's history chart (PoolChart): pods above, the queue
// below, on one time axis. The handler computes every coordinate; the
// SVG's viewBox is ChartWidth × ChartHeight and stretches to its box.
type ChartView struct {
	// URL is this fragment's own address: htmx fetches it again every
	// RefreshSeconds and swaps it in.
	URL            string
	RefreshSeconds int
	Window         string        // "1h" or "24h"
	Windows        []ChartWindow // the toggle
	Caption        string        // what the chart shows, in words
	Error          string        // the history could not be read: said instead of the chart
	Samples        int           // samples drawn; 0 shows a sentence instead
	From, To       string        // the time axis' ends
	Pods           ChartPanel
	Queue          ChartPanel
	// Columns are one per sample, over the pods panel: hovering one shows
	// the sample's values (its <title>).
	Columns []ChartColumn
}

// ChartWidth and ChartHeight are a panel's viewBox.
const (
	ChartWidth  = 1000
	ChartHeight = 100
)

// ChartWindow is one choice of the window toggle: Href reloads the page
// with it (without JavaScript), FragmentURL swaps only the chart.
type ChartWindow struct {
	Label       string
	Href        string
	FragmentURL string
	Current     bool
}

// ChartPanel is one panel: areas under lines, one y axis from 0 to Max.
type ChartPanel struct {
	ID      string // "pods" or "queue": its data-testid is "chart-<ID>"
	Label   string
	Max     string // the y axis' top value
	Summary string // the panel's values in words (its <title> and aria-label)
	Areas   []ChartSeries
	Lines   []ChartSeries
}

// Legend lists the panel's series, lines first.
func (p ChartPanel) Legend() []ChartSeries {
	out := make([]ChartSeries, 0, len(p.Lines)+len(p.Areas))
	return append(append(out, p.Lines...), p.Areas...)
}

// ChartSeries is one quantity over time.
type ChartSeries struct {
	Name  string // "desired", "live", "busy", "idle", or a task type
	Class string // CSS class: colour, dash pattern
	// Shapes are the SVG points of each unbroken run of samples (a gap in
	// the history breaks a series): polylines for lines, polygons for areas.
	Shapes  []string
	Points  int    // samples drawn
	Latest  string // the newest value (the legend)
	Summary string // its <title>: the newest value, the least and the most
}

// ChartColumn is a sample's hover area.
type ChartColumn struct {
	X, W  string
	Title string
}

// Sparkline is a pool's recent pods on the overview: live pods and the
// desired count, as lines in a small viewBox (SparkWidth × SparkHeight).
type Sparkline struct {
	Samples int // 0: no history yet, nothing drawn
	Title   string
	Lines   []ChartSeries
}

// SparkWidth and SparkHeight are a sparkline's viewBox.
const (
	SparkWidth  = 100
	SparkHeight = 24
)

// UtilisationBar is a pool's busy share of slots as a bar.
type UtilisationBar struct {
	Width string // of 100
	Title string
}
