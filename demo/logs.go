package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// conflictFilter demotes error records whose err is a 409 Conflict to
// info, and counts them. The janitor logs "syncing pool" at error level
// when its AgentPool status write loses to a newer version (the HPA's
// spec.replicas write, or its own previous status write not yet in its
// cache); the pass is retried at once, so at the demo's default level these
// are noise. --verbose shows them.
type conflictFilter struct {
	slog.Handler
	n *atomic.Int64
}

func (h conflictFilter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		conflict := false
		r.Attrs(func(a slog.Attr) bool {
			if err, ok := a.Value.Any().(error); ok && apierrors.IsConflict(err) {
				conflict = true
				return false
			}
			return true
		})
		if conflict {
			h.n.Add(1)
			r.Level = slog.LevelInfo
			if !h.Handler.Enabled(ctx, r.Level) {
				return nil
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h conflictFilter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return conflictFilter{h.Handler.WithAttrs(attrs), h.n}
}

func (h conflictFilter) WithGroup(name string) slog.Handler {
	return conflictFilter{h.Handler.WithGroup(name), h.n}
}
