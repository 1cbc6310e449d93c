package kube

// The pod policy on a real API server: the chart's ValidatingAdmissionPolicy
// refuses violating AgentPools at `kubectl apply`, the janitor refuses to
// create pods from one that got in anyway, per-namespace Roles confine the
// janitor to the namespaces it watches, and an agent whose template args
// override its pool identity refuses to start.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/podpolicy"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// policyPool is an AgentPool as a user writes it: no security settings.
func policyPool(ns, name string, mutate func(*corev1.PodSpec)) *unstructured.Unstructured {
	replicas := int32(0)
	ap := &v1alpha1.AgentPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.AgentPoolSpec{Replicas: &replicas, Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "slotscaler/agent:test"}}},
		}},
	}
	if mutate != nil {
		mutate(&ap.Spec.Template.Spec)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	if err != nil {
		panic(err)
	}
	return &unstructured.Unstructured{Object: obj}
}

func agentSC(s *corev1.PodSpec) *corev1.SecurityContext {
	if s.Containers[0].SecurityContext == nil {
		s.Containers[0].SecurityContext = &corev1.SecurityContext{}
	}
	return s.Containers[0].SecurityContext
}

// The chart's ValidatingAdmissionPolicy refuses an AgentPool whose template
// the janitor would refuse, naming the field, and accepts ordinary ones.
func TestChartAdmissionPolicyRefusesViolatingAgentPools(t *testing.T) {
	admin := startAPIServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &cluster{t: t, ctx: ctx, admin: admin, kube: kubernetes.NewForConfigOrDie(admin), dyn: dynamic.NewForConfigOrDie(admin)}
	installCRDs(t, admin)
	c.createNamespace("team")
	out := renderChart(t, "--show-only", "templates/agentpool-policy.yaml",
		"--set", "janitor.podPolicy.allowedServiceAccounts={default,agents}")
	require.Contains(t, string(out), "kind: ValidatingAdmissionPolicyBinding")
	c.apply(out)
	pools := c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace("team")
	create := func(u *unstructured.Unstructured) error {
		_, err := pools.Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		if err == nil {
			require.NoError(t, pools.Delete(ctx, u.GetName(), metav1.DeleteOptions{}))
		}
		return err
	}

	// (The policy's type-checking status is written by kube-controller-manager,
	// which does not run here: an expression that does not compile refuses
	// every request under failurePolicy Fail, so the ordinary pools below
	// being accepted is the check.)
	// Enforcement starts asynchronously after the policy is created.
	privileged := policyPool("team", "privileged", func(s *corev1.PodSpec) { agentSC(s).Privileged = ptrTo(true) })
	require.Eventually(t, func() bool { return create(privileged) != nil }, 30*time.Second, 100*time.Millisecond,
		"the policy never takes effect")

	for _, tc := range []struct {
		name   string
		mutate func(*corev1.PodSpec)
		want   string // "" accepted
	}{
		{"plain", nil, ""},
		{"hardened", func(s *corev1.PodSpec) {
			s.AutomountServiceAccountToken = ptrTo(false)
			s.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptrTo(true), RunAsUser: ptrTo(int64(1000)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
			*agentSC(s) = corev1.SecurityContext{AllowPrivilegeEscalation: ptrTo(false),
				Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}}
		}, ""},
		{"allowed service account", func(s *corev1.PodSpec) { s.ServiceAccountName = "agents" }, ""},
		{"privileged", func(s *corev1.PodSpec) { agentSC(s).Privileged = ptrTo(true) },
			`spec.template.spec.containers["agent"].securityContext.privileged: privileged containers are not allowed (restricted)`},
		{"privileged init container", func(s *corev1.PodSpec) {
			s.InitContainers = []corev1.Container{{Name: "init", Image: "i", SecurityContext: &corev1.SecurityContext{Privileged: ptrTo(true)}}}
		}, `spec.template.spec.initContainers["init"].securityContext.privileged: privileged containers are not allowed (restricted)`},
		{"hostNetwork", func(s *corev1.PodSpec) { s.HostNetwork = true }, "spec.template.spec.hostNetwork: host namespaces are not allowed (restricted)"},
		{"hostPID", func(s *corev1.PodSpec) { s.HostPID = true }, "spec.template.spec.hostPID: host namespaces are not allowed"},
		{"hostIPC", func(s *corev1.PodSpec) { s.HostIPC = true }, "spec.template.spec.hostIPC: host namespaces are not allowed"},
		{"hostPath", func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, `spec.template.spec.volumes["root"].hostPath: hostPath volumes are not allowed (restricted)`},
		{"added capabilities", func(s *corev1.PodSpec) {
			agentSC(s).Capabilities = &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}
		}, `spec.template.spec.containers["agent"].securityContext.capabilities.add: adding capabilities other than NET_BIND_SERVICE is not allowed`},
		{"allowPrivilegeEscalation", func(s *corev1.PodSpec) { agentSC(s).AllowPrivilegeEscalation = ptrTo(true) },
			`spec.template.spec.containers["agent"].securityContext.allowPrivilegeEscalation: privilege escalation is not allowed`},
		{"runAsNonRoot false", func(s *corev1.PodSpec) { agentSC(s).RunAsNonRoot = ptrTo(false) },
			`spec.template.spec.containers["agent"].securityContext.runAsNonRoot: containers must not run as root`},
		{"runAsUser 0", func(s *corev1.PodSpec) { s.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptrTo(int64(0))} },
			"spec.template.spec.securityContext.runAsUser: running as root (user 0) is not allowed"},
		{"container runAsUser 0", func(s *corev1.PodSpec) { agentSC(s).RunAsUser = ptrTo(int64(0)) },
			`spec.template.spec.containers["agent"].securityContext.runAsUser: running as root (user 0) is not allowed`},
		{"seccomp Unconfined", func(s *corev1.PodSpec) {
			s.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}}
		}, "spec.template.spec.securityContext.seccompProfile.type: seccomp profile Unconfined is not allowed"},
		{"service account", func(s *corev1.PodSpec) { s.ServiceAccountName = "admin" },
			`spec.template.spec.serviceAccountName: service account "admin" is not allowed (allowed: default, agents)`},
		{"automount", func(s *corev1.PodSpec) { s.AutomountServiceAccountToken = ptrTo(true) },
			"spec.template.spec.automountServiceAccountToken: service account tokens are not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := create(policyPool("team", "p-"+strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"), tc.mutate))
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.True(t, apierrors.IsInvalid(err) || apierrors.IsForbidden(err), "%v", err)
			require.Contains(t, err.Error(), tc.want)
		})
	}

	// An update that makes a template violate is refused too.
	plain := policyPool("team", "update", nil)
	_, err := pools.Create(ctx, plain, metav1.CreateOptions{})
	require.NoError(t, err)
	got, err := pools.Get(ctx, "update", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedField(got.Object, true, "spec", "template", "spec", "hostNetwork"))
	_, err = pools.Update(ctx, got, metav1.UpdateOptions{})
	require.ErrorContains(t, err, "spec.template.spec.hostNetwork: host namespaces are not allowed")
}

