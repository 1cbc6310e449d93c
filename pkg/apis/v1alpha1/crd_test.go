package v1alpha1_test

import (
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const crdPath = "../../../charts/slotscaler/crds/slotscaler.io_agentpools.yaml"

// crdBudget bounds the generated CRD, in bytes. The embedded pod template's
// schema alone is ~200 KB; its upstream descriptions would add ~430 KB
// more (make generate drops them). Well under 262,144 bytes, the limit of
// the last-applied annotation, so `kubectl apply -f` of the CRD works.
const crdBudget = 240_000

type schema struct {
	Description          string            `json:"description"`
	Properties           map[string]schema `json:"properties"`
	Items                *schema           `json:"items"`
	AdditionalProperties *schema           `json:"additionalProperties"`
}

type crd struct {
	Spec struct {
		Versions []struct {
			Name    string `json:"name"`
			Columns []struct {
				Name     string `json:"name"`
				JSONPath string `json:"jsonPath"`
				Priority int    `json:"priority"`
			} `json:"additionalPrinterColumns"`
			Schema struct {
				OpenAPIV3Schema schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

func readCRD(t *testing.T) ([]byte, crd) {
	t.Helper()
	raw, err := os.ReadFile(crdPath)
	require.NoError(t, err)
	var c crd
	require.NoError(t, yaml.Unmarshal(raw, &c))
	require.Len(t, c.Spec.Versions, 1)
	return raw, c
}

// walk calls f for every property below s, with its dotted path.
func walk(path string, s schema, f func(path string, s schema)) {
	for name, p := range s.Properties {
		f(path+name, p)
		walk(path+name+".", p, f)
	}
	if s.Items != nil {
		walk(path, *s.Items, f)
	}
	if s.AdditionalProperties != nil {
		walk(path, *s.AdditionalProperties, f)
	}
}

// `kubectl explain agentpool.spec.idleFor` (and every other field of the
// AgentPool's own) says something, while the pod template's fields carry
// no description (kubectl explain pod documents them) and the CRD stays
// within its budget.
func TestCRDDescribesOwnFieldsOnly(t *testing.T) {
	raw, c := readCRD(t)
	require.Less(t, len(raw), crdBudget, "CRD size in bytes: did descriptions under spec.template come back?")
	root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
	require.NotEmpty(t, root.Description)
	spec, status := root.Properties["spec"], root.Properties["status"]
	require.NotEmpty(t, spec.Description)
	require.NotEmpty(t, status.Description)
	require.Contains(t, spec.Properties["idleFor"].Description, "Default 60s")
	require.Contains(t, status.Properties["queuedTasks"].Description, "queue")
	template := spec.Properties["template"]
	require.Contains(t, template.Description, "agent pod", "spec.template itself is described")

	var undescribed, underTemplate []string
	visit := func(path string, s schema) {
		switch {
		case strings.HasPrefix(path, "spec.template."):
			if s.Description != "" {
				underTemplate = append(underTemplate, path)
			}
		case s.Description == "":
			undescribed = append(undescribed, path)
		}
	}
	visit("spec.template", template)
	walk("spec.", spec, visit)
	walk("status.", status, visit)
	sort.Strings(undescribed)
	sort.Strings(underTemplate)
	require.Empty(t, undescribed, "AgentPool fields without a description (a Go doc comment on the field)")
	require.Empty(t, underTemplate, "descriptions inside spec.template (make generate's crdtrim step drops them)")
	containers := template.Properties["spec"].Properties["containers"]
	require.NotNil(t, containers.Items, "the template's schema itself is kept")
	require.Contains(t, containers.Items.Properties, "image", "the template's schema itself is kept")
}

// kubectl get agentpools shows the queue and the approvals waiting; the
// slot policy only with -o wide.
func TestCRDPrinterColumns(t *testing.T) {
	_, c := readCRD(t)
	got := map[string]string{}
	prio := map[string]int{}
	for _, col := range c.Spec.Versions[0].Columns {
		got[col.Name], prio[col.Name] = col.JSONPath, col.Priority
	}
	for name, want := range map[string]struct {
		path     string
		priority int
	}{
		"Queued":   {".status.queuedTasks", 0},
		"Awaiting": {".status.awaitingApproval", 0},
		"Slots":    {".status.slotPolicy", 1},
	} {
		require.Equal(t, want.path, got[name], name)
		require.Equal(t, want.priority, prio[name], name)
	}
}
