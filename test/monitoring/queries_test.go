package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// query is one PromQL expression of the rules or the dashboard.
type query struct {
	where string // "rules.yaml SlotscalerQueueStalled", "dashboard.json panel \"Queued tasks\""
	expr  string
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string `json:"alert"`
			Record string `json:"record"`
			Expr   string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

func ruleQueries(t *testing.T) []query {
	t.Helper()
	src, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(src, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var out []query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, query{where: "rules.yaml " + r.Alert + r.Record, expr: r.Expr})
		}
	}
	return out
}

// grafanaVars are the dashboard's variables, replaced by what Grafana
// would put there before the query is parsed.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "${__rate_interval}", "5m",
	"$__interval", "1m", "${__interval}", "1m",
	"$__range", "6h", "${__range}", "6h",
	"${pool}", ".*", "$pool", ".*",
)

var labelValues = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// dashboardQueries returns every target's expr of every panel (rows'
// nested panels too) and every query variable's query, the variables
// replaced; label_values(selector, label) becomes its selector.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	src, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(src, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{where: fmt.Sprintf("dashboard.json panel %q target %s", p.Title, tg.RefID), expr: grafanaVars.Replace(tg.Expr)})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		sel := q
		if m := labelValues.FindStringSubmatch(q); m != nil {
			sel = m[1]
		}
		out = append(out, query{where: "dashboard.json variable " + v.Name, expr: grafanaVars.Replace(sel)})
	}
	return out
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// Prometheus' own labels of every scraped series, besides the metric's.
var targetLabels = []string{"instance", "job", "namespace", "pod", "container", "service", "endpoint"}

// exported are the metric names (sample names: a histogram's _bucket,
// _sum and _count) a binary exported, each with the labels it carried.
type exported map[string]map[string]bool

func (e exported) add(name string, labels ...string) {
	if e[name] == nil {
		e[name] = map[string]bool{}
	}
	for _, l := range labels {
		e[name][l] = true
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)
var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)

// addScrape adds the samples of a /metrics page.
func (e exported) addScrape(page string) {
	for _, line := range strings.Split(page, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, l[1])
		}
		e.add(m[1], labels...)
	}
}

var descFields = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// addDescribed adds the metrics a collector describes: for the janitor,
// whose per-pool series exist only while it runs pools in Kubernetes.
func (e exported) addDescribed(t *testing.T, c prometheus.Collector) {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descFields.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the descriptor %s", d)
		}
		var labels []string
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		e.add(m[1], labels...)
	}
}

