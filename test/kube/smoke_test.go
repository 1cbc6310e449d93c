package kube

import (
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAPIServerStarts(t *testing.T) {
	c := newCluster(t)
	_, err := c.kube.CoreV1().Namespaces().List(c.ctx, metav1.ListOptions{})
	require.NoError(t, err)
}
