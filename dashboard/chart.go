package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/history"
	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// historyReader is what the dashboard needs of the pools' history
// (pkg/history's Reader).
type historyReader interface {
	Window(ctx context.Context, pool slots.PoolID, w history.Window, now time.Time) ([]history.Sample, error)
	Recent(ctx context.Context, pools []slots.PoolID, n int) (map[slots.PoolID][]history.Sample, error)
	Layout() history.Layout
}

// sparkSamples is how many of each pool's newest samples the overview's
// sparklines draw: 15 minutes at the recorder's default interval, and a
// bounded read however many pools there are.
const sparkSamples = 90

// maxDrawn bounds the points of a chart, and so the size of the fragment
// fetched again every few seconds: an hour at the recorder's default 10 s is
// drawn whole; more samples (a shorter interval) are drawn as means of
// consecutive ones.
const maxDrawn = 360

// chartRefresh bounds how often a chart fetches itself again.
const (
	minChartRefresh = 2 * time.Second
	maxChartRefresh = time.Minute
)

// chartLink is the pool page with the chart's window set, keeping the
// grid's filter and page.
func chartLink(p slots.PoolID, q url.Values, w history.Window) (page, fragment string) {
	v := url.Values{}
	for k, vs := range q {
		if k != "window" {
			v[k] = vs
		}
	}
	if w != history.Hour {
		v.Set("window", string(w))
	}
	page = poolHref(p)
	if len(v) > 0 {
		page += "?" + v.Encode()
	}
	return page, poolHref(p) + "/chart?window=" + url.QueryEscape(string(w))
}

// poolChart reads a pool's history and builds its chart. An unreadable
// history is said in the chart, not an error of the page around it.
func (s *server) poolChart(r *http.Request, p slots.PoolID, w history.Window) (web.ChartView, error) {
	now := time.Now()
	var samples []history.Sample
	var err error
	layout := history.DefaultLayout
	if s.history != nil {
		layout = s.history.Layout()
		samples, err = s.history.Window(r.Context(), p, w, now)
	}
	v := chartView(p, w, layout, samples, now)
	for _, o := range []history.Window{history.Hour, history.Day} {
		page, frag := chartLink(p, r.URL.Query(), o)
		v.Windows = append(v.Windows, web.ChartWindow{Label: string(o), Href: page, FragmentURL: frag, Current: o == w})
	}
	_, v.URL = chartLink(p, nil, w)
	if err != nil {
		s.log.Warn("reading pool history", "pool", p.String(), "err", err)
		v.Error = "The pool's history could not be read."
	}
	return v, err
}

