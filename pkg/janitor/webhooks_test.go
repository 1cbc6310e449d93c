package janitor

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The janitor copies spec.notifications into Redis as references only (the
// notifier reads the Secrets); an edit is copied at the next pass, removing
// them deletes the copy.
func TestPassDeclaresThePoolsWebhooks(t *testing.T) {
	e := newPassEnv(t, testPool(0, func(ap *v1alpha1.AgentPool) {
		ap.Spec.Notifications = &v1alpha1.NotificationsSpec{Webhooks: []v1alpha1.WebhookSpec{{
			Name: "chat", Events: []v1alpha1.WebhookEvent{"awaiting-approval", "failed"}, Format: "slack",
			URLSecretRef:     v1alpha1.SecretKeyRef{Name: "hooks", Key: "url"},
			SigningSecretRef: &v1alpha1.SecretKeyRef{Name: "hooks", Key: "signing"},
		}}}
	}))
	decl := notify.NewDeclarations(e.rdb, e.prefix)
	e.webhooks = decl
	e.startJanitor()
	e.pass()
	read := func() []notify.PoolWebhook {
		got, err := decl.Read(e.ctx, []slots.PoolID{e.id})
		require.NoError(t, err)
		return got[e.id]
	}
	assert.Equal(t, []notify.PoolWebhook{{Name: "chat", Events: []string{"awaiting-approval", "failed"}, Format: "slack",
		URL: notify.SecretRef{Name: "hooks", Key: "url"}, SigningSecret: &notify.SecretRef{Name: "hooks", Key: "signing"}}}, read())

	e.updatePool(func(ap *v1alpha1.AgentPool) { ap.Spec.Notifications.Webhooks[0].Format = "json" })
	e.pass()
	require.Len(t, read(), 1)
	assert.Equal(t, "json", read()[0].Format)

	e.updatePool(func(ap *v1alpha1.AgentPool) { ap.Spec.Notifications = nil })
	e.pass()
	assert.Empty(t, read())
}
