package janitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

func TestNewPodReferencesThePoolsOwnSecretKey(t *testing.T) {
	inj := Injection{RedisURL: "redis://:shared@r", RedisSecretName: "redis", RedisSecretKey: "url", PoolSecretName: "slotscaler-pool-redis"}
	p := newPod(agentPool(), defaultSettings(t), "h", "gen-1", inj)
	assert.Equal(t, corev1.EnvVar{Name: "REDIS_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "slotscaler-pool-redis"}, Key: "pool-a",
	}}}, envOf(t, p.Spec.Containers[0])["REDIS_URL"], "the pool's own URL, never the shared one")

	// Without pool credentials the hash of existing pods stays: turning the
	// feature on rolls them, installing this release does not.
	s := defaultSettings(t)
	type before struct{ KeyPrefix, RedisURL, RedisSecretName, RedisSecretKey string } // Injection until pool credentials
	b, err := json.Marshal(struct {
		T      any
		P, A   time.Duration
		Inject before
	}{agentPool().Spec.Template, s.PlanTimeout, s.ApplyTimeout, before{RedisURL: "redis://r"}})
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	assert.Equal(t, hex.EncodeToString(sum[:])[:10], templateHash(agentPool(), s, Injection{RedisURL: "redis://r"}))
}

// credsRecorder stands in for poolcreds.Manager: which pools were ensured
// and removed.
type credsRecorder struct {
	mu       sync.Mutex
	ensured  []slots.PoolID
	removed  []slots.PoolID
	failWith error
}

func (r *credsRecorder) Ensure(_ context.Context, p slots.PoolID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ensured = append(r.ensured, p)
	return r.failWith
}

func (r *credsRecorder) Remove(_ context.Context, p slots.PoolID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, p)
	return nil
}

func TestEveryPassEnsuresThePoolsCredentialsAndADeletedPoolLosesThem(t *testing.T) {
	f := newFixture(t, agentPool())
	rec := &credsRecorder{}
	f.sync("team/pool-a", Options{Credentials: rec, Inject: Injection{PoolSecretName: "slotscaler-pool-redis"}})
	f.sync("team/pool-a", Options{Credentials: rec, Inject: Injection{PoolSecretName: "slotscaler-pool-redis"}})
	assert.Equal(t, []slots.PoolID{f.id, f.id}, rec.ensured, "each pass: Redis may have restarted without its users")
	assert.Empty(t, rec.removed)

	f.sync("team/gone", Options{Credentials: rec})
	assert.Equal(t, []slots.PoolID{{Namespace: "team", Name: "gone"}}, rec.removed)

	dry := &credsRecorder{}
	f.sync("team/pool-a", Options{Credentials: dry, DryRun: true})
	assert.Empty(t, dry.ensured, "dry-run writes nothing")
}
