package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
	"github.com/slotscaler/slotscaler/web"
)

// webhookReader is what the dashboard needs of the webhooks' delivery
// status (pkg/notify's StatusReader; the scaler's notifier writes it). The
// status holds the receiver's host, never a URL or a secret: the dashboard
// never reads the notifier's config nor its Secrets.
type webhookReader interface {
	Read(ctx context.Context, pool slots.PoolID) ([]notify.Status, error)
}

// webhookStatus reads a pool's webhooks for the page and the API. An
// unreadable status is not the page's failure: it is logged and said.
func (s *server) webhookStatus(ctx context.Context, pool slots.PoolID) ([]notify.Status, error) {
	if s.webhooks == nil {
		return nil, nil
	}
	st, err := s.webhooks.Read(ctx, pool)
	if err != nil {
		s.log.Warn("reading the webhooks' delivery status", "pool", pool.String(), "err", err)
	}
	return st, err
}

// webhooksPanel is the pool page's Webhooks block.
func webhooksPanel(st []notify.Status, err error) web.WebhooksView {
	switch {
	case err != nil:
		return web.WebhooksView{State: "error"}
	case len(st) == 0:
		return web.WebhooksView{State: "none"}
	}
	v := web.WebhooksView{State: "ok"}
	for _, w := range st {
		v.Rows = append(v.Rows, web.WebhookRow{
			Name: w.Webhook, Host: w.Host, Format: w.Format, Events: strings.Join(w.Events, ", "),
			Delivered: strconv.FormatInt(w.Delivered, 10), DeadLetters: strconv.FormatInt(w.DeadLetters, 10),
			Failing: w.Failing(), Failures: strconv.FormatInt(w.ConsecutiveFailures, 10),
			LastSuccess: stamp(w.LastSuccess), LastFailure: stamp(w.LastFailure), LastError: w.LastError,
		})
	}
	return v
}
