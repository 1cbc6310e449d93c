package config

import (
	"bytes"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newSet() (*flag.FlagSet, *string, *time.Duration, *int) {
	fs := flag.NewFlagSet("bin", flag.ContinueOnError)
	url := fs.String("redis-url", "", "Redis URL")
	every := fs.Duration("poll-interval", time.Second, "how often")
	n := fs.Int("max-pods", 10, "cap")
	return fs, url, every, n
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestFlagWinsOverEnvWhichWinsOverDefault(t *testing.T) {
	fs, url, every, n := newSet()
	err := Parse(fs, []string{"--redis-url", "redis://flag"}, env(map[string]string{
		"REDIS_URL": "redis://env", "POLL_INTERVAL": "5s",
	}))
	require.NoError(t, err)
	assert.Equal(t, "redis://flag", *url)
	assert.Equal(t, 5*time.Second, *every)
	assert.Equal(t, 10, *n)
}

func TestBadEnvValueNamesFlagAndVariable(t *testing.T) {
	fs, _, _, _ := newSet()
	err := Parse(fs, nil, env(map[string]string{"MAX_PODS": "lots"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "max-pods")
	assert.Contains(t, err.Error(), "MAX_PODS")
}

func TestStrayArgumentsAreRefused(t *testing.T) {
	fs, _, _, _ := newSet()
	require.Error(t, Parse(fs, []string{"extra"}, env(nil)))
}

func TestHelpListsEnvTwinsAndDefaults(t *testing.T) {
	fs, _, _, _ := newSet()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := Parse(fs, []string{"--help"}, env(nil))
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, buf.String(), "--redis-url")
	assert.Contains(t, buf.String(), "env REDIS_URL")
	assert.Contains(t, buf.String(), `(default "1s")`)
}
