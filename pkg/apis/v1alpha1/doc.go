// Package v1alpha1 holds the AgentPool API (group slotscaler.io): a pool of
// agent pods whose size KEDA sets through the scale subresource and whose pods
// the janitor (pkg/janitor) creates and removes.
//
// The CRD in charts/slotscaler/crds is generated from these types by
// controller-gen (`make generate`), as is zz_generated.deepcopy.go.
//
// +kubebuilder:object:generate=true
// +groupName=slotscaler.io
package v1alpha1
