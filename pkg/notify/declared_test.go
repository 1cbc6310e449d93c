package notify

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// mapSecrets stands in for the Kubernetes API's Secrets: "ns/name/key" -> value.
type mapSecrets struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *mapSecrets) SecretKey(_ context.Context, ns, name, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[ns+"/"+name+"/"+key]
	if !ok {
		return "", errors.New("not found")
	}
	return v, nil
}

func (s *mapSecrets) set(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
}

// An AgentPool's webhooks (spec.notifications, references the janitor
// copied into Redis) are delivered with the Secrets of the pool's
// namespace; a rotated Secret takes effect at the next sync.
func TestDeclaredWebhooks(t *testing.T) {
	e := newEnv(t, nil)
	first := newReceiver(t, []byte("first-secret"))
	second := newReceiver(t, []byte("rotated-secret"))
	secrets := &mapSecrets{m: map[string]string{
		"team-a/hooks/url":     first.srv.URL + "/hook\n",
		"team-a/hooks/signing": "first-secret",
		"other-ns/theirs/url":  first.srv.URL + "/theirs",
	}}
	decl := NewDeclarations(e.rdb, e.prefix)
	require.NoError(t, decl.Write(e.ctx, e.pool, []PoolWebhook{
		{Name: "chat", Events: []string{EventFailed}, URL: SecretRef{"hooks", "url"}, SigningSecret: &SecretRef{"hooks", "signing"}},
		// A Secret of another namespace cannot be named: it is looked up in the pool's.
		{Name: "stolen", URL: SecretRef{"theirs", "url"}},
	}))
	var logs lockedBuffer
	n, _ := e.notifier("n1", Config{}, Options{Secrets: secrets, Logger: logs.logger()})
	pod, uid := e.addPod()
	e.run("ok", slots.Plan, pod, uid, slots.OutcomeSuccess)
	e.run("bad", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return len(first.byEvent()[EventFailed]) == 1 }, wait, tick)
	_, requests, badSigs := first.counts()
	assert.Equal(t, 1, requests, "only failed, only the pool's own Secret")
	assert.Zero(t, badSigs)
	st := e.status("pool:chat")
	assert.Equal(t, int64(1), st.Delivered)
	assert.Equal(t, []string{EventFailed}, st.Events)
	assert.Equal(t, "", e.status("pool:stolen").Webhook)
	assert.Contains(t, logs.String(), "theirs")

	// Rotated: another URL and signing secret.
	secrets.set("team-a/hooks/url", second.srv.URL)
	secrets.set("team-a/hooks/signing", "rotated-secret")
	require.Eventually(t, func() bool { return e.status("pool:chat").Host == second.srv.Listener.Addr().String() }, wait, tick)
	// The worker restarted with the new settings.
	require.Eventually(t, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		w, ok := n.workers[pairKey{e.pool, "pool:chat"}]
		return ok && w.wh.URL == second.srv.URL
	}, wait, tick)
	e.run("bad2", slots.Plan, pod, uid, slots.OutcomeFailure)
	require.Eventually(t, func() bool { return len(second.byEvent()[EventFailed]) == 1 }, wait, tick)
	_, _, badSigs = second.counts()
	assert.Zero(t, badSigs)
	assert.NotContains(t, logs.String(), "first-secret")
	assert.NotContains(t, logs.String(), "rotated-secret")
}

func TestDeclarationsRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	d := NewDeclarations(e.rdb, e.prefix)
	other := slots.PoolID{Namespace: "team-b", Name: "x"}
	hooks := []PoolWebhook{{Name: "a", Format: FormatSlack, URL: SecretRef{"s", "k"}}}
	require.NoError(t, d.Write(e.ctx, e.pool, hooks))
	got, err := d.Read(e.ctx, []slots.PoolID{e.pool, other})
	require.NoError(t, err)
	assert.Equal(t, map[slots.PoolID][]PoolWebhook{e.pool: hooks}, got)
	ttl, err := e.rdb.TTL(e.ctx, DeclaredKey(e.prefix, e.pool)).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl)
	require.NoError(t, d.Write(e.ctx, e.pool, nil))
	got, err = d.Read(e.ctx, []slots.PoolID{e.pool})
	require.NoError(t, err)
	assert.Empty(t, got)
}
