// Command crdtrim drops the descriptions inside chosen subtrees of a
// generated CRD's schema, keeping the subtree root's own description.
//
// controller-gen's maxDescLen is global: either every field has its
// description or none has. The AgentPool embeds a whole PodTemplateSpec,
// whose upstream descriptions would make up most of the CRD (and `kubectl
// explain` already documents pods), so `make generate` keeps the
// descriptions of the AgentPool's own fields and drops those under
// spec.template with this command:
//
//	go run ./scripts/crdtrim -under spec.template charts/slotscaler/crds/*.yaml
//
// The file is rewritten the way controller-gen writes it (JSON-ordered keys
// through sigs.k8s.io/yaml), so its output is deterministic and a file with
// nothing to drop is left byte for byte as it was.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	under := flag.String("under", "", "comma-separated field paths below each version's openAPIV3Schema (e.g. spec.template) whose nested descriptions are dropped")
	flag.Parse()
	if *under == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: crdtrim -under spec.template FILE...")
		os.Exit(2)
	}
	for _, f := range flag.Args() {
		if err := trimFile(f, strings.Split(*under, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "crdtrim:", err)
			os.Exit(1)
		}
	}
}

func trimFile(path string, under []string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := trim(in, under)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if bytes.Equal(in, out) {
		return nil
	}
	return os.WriteFile(path, out, 0o644)
}

// trim rewrites one CRD document.
func trim(in []byte, under []string) ([]byte, error) {
	body, ok := bytes.CutPrefix(in, []byte("---\n"))
	if !ok || bytes.Contains(body, []byte("\n---\n")) {
		return nil, errors.New("want one YAML document starting with ---, as controller-gen writes it")
	}
	j, err := yaml.YAMLToJSON(body)
	if err != nil {
		return nil, err
	}
	var crd map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber() // integers stay exact, as controller-gen keeps them
	if err := dec.Decode(&crd); err != nil {
		return nil, err
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	if len(versions) == 0 {
		return nil, errors.New("no spec.versions: not a CRD")
	}
	for _, v := range versions {
		schema, _ := dig(v, "schema", "openAPIV3Schema").(map[string]any)
		for _, p := range under {
			node := schema
			for _, field := range strings.Split(p, ".") {
				node, _ = dig(node, "properties", field).(map[string]any)
			}
			if node == nil {
				return nil, fmt.Errorf("no field %s in the schema", p)
			}
			for k, child := range node {
				if k != "description" {
					dropDescriptions(child)
				}
			}
		}
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return nil, err
	}
	return append([]byte("---\n"), out...), nil
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// dropDescriptions removes every schema's description below v. Only the
// "description" key of a schema goes: a property named description (a key
// of a properties map) is a field, and is walked like any other.
func dropDescriptions(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "properties" {
				if props, ok := child.(map[string]any); ok {
					for _, p := range props {
						dropDescriptions(p)
					}
				}
				continue
			}
			if k == "description" {
				if _, ok := child.(string); ok {
					delete(v, k)
					continue
				}
			}
			dropDescriptions(child)
		}
	case []any:
		for _, child := range v {
			dropDescriptions(child)
		}
	}
}