// An AgentPool the janitor's policy refuses (here no admission policy
// stands in front) gets no pod, a condition and a Warning event naming the
// field; fixed, it gets its pods.
func TestJanitorCreatesNoPodFromARefusedTemplate(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 2, func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	})
	c.startJanitor()
	const rule = `spec.template.spec.volumes[0]: restricted volume types: volume "root" uses restricted volume type "hostPath" (restricted)`
	require.Eventually(t, func() bool {
		ap := c.getPool("ns", "p")
		allowed := meta.FindStatusCondition(ap.Status.Conditions, v1alpha1.ConditionTemplateAllowed)
		return allowed != nil && allowed.Status == metav1.ConditionFalse && allowed.Reason == "PolicyViolation" &&
			strings.Contains(allowed.Message, rule)
	}, 30*time.Second, 50*time.Millisecond, "the pool never says its template is refused")
	require.Eventually(t, func() bool {
		evs := c.events("ns", "PolicyViolation")
		return len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && strings.Contains(evs[0].Message, rule)
	}, 30*time.Second, 50*time.Millisecond, "no Warning event names the field")
	time.Sleep(time.Second) // five passes
	require.Empty(t, c.livePods("ns", "p"), "no pod from a refused template")
	require.Empty(t, c.events("ns", "SuccessfulCreate"))

	c.updatePool("ns", "p", func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.Volumes = nil })
	c.waitActive("ns", "p", 2)
	require.Eventually(t, func() bool {
		return cond(c.getPool("ns", "p"), v1alpha1.ConditionTemplateAllowed) == metav1.ConditionTrue
	}, 30*time.Second, 50*time.Millisecond)
	for _, p := range c.livePods("ns", "p") {
		require.Equal(t, ptrTo(false), p.Spec.AutomountServiceAccountToken, "the janitor's defaults")
		require.Equal(t, ptrTo(true), p.Spec.SecurityContext.RunAsNonRoot)
	}
	c.audit.check(t)
}

