// Package podpolicy decides whether the janitor may create a pod: the
// Kubernetes Pod Security Standards, evaluated by the Kubernetes project's
// own implementation (k8s.io/pod-security-admission/policy) at its latest
// version, plus a ServiceAccount allow-list and a rule on service account
// tokens. Whoever may create an AgentPool chooses the pod template, and the
// janitor creates the pods with its own rights: without this check, that
// would be the right to run any pod (privileged, the node's file system,
// any ServiceAccount's token).
package podpolicy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
)

// Levels of the Pod Security Standards.
const (
	Restricted = api.LevelRestricted
	Baseline   = api.LevelBaseline
	// Privileged checks nothing: any template becomes a pod. Unsafe.
	Privileged = api.LevelPrivileged
)

// DefaultServiceAccount is the only ServiceAccount allowed by default.
const DefaultServiceAccount = "default"

// Policy is what pods the janitor creates must satisfy.
type Policy struct {
	// Level is the Pod Security Standard; Privileged turns every check off.
	Level api.Level
	// AllowedServiceAccounts may run the pods (an empty name is "default").
	AllowedServiceAccounts []string
	// AllowServiceAccountToken allows automountServiceAccountToken: true;
	// otherwise a pod leaving it unset gets false (Default).
	AllowServiceAccountToken bool
}

// Default is the restricted policy with only the default ServiceAccount and
// no token.
func Default() Policy {
	return Policy{Level: Restricted, AllowedServiceAccounts: []string{DefaultServiceAccount}}
}

// ParseLevel reads a level name.
func ParseLevel(s string) (api.Level, error) {
	l, err := api.ParseLevel(s)
	if err != nil {
		return "", fmt.Errorf("pod policy %q: %w", s, err)
	}
	return l, nil
}

// Validate checks the policy itself.
func (p Policy) Validate() error {
	var errs []error
	if !p.Level.Valid() {
		errs = append(errs, fmt.Errorf("pod policy %q: want restricted, baseline or privileged", p.Level))
	}
	for _, sa := range p.AllowedServiceAccounts {
		if msgs := validation.IsDNS1123Subdomain(sa); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("allowed service account %q: %s", sa, strings.Join(msgs, "; ")))
		}
	}
	if p.Level != Privileged && len(p.AllowedServiceAccounts) == 0 {
		errs = append(errs, errors.New("no allowed service account: the pods could run as none (allow at least \"default\")"))
	}
	return errors.Join(errs...)
}

// Default fills what the template leaves unset so that an ordinary template
// passes: at Restricted, seccompProfile RuntimeDefault and runAsNonRoot true
// for the pod, allowPrivilegeEscalation false and capabilities drop ALL for
// every container; below Privileged, automountServiceAccountToken false
// unless tokens are allowed. What the template sets explicitly is left as
// written, for Check to judge. Privileged changes nothing.
func (p Policy) Default(spec *corev1.PodSpec) {
	if p.Level == Privileged {
		return
	}
	if spec.AutomountServiceAccountToken == nil && !p.AllowServiceAccountToken {
		spec.AutomountServiceAccountToken = ptr.To(false)
	}
	if p.Level != Restricted {
		return
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	sc := spec.SecurityContext
	if sc.SeccompProfile == nil {
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	if sc.RunAsNonRoot == nil {
		sc.RunAsNonRoot = ptr.To(true)
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			if c.SecurityContext == nil {
				c.SecurityContext = &corev1.SecurityContext{}
			}
			if c.SecurityContext.AllowPrivilegeEscalation == nil {
				c.SecurityContext.AllowPrivilegeEscalation = ptr.To(false)
			}
			if c.SecurityContext.Capabilities == nil {
				c.SecurityContext.Capabilities = &corev1.Capabilities{}
			}
			if len(c.SecurityContext.Capabilities.Drop) == 0 {
				c.SecurityContext.Capabilities.Drop = []corev1.Capability{"ALL"}
			}
		}
	}
}

// Violation is one broken rule: the field (or the part of the pod holding
// it) and what is wrong.
type Violation struct {
	Field string
	Rule  string
}

func (v Violation) String() string { return v.Field + ": " + v.Rule }

// Violations is every broken rule of a pod; nil when it is allowed.
type Violations []Violation

func (vs Violations) Error() string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, "; ")
}

// Err is vs as an error, nil when empty.
func (vs Violations) Err() error {
	if len(vs) == 0 {
		return nil
	}
	return vs
}

