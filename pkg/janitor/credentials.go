package janitor

import (
	"context"
	"fmt"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// PoolCredentials gives each pool a Redis user of its own, confined to the
// pool's keys, and writes the pool's agent URL where its pods find it
// (Injection.PoolSecretName). poolcreds.Manager is the implementation.
type PoolCredentials interface {
	// Ensure sets the pool's user on every Redis node and its URL in the
	// pool namespace's Secret. Called on every pass: Redis forgets runtime
	// users when it restarts without an ACL file.
	Ensure(ctx context.Context, pool slots.PoolID) error
	// Remove deletes the pool's user and its key from the Secret.
	Remove(ctx context.Context, pool slots.PoolID) error
}

// ensureCredentials runs before pods are created, so a new pod's Secret
// key and Redis user exist; a failure fails the pass, which is retried.
func (p *pass) ensureCredentials() error {
	cr := p.c.opts.Credentials
	if cr == nil || p.c.opts.DryRun {
		return nil
	}
	if err := cr.Ensure(p.ctx, p.id); err != nil {
		return fmt.Errorf("pool credentials: %w", err)
	}
	return nil
}

// removeCredentials is best effort: a pool deleted while no janitor ran
// keeps its user until an operator deletes it (docs/security.md).
func (c *Controller) removeCredentials(ctx context.Context, pool slots.PoolID) {
	cr := c.opts.Credentials
	if cr == nil || c.opts.DryRun {
		return
	}
	if err := cr.Remove(ctx, pool); err != nil {
		c.log.Warn("removing the deleted pool's redis credentials", "pool", pool.String(), "err", err)
	}
}
