package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// declareEnv is a test's slot store: a shared redis-server under a private
// key prefix, and a store to read back what `scaler declare-pool` wrote.
type declareEnv struct {
	url, prefix string
	store       *slots.Store
}

func newDeclareEnv(t *testing.T) declareEnv {
	t.Helper()
	e := declareEnv{url: redistest.Standalone(t), prefix: redistest.Prefix(t)}
	opts, err := redis.ParseURL(e.url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	e.store, err = slots.New(context.Background(), rdb, slots.Options{Prefix: e.prefix, Logger: quiet()})
	require.NoError(t, err)
	return e
}

// env is the environment of a run: this test's Redis and prefix, plus more.
func (e declareEnv) env(more map[string]string) map[string]string {
	env := map[string]string{"REDIS_URL": e.url, "KEY_PREFIX": e.prefix}
	for k, v := range more {
		env[k] = v
	}
	return env
}

// declare runs `scaler declare-pool args…` with env and returns its output.
func declare(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runDeclarePool(context.Background(), args, &out, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return out.String(), err
}

var demoPool = slots.PoolID{Namespace: "demo", Name: "static"}

func demoEnv(e declareEnv) map[string]string {
	return e.env(map[string]string{"POOL_NAMESPACE": "demo", "POOL_NAME": "static"})
}

func TestDeclarePoolDefaultsToAStaticPoolWithTheDefaultPolicy(t *testing.T) {
	e := newDeclareEnv(t)
	out, err := declare(t, demoEnv(e))
	require.NoError(t, err)

	got, gen, err := e.store.Pool(context.Background(), demoPool)
	require.NoError(t, err)
	assert.Equal(t, slots.DefaultPoolConfig(), got, "static (managed=false), default policy and timeouts")
	assert.NotEmpty(t, gen)

	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 1, "one log line:\n%s", out)
	assert.Contains(t, lines[0], "pool declared")
	assert.Contains(t, lines[0], "pool=demo/static")
	assert.Contains(t, lines[0], "generation="+gen)
	assert.Contains(t, lines[0], "slots=plan,plan_and_apply;plan;plan")
	assert.Contains(t, lines[0], "managed=false")
}

func TestDeclarePoolTakesEverySettingFromFlags(t *testing.T) {
	e := newDeclareEnv(t)
	_, err := declare(t, e.env(nil),
		"--pool-namespace", "team-a", "--pool-name", "tf.pool",
		"--slots", " plan_and_apply , plan ; plan_and_apply;plan ",
		"--heartbeat-timeout", "45s", "--reservation-ttl", "10m", "--max-attempts", "5",
		"--queue-limit", "20", "--max-queue-age", "2h", "--retention", "1h", "--retention-count", "50")
	require.NoError(t, err)

	got, _, err := e.store.Pool(context.Background(), slots.PoolID{Namespace: "team-a", Name: "tf.pool"})
	require.NoError(t, err)
	want := slots.DefaultPoolConfig()
	want.Policy = slots.SlotPolicy{Slots: [][]slots.TaskType{{slots.PlanAndApply, slots.Plan}, {slots.PlanAndApply}, {slots.Plan}}}
	want.HeartbeatTimeout, want.ReservationTTL, want.MaxAttempts = 45*time.Second, 10*time.Minute, 5
	want.QueueLimit, want.MaxQueueAge, want.Retention, want.RetentionCount = 20, 2*time.Hour, time.Hour, 50
	assert.Equal(t, want, got)
}

func TestDeclarePoolTakesSettingsFromTheEnvironmentTheAgentsShare(t *testing.T) {
	e := newDeclareEnv(t)
	env := demoEnv(e)
	env["SLOTS"] = "plan;plan"
	env["HEARTBEAT_TIMEOUT"] = "1m"
	env["MANAGED"] = "false"
	env["EXECUTOR"] = "builtin:sleep" // an agent setting in the shared block: ignored
	_, err := declare(t, env)
	require.NoError(t, err)

	got, _, err := e.store.Pool(context.Background(), demoPool)
	require.NoError(t, err)
	assert.Equal(t, [][]slots.TaskType{{slots.Plan}, {slots.Plan}}, got.Policy.Slots)
	assert.Equal(t, time.Minute, got.HeartbeatTimeout)
	assert.False(t, got.Managed)

	_, err = declare(t, env, "--slots", "plan")
	require.NoError(t, err, "no pods yet: the policy may change")
	got, _, err = e.store.Pool(context.Background(), demoPool)
	require.NoError(t, err)
	assert.Equal(t, [][]slots.TaskType{{slots.Plan}}, got.Policy.Slots, "a flag wins over its environment twin")
}

func TestDeclarePoolAgainKeepsTheGeneration(t *testing.T) {
	e := newDeclareEnv(t)
	ctx := context.Background()
	_, err := declare(t, demoEnv(e))
	require.NoError(t, err)
	_, gen, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)

	out, err := declare(t, demoEnv(e), "--heartbeat-timeout", "90s")
	require.NoError(t, err)
	got, gen2, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)
	assert.Equal(t, gen, gen2)
	assert.Equal(t, 90*time.Second, got.HeartbeatTimeout, "other settings change in place")
	assert.Contains(t, out, "generation kept")
	assert.Contains(t, out, "generation="+gen)

	pools, err := e.store.Pools(ctx)
	require.NoError(t, err)
	assert.Equal(t, []slots.PoolID{demoPool}, pools, "listed once")
}

