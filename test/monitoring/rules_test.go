package monitoring

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/internal/testutil"
)

const (
	chartDir      = "../../charts/slotscaler"
	rulesFile     = chartDir + "/files/rules.yaml"
	dashboardFile = chartDir + "/files/dashboard.json"
)

// promtool runs promtool with args in dir and fails the test with its
// output when it fails.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testutil.PromtoolBinary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The rule file is valid for Prometheus (promtool check rules: syntax,
// expressions, templates) and its alerts fire, and stay quiet, as
// testdata/rules_test.yaml expects on synthetic series.
func TestAlertRules(t *testing.T) {
	abs, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	out := promtool(t, ".", "check", "rules", abs)
	if !strings.Contains(out, "SUCCESS: 11 rules found") {
		t.Errorf("promtool check rules: want 11 rules:\n%s", out)
	}
	out = promtool(t, "testdata", "test", "rules", "rules_test.yaml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}

// Every alert of the rule file has a test case where it fires and one
// where it does not (testdata/rules_test.yaml).
func TestEveryAlertIsTested(t *testing.T) {
	src, err := os.ReadFile("testdata/rules_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(src, &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, q := range ruleQueries(t) {
		alert := strings.TrimPrefix(q.where, "rules.yaml ")
		if !fires[alert] {
			t.Errorf("%s: no test case where it fires", alert)
		}
		if !quiet[alert] {
			t.Errorf("%s: no test case where it stays quiet", alert)
		}
	}
}
