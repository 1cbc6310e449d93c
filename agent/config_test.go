package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func baseSettings() map[string]string {
	return map[string]string{
		"POOL_NAMESPACE": "team-a", "POOL_NAME": "pool-a", "POD_NAME": "agent-1",
		"REDIS_URL": "redis://:pw@redis:6379/0", "EXECUTOR": "builtin:sleep",
	}
}

func TestSettingsComeFromFlagsThenEnvironmentThenDefaults(t *testing.T) {
	env := baseSettings()
	env["PLAN_TIMEOUT"] = "5m"
	env["EXECUTOR_ENV"] = " AWS_REGION , TF_LOG,"
	c, err := parseConfig([]string{"--plan-timeout", "7m"}, lookupIn(env), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 7*time.Minute, c.PlanTimeout, "the flag wins over its environment twin")
	assert.Equal(t, time.Hour, c.ApplyTimeout)
	assert.Equal(t, 10*time.Second, c.KillGrace)
	assert.Equal(t, ":8082", c.ListenAddress)
	assert.Equal(t, slots.PoolID{Namespace: "team-a", Name: "pool-a"}, c.Pool)
	assert.Equal(t, []string{"AWS_REGION", "TF_LOG"}, c.ExecutorEnv)
	assert.Empty(t, c.Warnings, "a password in the environment is where it belongs")
}

func TestAPasswordOnTheCommandLineIsWarnedAbout(t *testing.T) {
	env := baseSettings()
	delete(env, "REDIS_URL")
	c, err := parseConfig([]string{"--redis-url", "redis://:pw@redis:6379/0"}, lookupIn(env), io.Discard)
	require.NoError(t, err)
	require.Len(t, c.Warnings, 1)
	assert.Contains(t, c.Warnings[0], "set REDIS_URL instead")
	assert.NotContains(t, c.Warnings[0], "pw@")
}

func TestPodNameDefaultsToTheHostName(t *testing.T) {
	env := baseSettings()
	delete(env, "POD_NAME")
	hostname = func() (string, error) { return "Agent-7f9c", nil }
	t.Cleanup(func() { hostname = defaultHostname })
	c, err := parseConfig(nil, lookupIn(env), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "agent-7f9c", c.PodName)
}

func TestExecutorsInheritOnlyTheAllowList(t *testing.T) {
	agentEnv := map[string]string{
		"HOME": "/home/agent", "LANG": "C.UTF-8", "TF_LOG": "debug",
		"REDIS_URL": "redis://:pw@redis/0", "AWS_SECRET_ACCESS_KEY": "secret",
	}
	got := executorEnv(Config{ExecutorEnv: []string{"TF_LOG", "UNSET_VAR"}}, lookupIn(agentEnv))
	assert.ElementsMatch(t, []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", // a default when the agent has none
		"HOME=/home/agent", "LANG=C.UTF-8", "TF_LOG=debug",
	}, got)
}

func TestHeartbeatIntervalMustFitThreeTimesInThePoolsTimeout(t *testing.T) {
	pool := slots.PoolID{Namespace: "ns", Name: "p"}
	cfg := slots.DefaultPoolConfig() // 30s
	require.NoError(t, checkHeartbeat(10*time.Second, pool, cfg))
	require.Error(t, checkHeartbeat(11*time.Second, pool, cfg))
}
