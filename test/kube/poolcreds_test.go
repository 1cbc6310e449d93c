package kube

import (
	"context"
	"crypto/rand"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/poolcreds"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The janitor, as the chart's ServiceAccount, gives each pool a Redis user
// and writes its URL into the pool namespace's Secret, one key per pool;
// agent pods take REDIS_URL from their pool's key and work with it; the
// janitor can write that Secret but not read it; a deleted pool loses its
// key and its user.
func TestJanitorGivesEachPoolItsOwnRedisUser(t *testing.T) {
	srv := redistest.Start(t)
	c := newClusterWith(t, clusterOptions{redisURL: srv.URL()})
	key := make([]byte, poolcreds.MinKeyLen)
	_, err := rand.Read(key)
	require.NoError(t, err)
	jkube := kubernetes.NewForConfigOrDie(c.janitorConfig())
	m, err := poolcreds.New(c.rdb, jkube, poolcreds.Options{Prefix: c.prefix, Keys: poolcreds.Keys{Current: key}, AgentURL: c.redis, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	c.startJanitor(func(o *janitor.Options) {
		o.Credentials = m
		o.Inject.PoolSecretName = poolcreds.DefaultSecretName
	})
	c.newPool("team-a", "p", 1)
	c.newPool("team-a", "q", 1)
	c.waitActive("team-a", "p", 1)
	c.waitActive("team-a", "q", 1)

	sec, err := c.kube.CoreV1().Secrets("team-a").Get(c.ctx, poolcreds.DefaultSecretName, metav1.GetOptions{})
	require.NoError(t, err)
	keys := make([]string, 0, len(sec.Data))
	for k := range sec.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	assert.Equal(t, []string{"p", "q"}, keys, "one key per pool, nothing else")
	for _, name := range keys {
		u, err := url.Parse(string(sec.Data[name]))
		require.NoError(t, err)
		assert.Equal(t, poolcreds.UserName(c.prefix, slots.PoolID{Namespace: "team-a", Name: name}), u.User.Username(), "pool %s's URL holds its own user", name)
	}

	pod := c.livePods("team-a", "p")[0]
	i := slices.IndexFunc(pod.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "REDIS_URL" })
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: poolcreds.DefaultSecretName}, Key: "p"}},
		pod.Spec.Containers[0].Env[i].ValueFrom)

	// The agents work as their pools' users.
	clients, err := c.rdb.ClientList(c.ctx).Result()
	require.NoError(t, err)
	for _, pool := range []string{"p", "q"} {
		assert.Contains(t, clients, "user="+poolcreds.UserName(c.prefix, slots.PoolID{Namespace: "team-a", Name: pool})+" ")
	}
	c.submit("team-a", "p", "t1", slots.Plan, "0")
	c.waitTask("team-a", "p", "t1", inState(slots.StateSucceeded), "succeeded")
	entries, err := c.rdb.ACLLog(c.ctx, 100).Result()
	require.NoError(t, err)
	assert.Empty(t, entries, "no command or key was refused to an agent")

	// The janitor's ServiceAccount writes the Secret and cannot read it.
	_, err = jkube.CoreV1().Secrets("team-a").Get(c.ctx, poolcreds.DefaultSecretName, metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "get: %v", err)
	_, err = jkube.CoreV1().Secrets("team-a").List(c.ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "list: %v", err)
	_, err = jkube.CoreV1().Secrets("team-a").Patch(c.ctx, "another-secret", "application/merge-patch+json", []byte(`{"data":{}}`), metav1.PatchOptions{})
	assert.True(t, apierrors.IsForbidden(err), "patch of another Secret: %v", err)

	// A deleted pool loses its key and its user; the other keeps both.
	require.NoError(t, c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("team-a").Delete(c.ctx, "q", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		sec, err := c.kube.CoreV1().Secrets("team-a").Get(c.ctx, poolcreds.DefaultSecretName, metav1.GetOptions{})
		_, hasQ := sec.Data["q"]
		return err == nil && !hasQ
	}, 30*time.Second, 50*time.Millisecond, "pool q's key is removed")
	sec, err = c.kube.CoreV1().Secrets("team-a").Get(c.ctx, poolcreds.DefaultSecretName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, sec.Data, "p")
	err = c.rdb.Do(context.Background(), "ACL", "GETUSER", poolcreds.UserName(c.prefix, slots.PoolID{Namespace: "team-a", Name: "q"})).Err()
	assert.ErrorIs(t, err, redis.Nil, "pool q's user is deleted")
}
