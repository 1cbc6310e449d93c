package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
)

func pool(ns, name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind(v1alpha1.Kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

func fakePools(objs ...runtime.Object) *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.GroupVersionResource: v1alpha1.Kind + "List"}, objs...)
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// The selected pools are deleted in the background (the janitor's finalizer
// holds them), the others are left, and the command returns once the
// selected ones are gone.
func TestDeletePoolsDeletesTheSelectedAndWaits(t *testing.T) {
	sel := map[string]string{"app.kubernetes.io/instance": "rel", "app.kubernetes.io/component": "agent-pool"}
	dyn := fakePools(pool("a", "p1", sel), pool("b", "p2", sel), pool("a", "other", map[string]string{"app.kubernetes.io/instance": "x"}))
	var deleted []string
	dyn.PrependReactor("delete", "agentpools", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteAction)
		require.Equal(t, metav1.DeletePropagationBackground, *d.GetDeleteOptions().PropagationPolicy)
		deleted = append(deleted, d.GetNamespace()+"/"+d.GetName())
		return false, nil, nil
	})
	err := deletePools(context.Background(), dyn, DeletePoolsConfig{Selector: "app.kubernetes.io/instance=rel,app.kubernetes.io/component=agent-pool",
		Timeout: 10 * time.Second, Interval: 10 * time.Millisecond}, quietLog)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a/p1", "b/p2"}, deleted)
	_, err = dyn.Resource(v1alpha1.GroupVersionResource).Namespace("a").Get(context.Background(), "other", metav1.GetOptions{})
	require.NoError(t, err, "a pool the selector does not match stays")
}

// A pool that does not go (its janitor waits for busy pods) makes the
// command fail at its timeout, after asking once.
func TestDeletePoolsTimesOut(t *testing.T) {
	dyn := fakePools(pool("a", "p1", map[string]string{"k": "v"}))
	deletes := 0
	dyn.PrependReactor("delete", "agentpools", func(k8stesting.Action) (bool, runtime.Object, error) {
		deletes++
		return true, nil, nil // held by a finalizer: still listed
	})
	err := deletePools(context.Background(), dyn, DeletePoolsConfig{Selector: "k=v", Timeout: 200 * time.Millisecond, Interval: 20 * time.Millisecond}, quietLog)
	require.ErrorContains(t, err, "AgentPools still there after 200ms")
	assert.Equal(t, 1, deletes, "each pool is asked once")
}

func TestDeletePoolsFlags(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no selector":  {nil, "--selector (SELECTOR) is required"},
		"bad selector": {[]string{"--selector", "a=b=c"}, `--selector "a=b=c"`},
		"bad timeout":  {[]string{"--selector", "a=b", "--timeout", "0s"}, "must be positive"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseDeletePoolsConfig(tc.args, io.Discard, func(string) (string, bool) { return "", false })
			require.ErrorContains(t, err, tc.want)
		})
	}
	c, err := parseDeletePoolsConfig(nil, io.Discard, func(k string) (string, bool) {
		return map[string]string{"SELECTOR": "a=b", "TIMEOUT": "1h"}[k], k == "SELECTOR" || k == "TIMEOUT"
	})
	require.NoError(t, err)
	assert.Equal(t, "a=b", c.Selector)
	assert.Equal(t, time.Hour, c.Timeout)
}
