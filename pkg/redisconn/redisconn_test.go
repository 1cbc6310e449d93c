package redisconn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

func TestOpenEachKind(t *testing.T) {
	ctx := context.Background()
	cases := map[string]struct {
		url  func() string
		kind string
	}{
		"embedded default": {func() string { return "" }, "embedded"},
		"memory scheme":    {func() string { return "memory://" }, "embedded"},
		"standalone":       {func() string { return redistest.Standalone(t) }, "standalone"},
		"cluster": {func() string {
			addrs := redistest.ClusterAddrs(t)
			return "redis+cluster://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
		}, "cluster"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Open(ctx, tc.url(), nil)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tc.kind, c.Kind)
			key := "{redisconn}" + redistest.Prefix(t)
			require.NoError(t, c.Client.Set(ctx, key, "v", time.Minute).Err())
			assert.Equal(t, "v", c.Client.Get(ctx, key).Val())
		})
	}
}

func TestOpenRejectsBadURLsWithoutLeakingPassword(t *testing.T) {
	cases := map[string]string{
		"unknown scheme":          "http://user:s3cret@localhost:6379",
		"unknown mode":            "redis+ring://user:s3cret@localhost:6379",
		"sentinel without master": "redis+sentinel://user:s3cret@localhost:26379",
		"bad query":               "redis://user:s3cret@localhost:6379?bogus=1",
		// url.Parse's own error quotes the whole URL: these leaked it.
		"bad escape in password": "redis://user:s3cret%zz@localhost:6379/0",
		"blank in host":          "redis://user:s3cret@local host:6379/0",
		"unclosed ipv6 host":     "redis://user:s3cret@[::1/0",
		"control character":      "redis://user:s3cret@localhost:6379/0\n",
		"bad database":           "redis://user:s3cret@localhost:6379/zero",
		"bad cluster query":      "redis+cluster://user:s3cret@localhost:6379?addr=%zz",
	}
	for name, u := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Open(context.Background(), u, nil)
			require.Error(t, err)
			assert.NotContains(t, err.Error(), "s3cret")
		})
	}
}

func TestOpenFailsWithinDeadlineWhenRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL()
	srv.Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Open(ctx, url, nil)
	require.Error(t, err)
	assert.Less(t, time.Since(start), 10*time.Second, "gives up at the deadline instead of hanging")
}

func TestRedactHidesPassword(t *testing.T) {
	assert.Equal(t, "redis://user:xxxxx@host:6379/0", Redact("redis://user:pw@host:6379/0"))
}
