package notify

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	require.NoError(t, os.WriteFile(urlFile, []byte("https://hooks.slack.com/services/T0/B0/SECRETPART\n"), 0o600))
	env := map[string]string{"HOOK_SECRET": "sig", "HOOK_URL": "https://example.com/hook?token=QSECRET"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	c, err := Parse([]byte(`
dashboardURL: https://dash.example/
reservationExpiringLead: 5m
webhooks:
- name: slack
  pools: ["team-a/*"]
  events: [awaiting-approval, failed]
  format: slack
  urlFile: `+urlFile+`
- name: ops
  pools: ["*/*"]
  urlEnv: HOOK_URL
  signingSecretEnv: HOOK_SECRET
  timeout: 3s
  maxAttempts: 4
`), lookup)
	require.NoError(t, err)
	assert.Equal(t, "https://dash.example", c.DashboardURL)
	assert.Equal(t, 5*time.Minute, c.ExpiringLead)
	require.Len(t, c.Webhooks, 2)
	s, o := c.Webhooks[0], c.Webhooks[1]
	assert.Equal(t, "https://hooks.slack.com/services/T0/B0/SECRETPART", s.URL)
	assert.Equal(t, "hooks.slack.com", s.Host())
	assert.Equal(t, FormatSlack, s.Format)
	assert.Empty(t, s.SigningSecret)
	assert.True(t, s.Matches(slots.PoolID{Namespace: "team-a", Name: "x"}))
	assert.False(t, s.Matches(slots.PoolID{Namespace: "team-b", Name: "x"}))
	assert.True(t, s.Wants(EventFailed))
	assert.False(t, s.Wants(EventSucceeded))
	assert.Equal(t, Events, o.Events, "default: every event")
	assert.Equal(t, FormatJSON, o.Format)
	assert.Equal(t, []byte("sig"), o.SigningSecret)
	assert.Equal(t, 3*time.Second, o.Timeout)
	assert.Equal(t, 4, o.MaxAttempts)
	assert.Equal(t, DefaultMaxAge, o.MaxAge)

	bad := []struct {
		name, yaml, want string
	}{
		{"unknown field", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  evnets: [failed]", "evnets"},
		{"bad name", "webhooks:\n- name: A_B\n  pools: [a/*]\n  url: https://x", "name"},
		{"no pools", "webhooks:\n- name: a\n  url: https://x", "pools"},
		{"pool glob without namespace", "webhooks:\n- name: a\n  pools: [x]\n  url: https://x", "namespace/name glob"},
		{"unknown event", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  events: [started]", "unknown \"started\""},
		{"bad format", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  format: xml", "format"},
		{"no url", "webhooks:\n- name: a\n  pools: [a/*]", "url: give"},
		{"two urls", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  urlEnv: HOOK_URL", "give one of"},
		{"unset env", "webhooks:\n- name: a\n  pools: [a/*]\n  urlEnv: NOPE", "NOPE is not set"},
		{"missing file", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  signingSecretFile: /nonexistent", "signingSecretFile"},
		{"duplicate", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n- name: a\n  pools: [a/*]\n  url: https://x", "given twice"},
		{"bad duration", "webhooks:\n- name: a\n  pools: [a/*]\n  url: https://x\n  timeout: soon", "duration"},
		{"not http", "webhooks:\n- name: a\n  pools: [a/*]\n  url: ftp://x/SECRETPATH", "not an http(s) URL"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), lookup)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "SECRETPATH", "errors never quote the URL")
		})
	}
}

func TestTaskURL(t *testing.T) {
	p := slots.PoolID{Namespace: "ns", Name: "pool"}
	assert.Equal(t, "", TaskURL("", p, "t"))
	assert.Equal(t, "https://d/x/pools/ns/pool/tasks/t-1", TaskURL("https://d/x/", p, "t-1"))
}
