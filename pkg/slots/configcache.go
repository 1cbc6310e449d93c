package slots

import (
	"context"
	"sync"
	"time"
)

// ConfigCache keeps pool configs for a while. They change rarely, and the
// readers of many pools (the scaler on every KEDA call, the dashboard's
// overview) would otherwise pay a round trip per pool per read.
type ConfigCache struct {
	get func(context.Context, PoolID) (PoolConfig, string, error)
	ttl time.Duration

	mu      sync.Mutex
	entries map[PoolID]cachedConfig
}

type cachedConfig struct {
	cfg     PoolConfig
	fetched time.Time
}

// NewConfigCache caches what get (usually Store.Pool) returns for ttl.
// Errors are not cached.
func NewConfigCache(get func(context.Context, PoolID) (PoolConfig, string, error), ttl time.Duration) *ConfigCache {
	return &ConfigCache{get: get, ttl: ttl, entries: map[PoolID]cachedConfig{}}
}

// Get returns the pool's config, from the cache while it is fresh.
func (c *ConfigCache) Get(ctx context.Context, id PoolID) (PoolConfig, error) {
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if ok && time.Since(e.fetched) < c.ttl {
		return e.cfg, nil
	}
	cfg, _, err := c.get(ctx, id)
	if err != nil {
		return PoolConfig{}, err
	}
	c.mu.Lock()
	c.entries[id] = cachedConfig{cfg: cfg, fetched: time.Now()}
	c.mu.Unlock()
	return cfg, nil
}
