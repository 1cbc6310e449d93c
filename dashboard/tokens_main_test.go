package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The dashboard starts with --api-tokens (full access, said so in the log)
// and --api-tokens-file (scoped) together, and enforces the scopes; no
// secret reaches the log.
func TestRunLoadsTheTokensFileAndLogsWhatEachTokenMay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	redisURL, prefix := redistest.Standalone(t), redistest.Prefix(t)
	file := writeTokensFile(t, "tokens.yaml", `
tokens:
  - name: ci
    secretEnv: CI_TOKEN
    scopes:
      - verbs: [submit, read]
        pools: ["ci/*"]
`)
	ctx, cancel := context.WithCancel(t.Context())
	logs := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, logs, testutil.Env(map[string]string{
			"REDIS_URL":               redisURL,
			"KEY_PREFIX":              prefix,
			"METRICS_ADDRESS":         "",
			"API_TOKENS":              "ops=ops-very-secret",
			"API_TOKENS_FILE":         file,
			"CI_TOKEN":                "ci-very-secret",
			"SEPARATE_APPROVER_POOLS": "ci/*",
		}), ln)
	}()
	base := "http://" + ln.Addr().String()
	call := func(method, path, body, token string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	resp, err := http.Get(base + "/healthz") // the listener is open: this waits for the server
	require.NoError(t, err)
	_ = resp.Body.Close()
	rdb := redis.NewClient(mustParseRedisURL(t, redisURL))
	defer rdb.Close()
	store, err := slots.New(t.Context(), rdb, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	_, err = store.DeclarePool(t.Context(), slots.PoolID{Namespace: "ci", Name: "tf"}, slots.DefaultPoolConfig())
	require.NoError(t, err)

	assert.Equal(t, http.StatusCreated, call("POST", "/api/v1/pools/ci/tf/tasks", `{"id":"t1","type":"plan"}`, "ci-very-secret"))
	assert.Equal(t, http.StatusForbidden, call("POST", "/api/v1/pools/ci/tf/tasks/t1/cancel", "", "ci-very-secret"), "ci may not cancel")
	assert.Equal(t, http.StatusOK, call("POST", "/api/v1/pools/ci/tf/tasks/t1/cancel", "", "ops-very-secret"), "ops may do anything")

	cancel()
	require.NoError(t, <-done)
	out := logs.String()
	assert.Contains(t, out, "token ops has full access")
	assert.Contains(t, out, "token ci is scoped")
	assert.Contains(t, out, "submit,read on ci/*")
	assert.Contains(t, out, "a task's submitter may not approve it in these pools")
	assert.NotContains(t, out, "very-secret", "no secret in the logs")
}

// A bad tokens file stops the start, before anything connects.
func TestRunRefusesABadTokensFile(t *testing.T) {
	file := writeTokensFile(t, "tokens.yaml", "tokens:\n  - name: ci\n    secret: the-very-secret\n    scopes:\n      - verbs: [deploy]\n        pools: [\"*\"]\n")
	err := run(t.Context(), nil, &testutil.SyncBuffer{}, testutil.Env(map[string]string{
		"REDIS_URL":       "redis://127.0.0.1:1", // never reached
		"API_TOKENS_FILE": file,
	}), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown verb "deploy"`)
	assert.NotContains(t, err.Error(), "the-very-secret")
}

func TestSeparateApproverPoolsFlagParsesGlobs(t *testing.T) {
	cfg, err := parseConfig([]string{"--separate-approver-pools=team-a/*, */prod"}, noEnv)
	require.NoError(t, err)
	assert.Equal(t, "team-a/*,*/prod", cfg.SeparateApproverPools.String())
	_, err = parseConfigWith([]string{"--separate-approver-pools=team-a"}, noEnv, io.Discard)
	assert.ErrorContains(t, err, `bad pool glob "team-a"`)
}
