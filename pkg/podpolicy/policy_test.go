package podpolicy

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

var root = field.NewPath("spec", "template", "spec")

// plain is a template as a user writes it: no security settings at all.
func plain() *corev1.PodSpec {
	return &corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "agent:1"}}}
}

// hardened sets every restricted field itself.
func hardened() *corev1.PodSpec {
	s := plain()
	s.AutomountServiceAccountToken = ptr.To(false)
	s.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	s.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
	return s
}

func sc(s *corev1.PodSpec) *corev1.SecurityContext {
	if s.Containers[0].SecurityContext == nil {
		s.Containers[0].SecurityContext = &corev1.SecurityContext{}
	}
	return s.Containers[0].SecurityContext
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Policy
		spec   func() *corev1.PodSpec
		// want is every violation, as "field: rule" prefixes.
		want []Violation
	}{
		{name: "hardened template", spec: hardened},
		{name: "template relying on the janitor's defaults", spec: plain},
		{name: "privileged", spec: func() *corev1.PodSpec { s := plain(); sc(s).Privileged = ptr.To(true); return s },
			want: []Violation{{"spec.template.spec.containers[0]", `privileged: container "agent" must not set securityContext.privileged=true (restricted)`}}},
		{name: "privileged init container", spec: func() *corev1.PodSpec {
			s := plain()
			s.InitContainers = []corev1.Container{{Name: "init", SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}
			return s
		}, want: []Violation{{"spec.template.spec.initContainers[0]", `privileged: container "init" must not set securityContext.privileged=true (restricted)`}}},
		{name: "hostPath", spec: func() *corev1.PodSpec {
			s := plain()
			s.Volumes = []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
			return s
		}, want: []Violation{
			{"spec.template.spec.volumes[1]", `restricted volume types: volume "root" uses restricted volume type "hostPath" (restricted)`},
		}},
		{name: "hostNetwork", spec: func() *corev1.PodSpec { s := plain(); s.HostNetwork = true; return s },
			want: []Violation{{"spec.template.spec", "host namespaces: hostNetwork=true (restricted)"}}},
		{name: "hostPID", spec: func() *corev1.PodSpec { s := plain(); s.HostPID = true; return s },
			want: []Violation{{"spec.template.spec", "host namespaces: hostPID=true (restricted)"}}},
		{name: "hostIPC", spec: func() *corev1.PodSpec { s := plain(); s.HostIPC = true; return s },
			want: []Violation{{"spec.template.spec", "host namespaces: hostIPC=true (restricted)"}}},
		{name: "runAsUser 0 in the pod", spec: func() *corev1.PodSpec {
			s := plain()
			s.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](0)}
			return s
		}, want: []Violation{{"spec.template.spec", "runAsUser=0: pod must not set runAsUser=0 (restricted)"}}},
		{name: "runAsUser 0 in the container", spec: func() *corev1.PodSpec { s := plain(); sc(s).RunAsUser = ptr.To[int64](0); return s },
			want: []Violation{{"spec.template.spec.containers[0]", `runAsUser=0: container "agent" must not set runAsUser=0 (restricted)`}}},
		{name: "runAsNonRoot false", spec: func() *corev1.PodSpec { s := plain(); sc(s).RunAsNonRoot = ptr.To(false); return s },
			want: []Violation{{"spec.template.spec.containers[0]", `runAsNonRoot != true: container "agent" must not set securityContext.runAsNonRoot=false (restricted)`}}},
		{name: "added capabilities", spec: func() *corev1.PodSpec {
			s := plain()
			sc(s).Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}
			return s
		}, want: []Violation{
			{"spec.template.spec.containers[0]", `unrestricted capabilities: container "agent" must not include "SYS_ADMIN" in securityContext.capabilities.add (restricted)`},
		}},
		{name: "allowPrivilegeEscalation true", spec: func() *corev1.PodSpec { s := plain(); sc(s).AllowPrivilegeEscalation = ptr.To(true); return s },
			want: []Violation{{"spec.template.spec.containers[0]", `allowPrivilegeEscalation != false: container "agent" must set securityContext.allowPrivilegeEscalation=false (restricted)`}}},
		{name: "seccomp Unconfined", spec: func() *corev1.PodSpec {
			s := plain()
			sc(s).SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
			return s
		}, want: []Violation{{"spec.template.spec.containers[0]", `seccompProfile: container "agent" must not set securityContext.seccompProfile.type to "Unconfined" (restricted)`}}},
		{name: "a service account not allowed", spec: func() *corev1.PodSpec { s := plain(); s.ServiceAccountName = "admin"; return s },
			want: []Violation{{"spec.template.spec.serviceAccountName", `service account "admin" is not allowed (allowed: default)`}}},
		{name: "the deprecated service account field", spec: func() *corev1.PodSpec { s := plain(); s.DeprecatedServiceAccount = "admin"; return s },
			want: []Violation{{"spec.template.spec.serviceAccount", `service account "admin" is not allowed (allowed: default)`}}},
		{name: "an allowed service account", policy: Policy{Level: Restricted, AllowedServiceAccounts: []string{"default", "agents"}},
			spec: func() *corev1.PodSpec { s := plain(); s.ServiceAccountName = "agents"; return s }},
		{name: "automount true", spec: func() *corev1.PodSpec { s := plain(); s.AutomountServiceAccountToken = ptr.To(true); return s },
			want: []Violation{{"spec.template.spec.automountServiceAccountToken", "service account tokens are not allowed: want false (or unset, which the janitor makes false)"}}},
		{name: "automount true when allowed", policy: Policy{Level: Restricted, AllowedServiceAccounts: []string{"default"}, AllowServiceAccountToken: true},
			spec: func() *corev1.PodSpec { s := plain(); s.AutomountServiceAccountToken = ptr.To(true); return s }},
		{name: "baseline refuses hostPath", policy: Policy{Level: Baseline, AllowedServiceAccounts: []string{"default"}},
			spec: func() *corev1.PodSpec {
				s := plain()
				s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
				return s
			}, want: []Violation{{"spec.template.spec.volumes[0]", `hostPath volumes: volume "root" (baseline)`}}},
		{name: "baseline allows root", policy: Policy{Level: Baseline, AllowedServiceAccounts: []string{"default"}},
			spec: func() *corev1.PodSpec { s := plain(); sc(s).RunAsUser = ptr.To[int64](0); return s }},
		{name: "baseline refuses hostNetwork", policy: Policy{Level: Baseline, AllowedServiceAccounts: []string{"default"}},
			spec: func() *corev1.PodSpec { s := plain(); s.HostNetwork = true; return s },
			want: []Violation{{"spec.template.spec", "host namespaces: hostNetwork=true (baseline)"}}},
		{name: "privileged level checks nothing", policy: Policy{Level: Privileged},
			spec: func() *corev1.PodSpec {
				s := plain()
				s.HostNetwork, s.ServiceAccountName, s.AutomountServiceAccountToken = true, "admin", ptr.To(true)
				sc(s).Privileged = ptr.To(true)
				return s
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			if p.Level == "" {
				p = Default()
			}
			require.NoError(t, p.Validate())
			s := tc.spec()
			p.Default(s)
			got := p.Check(&metav1.ObjectMeta{}, s, root)
			require.Equal(t, Violations(tc.want), got)
		})
	}
}