func TestDeclarePoolRefusesAPolicyChangeWhileAPodIsRegistered(t *testing.T) {
	e := newDeclareEnv(t)
	ctx := context.Background()
	_, err := declare(t, demoEnv(e))
	require.NoError(t, err)
	_, err = e.store.RegisterPod(ctx, demoPool, "agent-0", "u0")
	require.NoError(t, err)

	_, err = declare(t, demoEnv(e), "--slots", "plan;plan")
	require.ErrorIs(t, err, slots.ErrPolicyChange)
	assert.Contains(t, err.Error(), "demo/static")
	got, _, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)
	assert.Equal(t, slots.DefaultPolicy(), got.Policy, "unchanged")

	_, err = declare(t, demoEnv(e), "--queue-limit", "7")
	require.NoError(t, err, "the same policy with other settings is fine while pods run")
}

func TestDeclarePoolRefusesToMakeAManagedPoolStatic(t *testing.T) {
	e := newDeclareEnv(t)
	ctx := context.Background()
	cfg := slots.DefaultPoolConfig()
	cfg.Managed = true
	decl, err := e.store.DeclarePool(ctx, demoPool, cfg) // as the janitor does
	require.NoError(t, err)

	_, err = declare(t, demoEnv(e))
	require.ErrorContains(t, err, "pool demo/static is managed")
	got, _, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)
	assert.True(t, got.Managed)

	_, err = declare(t, demoEnv(e), "--managed")
	require.NoError(t, err)
	_, gen2, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)
	assert.Equal(t, decl.Generation, gen2)
}

// Moving back from an AgentPool to a Deployment: --unmanage makes the pool
// static again, keeping its generation (and so its agents' records).
func TestDeclarePoolUnmanagesOnlyWhenAsked(t *testing.T) {
	e := newDeclareEnv(t)
	ctx := context.Background()
	cfg := slots.DefaultPoolConfig()
	cfg.Managed = true
	decl, err := e.store.DeclarePool(ctx, demoPool, cfg)
	require.NoError(t, err)

	_, err = declare(t, demoEnv(e))
	require.ErrorContains(t, err, "--unmanage")
	_, err = declare(t, demoEnv(e), "--unmanage")
	require.NoError(t, err)
	got, gen, err := e.store.Pool(ctx, demoPool)
	require.NoError(t, err)
	assert.False(t, got.Managed)
	assert.Equal(t, decl.Generation, gen)
}

func TestDeclarePoolRefusesBadInputWithOneLineNamingIt(t *testing.T) {
	tests := map[string]struct {
		env  map[string]string // over demoEnv
		args []string
		want string
	}{
		"missing redis url":      {env: map[string]string{"REDIS_URL": ""}, want: "--redis-url (REDIS_URL) is required"},
		"bad redis url":          {env: map[string]string{"REDIS_URL": "http://localhost:6379"}, want: `scheme "http"`},
		"missing pool name":      {env: map[string]string{"POOL_NAME": ""}, want: "--pool-name (POOL_NAME) are required"},
		"upper-case namespace":   {args: []string{"--pool-namespace", "Demo"}, want: `namespace "Demo" must be a DNS-1123 label`},
		"pool name with a slash": {args: []string{"--pool-name", "a/b"}, want: `name "a/b" must be a DNS-1123 subdomain`},
		"empty slot":             {args: []string{"--slots", "plan;;plan"}, want: `--slots "plan;;plan": slot 1: empty task type`},
		"trailing comma":         {args: []string{"--slots", "plan,"}, want: "slot 0: empty task type"},
		"no slots":               {args: []string{"--slots", " "}, want: "no slots"},
		"unknown task type":      {args: []string{"--slots", "plan;apply"}, want: `slot 1: unknown task type "apply" (want plan, plan_and_apply)`},
		"type listed twice":      {env: map[string]string{"SLOTS": "plan,plan"}, want: `slot 0: task type "plan" listed twice`},
		"too many slots":         {args: []string{"--slots", strings.Repeat("plan;", 64) + "plan"}, want: "65 slots: at most 64"},
		"bad duration":           {env: map[string]string{"HEARTBEAT_TIMEOUT": "soon"}, want: "heartbeat-timeout (from HEARTBEAT_TIMEOUT)"},
		"zero max attempts":      {args: []string{"--max-attempts", "0"}, want: "max attempts 0 must be at least 1"},
		"negative queue age":     {args: []string{"--max-queue-age", "-1s"}, want: "max queue age -1s must not be negative"},
		"bad log format":         {env: map[string]string{"LOG_FORMAT": "xml"}, want: `log format "xml"`},
		"stray argument":         {args: []string{"demo/static"}, want: "unexpected arguments"},
		"bad flag value":         {args: []string{"--max-attempts", "lots"}, want: `invalid value "lots" for flag -max-attempts`},
		"braces in the prefix":   {env: map[string]string{"KEY_PREFIX": "a{b}"}, want: "must not contain braces"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := newDeclareEnv(t)
			env := demoEnv(e)
			for k, v := range tc.env {
				env[k] = v
			}
			out, err := declare(t, env, tc.args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "\n", "one line")
			assert.Empty(t, out, "nothing else printed (no usage dump): main prints the error")
			_, _, err = e.store.Pool(context.Background(), demoPool)
			assert.ErrorIs(t, err, slots.ErrPoolNotFound, "nothing declared")
		})
	}
}

func TestDeclarePoolHelpSaysWhatItIsFor(t *testing.T) {
	out, err := declare(t, nil, "--help")
	require.True(t, errors.Is(err, flag.ErrHelp), "main exits 0 on --help: %v", err)
	for _, want := range []string{"Usage of scaler declare-pool", "--pool-namespace", "env POOL_NAMESPACE",
		"static pool", "declared by the janitor", `(default "plan,plan_and_apply;plan;plan")`} {
		assert.Contains(t, out, want)
	}
}
