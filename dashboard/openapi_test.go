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

// The Task schema names every field the API renders for a task, and only
// those.
func TestOpenAPITaskSchemaMatchesTheTaskObject(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	task, ok := doc.Components.Schemas["Task"]
	require.True(t, ok, "a Task schema")
	var documented, rendered []string
	for name := range task.Properties {
		documented = append(documented, name)
	}
	typ := reflect.TypeFor[taskView]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		rendered = append(rendered, name)
	}
	slices.Sort(documented)
	slices.Sort(rendered)
	assert.Equal(t, rendered, documented)
	assert.Contains(t, documented, "workspace_digest")
}