// runningBinaries starts the real scaler and agent on a real Redis, runs a
// plan and a plan_and_apply's plan through the agent, asks the scaler as
// KEDA does, and returns what both export, plus the janitor's metrics
// (pkg/janitor's collector: the janitor binary needs a Kubernetes API).
func runningBinaries(t *testing.T) exported {
	t.Helper()
	bin := t.TempDir()
	if err := testutil.BuildBinaries(bin, "./scaler", "./agent"); err != nil {
		t.Fatal(err)
	}
	url, prefix := redistest.Standalone(t), redistest.Prefix(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	store, err := slots.New(ctx, rdb, slots.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	pool := slots.PoolID{Namespace: "team", Name: "metrics"}
	if _, err := store.DeclarePool(ctx, pool, slots.DefaultPoolConfig()); err != nil {
		t.Fatal(err)
	}

	scalerMetrics := testutil.FreeAddr(t)
	grpcAddr := testutil.StartScaler(t, filepath.Join(bin, "scaler"), "REDIS_URL="+url, "KEY_PREFIX="+prefix, "METRICS_ADDRESS="+scalerMetrics)

	agentMetrics := testutil.FreeAddr(t)
	work := t.TempDir()
	executor := filepath.Join(work, "run-task")
	testutil.WriteExecutable(t, executor, strings.NewReader("#!/bin/sh\ncat >/dev/null\nexit 0\n"))
	agent := exec.Command(filepath.Join(bin, "agent"))
	agent.Env = append(os.Environ(), "REDIS_URL="+url, "KEY_PREFIX="+prefix, "POOL_NAMESPACE="+pool.Namespace,
		"POOL_NAME="+pool.Name, "POD_NAME=agent-1", "POD_UID=uid-1", "EXECUTOR="+executor, "LISTEN_ADDRESS="+agentMetrics,
		"WORKSPACE_ROOT="+filepath.Join(work, "ws"), "HEARTBEAT_INTERVAL=1s")
	logs := &testutil.SyncBuffer{}
	agent.Stdout, agent.Stderr = logs, logs
	agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})

	for _, s := range []slots.TaskSpec{{ID: "plan-1", Type: slots.Plan}, {ID: "pa-1", Type: slots.PlanAndApply}} {
		if _, err := store.Submit(ctx, pool, s); err != nil {
			t.Fatal(err)
		}
	}
	waitState := func(id string, want slots.TaskState) {
		t.Helper()
		var st slots.TaskState
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			tk, err := store.Task(ctx, pool, id)
			if err != nil {
				t.Fatal(err)
			}
			if st = tk.State; st == want {
				return
			}
		}
		t.Fatalf("task %s is %s, not %s", id, st, want)
	}
	waitState("plan-1", slots.StateSucceeded)
	waitState("pa-1", slots.StateReserved)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ref := &pb.ScaledObjectRef{Name: "metrics", Namespace: pool.Namespace, ScalerMetadata: map[string]string{"pool": pool.Name}}
	spec, err := pb.NewExternalScalerClient(conn).GetMetricSpec(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewExternalScalerClient(conn).GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: spec.MetricSpecs[0].MetricName}); err != nil {
		t.Fatal(err)
	}

	e := exported{}
	e.addScrape(get(t, scalerMetrics))
	e.addScrape(get(t, agentMetrics))
	reg := prometheus.NewRegistry()
	janitor.NewMetrics(reg)
	// The notifier's series exist once it delivered: described instead.
	if _, err := notify.New(store, rdb, notify.Config{}, notify.Options{Consumer: "monitoring", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	e.addDescribed(t, reg)
	return e
}

func get(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// selectors returns the vector selectors of an expression (range
// selectors' too), each with its metric name.
func selectors(expr parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

func nameOf(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == "__name__" {
			return m.Value
		}
	}
	return ""
}

// Every query of the alerting rules and of the Grafana dashboard parses
// with Prometheus' PromQL parser, and every metric it names is exported by
// a running binary, with every label it matches on or groups by.
func TestQueriesNameExportedMetrics(t *testing.T) {
	queries := append(ruleQueries(t), dashboardQueries(t)...)
	if len(queries) < 25 {
		t.Fatalf("only %d queries found: the rules or the dashboard were not read", len(queries))
	}
	parsed := make([]parser.Expr, len(queries))
	for i, q := range queries {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(q.expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
			continue
		}
		parsed[i] = expr
	}
	if t.Failed() {
		return
	}

	have := runningBinaries(t)
	used := map[string]bool{}
	for i, q := range queries {
		for _, vs := range selectors(parsed[i]) {
			name := nameOf(vs)
			if !strings.HasPrefix(name, "slotscaler_") {
				t.Errorf("%s: selector %s does not name a slotscaler metric", q.where, vs)
				continue
			}
			used[name] = true
			labels, ok := have[name]
			if !ok {
				t.Errorf("%s: %s is exported by no binary", q.where, name)
				continue
			}
			for _, m := range vs.LabelMatchers {
				if m.Name != "__name__" && !labels[m.Name] && !slices.Contains(targetLabels, m.Name) {
					t.Errorf("%s: %s has no label %q", q.where, name, m.Name)
				}
			}
		}
		parser.Inspect(parsed[i], func(n parser.Node, _ []parser.Node) error {
			agg, ok := n.(*parser.AggregateExpr)
			if !ok || agg.Without {
				return nil
			}
			for _, vs := range selectors(agg.Expr) {
				for _, l := range agg.Grouping {
					if labels := have[nameOf(vs)]; labels != nil && !labels[l] && !slices.Contains(targetLabels, l) {
						t.Errorf("%s: groups %s by %q, a label it does not have", q.where, nameOf(vs), l)
					}
				}
			}
			return nil
		})
	}
	// The pack covers what the issue asks for: a metric the queries never
	// use would be a gap in the dashboard.
	for _, name := range []string{
		"slotscaler_pool_queued_tasks", "slotscaler_pool_reserved_slots", "slotscaler_pool_next_reservation_expiry_seconds",
		"slotscaler_pool_pods", "slotscaler_pool_busy_pods", "slotscaler_pool_idle_pods", "slotscaler_pool_queue_wait_seconds_bucket",
		"slotscaler_pool_phase_duration_seconds_bucket", "slotscaler_pool_tasks_finished_total", "slotscaler_pool_reservation_expiries_total",
		"slotscaler_scaler_redis_up", "slotscaler_janitor_pool_degraded", "slotscaler_agent_busy_slots",
	} {
		if !used[name] {
			t.Errorf("no rule or panel uses %s", name)
		}
	}
}
