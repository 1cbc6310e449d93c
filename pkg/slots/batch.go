package slots

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// Queued reads: a caller that reads many pools together with commands of
// its own (the pool history recorder, pkg/history) queues the store's reads
// on its pipeline and pays one round trip per Redis node for all of them.
// Stats, Pools and Pool are these reads run on a pipeline of their own.

// Pending is a read queued on a pipeline. Its Result is valid once the
// pipeline has run; before, it reports the read as not run.
type Pending[T any] struct {
	result func() (T, error)
}

// Result returns the read's answer, or why there is none.
func (p Pending[T]) Result() (T, error) {
	if p.result == nil {
		var zero T
		return zero, errors.New("no read was queued")
	}
	return p.result()
}

func failed[T any](err error) Pending[T] {
	return Pending[T]{result: func() (T, error) { var zero T; return zero, err }}
}

// QueuePools queues the read of the pool registry: what Pools returns.
func (s *Store) QueuePools(ctx context.Context, pipe redis.Pipeliner) Pending[[]PoolID] {
	cmd := pipe.SMembers(ctx, s.poolsKey())
	return Pending[[]PoolID]{result: func() ([]PoolID, error) {
		names, err := cmd.Result()
		if err != nil {
			return nil, fmt.Errorf("listing pools: %w", err)
		}
		return s.parsePoolIDs(names), nil
	}}
}

func (s *Store) parsePoolIDs(names []string) []PoolID {
	slices.Sort(names)
	out := make([]PoolID, 0, len(names))
	for _, n := range names {
		p, err := ParsePoolID(n)
		if err != nil {
			s.log.Warn("skipping malformed pool in registry", "pool", n, "err", err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// QueuePoolConfig queues the read of a pool's config: what Pool returns,
// without the generation. An undeclared pool's Result is ErrPoolNotFound.
func (s *Store) QueuePoolConfig(ctx context.Context, pipe redis.Pipeliner, id PoolID) Pending[PoolConfig] {
	if err := id.Validate(); err != nil {
		return failed[PoolConfig](err)
	}
	cmd := pipe.HGetAll(ctx, s.cfgKey(id))
	return Pending[PoolConfig]{result: func() (PoolConfig, error) {
		h, err := cmd.Result()
		if err != nil {
			return PoolConfig{}, fmt.Errorf("reading pool %s: %w", id, err)
		}
		cfg, _, err := parsePoolConfig(id, h)
		return cfg, err
	}}
}

// QueueStats queues the counter reads of Stats. The pipeline fails with
// NOSCRIPT when a node lost its scripts (restart, failover): LoadScripts,
// then run the reads again.
func (s *Store) QueueStats(ctx context.Context, pipe redis.Pipeliner, pools ...PoolID) Pending[[]PoolStats] {
	for _, p := range pools {
		if err := p.Validate(); err != nil {
			return failed[[]PoolStats](err)
		}
	}
	sc := s.scripts["stats"]
	cmds := make([]*redis.Cmd, len(pools))
	for i, p := range pools {
		cmds[i] = sc.EvalSha(ctx, pipe, []string{s.cfgKey(p)})
	}
	return Pending[[]PoolStats]{result: func() ([]PoolStats, error) {
		out := make([]PoolStats, len(pools))
		for i, cmd := range cmds {
			out[i].Pool = pools[i]
			res, err := cmd.Result()
			if err != nil {
				err = mapScriptError(err)
				if errors.Is(err, ErrPoolNotFound) {
					out[i].Err = fmt.Errorf("%w: %s", ErrPoolNotFound, pools[i])
					continue
				}
				return nil, fmt.Errorf("reading stats of pool %s: %w", pools[i], err)
			}
			out[i].Stats = parseStats(pools[i], toStrings(res))
		}
		return out, nil
	}}
}

// LoadScripts loads every script on every master, as New does: after a
// pipeline of queued reads failed with NOSCRIPT (IsNoScript).
func (s *Store) LoadScripts(ctx context.Context) error { return s.loadScripts(ctx) }

// IsNoScript reports whether err is Redis' NOSCRIPT: a node does not have
// a script a pipeline called by its digest.
func IsNoScript(err error) bool { return isNoScript(err) }
