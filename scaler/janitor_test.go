package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/podpolicy"
)

func janitorConfig(t *testing.T, env map[string]string, args ...string) (JanitorConfig, error) {
	t.Helper()
	return parseJanitorConfig(append([]string{"--redis-url", "redis://r:6379"}, args...), io.Discard,
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

func TestJanitorPodPolicyFlags(t *testing.T) {
	c, err := janitorConfig(t, nil)
	require.NoError(t, err)
	p, err := c.podPolicy()
	require.NoError(t, err)
	require.Equal(t, podpolicy.Default(), p, "restricted, only the default ServiceAccount, no token")
	require.Empty(t, c.Namespaces, "every namespace")

	c, err = janitorConfig(t, map[string]string{"NAMESPACE": "team-a, team-b", "ALLOWED_SERVICE_ACCOUNTS": "default,agents"},
		"--pod-policy", "baseline", "--allow-service-account-token")
	require.NoError(t, err)
	require.Equal(t, commaList{"team-a", "team-b"}, c.Namespaces)
	p, err = c.podPolicy()
	require.NoError(t, err)
	require.Equal(t, podpolicy.Policy{Level: podpolicy.Baseline, AllowedServiceAccounts: []string{"default", "agents"},
		AllowServiceAccountToken: true}, p)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pod-policy", "strict"}, `--pod-policy: pod policy "strict"`},
		{[]string{"--allowed-service-accounts", ""}, "no allowed service account"},
		{[]string{"--allowed-service-accounts", "Bad_SA"}, `allowed service account "Bad_SA"`},
		{[]string{"--namespace", "a,B_b"}, `--namespace "B_b"`},
	} {
		_, err := janitorConfig(t, nil, tc.args...)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
}