// With janitor.watchNamespaces the chart grants a Role and RoleBinding in
// each watched namespace and nothing cluster-wide: the janitor (as its
// ServiceAccount) runs the pools there and may do nothing elsewhere.
func TestJanitorWatchingSomeNamespacesHasRolesThereOnly(t *testing.T) {
	c := newCluster(t) // the default RBAC: a ClusterRole, replaced below
	rbac := c.kube.RbacV1()
	require.NoError(t, rbac.ClusterRoleBindings().Delete(c.ctx, janitorSA, metav1.DeleteOptions{}))
	require.NoError(t, rbac.ClusterRoles().Delete(c.ctx, janitorSA, metav1.DeleteOptions{}))
	require.NoError(t, rbac.RoleBindings(releaseNamespace).Delete(c.ctx, janitorSA+"-leader-election", metav1.DeleteOptions{}))
	require.NoError(t, rbac.Roles(releaseNamespace).Delete(c.ctx, janitorSA+"-leader-election", metav1.DeleteOptions{}))
	require.NoError(t, c.kube.CoreV1().ServiceAccounts(releaseNamespace).Delete(c.ctx, janitorSA, metav1.DeleteOptions{}))
	out := renderChart(t, "--show-only", "templates/janitor-rbac.yaml",
		"--set", "janitor.watchNamespaces={team-a}", "--set", "janitor.watchNamespace=team-b")
	require.NotContains(t, string(out), "ClusterRole")
	c.apply(out)

	can := func(ns, verb, resource string) bool {
		r, err := c.kube.AuthorizationV1().SubjectAccessReviews().Create(c.ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:               "system:serviceaccount:" + releaseNamespace + ":" + janitorSA,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		return r.Status.Allowed
	}
	for _, ns := range []string{"team-a", "team-b"} {
		require.True(t, can(ns, "create", "pods"), ns)
		require.True(t, can(ns, "watch", "pods"), ns)
	}
	require.False(t, can("team-c", "create", "pods"))
	require.False(t, can("team-c", "list", "pods"))
	require.False(t, can("", "list", "pods"), "no cluster-wide list")
	require.False(t, can(releaseNamespace, "create", "pods"))

	// The janitor itself, as the ServiceAccount: forbidden outside.
	janitorKube := kubernetes.NewForConfigOrDie(c.janitorConfig())
	c.createNamespace("team-c")
	_, err := janitorKube.CoreV1().Pods("team-c").List(c.ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "%v", err)

	c.newPool("team-a", "a", 1)
	c.newPool("team-b", "b", 1)
	c.newPool("team-c", "c", 1)
	c.startJanitor(func(o *janitor.Options) { o.Namespaces = []string{"team-a", "team-b"} })
	c.waitActive("team-a", "a", 1)
	c.waitActive("team-b", "b", 1)
	require.Empty(t, c.livePods("team-c", "c"), "a namespace not watched is left alone")
	require.Empty(t, c.events("team-c", "SuccessfulCreate"))
	c.audit.check(t)
}

// A template whose args make the agent claim another pool gets an agent
// that refuses to start: the pod ends before registering, and the pool
// backs off and reports Degraded as for any template that cannot start.
func TestAgentRefusesAPoolIdentityItsTemplateOverrides(t *testing.T) {
	c := newCluster(t)
	c.newPool("ns", "p", 1, func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Spec.Containers[0].Args = []string{"--pool-name", "other"}
	})
	c.startJanitor()
	require.Eventually(t, func() bool {
		return cond(c.getPool("ns", "p"), v1alpha1.ConditionDegraded) == metav1.ConditionTrue
	}, 60*time.Second, 50*time.Millisecond, "the pool never reports its pods cannot start")
	logs, err := filepath.Glob(filepath.Join(c.kubelet.logDir, "p-*.log"))
	require.NoError(t, err)
	require.NotEmpty(t, logs)
	b, err := os.ReadFile(logs[0])
	require.NoError(t, err)
	require.Contains(t, string(b), `--pool-name "other" disagrees with this pod's identity "p" (SLOTSCALER_POD_IDENTITY_POOL`)
	snap, err := c.store.Snapshot(c.ctx, slots.PoolID{Namespace: "ns", Name: "p"})
	require.NoError(t, err)
	for _, r := range snap.Pods {
		require.NotEqual(t, slots.PodActive, r.State, "no agent registered")
	}
	_, err = c.store.Snapshot(c.ctx, slots.PoolID{Namespace: "ns", Name: "other"})
	require.ErrorIs(t, err, slots.ErrPoolNotFound)
}

// The AgentPools the chart renders from `pools:` pass the janitor's default
// pod policy as rendered (the chart's own security contexts), for every CI
// values file.
func TestChartPoolTemplatesPassTheDefaultPodPolicy(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "charts/slotscaler/ci/*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	pools := 0
	for _, f := range files {
		for _, u := range splitManifests(t, renderChart(t, "-f", f)) {
			if u.GetKind() != v1alpha1.Kind {
				continue
			}
			pools++
			ap := &v1alpha1.AgentPool{}
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ap))
			spec := ap.Spec.Template.Spec.DeepCopy()
			pol := podpolicy.Default()
			pol.Default(spec)
			require.Empty(t, pol.Check(&ap.Spec.Template.ObjectMeta, spec, field.NewPath("spec", "template", "spec")),
				"%s: %s/%s", filepath.Base(f), ap.Namespace, ap.Name)
		}
	}
	require.NotZero(t, pools)
}
