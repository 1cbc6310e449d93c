package slots

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigCacheReadsOncePerTTLAndNeverCachesErrors(t *testing.T) {
	calls := 0
	fail := true
	c := NewConfigCache(func(context.Context, PoolID) (PoolConfig, string, error) {
		calls++
		if fail {
			return PoolConfig{}, "", errors.New("redis down")
		}
		return DefaultPoolConfig(), "gen", nil
	}, time.Hour)
	p := PoolID{Namespace: "ns", Name: "p"}
	_, err := c.Get(context.Background(), p)
	require.Error(t, err)
	fail = false
	for i := 0; i < 3; i++ {
		cfg, err := c.Get(context.Background(), p)
		require.NoError(t, err)
		assert.Equal(t, DefaultPoolConfig(), cfg)
	}
	assert.Equal(t, 2, calls, "one failed read, then one read for three gets")
}
