package janitor

import (
	"context"
	"encoding/json"
	"time"

	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// WebhookDeclarations is where the janitor copies each pool's
// spec.notifications (notify.Declarations). Only the references: the
// janitor never reads a Secret (its RBAC has none), the scaler's notifier
// reads them, in the pool's namespace.
type WebhookDeclarations interface {
	Write(ctx context.Context, pool slots.PoolID, hooks []notify.PoolWebhook) error
}

// declareWebhooks writes the pool's webhooks when they changed, and again
// every notify.DeclaredRefresh (their key expires, so a deleted pool's go
// by themselves). A failed write never fails the pass: logged once per
// failure streak, tried again next pass.
func (p *pass) declareWebhooks(s settings) {
	decl := p.c.opts.Webhooks
	if decl == nil || p.c.opts.DryRun {
		return
	}
	b, _ := json.Marshal(s.Webhooks) // plain strings: cannot fail
	st := p.st
	if string(b) == st.webhooks && time.Since(st.webhooksAt) < notify.DeclaredRefresh {
		return
	}
	if err := decl.Write(p.ctx, p.id, s.Webhooks); err != nil {
		if !st.webhooksFailing {
			p.log.Warn("writing the pool's webhooks for the notifier", "err", err)
		}
		st.webhooksFailing = true
		return
	}
	if st.webhooksFailing {
		p.log.Info("the pool's webhooks are written again")
	}
	st.webhooks, st.webhooksAt, st.webhooksFailing = string(b), time.Now(), false
}
