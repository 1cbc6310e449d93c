package monitoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
)

// object is one rendered document, kept generic: the prometheus-operator
// types are not in this module's graph.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	raw []byte
}

// render is `helm template` of the chart with the multi-pool CI values
// (two pools in team-a and team-b) and more flags, decoded.
func render(t *testing.T, args ...string) []object {
	t.Helper()
	full := append([]string{"template", "slotscaler", chartDir, "--namespace", "slotscaler",
		"-f", filepath.Join(chartDir, "ci", "multi-pool-values.yaml")}, args...)
	out, err := testutil.Helm(t, full...)
	if err != nil {
		t.Fatal(err)
	}
	var objs []object
	dec := utilyaml.NewDocumentDecoder(io.NopCloser(bytes.NewReader(out)))
	buf := make([]byte, 4<<20)
	for {
		n, err := dec.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the rendered chart: %v", err)
		}
		doc := slices.Clone(buf[:n])
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if o.Kind == "" {
			continue
		}
		o.raw = doc
		objs = append(objs, o)
	}
	return objs
}

func only(t *testing.T, objs []object, kind string) []object {
	t.Helper()
	var out []object
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func one(t *testing.T, objs []object, kind string) object {
	t.Helper()
	got := only(t, objs, kind)
	if len(got) != 1 {
		t.Fatalf("want one %s, got %d", kind, len(got))
	}
	return got[0]
}

var all = []string{"--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.grafanaDashboard.enabled=true",
	"--set", "monitoring.podMonitor.enabled=true"}

// Off by default: no monitoring object, no ConfigMap.
func TestChartMonitoringOffByDefault(t *testing.T) {
	objs := render(t)
	for _, kind := range []string{"PrometheusRule", "PodMonitor", "ConfigMap"} {
		if got := only(t, objs, kind); len(got) > 0 {
			t.Errorf("%s rendered by default", kind)
		}
	}
}

// The PrometheusRule's spec is files/rules.yaml as it is: the file
// promtool tests is the one Prometheus gets.
func TestChartPrometheusRuleIsTheRuleFile(t *testing.T) {
	pr := one(t, render(t, append(all, "--set", "monitoring.prometheusRule.labels.release=prometheus",
		"--set", "monitoring.prometheusRule.namespace=monitoring")...), "PrometheusRule")
	if pr.Metadata.Labels["release"] != "prometheus" || pr.Metadata.Namespace != "monitoring" {
		t.Errorf("labels and namespace not applied: %+v", pr.Metadata)
	}
	var rendered struct {
		APIVersion string `json:"apiVersion"`
		Spec       any    `json:"spec"`
	}
	if err := yaml.Unmarshal(pr.raw, &rendered); err != nil {
		t.Fatal(err)
	}
	if rendered.APIVersion != "monitoring.coreos.com/v1" {
		t.Errorf("apiVersion %q", rendered.APIVersion)
	}
	src, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file any
	if err := yaml.Unmarshal(src, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rendered.Spec, file) {
		t.Errorf("the PrometheusRule's spec is not %s:\n%s", rulesFile, pr.raw)
	}
}

// The dashboard ConfigMap carries the Grafana sidecar's label and
// files/dashboard.json byte for byte; docs/ shows the same file.
func TestChartGrafanaDashboard(t *testing.T) {
	cm := one(t, render(t, append(all, "--set", "monitoring.grafanaDashboard.annotations.grafana_folder=Platform")...), "ConfigMap")
	if cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("no grafana_dashboard label: %v", cm.Metadata.Labels)
	}
	if cm.Metadata.Annotations["grafana_folder"] != "Platform" {
		t.Errorf("annotations not applied: %v", cm.Metadata.Annotations)
	}
	var c corev1.ConfigMap
	if err := yaml.UnmarshalStrict(cm.raw, &c); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	got := c.Data["slotscaler-pools.json"]
	if got != strings.TrimRight(string(want), "\n") {
		t.Errorf("the ConfigMap's dashboard is not %s", dashboardFile)
	}
	if !json.Valid([]byte(got)) {
		t.Error("the dashboard is not JSON")
	}
	docs, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, want) {
		t.Error("docs/grafana-dashboard.json is not the chart's dashboard")
	}

	other := one(t, render(t, append(all, "--set", "monitoring.grafanaDashboard.labels.grafana_dashboard=null",
		"--set", "monitoring.grafanaDashboard.labels.dashboards=slotscaler")...), "ConfigMap")
	if _, ok := other.Metadata.Labels["grafana_dashboard"]; ok || other.Metadata.Labels["dashboards"] != "slotscaler" {
		t.Errorf("the sidecar label is not configurable: %v", other.Metadata.Labels)
	}
}