var evaluator = sync.OnceValues(func() (policy.Evaluator, error) {
	return policy.NewEvaluator(policy.DefaultChecks(), nil)
})

// Check judges a pod as it would be created (after Default); fields are
// named under root (the pod's spec, e.g. spec.template.spec of an
// AgentPool).
func (p Policy) Check(meta *metav1.ObjectMeta, spec *corev1.PodSpec, root *field.Path) Violations {
	if p.Level == Privileged {
		return nil
	}
	var vs Violations
	sa := spec.ServiceAccountName
	saField := root.Child("serviceAccountName")
	if sa == "" {
		// The deprecated twin is still honoured by the API server.
		sa, saField = spec.DeprecatedServiceAccount, root.Child("serviceAccount")
	}
	if sa == "" {
		sa = DefaultServiceAccount
	}
	if !slices.Contains(p.AllowedServiceAccounts, sa) {
		vs = append(vs, Violation{saField.String(), fmt.Sprintf("service account %q is not allowed (allowed: %s)",
			sa, strings.Join(p.AllowedServiceAccounts, ", "))})
	}
	if ptr.Deref(spec.AutomountServiceAccountToken, true) && !p.AllowServiceAccountToken {
		vs = append(vs, Violation{root.Child("automountServiceAccountToken").String(),
			"service account tokens are not allowed: want false (or unset, which the janitor makes false)"})
	}
	return append(vs, p.podSecurity(meta, spec, root)...)
}

// podSecurity evaluates the Pod Security Standard and names where each
// failure lies: checks failing for the pod without containers and volumes
// are the pod's own fields; the rest are attributed to the volumes and
// containers that fail them alone.
func (p Policy) podSecurity(meta *metav1.ObjectMeta, spec *corev1.PodSpec, root *field.Path) Violations {
	ev, err := evaluator()
	if err != nil {
		// The checks are the library's own, fixed at build time.
		return Violations{{root.String(), fmt.Sprintf("pod security checks unavailable: %v", err)}}
	}
	lv := api.LevelVersion{Level: p.Level, Version: api.LatestVersion()}
	failing := func(s *corev1.PodSpec) []policy.CheckResult {
		var bad []policy.CheckResult
		for _, r := range ev.EvaluatePod(lv, meta, s) {
			if !r.Allowed {
				bad = append(bad, r)
			}
		}
		return bad
	}
	all := failing(spec)
	if len(all) == 0 {
		return nil
	}
	rule := func(r policy.CheckResult) string {
		if r.ForbiddenDetail == "" {
			return fmt.Sprintf("%s (%s)", r.ForbiddenReason, p.Level)
		}
		return fmt.Sprintf("%s: %s (%s)", r.ForbiddenReason, r.ForbiddenDetail, p.Level)
	}
	var vs Violations
	located := map[string]bool{}
	bare := spec.DeepCopy()
	bare.Containers, bare.InitContainers, bare.EphemeralContainers, bare.Volumes = nil, nil, nil, nil
	podLevel := map[string]bool{}
	for _, r := range failing(bare) {
		podLevel[r.ForbiddenReason] = true
		located[r.ForbiddenReason] = true
		vs = append(vs, Violation{root.String(), rule(r)})
	}
	alone := func(f *field.Path, s *corev1.PodSpec) {
		for _, r := range failing(s) {
			if !podLevel[r.ForbiddenReason] {
				located[r.ForbiddenReason] = true
				vs = append(vs, Violation{f.String(), rule(r)})
			}
		}
	}
	for i, v := range spec.Volumes {
		s := bare.DeepCopy()
		s.Volumes = []corev1.Volume{v}
		alone(root.Child("volumes").Index(i), s)
	}
	for i, c := range spec.InitContainers {
		s := bare.DeepCopy()
		s.InitContainers = []corev1.Container{c}
		alone(root.Child("initContainers").Index(i), s)
	}
	for i, c := range spec.Containers {
		s := bare.DeepCopy()
		s.Containers = []corev1.Container{c}
		alone(root.Child("containers").Index(i), s)
	}
	for i, c := range spec.EphemeralContainers {
		s := bare.DeepCopy()
		s.EphemeralContainers = []corev1.EphemeralContainer{c}
		alone(root.Child("ephemeralContainers").Index(i), s)
	}
	// A failure only the whole pod shows (none today) still refuses it.
	for _, r := range all {
		if !located[r.ForbiddenReason] {
			vs = append(vs, Violation{root.String(), rule(r)})
		}
	}
	return vs
}
