package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/testutil"
)

// identity is what the janitor injects into a pod of pool-a in team-a.
func identity() map[string]string {
	return map[string]string{
		"SLOTSCALER_POD_IDENTITY_NAMESPACE": "team-a", "SLOTSCALER_POD_IDENTITY_POOL": "pool-a",
		"SLOTSCALER_POD_IDENTITY_NAME": "agent-1", "SLOTSCALER_POD_IDENTITY_UID": "uid-1",
	}
}

func managedSettings() map[string]string {
	env := baseSettings()
	env["POD_UID"] = "uid-1"
	for k, v := range identity() {
		env[k] = v
	}
	return env
}

// A template's args (or env) cannot make the agent serve another pool or
// register as another pod than the janitor's downward-API identity says.
func TestAnIdentityDisagreeingWithTheJanitorsIsRefused(t *testing.T) {
	_, err := parseConfig(nil, lookupIn(managedSettings()), io.Discard)
	require.NoError(t, err, "the identity the janitor gave")

	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--pool-name", "other"}, want: `--pool-name "other" disagrees with this pod's identity "pool-a" (SLOTSCALER_POD_IDENTITY_POOL, set by the janitor)`},
		{args: []string{"--pool-namespace", "team-b"}, want: `--pool-namespace "team-b" disagrees with this pod's identity "team-a" (SLOTSCALER_POD_IDENTITY_NAMESPACE`},
		{args: []string{"--pod-name", "agent-2"}, want: `--pod-name "agent-2" disagrees with this pod's identity "agent-1" (SLOTSCALER_POD_IDENTITY_NAME`},
		{args: []string{"--pod-uid", "uid-2"}, want: `--pod-uid "uid-2" disagrees with this pod's identity "uid-1" (SLOTSCALER_POD_IDENTITY_UID`},
		{env: map[string]string{"POD_UID": ""}, want: `--pod-uid "" disagrees`},
	} {
		env := managedSettings()
		for k, v := range tc.env {
			env[k] = v
		}
		_, err := parseConfig(tc.args, lookupIn(env), io.Discard)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
}

// Static pools have no janitor and no identity variables: the settings
// alone say who the agent is.
func TestAStaticPoolsAgentHasNoIdentityToMatch(t *testing.T) {
	c, err := parseConfig([]string{"--pool-name", "other"}, lookupIn(baseSettings()), io.Discard)
	require.NoError(t, err)
	require.Equal(t, "other", c.PoolName)
}

// The agent binary exits at start, with the reason, rather than serve a
// pool its pod does not belong to.
func TestTheAgentBinaryExitsOnAnIdentityMismatch(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, "--pool-name", "other")
	cmd.Env = []string{mainEnv + "=1", "PATH=" + os.Getenv("PATH"), "LISTEN_ADDRESS=127.0.0.1:0"}
	for k, v := range managedSettings() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the agent did not exit; logs:\n%s", out.String())
	}
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "exits with an error: %v", err)
	require.NotZero(t, exit.ExitCode())
	require.Contains(t, out.String(), `agent: --pool-name "other" disagrees with this pod's identity "pool-a" (SLOTSCALER_POD_IDENTITY_POOL, set by the janitor)`)
}