// The defaults fill only what is unset: explicit values are judged as
// written, and the privileged level touches nothing.
func TestDefault(t *testing.T) {
	s := plain()
	Default().Default(s)
	require.Equal(t, &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}, s.SecurityContext)
	require.Equal(t, &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}, s.Containers[0].SecurityContext)
	require.Equal(t, ptr.To(false), s.AutomountServiceAccountToken)

	s = plain()
	s.AutomountServiceAccountToken = ptr.To(true)
	sc(s).AllowPrivilegeEscalation = ptr.To(true)
	sc(s).Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW"}}
	Default().Default(s)
	require.Equal(t, ptr.To(true), s.AutomountServiceAccountToken)
	require.Equal(t, ptr.To(true), sc(s).AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"NET_RAW"}, sc(s).Capabilities.Drop)

	s = plain()
	Policy{Level: Baseline, AllowedServiceAccounts: []string{"default"}}.Default(s)
	require.Nil(t, s.SecurityContext, "baseline does not need the restricted fields")
	require.Equal(t, ptr.To(false), s.AutomountServiceAccountToken)

	s = plain()
	Policy{Level: Privileged}.Default(s)
	require.Equal(t, plain(), s)
}

func TestValidate(t *testing.T) {
	require.NoError(t, Default().Validate())
	require.ErrorContains(t, Policy{Level: "strict", AllowedServiceAccounts: []string{"default"}}.Validate(), `pod policy "strict"`)
	require.ErrorContains(t, Policy{Level: Restricted}.Validate(), "no allowed service account")
	require.ErrorContains(t, Policy{Level: Restricted, AllowedServiceAccounts: []string{"Bad_Name"}}.Validate(), `allowed service account "Bad_Name"`)
	_, err := ParseLevel("strict")
	require.ErrorContains(t, err, `pod policy "strict": must be one of privileged, baseline, restricted`)
}

func TestViolationsError(t *testing.T) {
	require.NoError(t, Violations(nil).Err())
	err := Violations{{"a", "x"}, {"b", "y"}}.Err()
	require.EqualError(t, err, "a: x; b: y")
}
