package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/notify"
)

func TestOpenAPIDescribesExactlyTheAPIRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."), "an OpenAPI 3 document")

	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	s := &server{}
	var served []string
	err := chi.Walk(s.routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, apiPrefix+"/") {
			served = append(served, method+" "+route)
		}
		return nil
	})
	require.NoError(t, err)
	slices.Sort(documented)
	slices.Sort(served)
	require.NotEmpty(t, served)
	assert.Equal(t, served, documented, "every API route is in openapi.json, and every path there is served")
}

func TestOpenAPIIsServed(t *testing.T) {
	f := newFixture(t)
	resp := f.do("GET", "/api/v1/openapi.json", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.JSONEq(t, string(openAPI), readAll(t, resp))
}

// Each schema names every field the API renders for its object, and only
// those.
func TestOpenAPISchemasMatchTheObjects(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]schemaDoc `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	for _, tc := range []struct {
		schema string
		nested string // a property whose own properties are compared instead
		typ    reflect.Type
	}{
		{schema: "Task", typ: reflect.TypeFor[taskView]()},
		{schema: "PoolSummary", typ: reflect.TypeFor[poolSummary]()},
		{schema: "Snapshot", typ: reflect.TypeFor[snapshotView]()},
		{schema: "Explanation", typ: reflect.TypeFor[explanationView]()},
		{schema: "Explanation", nested: "constraint", typ: reflect.TypeFor[constraintView]()},
		{schema: "HPABand", typ: reflect.TypeFor[hpaView]()},
		{schema: "JanitorReport", typ: reflect.TypeFor[janitorView]()},
		{schema: "JanitorWait", typ: reflect.TypeFor[janitorreport.Wait]()},
		{schema: "JanitorAction", typ: reflect.TypeFor[janitorreport.Action]()},
		{schema: "WebhookStatus", typ: reflect.TypeFor[notify.Status]()},
		{schema: "Error", typ: reflect.TypeFor[apiError]()},
		{schema: "Action", typ: reflect.TypeFor[decisionRequest]()},
	} {
		t.Run(tc.schema+"/"+tc.nested, func(t *testing.T) {
			s, ok := doc.Components.Schemas[tc.schema]
			require.True(t, ok, "a %s schema", tc.schema)
			props := s.Properties
			if tc.nested != "" {
				var inner schemaDoc
				require.NoError(t, json.Unmarshal(props[tc.nested], &inner))
				props = inner.Properties
			}
			var documented, rendered []string
			for name := range props {
				documented = append(documented, name)
			}
			for i := range tc.typ.NumField() {
				f := tc.typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if !f.IsExported() || name == "-" {
					continue
				}
				rendered = append(rendered, name)
			}
			slices.Sort(documented)
			slices.Sort(rendered)
			assert.Equal(t, rendered, documented)
		})
	}
}

type schemaDoc struct {
	Properties map[string]json.RawMessage `json:"properties"`
}
