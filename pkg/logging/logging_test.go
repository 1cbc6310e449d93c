package logging

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJSONFormatWritesJSONAtLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "json", "warn")
	require.NoError(t, err)
	log.Info("hidden")
	log.Warn("shown", "pool", "ns/a")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &rec))
	assert.Equal(t, "shown", rec["msg"])
	assert.Equal(t, "ns/a", rec["pool"])
}

func TestBadSettingsAreRefused(t *testing.T) {
	_, err := New(&bytes.Buffer{}, "xml", "info")
	assert.Error(t, err)
	_, err = New(&bytes.Buffer{}, "text", "loud")
	assert.Error(t, err)
}
