package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of the API.
const (
	Group    = "slotscaler.io"
	Version  = "v1alpha1"
	Kind     = "AgentPool"
	Resource = "agentpools"
)

var (
	// GroupVersion is the API's group and version.
	GroupVersion = schema.GroupVersion{Group: Group, Version: Version}
	// GroupVersionResource names the agentpools resource.
	GroupVersionResource = GroupVersion.WithResource(Resource)
	// GroupVersionKind names the AgentPool kind.
	GroupVersionKind = GroupVersion.WithKind(Kind)

	schemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &AgentPool{}, &AgentPoolList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
	// AddToScheme registers the API's types.
	AddToScheme = schemeBuilder.AddToScheme
)