// chartView lays samples out on the chart: x from the window's start (or
// the first sample, when the history is younger) to now; each panel's y
// from 0 to the largest value it shows.
func chartView(p slots.PoolID, w history.Window, layout history.Layout, samples []history.Sample, now time.Time) web.ChartView {
	v := web.ChartView{Window: string(w), RefreshSeconds: 60}
	span := layout.Span(w)
	step := typicalStep(samples)
	if w == history.Hour && step > 0 {
		v.RefreshSeconds = int(min(maxChartRefresh, max(minChartRefresh, step)).Seconds())
	}
	samples, per := thin(samples, maxDrawn)
	v.Samples = len(samples)
	every := "every sample"
	switch {
	case w == history.Day:
		every = "each point the mean of " + durationWords(layout.CoarseInterval)
	case per > 1:
		every = fmt.Sprintf("each point the mean of %d samples", per)
	}
	v.Caption = fmt.Sprintf("Last %s of %s, %s.", durationWords(span), p, every)
	if len(samples) == 0 {
		return v
	}
	step = typicalStep(samples)
	start := later(now.Add(-span), samples[0].At)
	end := later(now, samples[len(samples)-1].At)
	if !end.After(start) {
		start = end.Add(-max(step, time.Second))
	}
	if start.After(now.Add(-span)) && w == history.Hour {
		v.Caption = fmt.Sprintf("%s since %s (the history starts there), %s.", p, start.UTC().Format("15:04:05"), every)
	}
	layoutFmt := "15:04"
	if w == history.Day {
		layoutFmt = "Jan 2 15:04"
	}
	v.From, v.To = start.UTC().Format(layoutFmt)+" UTC", end.UTC().Format(layoutFmt)+" UTC"
	xs := make([]float64, len(samples))
	for i, s := range samples {
		xs[i] = float64(web.ChartWidth) * float64(s.At.Sub(start)) / float64(end.Sub(start))
	}
	runs := splitAtGaps(samples, step)

	podsMax := 1.0
	for _, s := range samples {
		podsMax = max(podsMax, s.DesiredPods, s.LivePods, s.BusyPods+s.IdlePods)
	}
	podsMax = math.Ceil(podsMax)
	y := func(val, top float64) float64 { return float64(web.ChartHeight) * (1 - val/top) }
	line := func(name, class, unit string, top float64, val func(history.Sample) float64) web.ChartSeries {
		ser := web.ChartSeries{Name: name, Class: class, Points: len(samples)}
		for _, run := range runs {
			var b strings.Builder
			for i := run[0]; i < run[1]; i++ {
				point(&b, xs[i], y(val(samples[i]), top))
			}
			ser.Shapes = append(ser.Shapes, b.String())
		}
		ser.Latest, ser.Summary = summary(name, unit, samples, val)
		return ser
	}
	// area fills between below(s) and below(s)+val(s): busy from 0, idle on top of busy.
	area := func(name, class string, below, val func(history.Sample) float64) web.ChartSeries {
		ser := web.ChartSeries{Name: name, Class: class, Points: len(samples)}
		for _, run := range runs {
			var b strings.Builder
			for i := run[0]; i < run[1]; i++ {
				point(&b, xs[i], y(below(samples[i])+val(samples[i]), podsMax))
			}
			for i := run[1] - 1; i >= run[0]; i-- {
				point(&b, xs[i], y(below(samples[i]), podsMax))
			}
			ser.Shapes = append(ser.Shapes, b.String())
		}
		ser.Latest, ser.Summary = summary(name, "pods", samples, val)
		return ser
	}
	zero := func(history.Sample) float64 { return 0 }
	busy := func(s history.Sample) float64 { return s.BusyPods }
	v.Pods = web.ChartPanel{ID: "pods", Label: "Pods", Max: strconv.Itoa(int(podsMax)),
		Areas: []web.ChartSeries{
			area("busy", "s-busy", zero, busy),
			area("idle", "s-idle", busy, func(s history.Sample) float64 { return s.IdlePods }),
		},
		Lines: []web.ChartSeries{
			line("desired", "s-desired", "pods", podsMax, func(s history.Sample) float64 { return s.DesiredPods }),
			line("live", "s-live", "pods", podsMax, func(s history.Sample) float64 { return s.LivePods }),
		}}
	v.Pods.Summary = panelSummary("Pods", v.Pods)

	types := map[string]bool{}
	queueMax := 1.0
	for _, s := range samples {
		for t, n := range s.Queued {
			types[t] = true
			queueMax = max(queueMax, n)
		}
	}
	queueMax = math.Ceil(queueMax)
	v.Queue = web.ChartPanel{ID: "queue", Label: "Queued tasks by type", Max: strconv.Itoa(int(queueMax))}
	for i, t := range slices.Sorted(maps.Keys(types)) {
		v.Queue.Lines = append(v.Queue.Lines, line(t, "q-"+strconv.Itoa(i%4), "queued", queueMax, func(s history.Sample) float64 { return s.Queued[t] }))
	}
	v.Queue.Summary = panelSummary("Queued tasks", v.Queue)

	for i, s := range samples {
		left, right := 0.0, float64(web.ChartWidth)
		if i > 0 {
			left = (xs[i-1] + xs[i]) / 2
		}
		if i < len(samples)-1 {
			right = (xs[i] + xs[i+1]) / 2
		}
		v.Columns = append(v.Columns, web.ChartColumn{X: coord(left), W: coord(max(0, right-left)), Title: sampleTitle(s, w, layout)})
	}
	return v
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// thin combines runs of consecutive samples (per of them) so that at most
// max are left; per is 1 when every sample is kept.
func thin(samples []history.Sample, limit int) ([]history.Sample, int) {
	if len(samples) <= limit {
		return samples, 1
	}
	per := (len(samples) + limit - 1) / limit
	out := make([]history.Sample, 0, limit)
	for i := 0; i < len(samples); i += per {
		run := samples[i:min(len(samples), i+per)]
		out = append(out, history.Combine(run[len(run)-1].At, run))
	}
	return out, per
}

// typicalStep is the median time between samples (0 with fewer than two).
func typicalStep(samples []history.Sample) time.Duration {
	if len(samples) < 2 {
		return 0
	}
	d := make([]time.Duration, len(samples)-1)
	for i := range d {
		d[i] = samples[i+1].At.Sub(samples[i].At)
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// splitAtGaps returns [from, to) index runs without a gap of more than
// three typical steps (the recorder stopped): lines do not bridge them.
func splitAtGaps(samples []history.Sample, step time.Duration) [][2]int {
	var runs [][2]int
	from := 0
	for i := 1; i < len(samples); i++ {
		if step > 0 && samples[i].At.Sub(samples[i-1].At) > 3*step {
			runs = append(runs, [2]int{from, i})
			from = i
		}
	}
	return append(runs, [2]int{from, len(samples)})
}

func coord(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) }

func point(b *strings.Builder, x, y float64) {
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(coord(x) + "," + coord(y))
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// summary is a series' newest value, and its newest, least and most in words.
func summary(name, unit string, samples []history.Sample, val func(history.Sample) float64) (latest, text string) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range samples {
		lo, hi = min(lo, val(s)), max(hi, val(s))
	}
	latest = num(val(samples[len(samples)-1]))
	return latest, fmt.Sprintf("%s %s: %s now, between %s and %s", name, unit, latest, num(lo), num(hi))
}

func panelSummary(label string, p web.ChartPanel) string {
	parts := make([]string, 0, len(p.Lines)+len(p.Areas))
	for _, s := range p.Legend() {
		parts = append(parts, s.Name+" "+s.Latest)
	}
	if len(parts) == 0 {
		return label + ": none"
	}
	return label + " now: " + strings.Join(parts, ", ")
}

// sampleTitle is one sample's values, shown when hovering its column.
func sampleTitle(s history.Sample, w history.Window, layout history.Layout) string {
	at := s.At.UTC().Format("15:04:05") + " UTC"
	if w == history.Day {
		at = s.At.UTC().Format("Jan 2 15:04") + "–" + s.At.Add(layout.CoarseInterval).UTC().Format("15:04") + " UTC, means"
	}
	q := make([]string, 0, len(s.Queued))
	for _, t := range slices.Sorted(maps.Keys(s.Queued)) {
		q = append(q, t+" "+num(s.Queued[t]))
	}
	queued := "none"
	if len(q) > 0 {
		queued = strings.Join(q, ", ")
	}
	oldest := "—"
	if s.OldestQueuedSeconds > 0 {
		oldest = ageText(time.Duration(s.OldestQueuedSeconds * float64(time.Second)))
	}
	return fmt.Sprintf("%s: desired %s, live %s (busy %s, idle %s, cordoned %s, draining %s), reserved slots %s; queued %s; oldest queued %s",
		at, num(s.DesiredPods), num(s.LivePods), num(s.BusyPods), num(s.IdlePods), num(s.CordonedPods), num(s.DrainingPods),
		num(s.ReservedSlots), queued, oldest)
}

// durationWords says a window's span: "hour", "24 hours", "5 minutes".
func durationWords(d time.Duration) string {
	switch {
	case d == time.Hour:
		return "hour"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	case d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + " minutes"
	}
	return d.String()
}

// sparkline draws a pool's newest samples: live pods and the desired count.
func sparkline(samples []history.Sample) web.Sparkline {
	v := web.Sparkline{Samples: len(samples)}
	if len(samples) == 0 {
		return v
	}
	top := 1.0
	for _, s := range samples {
		top = max(top, s.LivePods, s.DesiredPods)
	}
	top = math.Ceil(top)
	first, last := samples[0].At, samples[len(samples)-1].At
	x := func(i int) float64 {
		if !last.After(first) {
			return float64(web.SparkWidth)
		}
		return float64(web.SparkWidth) * float64(samples[i].At.Sub(first)) / float64(last.Sub(first))
	}
	y := func(val float64) float64 { return 1 + float64(web.SparkHeight-2)*(1-val/top) }
	runs := splitAtGaps(samples, typicalStep(samples))
	for _, l := range []struct {
		name, class string
		val         func(history.Sample) float64
	}{
		{"desired", "s-desired", func(s history.Sample) float64 { return s.DesiredPods }},
		{"live", "s-live", func(s history.Sample) float64 { return s.LivePods }},
	} {
		ser := web.ChartSeries{Name: l.name, Class: l.class, Points: len(samples)}
		for _, run := range runs {
			var b strings.Builder
			for i := run[0]; i < run[1]; i++ {
				point(&b, x(i), y(l.val(samples[i])))
			}
			ser.Shapes = append(ser.Shapes, b.String())
		}
		v.Lines = append(v.Lines, ser)
	}
	now := samples[len(samples)-1]
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range samples {
		lo, hi = min(lo, s.LivePods), max(hi, s.LivePods)
	}
	v.Title = fmt.Sprintf("Live pods over the last %s: %s now (desired %s), between %s and %s",
		ageText(last.Sub(first)), num(now.LivePods), num(now.DesiredPods), num(lo), num(hi))
	return v
}

// utilisationBar draws a share of 0-1 as a bar.
func utilisationBar(u float64) web.UtilisationBar {
	u = min(1, max(0, u))
	return web.UtilisationBar{Width: coord(u * 100), Title: fmt.Sprintf("%.0f%% of the slots that could hold work hold some", u*100)}
}
