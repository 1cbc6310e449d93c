package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

func TestKubeSecretsReadsTheNamedKeyInTheNamespace(t *testing.T) {
	kube := kubefake.NewSimpleClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "hooks"}, Data: map[string][]byte{"url": []byte("https://x/SECRET")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "theirs"}, Data: map[string][]byte{"url": []byte("https://y")}},
	)
	s := newKubeSecrets(kube, time.Hour)
	v, err := s.SecretKey(t.Context(), "team-a", "hooks", "url")
	require.NoError(t, err)
	assert.Equal(t, "https://x/SECRET", v)
	_, err = s.SecretKey(t.Context(), "team-a", "hooks", "nope")
	require.ErrorContains(t, err, "Secret team-a/hooks has no key nope")
	assert.NotContains(t, err.Error(), "SECRET")
	_, err = s.SecretKey(t.Context(), "team-a", "theirs", "url")
	require.Error(t, err, "looked up in the namespace given only")

	// Cached for the TTL: one get.
	gets := 0
	for _, a := range kube.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "secrets" {
			gets++
		}
	}
	assert.Equal(t, 2, gets, "hooks once (cached), theirs once")
}
