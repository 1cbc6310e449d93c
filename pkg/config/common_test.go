package config

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func parseCommon(t *testing.T, preset Common, args []string, envs map[string]string) (Common, error) {
	t.Helper()
	c := preset
	fs := flag.NewFlagSet("bin", flag.ContinueOnError)
	c.Register(fs, "the slot store")
	require.NoError(t, Parse(fs, args, testutil.Env(envs)))
	return c, c.Validate()
}

func TestCommonFlags(t *testing.T) {
	cases := []struct {
		name    string
		preset  Common
		args    []string
		env     map[string]string
		want    Common
		wantErr string
	}{
		{name: "defaults", want: Common{Redis{"", slots.DefaultPrefix, 0}, Logs{"text", "info"}}},
		{name: "a command's own default prefix", preset: Common{Redis: Redis{KeyPrefix: "demo"}},
			want: Common{Redis{"", "demo", 0}, Logs{"text", "info"}}},
		{name: "from the environment", env: map[string]string{"REDIS_URL": "redis://r:6379", "KEY_PREFIX": "team", "REDIS_REPLICA_ACKS": "1", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"},
			want: Common{Redis{"redis://r:6379", "team", 1}, Logs{"json", "debug"}}},
		{name: "negative replica acks", args: []string{"--redis-replica-acks", "-1"}, wantErr: "--redis-replica-acks -1 must be 0"},
		{name: "brace in prefix", args: []string{"--key-prefix", "a{b}"}, wantErr: `--key-prefix "a{b}"`},
		{name: "empty prefix", args: []string{"--key-prefix", ""}, wantErr: `--key-prefix ""`},
		{name: "bad level", args: []string{"--log-level", "loud"}, wantErr: `log level "loud"`},
		{name: "bad format", args: []string{"--log-format", "xml"}, wantErr: `log format "xml"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCommon(t, tc.preset, tc.args, tc.env)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