// podMonitor is the fields of a PodMonitor the chart sets.
type podMonitor struct {
	Spec struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		PodMetricsEndpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// The PodMonitor scrapes exactly the agent pods of the chart's pools, in
// their namespaces, on the agent container's named metrics port.
func TestChartPodMonitorSelectsTheAgents(t *testing.T) {
	objs := render(t, all...)
	var pm podMonitor
	raw := one(t, objs, "PodMonitor").raw
	if err := yaml.Unmarshal(raw, &pm); err != nil {
		t.Fatal(err)
	}
	if got := pm.Spec.NamespaceSelector.MatchNames; !slices.Equal(got, []string{"team-a", "team-b"}) {
		t.Errorf("namespaces %v, want the pools' team-a and team-b", got)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
		t.Fatalf("endpoints %+v", pm.Spec.PodMetricsEndpoints)
	}
	port := pm.Spec.PodMetricsEndpoints[0].Port
	sel := labels.SelectorFromSet(pm.Spec.Selector.MatchLabels)
	pools := only(t, objs, "AgentPool")
	if len(pools) != 2 {
		t.Fatalf("want the CI values' two pools, got %d", len(pools))
	}
	for _, o := range pools {
		var ap v1alpha1.AgentPool
		if err := yaml.Unmarshal(o.raw, &ap); err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(ap.Spec.Template.Labels)) {
			t.Errorf("AgentPool %s/%s: its pods (%v) are not selected by %v", ap.Namespace, ap.Name, ap.Spec.Template.Labels, sel)
		}
		named := false
		for _, c := range ap.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				named = named || (p.Name == port && p.ContainerPort == 8082)
			}
		}
		if !named {
			t.Errorf("AgentPool %s/%s: no container port %q (8082, the agent's /metrics)", ap.Namespace, ap.Name, port)
		}
	}
	// Nothing else of the release carries the agents' labels.
	for _, d := range only(t, objs, "Deployment") {
		var dep struct {
			Spec struct {
				Template struct {
					Metadata struct {
						Labels map[string]string `json:"labels"`
					} `json:"metadata"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(d.raw, &dep); err != nil {
			t.Fatal(err)
		}
		if sel.Matches(labels.Set(dep.Spec.Template.Metadata.Labels)) {
			t.Errorf("the PodMonitor selects Deployment %s's pods", d.Metadata.Name)
		}
	}

	var set podMonitor
	if err := yaml.Unmarshal(one(t, render(t, append(all, "--set", "monitoring.podMonitor.namespaces={ci,team-z}",
		"--set", "monitoring.podMonitor.interval=15s")...), "PodMonitor").raw, &set); err != nil {
		t.Fatal(err)
	}
	if got := set.Spec.NamespaceSelector.MatchNames; !slices.Equal(got, []string{"ci", "team-z"}) {
		t.Errorf("monitoring.podMonitor.namespaces: got %v", got)
	}
	if set.Spec.PodMetricsEndpoints[0].Interval != "15s" {
		t.Errorf("interval %q", set.Spec.PodMetricsEndpoints[0].Interval)
	}
}

// A value of the wrong shape is refused by values.schema.json.
func TestChartMonitoringValuesAreChecked(t *testing.T) {
	for _, bad := range [][]string{
		{"--set", "monitoring.podMonitor.interval=often"},
		{"--set", "monitoring.prometheusRule.enable=true"},
		{"--set", "monitoring.podMonitor.namespaces={Not_A_Namespace}"},
	} {
		full := append([]string{"template", "slotscaler", chartDir, "--namespace", "slotscaler"}, bad...)
		if _, err := testutil.Helm(t, full...); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("helm template %v: want a schema error, got %v", bad, err)
		}
	}
}
