package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// kubeSecrets reads the Secret keys the webhooks of AgentPools name
// (notify.SecretReader), with a namespaced get: the chart grants it in the
// pools' namespaces only with notifications.agentPools. Each Secret is
// cached for ttl, so a notifier syncing every 15 s does not get it each
// time, and a rotated one is used within ttl.
type kubeSecrets struct {
	kube kubernetes.Interface
	ttl  time.Duration

	mu    sync.Mutex
	cache map[string]cachedSecret // "ns/name"
}

type cachedSecret struct {
	data map[string][]byte
	at   time.Time
}

func newKubeSecrets(kube kubernetes.Interface, ttl time.Duration) *kubeSecrets {
	return &kubeSecrets{kube: kube, ttl: ttl, cache: map[string]cachedSecret{}}
}

// SecretKey returns one key's value; errors never quote a value.
func (s *kubeSecrets) SecretKey(ctx context.Context, namespace, name, key string) (string, error) {
	id := namespace + "/" + name
	s.mu.Lock()
	c, ok := s.cache[id]
	s.mu.Unlock()
	if !ok || time.Since(c.at) >= s.ttl {
		sec, err := s.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("reading Secret %s: %w", id, err)
		}
		c = cachedSecret{data: sec.Data, at: time.Now()}
		s.mu.Lock()
		s.cache[id] = c
		s.mu.Unlock()
	}
	v, ok := c.data[key]
	if !ok {
		return "", fmt.Errorf("Secret %s has no key %s", id, key)
	}
	return string(v), nil
}
