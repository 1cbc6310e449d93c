package main

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/podpolicy"
)

// The demo's janitor enforces the default pod policy: every pool template
// the demo creates must pass it, or `make demo` would get no pods.
func TestDemoPoolTemplatesPassTheDefaultPodPolicy(t *testing.T) {
	prof := defaultProfile()
	require.NotEmpty(t, prof.Pools)
	for _, p := range prof.Pools {
		u, err := agentPool(p, prof, Config{})
		require.NoError(t, err)
		ap := &v1alpha1.AgentPool{}
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ap))
		spec := ap.Spec.Template.Spec.DeepCopy()
		pol := podpolicy.Default()
		pol.Default(spec)
		require.Empty(t, pol.Check(&ap.Spec.Template.ObjectMeta, spec, field.NewPath("spec", "template", "spec")), p.Name)
	}
}
