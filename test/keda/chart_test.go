package keda

// The Helm chart (charts/slotscaler), rendered by the real helm for each CI
// values file: every object decodes strictly into its Go type (KEDA's own
// ScaledObject, the AgentPool of pkg/apis, Kubernetes' types), then the
// properties the chart promises are checked, and the ScaledObjects' triggers
// are fed to KEDA's external scaler client against the real scaler binary.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/scalers"
	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	v2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/internal/hpa"
	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testcerts"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/capacity"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

const (
	chartDir         = "../../charts/slotscaler"
	chartRelease     = "slotscaler"
	chartNamespace   = "slotscaler"
	restrictedUID    = 65532 // the image's user (Dockerfile)
	redisUID         = 999   // the Redis image's redis user
	janitorGraceSecs = 60    // pkg/janitor's graceMargin: kill grace and recording the result
)

// helm runs helm and returns its stdout; err carries stderr.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	return testutil.Helm(t, args...)
}

// render is `helm template` of the chart with a CI values file and more flags.
func render(t *testing.T, valuesFile string, args ...string) ([]byte, error) {
	t.Helper()
	full := []string{"template", chartRelease, chartDir, "--namespace", chartNamespace}
	if valuesFile != "" {
		full = append(full, "-f", filepath.Join(chartDir, "ci", valuesFile))
	}
	return helm(t, append(full, args...)...)
}

// manifests is a rendered chart, decoded.
type manifests struct {
	raw                 map[string][]byte // "Kind ns/name" -> document
	deployments         []appsv1.Deployment
	statefulSets        []appsv1.StatefulSet
	services            []corev1.Service
	serviceAccounts     []corev1.ServiceAccount
	secrets             []corev1.Secret
	configMaps          []corev1.ConfigMap
	pvcs                []corev1.PersistentVolumeClaim
	clusterRoles        []rbacv1.ClusterRole
	clusterRoleBindings []rbacv1.ClusterRoleBinding
	roles               []rbacv1.Role
	roleBindings        []rbacv1.RoleBinding
	ingresses           []networkingv1.Ingress
	pdbs                []policyv1.PodDisruptionBudget
	scaledObjects       []kedav1alpha1.ScaledObject
	triggerAuths        []kedav1alpha1.TriggerAuthentication
	networkPolicies     []networkingv1.NetworkPolicy
	admissionPolicies   []admissionregistrationv1.ValidatingAdmissionPolicy
	admissionBindings   []admissionregistrationv1.ValidatingAdmissionPolicyBinding
	agentPools          []v1alpha1.AgentPool
	serviceMonitors     []unstructured.Unstructured
	// Helm hooks (helm.sh/hook), kept apart: they exist only while the
	// hook runs, so the RBAC and workload checks of the release do not
	// count them.
	hookJobs                []batchv1.Job
	hookClusterRoles        []rbacv1.ClusterRole
	hookClusterRoleBindings []rbacv1.ClusterRoleBinding
	hookServiceAccounts     []corev1.ServiceAccount
}

// strict decodes a YAML document into out as the API server reads JSON:
// field names match case-sensitively, and unknown or duplicate fields are
// errors (encoding/json alone would take "idlefor" for "idleFor").
func strict(doc []byte, out any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, out)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// decodeManifests splits helm's output and decodes EVERY document strictly
// into its Go type; a kind the chart is not known to render is an error.
func decodeManifests(out []byte) (*manifests, error) {
	m := &manifests{raw: map[string][]byte{}}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		var head struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct {
				Name        string            `json:"name"`
				Namespace   string            `json:"namespace"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("reading a document's kind: %w\n%s", err, doc)
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue // only comments
		}
		gvk := head.APIVersion + "/" + head.Kind
		id := fmt.Sprintf("%s %s/%s", head.Kind, head.Metadata.Namespace, head.Metadata.Name)
		if _, dup := m.raw[id]; dup {
			return nil, fmt.Errorf("%s rendered twice", id)
		}
		m.raw[id] = doc
		var derr error
		if head.Metadata.Annotations["helm.sh/hook"] != "" {
			switch gvk {
			case "batch/v1/Job":
				derr = decodeInto(doc, &m.hookJobs)
			case "rbac.authorization.k8s.io/v1/ClusterRole":
				derr = decodeInto(doc, &m.hookClusterRoles)
			case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
				derr = decodeInto(doc, &m.hookClusterRoleBindings)
			case "v1/ServiceAccount":
				derr = decodeInto(doc, &m.hookServiceAccounts)
			default:
				return nil, fmt.Errorf("%s: unknown hook kind %s (add it to decodeManifests)", id, gvk)
			}
			if derr != nil {
				return nil, fmt.Errorf("%s does not decode strictly: %w", id, derr)
			}
			continue
		}
		switch gvk {
		case "apps/v1/Deployment":
			derr = decodeInto(doc, &m.deployments)
		case "apps/v1/StatefulSet":
			derr = decodeInto(doc, &m.statefulSets)
		case "v1/Service":
			derr = decodeInto(doc, &m.services)
		case "v1/ServiceAccount":
			derr = decodeInto(doc, &m.serviceAccounts)
		case "v1/Secret":
			derr = decodeInto(doc, &m.secrets)
		case "v1/ConfigMap":
			derr = decodeInto(doc, &m.configMaps)
		case "v1/PersistentVolumeClaim":
			derr = decodeInto(doc, &m.pvcs)
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			derr = decodeInto(doc, &m.clusterRoles)
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			derr = decodeInto(doc, &m.clusterRoleBindings)
		case "rbac.authorization.k8s.io/v1/Role":
			derr = decodeInto(doc, &m.roles)
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			derr = decodeInto(doc, &m.roleBindings)
		case "networking.k8s.io/v1/Ingress":
			derr = decodeInto(doc, &m.ingresses)
		case "policy/v1/PodDisruptionBudget":
			derr = decodeInto(doc, &m.pdbs)
		case "keda.sh/v1alpha1/ScaledObject":
			derr = decodeInto(doc, &m.scaledObjects)
		case "keda.sh/v1alpha1/TriggerAuthentication":
			derr = decodeInto(doc, &m.triggerAuths)
		case "networking.k8s.io/v1/NetworkPolicy":
			derr = decodeInto(doc, &m.networkPolicies)
		case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy":
			derr = decodeInto(doc, &m.admissionPolicies)
		case "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":
			derr = decodeInto(doc, &m.admissionBindings)
		case "slotscaler.io/v1alpha1/AgentPool":
			derr = decodeInto(doc, &m.agentPools)
		case "monitoring.coreos.com/v1/ServiceMonitor":
			// The prometheus-operator types are not in this module's graph:
			// decode generically, then check the fields the chart sets.
			u := unstructured.Unstructured{}
			if derr = strict(doc, &u.Object); derr == nil {
				derr = checkServiceMonitorFields(u)
				m.serviceMonitors = append(m.serviceMonitors, u)
			}
		default:
			return nil, fmt.Errorf("%s: unknown kind %s (add it to decodeManifests)", id, gvk)
		}
		if derr != nil {
			return nil, fmt.Errorf("%s does not decode strictly: %w", id, derr)
		}
	}
}

func decodeInto[T any](doc []byte, into *[]T) error {
	var v T
	if err := strict(doc, &v); err != nil {
		return err
	}
	*into = append(*into, v)
	return nil
}

// checkServiceMonitorFields accepts exactly the fields the chart sets, with
// their types (a misspelt field would otherwise pass the generic decode).
func checkServiceMonitorFields(u unstructured.Unstructured) error {
	allowed := map[string][]string{
		"":                       {"apiVersion", "kind", "metadata", "spec"},
		"metadata":               {"name", "namespace", "labels"},
		"spec":                   {"jobLabel", "namespaceSelector", "selector", "endpoints"},
		"spec.namespaceSelector": {"matchNames", "any"},
		"spec.selector":          {"matchLabels", "matchExpressions"},
	}
	for path, keys := range allowed {
		obj := u.Object
		if path != "" {
			v, found, err := unstructured.NestedMap(u.Object, strings.Split(path, ".")...)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if !found {
				continue
			}
			obj = v
		}
		for k := range obj {
			if !slices.Contains(keys, k) {
				return fmt.Errorf("ServiceMonitor %s: unknown field %q", path, k)
			}
		}
	}
	eps, _, err := unstructured.NestedSlice(u.Object, "spec", "endpoints")
	if err != nil || len(eps) == 0 {
		return fmt.Errorf("ServiceMonitor spec.endpoints: want a list of endpoints (%v)", err)
	}
	for i, ep := range eps {
		e, ok := ep.(map[string]any)
		if !ok {
			return fmt.Errorf("ServiceMonitor spec.endpoints[%d]: not an object", i)
		}
		for k, v := range e {
			if !slices.Contains([]string{"port", "path", "scheme", "interval", "scrapeTimeout"}, k) {
				return fmt.Errorf("ServiceMonitor spec.endpoints[%d]: unknown field %q", i, k)
			}
			if _, ok := v.(string); !ok {
				return fmt.Errorf("ServiceMonitor spec.endpoints[%d].%s: want a string", i, k)
			}
		}
	}
	return nil
}

// chartCase is one CI values file and what its render must show.
type chartCase struct {
	file           string
	hpaTolerance   bool
	leaderElect    bool
	watchNamespace string
	poolNamespaces []string // the AgentPools' namespaces, sorted, with repeats
	redisSecret    string   // Secret (and key) the processes read REDIS_URL from
	chartSecret    bool     // the chart renders that Secret (in every pool namespace too)
	secrets        []string // strings that must appear in no workload
	kinds          []string // kinds this file must render
	// scalerTLSGenerated: the chart generates the scaler's certificate and
	// gives KEDA its CA (else the values name a Secret and a
	// TriggerAuthentication of the operator's).
	scalerTLSGenerated bool
}

var chartCases = map[string]chartCase{
	"defaults with the internal Redis": {
		file: "internal-redis-values.yaml", hpaTolerance: true,
		poolNamespaces: []string{chartNamespace},
		redisSecret:    "slotscaler-redis-url/url", chartSecret: true,
		kinds:              []string{"StatefulSet", "ScaledObject", "AgentPool", "ClusterRole", "PodDisruptionBudget", "TriggerAuthentication", "NetworkPolicy"},
		scalerTLSGenerated: true,
	},
	"external Redis, two pools in two namespaces, ingress, service monitor": {
		file: "multi-pool-values.yaml", hpaTolerance: true, leaderElect: true,
		poolNamespaces: []string{"team-a", "team-b"},
		redisSecret:    "slotscaler-redis/redis-url",
		kinds:          []string{"Ingress", "ServiceMonitor", "ScaledObject", "AgentPool", "ClusterRole"},
	},
	"single-namespace janitor without HPA tolerance": {
		file: "single-namespace-values.yaml", watchNamespace: "team-a",
		poolNamespaces: []string{"team-a", "team-a"},
		redisSecret:    "slotscaler-redis-url/url", chartSecret: true,
		secrets:            []string{"not-a-real-token", "not-a-real-token-either"},
		kinds:              []string{"StatefulSet", "ScaledObject", "AgentPool", "Role", "TriggerAuthentication", "NetworkPolicy"},
		scalerTLSGenerated: true,
	},
}

func TestChartLintsAndRendersStrictlyTypedObjects(t *testing.T) {
	for name, tc := range chartCases {
		t.Run(name, func(t *testing.T) {
			_, err := helm(t, "lint", "--strict", chartDir, "--namespace", chartNamespace, "-f", filepath.Join(chartDir, "ci", tc.file))
			require.NoError(t, err)
			out, err := render(t, tc.file)
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			var kinds []string
			for id := range m.raw {
				kinds = append(kinds, strings.Fields(id)[0])
			}
			for _, k := range tc.kinds {
				assert.Contains(t, kinds, k)
			}
			assert.Empty(t, checkChart(m, tc), "the chart's promises")
		})
	}
}

// checkChart returns every broken promise of a render.
func checkChart(m *manifests, tc chartCase) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	// Every namespaced object names its namespace (kubectl's context must not decide).
	for id := range m.raw {
		kind, ref, _ := strings.Cut(id, " ")
		clusterScoped := slices.Contains([]string{"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, kind)
		if ns, _, _ := strings.Cut(ref, "/"); clusterScoped != (ns == "") {
			add("%s: namespace %q", id, ns)
		}
	}

	// Workloads: restricted security contexts, resources, no plaintext secrets.
	for _, d := range m.deployments {
		p = append(p, podProblems("Deployment "+d.Name, d.Spec.Template.Spec, tc)...)
	}
	for _, s := range m.statefulSets {
		p = append(p, podProblems("StatefulSet "+s.Name, s.Spec.Template.Spec, tc)...)
	}
	for _, ap := range m.agentPools {
		p = append(p, podProblems("AgentPool "+ap.Namespace+"/"+ap.Name, ap.Spec.Template.Spec, tc)...)
	}
	for id, doc := range m.raw {
		if !strings.HasPrefix(id, "Secret ") {
			for _, s := range tc.secrets {
				if bytes.Contains(doc, []byte(s)) {
					add("%s contains the secret %q in plain text", id, s)
				}
			}
		}
	}

	scaler := findDeployment(m, "slotscaler-scaler")
	janitor := findDeployment(m, "slotscaler-janitor")
	dashboard := findDeployment(m, "slotscaler-dashboard")
	if scaler == nil || janitor == nil || dashboard == nil {
		add("want the scaler, janitor and dashboard Deployments; have %d Deployments", len(m.deployments))
		return p
	}
	secretName, secretKey, _ := strings.Cut(tc.redisSecret, "/")
	for _, d := range []*appsv1.Deployment{scaler, janitor, dashboard} {
		c := d.Spec.Template.Spec.Containers[0]
		ref := envFrom(c, "REDIS_URL")
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secretName || ref.SecretKeyRef.Key != secretKey {
			add("Deployment %s: REDIS_URL must come from Secret %s", d.Name, tc.redisSecret)
		}
	}

	// The scaler and dashboard need no Kubernetes API: no token.
	for _, d := range []*appsv1.Deployment{scaler, dashboard} {
		spec := d.Spec.Template.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			add("Deployment %s mounts a ServiceAccount token", d.Name)
		}
		sa := findServiceAccount(m, spec.ServiceAccountName)
		if sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			add("ServiceAccount %q of %s: want one with automountServiceAccountToken false", spec.ServiceAccountName, d.Name)
		}
	}

	// The scaler: gRPC 9090, native gRPC probes on the health port 9091.
	sc := scaler.Spec.Template.Spec.Containers[0]
	if !hasPort(sc, "grpc", 9090) || !hasPort(sc, "health", 9091) || !hasPort(sc, "metrics", 8081) {
		add("scaler ports: want grpc 9090, health 9091, metrics 8081; have %+v", sc.Ports)
	}
	for _, pr := range []struct {
		probe   *corev1.Probe
		service string
	}{{sc.LivenessProbe, "liveness"}, {sc.ReadinessProbe, "readiness"}} {
		probe, service := pr.probe, pr.service
		if probe == nil || probe.GRPC == nil || probe.GRPC.Port != 9091 || probe.GRPC.Service == nil || *probe.GRPC.Service != service {
			add("scaler: want a gRPC probe of service %q on 9091; have %+v", service, probe)
		}
	}

	// The janitor.
	jc := janitor.Spec.Template.Spec.Containers[0]
	if !slices.Equal(jc.Args, []string{"janitor"}) {
		add("janitor args %v: want [janitor]", jc.Args)
	}
	if janitor.Spec.Template.Spec.ServiceAccountName != "slotscaler-janitor" {
		add("janitor ServiceAccount %q: want slotscaler-janitor (its RBAC's subject)", janitor.Spec.Template.Spec.ServiceAccountName)
	}
	replicas := int32(1)
	if janitor.Spec.Replicas != nil {
		replicas = *janitor.Spec.Replicas
	}
	leaderElect := envValue(jc, "LEADER_ELECT") == "true"
	if leaderElect != (replicas > 1) || leaderElect != tc.leaderElect {
		add("janitor: %d replicas, LEADER_ELECT %q (want true iff replicas > 1; this file: %v)", replicas, envValue(jc, "LEADER_ELECT"), tc.leaderElect)
	}
	if leaderElect {
		for name, path := range map[string]string{"LEADER_ELECT_NAMESPACE": "metadata.namespace", "LEADER_ELECT_IDENTITY": "metadata.name"} {
			if ref := envFrom(jc, name); ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != path {
				add("janitor %s: want the downward API's %s", name, path)
			}
		}
	} else if janitor.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		add("janitor without leader election: want strategy Recreate (never two at once), have %q", janitor.Spec.Strategy.Type)
	}
	if got := envValue(jc, "NAMESPACE"); got != tc.watchNamespace {
		add("janitor NAMESPACE %q: want %q", got, tc.watchNamespace)
	}
	// Pool credentials (janitor.poolCredentials, the default): agents get
	// their pool's own URL from the Secret the janitor writes, not the
	// shared one.
	poolCreds := findSecret(m, chartNamespace, "slotscaler-pool-credentials") != nil
	if want := tc.redisSecret; poolCreds {
		if got := envValue(jc, "AGENT_REDIS_SECRET"); got != "" {
			add("janitor AGENT_REDIS_SECRET %q with pool credentials: agents must not get the shared URL", got)
		}
		if got := envValue(jc, "POOL_CREDENTIALS_SECRET"); got != "slotscaler-pool-redis" {
			add("janitor POOL_CREDENTIALS_SECRET %q: want slotscaler-pool-redis", got)
		}
		if envValue(jc, "POOL_CREDENTIALS_KEY_FILE") == "" {
			add("janitor: POOL_CREDENTIALS_KEY_FILE not set")
		}
	} else if got := envValue(jc, "AGENT_REDIS_SECRET"); got != want {
		add("janitor AGENT_REDIS_SECRET %q: want %q (agents reference the same Secret in their namespace)", got, want)
	}
	for _, name := range []string{"KUBE_API_QPS", "KUBE_API_BURST"} {
		if envValue(jc, name) == "" {
			add("janitor: %s not set", name)
		}
	}
	if v := envValue(jc, "FULL_PASS_INTERVAL"); v == "" {
		add("janitor: FULL_PASS_INTERVAL not set")
	} else if _, err := time.ParseDuration(v); err != nil {
		add("janitor FULL_PASS_INTERVAL %q: %v", v, err)
	}
	for _, pr := range []struct {
		probe *corev1.Probe
		path  string
	}{{jc.LivenessProbe, "/healthz"}, {jc.ReadinessProbe, "/readyz"}} {
		probe, path := pr.probe, pr.path
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || !portIs(jc, probe.HTTPGet.Port, 8083) {
			add("janitor: want an HTTP probe %s on 8083; have %+v", path, probe)
		}
	}
	p = append(p, rbacProblems(m, tc)...)

	// The Redis URL Secret: rendered by the chart in the release namespace and
	// every pool namespace, or (existingSecret) not at all.
	if tc.chartSecret {
		want := append([]string{chartNamespace}, tc.poolNamespaces...)
		if poolCreds {
			want = []string{chartNamespace}
			for _, s := range m.secrets {
				if s.Name == secretName && s.Namespace != chartNamespace {
					add("Secret %s/%s: the shared URL copied into a pool namespace with pool credentials", s.Namespace, s.Name)
				}
			}
		}
		for _, ns := range want {
			s := findSecret(m, ns, secretName)
			if s == nil || len(s.Data[secretKey]) == 0 {
				add("Secret %s/%s with key %s: missing", ns, secretName, secretKey)
			}
		}
	} else {
		for _, s := range m.secrets {
			if s.Name == secretName {
				add("Secret %s/%s rendered: the values name an existing Secret", s.Namespace, s.Name)
			}
		}
	}

	// Services select pods of a workload and target its named ports.
	p = append(p, serviceProblems(m)...)

	// Pools: one AgentPool and one ScaledObject each.
	var nss []string
	for _, ap := range m.agentPools {
		nss = append(nss, ap.Namespace)
		p = append(p, agentPoolProblems(ap)...)
	}
	sort.Strings(nss)
	if !slices.Equal(nss, tc.poolNamespaces) {
		add("AgentPool namespaces %v: want %v", nss, tc.poolNamespaces)
	}
	if len(m.scaledObjects) != len(m.agentPools) {
		add("%d ScaledObjects for %d AgentPools", len(m.scaledObjects), len(m.agentPools))
	}
	for _, so := range m.scaledObjects {
		p = append(p, scaledObjectProblems(m, so, tc)...)
	}
	p = append(p, scalerTLSProblems(m, tc)...)
	p = append(p, networkPolicyProblems(m)...)
	p = append(p, uninstallHookProblems(m)...)
	return p
}

// uninstallHookProblems: helm uninstall first runs `scaler delete-pools` in a
// pre-delete Job, whose ServiceAccount may only read and delete AgentPools,
// with a selector that matches every AgentPool the chart renders.
func uninstallHookProblems(m *manifests) []string {
	var p []string
	if len(m.hookJobs) != 1 || len(m.hookClusterRoles) != 1 || len(m.hookClusterRoleBindings) != 1 || len(m.hookServiceAccounts) != 1 {
		return []string{fmt.Sprintf("uninstall hook: want one Job, ClusterRole, binding and ServiceAccount; have %d, %d, %d, %d",
			len(m.hookJobs), len(m.hookClusterRoles), len(m.hookClusterRoleBindings), len(m.hookServiceAccounts))}
	}
	job, role, binding, sa := m.hookJobs[0], m.hookClusterRoles[0], m.hookClusterRoleBindings[0], m.hookServiceAccounts[0]
	want := []rbacv1.PolicyRule{{APIGroups: []string{"slotscaler.io"}, Resources: []string{"agentpools"}, Verbs: []string{"get", "list", "watch", "delete"}}}
	if !equalJSON(role.Rules, want) {
		p = append(p, fmt.Sprintf("uninstall hook ClusterRole rules %+v: want exactly %+v", role.Rules, want))
	}
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa.Name ||
		job.Spec.Template.Spec.ServiceAccountName != sa.Name {
		p = append(p, "uninstall hook: the Job, its ServiceAccount and the ClusterRole are not bound together")
	}
	for _, o := range []metav1.ObjectMeta{job.ObjectMeta, role.ObjectMeta, binding.ObjectMeta, sa.ObjectMeta} {
		if o.Annotations["helm.sh/hook"] != "pre-delete" {
			p = append(p, fmt.Sprintf("uninstall hook %s: helm.sh/hook %q, want pre-delete", o.Name, o.Annotations["helm.sh/hook"]))
		}
	}
	if len(job.Spec.Template.Spec.Containers) != 1 {
		return append(p, "uninstall hook Job: want one container")
	}
	c := job.Spec.Template.Spec.Containers[0]
	i := slices.Index(c.Args, "--selector")
	if len(c.Args) == 0 || c.Args[0] != "delete-pools" || i < 0 || i+1 >= len(c.Args) {
		return append(p, fmt.Sprintf("uninstall hook Job args %v: want delete-pools --selector …", c.Args))
	}
	sel, err := labels.Parse(c.Args[i+1])
	if err != nil {
		return append(p, fmt.Sprintf("uninstall hook selector %q: %v", c.Args[i+1], err))
	}
	for _, ap := range m.agentPools {
		if !sel.Matches(labels.Set(ap.Labels)) {
			p = append(p, fmt.Sprintf("uninstall hook selector %q misses AgentPool %s/%s", c.Args[i+1], ap.Namespace, ap.Name))
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		p = append(p, "uninstall hook Job: the container must run as non-root without privilege escalation")
	}
	return p
}

// scalerTLSProblems: by default the scaler serves TLS with a certificate the
// chart generates, valid for the name the ScaledObjects dial and signed by the
// CA each pool namespace's TriggerAuthentication gives KEDA.
func scalerTLSProblems(m *manifests, tc chartCase) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	scaler := findDeployment(m, "slotscaler-scaler")
	if scaler == nil {
		return nil
	}
	if envValue(scaler.Spec.Template.Spec.Containers[0], "TLS_CERT_FILE") == "" {
		add("the scaler serves plaintext gRPC: TLS is the chart's default")
		return p
	}
	if !tc.scalerTLSGenerated {
		return p
	}
	s := findSecret(m, chartNamespace, "slotscaler-scaler-tls")
	if s == nil || s.Type != corev1.SecretTypeTLS {
		add("Secret %s/slotscaler-scaler-tls (kubernetes.io/tls): not rendered", chartNamespace)
		return p
	}
	if _, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"]); err != nil {
		add("the scaler's key pair: %v", err)
	}
	for _, so := range m.scaledObjects {
		host, _, _ := strings.Cut(so.Spec.Triggers[0].Metadata["scalerAddress"], ":")
		ta := findTriggerAuth(m, so.Namespace, so.Spec.Triggers[0].AuthenticationRef.Name)
		if ta == nil {
			continue // scaledObjectProblems says so
		}
		ca, err := caOf(m, ta)
		if err != nil {
			continue // idem
		}
		if err := verifyFor(s.Data["tls.crt"], ca, host); err != nil {
			add("ScaledObject %s/%s: KEDA would refuse the scaler's certificate: %v", so.Namespace, so.Name, err)
		}
	}
	return p
}

// verifyFor checks a PEM certificate chains to the PEM CA for host.
func verifyFor(certPEM, caPEM []byte, host string) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("the CA is not PEM")
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return errors.New("the certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host})
	return err
}

// networkPolicyProblems: every pod the chart runs is selected by a
// NetworkPolicy of its namespace limiting ingress, and each policy opens only
// ports its pods serve.
func networkPolicyProblems(m *manifests) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	type workload struct {
		id, ns string
		labels map[string]string
		spec   corev1.PodSpec
	}
	var ws []workload
	for _, d := range m.deployments {
		ws = append(ws, workload{"Deployment " + d.Name, d.Namespace, d.Spec.Template.Labels, d.Spec.Template.Spec})
	}
	for _, s := range m.statefulSets {
		ws = append(ws, workload{"StatefulSet " + s.Name, s.Namespace, s.Spec.Template.Labels, s.Spec.Template.Spec})
	}
	for _, ap := range m.agentPools {
		// The janitor adds the pool label to every pod it creates.
		l := maps.Clone(ap.Spec.Template.Labels)
		if l == nil {
			l = map[string]string{}
		}
		l["slotscaler.io/pool"] = ap.Name
		ws = append(ws, workload{"AgentPool " + ap.Namespace + "/" + ap.Name, ap.Namespace, l, ap.Spec.Template.Spec})
	}
	for _, w := range ws {
		var selecting []networkingv1.NetworkPolicy
		for _, np := range m.networkPolicies {
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil {
				add("NetworkPolicy %s/%s: selector: %v", np.Namespace, np.Name, err)
				continue
			}
			if np.Namespace == w.ns && sel.Matches(labels.Set(w.labels)) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
				selecting = append(selecting, np)
			}
		}
		if len(selecting) == 0 {
			add("%s: no NetworkPolicy limits its ingress", w.id)
		}
		served := map[int32]bool{}
		for _, c := range w.spec.Containers {
			for _, cp := range c.Ports {
				served[cp.ContainerPort] = true
			}
		}
		for _, np := range selecting {
			for _, rule := range np.Spec.Ingress {
				if len(rule.Ports) == 0 {
					add("NetworkPolicy %s/%s: a rule opens every port of %s", np.Namespace, np.Name, w.id)
				}
				for _, port := range rule.Ports {
					if port.Port == nil || port.Port.Type != intstr.Int || !served[port.Port.IntVal] {
						add("NetworkPolicy %s/%s opens port %v, which %s does not serve", np.Namespace, np.Name, port.Port, w.id)
					}
				}
			}
		}
	}
	return p
}

// podProblems checks a pod template: every container runs restricted
// (non-root, read-only root filesystem, no privilege escalation, no
// capabilities, RuntimeDefault seccomp), with resources, and no secret in a
// plain env value.
func podProblems(where string, spec corev1.PodSpec, tc chartCase) []string {
	var p []string
	add := func(c corev1.Container, format string, args ...any) {
		p = append(p, fmt.Sprintf("%s container %s: ", where, c.Name)+fmt.Sprintf(format, args...))
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			add(c, "no securityContext")
			continue
		}
		runAsNonRoot := cmpOr(sc.RunAsNonRoot, psc.RunAsNonRoot)
		runAsUser := cmpOr(sc.RunAsUser, psc.RunAsUser)
		seccomp := cmpOr(sc.SeccompProfile, psc.SeccompProfile)
		wantUID := int64(restrictedUID)
		if c.Name == "redis" {
			wantUID = redisUID
		}
		switch {
		case runAsNonRoot == nil || !*runAsNonRoot:
			add(c, "runAsNonRoot is not true")
		case runAsUser == nil || *runAsUser != wantUID:
			add(c, "runAsUser %v: want %d", deref(runAsUser), wantUID)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			add(c, "readOnlyRootFilesystem is not true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add(c, "allowPrivilegeEscalation is not false")
		}
		if sc.Privileged != nil && *sc.Privileged {
			add(c, "privileged")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			add(c, "capabilities: want drop [ALL] and nothing added; have %+v", sc.Capabilities)
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			add(c, "seccompProfile is not RuntimeDefault")
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			add(c, "resources: want cpu and memory requests and a memory limit; have %+v", c.Resources)
		}
		for _, e := range c.Env {
			p = append(p, envProblems(where+" container "+c.Name, e)...)
		}
	}
	return p
}

var urlWithPassword = regexp.MustCompile(`^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]+@`)

// envProblems: settings that hold secrets come from a Secret, and no plain
// value is a URL with a password.
func envProblems(where string, e corev1.EnvVar) []string {
	sensitive := map[string]bool{"REDIS_URL": true, "API_TOKENS": true, "REDIS_PASSWORD": true, "REDISCLI_AUTH": true,
		"REDIS_CONTROL_PASSWORD": true, "REDIS_MANAGER_PASSWORD": true, "POOL_CREDENTIALS_REDIS_URL": true}
	switch {
	case sensitive[e.Name] && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil):
		return []string{fmt.Sprintf("%s: %s must come from a Secret (secretKeyRef)", where, e.Name)}
	case urlWithPassword.MatchString(e.Value):
		return []string{fmt.Sprintf("%s: %s is a URL with a password in plain text", where, e.Name)}
	}
	return nil
}

func rbacProblems(m *manifests, tc chartCase) []string {
	var p []string
	// Exactly what pkg/janitor does (templates/janitor-rbac.yaml).
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "delete", "patch"}},
		{APIGroups: []string{"slotscaler.io"}, Resources: []string{"agentpools"}, Verbs: []string{"get", "list", "watch", "patch"}},
		{APIGroups: []string{"slotscaler.io"}, Resources: []string{"agentpools/status"}, Verbs: []string{"update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		// Read only: whether the HPA targeting a pool sets scaleUp.tolerance 0.
		{APIGroups: []string{"autoscaling"}, Resources: []string{"horizontalpodautoscalers"}, Verbs: []string{"get", "list", "watch"}},
	}
	poolCreds := findSecret(m, chartNamespace, "slotscaler-pool-credentials") != nil
	if poolCreds {
		// It writes one Secret of pool URLs per namespace and reads none.
		want = append(want,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"slotscaler-pool-redis"}, Verbs: []string{"patch"}})
	}
	subject := rbacv1.Subject{Kind: "ServiceAccount", Name: "slotscaler-janitor", Namespace: chartNamespace}
	var rules []rbacv1.PolicyRule
	var subjects [][]rbacv1.Subject
	if tc.watchNamespace == "" {
		if len(m.clusterRoles) != 1 || len(m.clusterRoleBindings) != 1 {
			return []string{fmt.Sprintf("janitor watching every namespace: want one ClusterRole and binding, have %d and %d", len(m.clusterRoles), len(m.clusterRoleBindings))}
		}
		rules = m.clusterRoles[0].Rules
		subjects = append(subjects, m.clusterRoleBindings[0].Subjects)
	} else {
		if len(m.clusterRoles)+len(m.clusterRoleBindings) > 0 {
			p = append(p, "janitor watching one namespace: no cluster-wide RBAC wanted")
		}
		for _, r := range m.roles {
			if r.Namespace == tc.watchNamespace && r.Name == "slotscaler-janitor" {
				rules = r.Rules
			}
		}
		for _, b := range m.roleBindings {
			if b.Namespace == tc.watchNamespace && b.RoleRef.Name == "slotscaler-janitor" && b.RoleRef.Kind == "Role" {
				subjects = append(subjects, b.Subjects)
			}
		}
	}
	if !equalJSON(rules, want) {
		p = append(p, fmt.Sprintf("janitor rules %+v: want exactly %+v", rules, want))
	}
	if len(subjects) != 1 || !slices.Equal(subjects[0], []rbacv1.Subject{subject}) {
		p = append(p, fmt.Sprintf("janitor binding subjects %+v: want %+v", subjects, subject))
	}
	// Leases only in the janitor's own namespace.
	found := false
	for _, r := range m.roles {
		if r.Namespace == chartNamespace && r.Name == "slotscaler-janitor-leader-election" {
			found = equalJSON(r.Rules, []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}}})
		}
	}
	if !found {
		p = append(p, "janitor leader-election Role (leases in the release namespace): missing or different")
	}
	for _, r := range m.clusterRoles {
		for _, rule := range r.Rules {
			poolCredsRule := poolCreds && slices.ContainsFunc(want, func(w rbacv1.PolicyRule) bool { return equalJSON(w, rule) })
			if (slices.Contains(rule.Resources, "secrets") && !poolCredsRule) || slices.Contains(rule.Verbs, "*") {
				p = append(p, fmt.Sprintf("ClusterRole %s: %+v is more than the janitor needs", r.Name, rule))
			}
		}
	}
	return p
}

func serviceProblems(m *manifests) []string {
	var p []string
	type workload struct {
		name   string
		labels map[string]string
		spec   corev1.PodSpec
	}
	var ws []workload
	for _, d := range m.deployments {
		ws = append(ws, workload{d.Name, d.Spec.Template.Labels, d.Spec.Template.Spec})
		if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			p = append(p, fmt.Sprintf("Deployment %s: its selector does not match its pods", d.Name))
		}
	}
	for _, s := range m.statefulSets {
		ws = append(ws, workload{s.Name, s.Spec.Template.Labels, s.Spec.Template.Spec})
		if findService(m, s.Namespace, s.Spec.ServiceName) == nil {
			p = append(p, fmt.Sprintf("StatefulSet %s: serviceName %q is not rendered", s.Name, s.Spec.ServiceName))
		}
	}
	for _, svc := range m.services {
		var matched []workload
		for _, w := range ws {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.labels)) {
				matched = append(matched, w)
			}
		}
		if len(svc.Spec.Selector) == 0 || len(matched) != 1 {
			p = append(p, fmt.Sprintf("Service %s selects %d workloads: want 1", svc.Name, len(matched)))
			continue
		}
		for _, port := range svc.Spec.Ports {
			ok := false
			for _, c := range matched[0].spec.Containers {
				ok = ok || portIs(c, port.TargetPort, -1)
			}
			if !ok {
				p = append(p, fmt.Sprintf("Service %s port %s: targetPort %s is no container port of %s", svc.Name, port.Name, port.TargetPort.String(), matched[0].name))
			}
		}
	}
	for _, pdb := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if pool, ok := pdb.Spec.Selector.MatchLabels["slotscaler.io/pool"]; ok {
			// A pool's budget over its busy pods: the janitor labels them.
			found := slices.ContainsFunc(m.agentPools, func(ap v1alpha1.AgentPool) bool {
				return ap.Name == pool && ap.Namespace == pdb.Namespace
			})
			if err != nil || !found || pdb.Spec.Selector.MatchLabels["slotscaler.io/busy"] != "true" || pdb.Spec.MinAvailable == nil {
				p = append(p, fmt.Sprintf("PodDisruptionBudget %s/%s: want minAvailable over the busy pods of AgentPool %s", pdb.Namespace, pdb.Name, pool))
			}
			continue
		}
		d := findDeployment(m, pdb.Name)
		if err != nil || d == nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			p = append(p, fmt.Sprintf("PodDisruptionBudget %s selects no pods of Deployment %s", pdb.Name, pdb.Name))
		}
	}
	for _, ing := range m.ingresses {
		for _, rule := range ing.Spec.Rules {
			for _, path := range rule.HTTP.Paths {
				b := path.Backend.Service
				svc := findService(m, ing.Namespace, b.Name)
				if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name }) {
					p = append(p, fmt.Sprintf("Ingress %s: backend %s:%s is no Service port", ing.Name, b.Name, b.Port.Name))
				}
			}
		}
	}
	for _, sm := range m.serviceMonitors {
		sel := &metav1.LabelSelector{}
		raw, _, _ := unstructured.NestedMap(sm.Object, "spec", "selector")
		if err := runtimeConvert(raw, sel); err != nil {
			p = append(p, fmt.Sprintf("ServiceMonitor %s selector: %v", sm.GetName(), err))
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			p = append(p, fmt.Sprintf("ServiceMonitor %s selector: %v", sm.GetName(), err))
			continue
		}
		nss, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames")
		var scraped []string
		for _, svc := range m.services {
			if s.Matches(labels.Set(svc.Labels)) && slices.Contains(nss, svc.Namespace) {
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == "metrics" }) {
					p = append(p, fmt.Sprintf("ServiceMonitor %s selects Service %s, which has no metrics port", sm.GetName(), svc.Name))
				}
				scraped = append(scraped, svc.Name)
			}
		}
		sort.Strings(scraped)
		if want := []string{"slotscaler-dashboard", "slotscaler-janitor", "slotscaler-scaler"}; !slices.Equal(scraped, want) {
			p = append(p, fmt.Sprintf("ServiceMonitor %s scrapes %v: want %v", sm.GetName(), scraped, want))
		}
	}
	return p
}

func agentPoolProblems(ap v1alpha1.AgentPool) []string {
	var p []string
	where := "AgentPool " + ap.Namespace + "/" + ap.Name
	longest := time.Hour // the janitor's default phase timeout
	if pt := ap.Spec.PhaseTimeouts; pt.Plan != nil || pt.Apply != nil {
		longest = max(durationOr(pt.Plan, time.Hour), durationOr(pt.Apply, time.Hour))
	}
	g := ap.Spec.Template.Spec.TerminationGracePeriodSeconds
	if g == nil || time.Duration(*g)*time.Second < longest+janitorGraceSecs*time.Second {
		p = append(p, fmt.Sprintf("%s: terminationGracePeriodSeconds %v is below the longest phase timeout %v + %ds", where, deref(g), longest, janitorGraceSecs))
	}
	i := slices.IndexFunc(ap.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "agent" })
	if i < 0 {
		return append(p, where+": no container named agent (the janitor injects the agent's settings into it)")
	}
	c := ap.Spec.Template.Spec.Containers[i]
	if envValue(c, "EXECUTOR") == "" {
		p = append(p, where+": no EXECUTOR")
	}
	if envFrom(c, "REDIS_URL") != nil || envValue(c, "REDIS_URL") != "" {
		p = append(p, where+": the template sets REDIS_URL; the janitor injects the Secret reference")
	}
	if hb := envValue(c, "HEARTBEAT_INTERVAL"); hb != "" {
		d, err := time.ParseDuration(hb)
		if err != nil || 3*d > durationOr(ap.Spec.HeartbeatTimeout, 30*time.Second) {
			p = append(p, fmt.Sprintf("%s: HEARTBEAT_INTERVAL %s is more than a third of the heartbeat timeout", where, hb))
		}
	}
	if spec := ap.Spec.Template.Spec; spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p = append(p, where+": agent pods mount a ServiceAccount token (they need no Kubernetes API)")
	}
	return p
}

func scaledObjectProblems(m *manifests, so kedav1alpha1.ScaledObject, tc chartCase) []string {
	var p []string
	add := func(format string, args ...any) {
		p = append(p, fmt.Sprintf("ScaledObject %s/%s: ", so.Namespace, so.Name)+fmt.Sprintf(format, args...))
	}
	for _, check := range []func(*kedav1alpha1.ScaledObject) error{kedav1alpha1.CheckFallbackValid, kedav1alpha1.CheckReplicaCountBoundsAreValid} {
		if err := check(&so); err != nil {
			add("KEDA refuses it: %v", err)
		}
	}
	if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
		add("KEDA refuses its triggers: %v", err)
	}
	ref := so.Spec.ScaleTargetRef
	if ref == nil || ref.APIVersion != "slotscaler.io/v1alpha1" || ref.Kind != "AgentPool" {
		add("scaleTargetRef %+v: want slotscaler.io/v1alpha1 AgentPool", ref)
		return p
	}
	if !slices.ContainsFunc(m.agentPools, func(ap v1alpha1.AgentPool) bool { return ap.Namespace == so.Namespace && ap.Name == ref.Name }) {
		add("scaleTargetRef names AgentPool %s, which is not rendered in %s", ref.Name, so.Namespace)
	}
	if so.Spec.Fallback == nil || so.Spec.Fallback.Behavior != kedav1alpha1.FallbackBehaviorCurrentReplicasIfHigher {
		add("fallback %+v: want behavior currentReplicasIfHigher", so.Spec.Fallback)
	}
	var tolerance *string
	if a := so.Spec.Advanced; a != nil && a.HorizontalPodAutoscalerConfig != nil && a.HorizontalPodAutoscalerConfig.Behavior != nil && a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp != nil && a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Tolerance != nil {
		s := a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Tolerance.String()
		tolerance = &s
	}
	if len(so.Spec.Triggers) != 1 {
		add("%d triggers: want 1", len(so.Spec.Triggers))
		return p
	}
	tr := so.Spec.Triggers[0]
	if tr.Type != "external" && tr.Type != "external-push" {
		add("trigger type %q", tr.Type)
	}
	md := tr.Metadata
	if want := "slotscaler-scaler." + chartNamespace + ".svc:9090"; md["scalerAddress"] != want {
		add("scalerAddress %q: want %q", md["scalerAddress"], want)
	} else if svc := findService(m, chartNamespace, "slotscaler-scaler"); svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == 9090 }) {
		add("scalerAddress %s: no such Service port", md["scalerAddress"])
	}
	if md["pool"] != ref.Name {
		add("trigger metadata pool %q: want the AgentPool %q", md["pool"], ref.Name)
	}
	if scaler := findDeployment(m, "slotscaler-scaler"); scaler != nil && envValue(scaler.Spec.Template.Spec.Containers[0], "TLS_CERT_FILE") != "" {
		if md["enableTLS"] != "true" {
			add("the scaler serves TLS: want enableTLS \"true\", have %q", md["enableTLS"])
		}
		if tr.AuthenticationRef == nil {
			add("the scaler serves TLS: want an authenticationRef giving KEDA its CA")
		} else if ta := findTriggerAuth(m, so.Namespace, tr.AuthenticationRef.Name); ta == nil {
			if tc.scalerTLSGenerated {
				add("authenticationRef %s: no such TriggerAuthentication rendered in %s", tr.AuthenticationRef.Name, so.Namespace)
			}
		} else if _, err := caOf(m, ta); err != nil {
			add("authenticationRef %s: %v", ta.Name, err)
		}
	}
	if tc.hpaTolerance {
		if tolerance == nil || *tolerance != "0" {
			add("behavior.scaleUp.tolerance %v: want 0", deref(tolerance))
		}
		if md["nudgeTolerance"] != "false" {
			add("nudgeTolerance %q: want \"false\" with tolerance 0 (no double correction)", md["nudgeTolerance"])
		}
	} else {
		if tolerance != nil {
			add("behavior.scaleUp.tolerance %s set on a cluster that cannot", *tolerance)
		}
		if md["nudgeTolerance"] != "true" {
			add("nudgeTolerance %q: want \"true\" where tolerance cannot be set", md["nudgeTolerance"])
		}
	}
	return p
}

func findTriggerAuth(m *manifests, ns, name string) *kedav1alpha1.TriggerAuthentication {
	for i := range m.triggerAuths {
		if ta := &m.triggerAuths[i]; ta.Namespace == ns && ta.Name == name {
			return ta
		}
	}
	return nil
}

// caOf is the caCert a rendered TriggerAuthentication gives KEDA, read from
// the rendered Secret it names in its own namespace.
func caOf(m *manifests, ta *kedav1alpha1.TriggerAuthentication) ([]byte, error) {
	for _, ref := range ta.Spec.SecretTargetRef {
		if ref.Parameter != "caCert" {
			continue
		}
		s := findSecret(m, ta.Namespace, ref.Name)
		if s == nil || len(s.Data[ref.Key]) == 0 {
			return nil, fmt.Errorf("caCert from Secret %s/%s key %s: not rendered", ta.Namespace, ref.Name, ref.Key)
		}
		return s.Data[ref.Key], nil
	}
	return nil, errors.New("no caCert parameter")
}

// Values that must break the render, or one of the promises above.
func TestChartRejectsBrokenValues(t *testing.T) {
	tests := map[string]struct {
		file    string
		args    []string
		helmErr string // helm must fail with this (schema or template check)
		schema  bool   // the schema refuses it, so helm lint does too (lint ignores fail)
		problem string // or render, and checkChart must report this
	}{
		"full pass interval not a duration": {
			file: "internal-redis-values.yaml", args: []string{"--set", "janitor.fullPassInterval=5 minutes"},
			helmErr: "/janitor/fullPassInterval", schema: true,
		},
		"security context removed": {
			file: "internal-redis-values.yaml", args: []string{"--set", "securityContext=null"},
			problem: "container scaler: no securityContext",
		},
		"privilege escalation allowed": {
			file: "multi-pool-values.yaml", args: []string{"--set", "securityContext.allowPrivilegeEscalation=true"},
			problem: "container janitor: allowPrivilegeEscalation is not false",
		},
		"agent pods as root": {
			file: "multi-pool-values.yaml", args: []string{"--set", "poolDefaults.podSecurityContext.runAsUser=0,poolDefaults.securityContext.runAsUser=0"},
			problem: "container agent: runAsUser 0",
		},
		"plaintext Redis password in an env value": {
			file: "multi-pool-values.yaml", args: []string{"--set", "dashboard.extraEnv[0].name=BACKUP_URL,dashboard.extraEnv[0].value=redis://:hunter2@redis:6379"},
			problem: "BACKUP_URL is a URL with a password in plain text",
		},
		"scaler in plaintext": {
			file: "internal-redis-values.yaml", args: []string{"--set", "scaler.tls.enabled=false"},
			problem: "the scaler serves plaintext gRPC",
		},
		"no network policies": {
			file: "internal-redis-values.yaml", args: []string{"--set", "networkPolicy.enabled=false"},
			problem: "Deployment slotscaler-scaler: no NetworkPolicy limits its ingress",
		},
		"a network policy opening every port": {
			file: "single-namespace-values.yaml", args: []string{"--set", "networkPolicy.extraIngress[0].from[0].podSelector.matchLabels.a=b"},
			problem: "a rule opens every port",
		},
		"client certificates without a CA to check them": {
			file: "internal-redis-values.yaml", args: []string{"--set", "scaler.tls.clientCA=true"},
			helmErr: "scaler.tls.clientCA needs scaler.tls.secretName",
		},
		"grace period below the phase timeout": {
			file: "multi-pool-values.yaml", args: []string{"--set", "pools[1].terminationGracePeriodSeconds=600"},
			helmErr: "terminationGracePeriodSeconds 600 is below the longest phase timeout",
		},
		"replicas not a number": {
			file: "internal-redis-values.yaml", args: []string{"--set", "scaler.replicaCount=two"},
			helmErr: "/scaler/replicaCount", schema: true,
		},
		"tolerance switch not a boolean": {
			file: "internal-redis-values.yaml", args: []string{"--set-string", "keda.hpaTolerance=yes"},
			helmErr: "/keda/hpaTolerance", schema: true,
		},
		"unknown value": {
			file: "internal-redis-values.yaml", args: []string{"--set", "scaler.replicas=3"},
			helmErr: "additional properties 'replicas' not allowed", schema: true,
		},
		"pool name too long for its pod names": {
			file: "internal-redis-values.yaml", args: []string{"--set", "pools[0].name=" + strings.Repeat("a", 58)},
			helmErr: "/pools/0/name", schema: true,
		},
		"duration the binaries cannot parse": {
			file: "internal-redis-values.yaml", args: []string{"--set", "pools[0].idleFor=1 minute"},
			helmErr: "/pools/0/idleFor", schema: true,
		},
		"agent Redis URL with a password": {
			file: "multi-pool-values.yaml", args: []string{"--set", "janitor.agentRedisURL=redis://:pw@redis:6379/0"},
			helmErr: "/janitor/agentRedisURL", schema: true,
		},
		"pool outside the watched namespace": {
			file: "single-namespace-values.yaml", args: []string{"--set", "pools[1].namespace=team-b"},
			helmErr: `the janitor watches namespace "team-a" only`,
		},
		"two Redis configured": {
			file: "internal-redis-values.yaml", args: []string{"--set", "redis.external.url=redis://redis:6379/0"},
			helmErr: "redis.external is set and redis.internal.enabled is true",
		},
		"heartbeat interval the agent refuses": {
			file: "internal-redis-values.yaml", args: []string{"--set", "pools[0].heartbeatInterval=15s"},
			helmErr: "more than a third of heartbeatTimeout",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, tc.file, tc.args...)
			if tc.helmErr != "" {
				require.Error(t, err, "helm rendered broken values")
				assert.Contains(t, err.Error(), tc.helmErr)
				if tc.schema {
					_, lintErr := helm(t, append([]string{"lint", "--strict", chartDir, "-f", filepath.Join(chartDir, "ci", tc.file)}, tc.args...)...)
					assert.Error(t, lintErr, "helm lint passed values the schema refuses")
				}
				return
			}
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			base := chartCases[caseOf(tc.file)]
			problems := checkChart(m, base)
			assert.True(t, slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, tc.problem) }),
				"want a problem containing %q; have %q", tc.problem, problems)
		})
	}
}

// The chart compares the heartbeat interval with a third of the timeout as
// the agent does, to the nanosecond: rounding durations up to seconds
// refused 300ms against 2s (which the agent accepts).
func TestChartHeartbeatIntervalCheckIsExact(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout string
		ok                bool
	}{
		{"300ms", "2s", true},
		{"666ms", "2s", true},
		{"667ms", "2s", false},
		{"10s", "30s", true},
		{"10.5s", "30s", false},
		{"1m", "2m", false},
	} {
		t.Run(tc.interval+"/"+tc.timeout, func(t *testing.T) {
			_, err := render(t, "internal-redis-values.yaml", "--set",
				"pools[0].heartbeatInterval="+tc.interval+",pools[0].heartbeatTimeout="+tc.timeout)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, "more than a third of heartbeatTimeout")
			}
		})
	}
}

// janitor.fullPassInterval reaches the janitor as FULL_PASS_INTERVAL, and
// its default is the binary's own, read from `scaler janitor --help` (a
// chart default drifting from pkg/janitor's would silently change how
// often pools at rest get a full pass).
func TestChartJanitorFullPassInterval(t *testing.T) {
	help, _ := exec.Command(scalerBin, "janitor", "--help").CombinedOutput() // --help exits non-zero
	m := regexp.MustCompile(`(?s)--full-pass-interval duration.*?\(default "([^"]+)"\)`).FindSubmatch(help)
	require.NotNil(t, m, "no --full-pass-interval default in:\n%s", help)
	binaryDefault, err := time.ParseDuration(string(m[1]))
	require.NoError(t, err)
	for _, tc := range []struct {
		set  string
		want time.Duration
	}{
		{"", binaryDefault},
		{"janitor.fullPassInterval=90s", 90 * time.Second},
		{"janitor.fullPassInterval=0s", 0},
	} {
		t.Run(cmp.Or(tc.set, "default"), func(t *testing.T) {
			var args []string
			if tc.set != "" {
				args = []string{"--set", tc.set}
			}
			out, err := render(t, "internal-redis-values.yaml", args...)
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			d := findDeployment(m, "slotscaler-janitor")
			require.NotNil(t, d)
			v := envValue(d.Spec.Template.Spec.Containers[0], "FULL_PASS_INTERVAL")
			got, err := time.ParseDuration(v)
			require.NoError(t, err, "FULL_PASS_INTERVAL %q", v)
			assert.Equal(t, tc.want, got)
		})
	}
}

// A pool's image.repository or image.tag alone replaces the chart's part
// of the agent image (a tag alone was ignored once: an upgrade that set it
// rolled no pod).
func TestChartPoolImage(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"", "ghcr.io/slotscaler/slotscaler:"},
		{"pools[0].image.tag=next", "ghcr.io/slotscaler/slotscaler:next"},
		{"pools[0].image.repository=example.com/agent", "example.com/agent:"},
		{"image.tag=1.2,pools[0].image.repository=example.com/agent", "example.com/agent:1.2"},
		{"image.tag=1.2,pools[0].image.tag=1.3", "ghcr.io/slotscaler/slotscaler:1.3"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			var args []string
			if tc.set != "" {
				args = []string{"--set", tc.set}
			}
			out, err := render(t, "internal-redis-values.yaml", args...)
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			var images []string
			for _, ap := range m.agentPools {
				for _, c := range ap.Spec.Template.Spec.Containers {
					images = append(images, c.Image)
				}
			}
			require.NotEmpty(t, images)
			for _, img := range images {
				assert.True(t, strings.HasPrefix(img, tc.want), "agent image %s, want %s…", img, tc.want)
			}
		})
	}
}

func caseOf(file string) string {
	for name, c := range chartCases {
		if c.file == file {
			return name
		}
	}
	panic("no chart case for " + file)
}

func TestChartDecoderRejectsUnknownKindsAndFields(t *testing.T) {
	tests := map[string]struct{ doc, want string }{
		"unknown kind": {
			doc:  "apiVersion: v1\nkind: LimitRange\nmetadata: {name: x, namespace: ns}\n",
			want: "unknown kind v1/LimitRange",
		},
		"unknown field": {
			doc:  "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: ns}\nspec: {selectr: {a: b}}\n",
			want: `unknown field "spec.selectr"`,
		},
		"misspelt KEDA field": {
			doc:  "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x, namespace: ns}\nspec: {scaleTargetRef: {name: x}, triggers: [], fallbak: {}}\n",
			want: `unknown field "spec.fallbak"`,
		},
		"misspelt AgentPool field": {
			doc:  "apiVersion: slotscaler.io/v1alpha1\nkind: AgentPool\nmetadata: {name: x, namespace: ns}\nspec: {template: {}, idlefor: 1m}\n",
			want: `unknown field "spec.idlefor"`,
		},
		"misspelt ServiceMonitor field": {
			doc:  "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x, namespace: ns}\nspec: {endpoint: [{port: metrics}]}\n",
			want: `unknown field "endpoint"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decodeManifests([]byte("---\n" + tc.doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Every environment variable the chart sets on a slotscaler process is one
// of that binary's settings (`--help` lists them as "(env NAME)"), and the
// scaler starts with the values the chart renders.
func TestChartEnvNamesAreTheBinariesSettings(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./dashboard", "./agent")
	build.Dir = filepath.Join("..", "..")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	settings := func(args ...string) []string {
		cmd := exec.Command(args[0], args[1:]...)
		out, _ := cmd.CombinedOutput() // --help exits non-zero
		var names []string
		for _, m := range regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`).FindAllStringSubmatch(string(out), -1) {
			names = append(names, m[1])
		}
		require.NotEmpty(t, names, "%v printed no settings:\n%s", args, out)
		return names
	}
	known := map[string][]string{
		"scaler":    settings(scalerBin, "--help"),
		"janitor":   settings(scalerBin, "janitor", "--help"),
		"dashboard": settings(filepath.Join(bin, "dashboard"), "--help"),
		"agent":     settings(filepath.Join(bin, "agent"), "--help"),
	}
	for name, tc := range chartCases {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, tc.file)
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			for _, d := range m.deployments {
				for _, c := range d.Spec.Template.Spec.Containers {
					for _, e := range c.Env {
						assert.Contains(t, known[c.Name], e.Name, "Deployment %s sets %s, which %s does not read", d.Name, e.Name, c.Name)
					}
				}
			}
			for _, ap := range m.agentPools {
				c := ap.Spec.Template.Spec.Containers[0]
				passed := strings.Split(envValue(c, "EXECUTOR_ENV"), ",")
				for _, e := range c.Env {
					if !slices.Contains(passed, e.Name) {
						assert.Contains(t, known["agent"], e.Name, "AgentPool %s sets %s, which the agent does not read (nor passes to executors)", ap.Name, e.Name)
					}
				}
			}
		})
	}
}

// The rendered ScaledObjects, given to KEDA's own external scaler client and
// the real scaler binary started with the rendered scaler env: on a 20-pod
// pool whose slot 0s are busy with one more plan_and_apply queued, the HPA
// (the rendered behavior's tolerance, or the cluster default 0.1 where the
// chart cannot set it) gets a 21st pod or more — never stuck at 20.
func TestChartScaledObjectsGetTheTwentyFirstPod(t *testing.T) {
	url := redistest.Standalone(t)
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	for name, tc := range chartCases {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, tc.file)
			require.NoError(t, err)
			m, err := decodeManifests(out)
			require.NoError(t, err)
			require.NotEmpty(t, m.scaledObjects)

			prefix := redistest.Prefix(t)
			var env []string
			sc := findDeployment(m, "slotscaler-scaler").Spec.Template.Spec.Containers[0]
			for _, e := range sc.Env {
				switch {
				case e.ValueFrom != nil, strings.HasSuffix(e.Name, "_ADDRESS"), strings.HasPrefix(e.Name, "TLS_"):
					// Secrets, ports (startScaler picks free ones), and TLS
					// files (below).
				default:
					env = append(env, e.Name+"="+e.Value)
				}
			}
			env, auth, extraMeta := scalerTLSFor(t, m, tc, sc, env)
			addr := startScaler(t, append(env, "REDIS_URL="+url, "KEY_PREFIX="+prefix)...)
			store, err := slots.New(context.Background(), rdb, slots.Options{Prefix: prefix, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)

			for _, so := range m.scaledObjects {
				ctx := context.Background()
				pool := slots.PoolID{Namespace: so.Namespace, Name: so.Spec.ScaleTargetRef.Name}
				_, err := store.DeclarePool(ctx, pool, slots.DefaultPoolConfig())
				require.NoError(t, err)
				for i := range 20 {
					_, err := store.RegisterPod(ctx, pool, fmt.Sprintf("agent-%d", i), fmt.Sprintf("uid-%d", i))
					require.NoError(t, err)
				}
				for i := range 21 {
					_, err := store.Submit(ctx, pool, slots.TaskSpec{ID: fmt.Sprintf("apply-%d", i), Type: slots.PlanAndApply})
					require.NoError(t, err)
				}

				tr := so.Spec.Triggers[0]
				meta := map[string]string{}
				for k, v := range tr.Metadata {
					meta[k] = v
				}
				meta["scalerAddress"] = addr // the rendered one is checked by checkChart
				maps.Copy(meta, extraMeta)
				cfg := &scalersconfig.ScalerConfig{
					ScalableObjectName: so.Name, ScalableObjectNamespace: so.Namespace, ScalableObjectType: "ScaledObject",
					TriggerType: tr.Type, TriggerMetadata: meta, AuthParams: auth, GlobalHTTPTimeout: 3 * time.Second, MetricType: v2.AverageValueMetricType,
				}
				var s scalers.Scaler
				if tr.Type == "external-push" {
					s, err = scalers.NewExternalPushScaler(cfg)
				} else {
					s, err = scalers.NewExternalScaler(cfg)
				}
				require.NoError(t, err)
				specs := s.GetMetricSpecForScaling(ctx)
				require.Len(t, specs, 1)
				ext := specs[0].External
				values, active, err := s.GetMetricsAndActivity(ctx, ext.Metric.Name)
				require.NoError(t, err, "the scaler refuses the rendered trigger of %s/%s", so.Namespace, so.Name)
				require.NoError(t, s.Close(ctx))
				require.Len(t, values, 1)
				assert.True(t, active)

				tolerance := 0.1 // the cluster's default
				if a := so.Spec.Advanced; a != nil && a.HorizontalPodAutoscalerConfig != nil && a.HorizontalPodAutoscalerConfig.Behavior != nil &&
					a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp != nil && a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Tolerance != nil {
					tolerance = a.HorizontalPodAutoscalerConfig.Behavior.ScaleUp.Tolerance.AsApproximateFloat64()
				}
				got := int(hpa.ExternalPerPodReplicas(20, values[0].Value.MilliValue(), ext.Target.AverageValue.MilliValue(),
					hpa.Tolerance{Up: tolerance, Down: capacity.DefaultTolerance}))
				assert.GreaterOrEqual(t, got, 21, "%s/%s: the HPA (tolerance %v) keeps 20 pods with a plan_and_apply queued", so.Namespace, so.Name, tolerance)
			}
		})
	}
}

// scalerTLSFor gives the scaler the TLS files the chart mounts and KEDA's
// client what the ScaledObjects' TriggerAuthentication gives it. The
// chart-generated certificate is used as rendered; KEDA dials 127.0.0.1 here,
// which the certificate does not name, so the name check is skipped for that
// one (TestChartScalerCertificateServesTheServiceName does it with the
// rendered name). A Secret the values only name is stood in for by a test PKI.
func scalerTLSFor(t *testing.T, m *manifests, tc chartCase, sc corev1.Container, env []string) ([]string, map[string]string, map[string]string) {
	t.Helper()
	if envValue(sc, "TLS_CERT_FILE") == "" {
		return env, nil, nil
	}
	mtls := envValue(sc, "TLS_CLIENT_CA_FILE") != ""
	if !tc.scalerTLSGenerated {
		pki := testcerts.New(t)
		env = append(env, "TLS_CERT_FILE="+pki.ServerCertFile, "TLS_KEY_FILE="+pki.ServerKeyFile)
		auth := map[string]string{"caCert": pki.CA}
		if mtls {
			env = append(env, "TLS_CLIENT_CA_FILE="+pki.CAFile)
			auth["tlsClientCert"], auth["tlsClientKey"] = pki.ClientCert, pki.ClientKey
		}
		return env, auth, nil
	}
	require.False(t, mtls, "the chart generates a server certificate only")
	s := findSecret(m, chartNamespace, "slotscaler-scaler-tls")
	require.NotNil(t, s)
	dir := t.TempDir()
	for _, k := range []string{"tls.crt", "tls.key"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, k), s.Data[k], 0o600))
	}
	env = append(env, "TLS_CERT_FILE="+filepath.Join(dir, "tls.crt"), "TLS_KEY_FILE="+filepath.Join(dir, "tls.key"))
	so := m.scaledObjects[0]
	ca, err := caOf(m, findTriggerAuth(m, so.Namespace, so.Spec.Triggers[0].AuthenticationRef.Name))
	require.NoError(t, err)
	return env, map[string]string{"caCert": string(ca)}, map[string]string{"unsafeSsl": "true"}
}

// The chart's generated certificate serves the name the rendered
// ScaledObjects dial, under the CA their TriggerAuthentication gives KEDA: a
// real handshake against the scaler binary with that server name, and none
// with another CA or another name.
func TestChartScalerCertificateServesTheServiceName(t *testing.T) {
	out, err := render(t, "internal-redis-values.yaml")
	require.NoError(t, err)
	m, err := decodeManifests(out)
	require.NoError(t, err)
	require.NotEmpty(t, m.scaledObjects)
	so := m.scaledObjects[0]
	sc := findDeployment(m, "slotscaler-scaler").Spec.Template.Spec.Containers[0]
	env, auth, _ := scalerTLSFor(t, m, chartCases[caseOf("internal-redis-values.yaml")], sc, nil)
	addr := startScaler(t, append(env, "REDIS_URL="+redistest.Standalone(t), "KEY_PREFIX="+redistest.Prefix(t))...)
	host, _, _ := strings.Cut(so.Spec.Triggers[0].Metadata["scalerAddress"], ":")

	call := func(ca []byte, serverName string) error {
		roots := x509.NewCertPool()
		require.True(t, roots.AppendCertsFromPEM(ca))
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: serverName})))
		require.NoError(t, err)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = pb.NewExternalScalerClient(conn).IsActive(ctx, &pb.ScaledObjectRef{Namespace: "ns", ScalerMetadata: map[string]string{"pool": "missing"}})
		return err
	}
	assert.Equal(t, codes.NotFound, status.Code(call([]byte(auth["caCert"]), host)), "the handshake with the rendered CA and name reaches the handler")
	assert.Equal(t, codes.Unavailable, status.Code(call([]byte(auth["caCert"]), "elsewhere.example")), "another name is refused")
	assert.Equal(t, codes.Unavailable, status.Code(call([]byte(testcerts.New(t).CA), host)), "another CA is refused")
}

// Every value in values.yaml carries a `# --` comment, appears in the
// chart's README, and is known to values.schema.json.
func TestChartValuesAreDocumentedAndInTheSchema(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var doc yamlv3.Node
	require.NoError(t, yamlv3.Unmarshal(src, &doc))
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	require.NoError(t, err)
	schemaSrc, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, yaml.Unmarshal(schemaSrc, &schema))

	var leaves []string
	var walk func(n *yamlv3.Node, path string)
	walk = func(n *yamlv3.Node, path string) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			if v.Kind == yamlv3.MappingNode && descendantsDocumented(v) {
				walk(v, p)
				continue
			}
			leaves = append(leaves, p)
			assert.Contains(t, k.HeadComment, "# --", "values.yaml: %s has no `# --` comment", p)
			assert.Contains(t, string(readme), "`"+p+"`", "README.md: %s is not in the values table", p)
			assert.True(t, schemaHas(schema, strings.Split(p, ".")), "values.schema.json: %s is not described", p)
		}
	}
	walk(doc.Content[0], "")
	assert.Greater(t, len(leaves), 50)
}

// descendantsDocumented: some key inside the mapping has its own `# --`
// comment (else the mapping is one value, documented as a whole).
func descendantsDocumented(n *yamlv3.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if strings.Contains(n.Content[i].HeadComment, "# --") ||
			(n.Content[i+1].Kind == yamlv3.MappingNode && descendantsDocumented(n.Content[i+1])) {
			return true
		}
	}
	return false
}

// schemaHas: the schema describes the property path (following $ref).
func schemaHas(schema map[string]any, path []string) bool {
	node := schema
	for _, key := range path {
		node = resolveRef(schema, node)
		props, _ := node["properties"].(map[string]any)
		next, ok := props[key].(map[string]any)
		if !ok {
			return false
		}
		node = next
	}
	return true
}

func resolveRef(schema, node map[string]any) map[string]any {
	ref, ok := node["$ref"].(string)
	if !ok {
		return node
	}
	out := schema
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		out, _ = out[part].(map[string]any)
	}
	return out
}

// --- small helpers --------------------------------------------------------

func findDeployment(m *manifests, name string) *appsv1.Deployment {
	for i := range m.deployments {
		if m.deployments[i].Name == name {
			return &m.deployments[i]
		}
	}
	return nil
}

func findService(m *manifests, ns, name string) *corev1.Service {
	for i := range m.services {
		if m.services[i].Namespace == ns && m.services[i].Name == name {
			return &m.services[i]
		}
	}
	return nil
}

func findServiceAccount(m *manifests, name string) *corev1.ServiceAccount {
	for i := range m.serviceAccounts {
		if m.serviceAccounts[i].Name == name && m.serviceAccounts[i].Namespace == chartNamespace {
			return &m.serviceAccounts[i]
		}
	}
	return nil
}

func findSecret(m *manifests, ns, name string) *corev1.Secret {
	for i := range m.secrets {
		if m.secrets[i].Namespace == ns && m.secrets[i].Name == name {
			return &m.secrets[i]
		}
	}
	return nil
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func envFrom(c corev1.Container, name string) *corev1.EnvVarSource {
	for _, e := range c.Env {
		if e.Name == name {
			return e.ValueFrom
		}
	}
	return nil
}

func hasPort(c corev1.Container, name string, port int32) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name && p.ContainerPort == port })
}

// portIs: the probe or Service port names (or numbers) a container port,
// and that port is want (-1: any).
func portIs(c corev1.Container, port intstr.IntOrString, want int32) bool {
	for _, p := range c.Ports {
		if (port.String() == p.Name || port.String() == fmt.Sprint(p.ContainerPort)) && (want < 0 || p.ContainerPort == want) {
			return true
		}
	}
	return false
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func deref[T any](v *T) any {
	if v == nil {
		return "unset"
	}
	return *v
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func equalJSON(a, b any) bool {
	x, err1 := yaml.Marshal(a)
	y, err2 := yaml.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func runtimeConvert(in map[string]any, out any) error {
	b, err := yaml.Marshal(in)
	if err != nil {
		return err
	}
	return strict(b, out)
}

// Parts the CI values files leave on: without KEDA the pools keep a fixed
// size; without the dashboard nothing of it is rendered.
func TestChartOptionalParts(t *testing.T) {
	out, err := render(t, "internal-redis-values.yaml", "--set", "keda.enabled=false,dashboard.enabled=false,pools[0].replicas=3")
	require.NoError(t, err)
	m, err := decodeManifests(out)
	require.NoError(t, err)
	assert.Empty(t, m.scaledObjects, "keda.enabled=false")
	require.Len(t, m.agentPools, 1)
	require.NotNil(t, m.agentPools[0].Spec.Replicas)
	assert.EqualValues(t, 3, *m.agentPools[0].Spec.Replicas, "a fixed-size pool")
	for id := range m.raw {
		assert.NotContains(t, id, "dashboard", "dashboard.enabled=false")
	}

	// With KEDA the AgentPool leaves spec.replicas to the HPA (a chart
	// upgrade must not reset what KEDA set).
	out, err = render(t, "internal-redis-values.yaml")
	require.NoError(t, err)
	m, err = decodeManifests(out)
	require.NoError(t, err)
	assert.Nil(t, m.agentPools[0].Spec.Replicas)
}

// A scoped tokens file comes from an existing Secret, mounted read-only at
// the path API_TOKENS_FILE names; the four-eyes pools reach the dashboard
// as one comma-separated setting; OIDC's client secret is a mounted file.
func TestChartDashboardScopedTokensFile(t *testing.T) {
	out, err := render(t, "internal-redis-values.yaml", "--set", "dashboard.apiTokensFile.existingSecret=scoped-tokens",
		"--set", "dashboard.apiTokensFile.key=tokens.yaml", "--set", "dashboard.separateApproverPools={team-a/*,*/prod}")
	require.NoError(t, err)
	m, err := decodeManifests(out)
	require.NoError(t, err)
	var dash *appsv1.Deployment
	for i := range m.deployments {
		if strings.HasSuffix(m.deployments[i].Name, "dashboard") {
			dash = &m.deployments[i]
		}
	}
	require.NotNil(t, dash, "the dashboard's Deployment")
	spec := dash.Spec.Template.Spec
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	assert.Equal(t, "/etc/slotscaler/tokens/tokens.yaml", env["API_TOKENS_FILE"])
	assert.Equal(t, "team-a/*,*/prod", env["SEPARATE_APPROVER_POOLS"])
	require.Len(t, spec.Containers[0].VolumeMounts, 1)
	mount := spec.Containers[0].VolumeMounts[0]
	assert.Equal(t, "/etc/slotscaler/tokens", mount.MountPath)
	assert.True(t, mount.ReadOnly)
	require.Len(t, spec.Volumes, 1)
	require.NotNil(t, spec.Volumes[0].Secret)
	assert.Equal(t, "scoped-tokens", spec.Volumes[0].Secret.SecretName)
	assert.Equal(t, mount.Name, spec.Volumes[0].Name)

	// OIDC: the client secret is a mounted file, never an env value.
	out, err = render(t, "internal-redis-values.yaml", "--set", "dashboard.apiTokensFile.existingSecret=scoped-tokens",
		"--set", "dashboard.oidc.issuer=https://login.example.com", "--set", "dashboard.oidc.clientId=slotscaler",
		"--set", "dashboard.oidc.clientSecretSecret=oidc-client", "--set", "dashboard.oidc.redirectUrl=https://slots.example.com/login/oidc/callback")
	require.NoError(t, err)
	m, err = decodeManifests(out)
	require.NoError(t, err)
	for _, d := range m.deployments {
		if !strings.HasSuffix(d.Name, "dashboard") {
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		env = map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		assert.Equal(t, "https://login.example.com", env["OIDC_ISSUER"])
		assert.Equal(t, "/etc/slotscaler/oidc/client-secret", env["OIDC_CLIENT_SECRET_FILE"])
		assert.Equal(t, "email,profile", env["OIDC_SCOPES"])
		assert.NotContains(t, env, "OIDC_CLIENT_SECRET")
		require.Len(t, c.VolumeMounts, 2)
		require.Len(t, d.Spec.Template.Spec.Volumes, 2)
		assert.Equal(t, "oidc-client", d.Spec.Template.Spec.Volumes[1].Secret.SecretName)
	}
	_, err = render(t, "internal-redis-values.yaml", "--set", "dashboard.oidc.issuer=https://login.example.com")
	require.ErrorContains(t, err, "dashboard.oidc.issuer needs", "an issuer without its client is refused")

	// Off by default: no file, no mount.
	out, err = render(t, "internal-redis-values.yaml")
	require.NoError(t, err)
	m, err = decodeManifests(out)
	require.NoError(t, err)
	for _, d := range m.deployments {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			assert.NotEqual(t, "API_TOKENS_FILE", e.Name, "deployment %s", d.Name)
		}
	}
}

// notifications renders the notifier's config file as a ConfigMap without
// a URL or a secret, mounts only the Secret keys its webhooks name into the
// scaler, and the file it renders is one the notifier accepts (strictly).
// The scaler's ServiceAccount gets no access to Secrets.
func TestChartNotifications(t *testing.T) {
	values := filepath.Join(t.TempDir(), "notify.yaml")
	require.NoError(t, os.WriteFile(values, []byte(`
notifications:
  enabled: true
  dashboardURL: https://slots.example.com
  webhooks:
    - name: team-a-slack
      pools: ["team-a/*"]
      events: [awaiting-approval, failed]
      format: slack
      urlSecretRef: {name: team-a-hooks, key: slack-url}
    - name: ops
      pools: ["*/*"]
      urlSecretRef: {name: ops-hook, key: url}
      signingSecretRef: {name: ops-hook, key: signing-secret}
      timeout: 5s
      maxAttempts: 8
`), 0o600))
	out, err := render(t, "internal-redis-values.yaml", "-f", values)
	require.NoError(t, err)
	m, err := decodeManifests(out)
	require.NoError(t, err)

	var cm *corev1.ConfigMap
	for i := range m.configMaps {
		if strings.HasSuffix(m.configMaps[i].Name, "scaler-notify") {
			cm = &m.configMaps[i]
		}
	}
	require.NotNil(t, cm, "the notifier's config file")
	file := cm.Data["notify.yaml"]
	// The notifier reads the rendered file: the mounted Secret keys stand
	// in a temporary directory.
	secrets := t.TempDir()
	for _, f := range []struct{ path, value string }{
		{"team-a-hooks/slack-url", "https://hooks.slack.com/services/T/B/X"},
		{"ops-hook/url", "https://ops.example.com/hook"},
		{"ops-hook/signing-secret", "s3cret"},
	} {
		require.NoError(t, os.MkdirAll(filepath.Join(secrets, filepath.Dir(f.path)), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(secrets, f.path), []byte(f.value+"\n"), 0o600))
	}
	cfg, err := notify.Parse([]byte(strings.ReplaceAll(file, "/etc/slotscaler/notify/secrets/", secrets+"/")), os.LookupEnv)
	require.NoError(t, err, "the rendered file:\n%s", file)
	assert.Equal(t, "https://slots.example.com", cfg.DashboardURL)
	require.Len(t, cfg.Webhooks, 2)
	assert.Equal(t, notify.FormatSlack, cfg.Webhooks[0].Format)
	assert.Equal(t, []string{"awaiting-approval", "failed"}, cfg.Webhooks[0].Events)
	assert.Equal(t, "https://ops.example.com/hook", cfg.Webhooks[1].URL)
	assert.Equal(t, []byte("s3cret"), cfg.Webhooks[1].SigningSecret)
	assert.Equal(t, 5*time.Second, cfg.Webhooks[1].Timeout)
	assert.Equal(t, 8, cfg.Webhooks[1].MaxAttempts)

	var scaler *appsv1.Deployment
	for i := range m.deployments {
		if strings.HasSuffix(m.deployments[i].Name, "-scaler") {
			scaler = &m.deployments[i]
		}
	}
	require.NotNil(t, scaler)
	spec := scaler.Spec.Template.Spec
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	assert.Equal(t, "/etc/slotscaler/notify/config/notify.yaml", env["NOTIFY_CONFIG"])
	assert.NotEmpty(t, scaler.Spec.Template.Annotations["checksum/notify"], "a changed config restarts the scaler")
	mounts := map[string]string{}
	for _, vm := range spec.Containers[0].VolumeMounts {
		assert.True(t, vm.ReadOnly, vm.Name)
		mounts[vm.Name] = vm.MountPath
	}
	items := map[string][]string{}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			assert.Equal(t, cm.Name, v.ConfigMap.Name)
			assert.Equal(t, "/etc/slotscaler/notify/config", mounts[v.Name])
		case v.Secret != nil && v.Name != "tls":
			assert.Equal(t, "/etc/slotscaler/notify/secrets/"+v.Secret.SecretName, mounts[v.Name])
			for _, it := range v.Secret.Items {
				assert.Equal(t, it.Key, it.Path)
				items[v.Secret.SecretName] = append(items[v.Secret.SecretName], it.Key)
			}
		}
	}
	assert.Equal(t, map[string][]string{"ops-hook": {"signing-secret", "url"}, "team-a-hooks": {"slack-url"}}, items,
		"only the keys the webhooks name")
	for _, s := range m.secrets {
		assert.NotContains(t, s.Name, "notify")
	}
	// No role the chart renders lets the scaler read Secrets.
	sa := scaler.Spec.Template.Spec.ServiceAccountName
	bound := map[string]bool{}
	for _, b := range m.roleBindings {
		for _, s := range b.Subjects {
			if s.Name == sa {
				bound[b.RoleRef.Kind+"/"+b.RoleRef.Name] = true
			}
		}
	}
	for _, b := range m.clusterRoleBindings {
		for _, s := range b.Subjects {
			if s.Name == sa {
				bound[b.RoleRef.Kind+"/"+b.RoleRef.Name] = true
			}
		}
	}
	var rules []rbacv1.PolicyRule
	for _, r := range m.roles {
		if bound["Role/"+r.Name] {
			rules = append(rules, r.Rules...)
		}
	}
	for _, r := range m.clusterRoles {
		if bound["ClusterRole/"+r.Name] {
			rules = append(rules, r.Rules...)
		}
	}
	for _, r := range rules {
		assert.NotContains(t, r.Resources, "secrets")
	}

	assert.False(t, *scaler.Spec.Template.Spec.AutomountServiceAccountToken, "no token without agentPools")

	// Webhooks of AgentPools: a token, and get on Secrets in the named
	// namespaces only (a Role each, never a ClusterRole).
	out, err = render(t, "internal-redis-values.yaml", "--set", "notifications.enabled=true",
		"--set", "notifications.agentPools.enabled=true", "--set", "notifications.agentPools.namespaces={team-a,team-b}")
	require.NoError(t, err)
	m, err = decodeManifests(out)
	require.NoError(t, err)
	assert.Empty(t, m.configMaps, "no config file without webhooks")
	for _, d := range m.deployments {
		if !strings.HasSuffix(d.Name, "-scaler") {
			continue
		}
		assert.True(t, *d.Spec.Template.Spec.AutomountServiceAccountToken)
		env := map[string]string{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		assert.Equal(t, "true", env["NOTIFY_AGENTPOOLS"])
		assert.NotContains(t, env, "NOTIFY_CONFIG")
		sa = d.Spec.Template.Spec.ServiceAccountName
	}
	granted := map[string][]rbacv1.PolicyRule{}
	for _, b := range m.roleBindings {
		for _, s := range b.Subjects {
			if s.Name == sa {
				for _, r := range m.roles {
					if r.Namespace == b.Namespace && r.Name == b.RoleRef.Name && b.RoleRef.Kind == "Role" {
						granted[r.Namespace] = append(granted[r.Namespace], r.Rules...)
					}
				}
			}
		}
	}
	secretsGet := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}
	assert.Equal(t, map[string][]rbacv1.PolicyRule{"team-a": secretsGet, "team-b": secretsGet}, granted)
	for _, b := range m.clusterRoleBindings {
		for _, s := range b.Subjects {
			assert.NotEqual(t, sa, s.Name, "no cluster-wide grant to the scaler")
		}
	}
	_, err = render(t, "internal-redis-values.yaml", "--set", "notifications.enabled=true", "--set", "notifications.agentPools.enabled=true")
	require.ErrorContains(t, err, "never cluster-wide", "a janitor watching every namespace: the namespaces must be named")

	// A whole file from an existing Secret instead.
	out, err = render(t, "internal-redis-values.yaml", "--set", "notifications.enabled=true", "--set", "notifications.existingSecret=my-notify")
	require.NoError(t, err)
	m, err = decodeManifests(out)
	require.NoError(t, err)
	assert.Empty(t, m.configMaps)
	for _, d := range m.deployments {
		if strings.HasSuffix(d.Name, "-scaler") {
			var names []string
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					names = append(names, v.Secret.SecretName)
				}
			}
			assert.Contains(t, names, "my-notify")
		}
	}

	// Off by default: no file, no mount, no setting.
	out, err = render(t, "internal-redis-values.yaml")
	require.NoError(t, err)
	assert.NotContains(t, string(out), "NOTIFY_CONFIG")
	assert.NotContains(t, string(out), "notify")

	for name, args := range map[string][]string{
		"enabled without webhooks": {"--set", "notifications.enabled=true"},
		"webhooks and a file":      {"--set", "notifications.enabled=true", "--set", "notifications.existingSecret=x", "-f", values},
		"unknown event":            {"--set", "notifications.webhooks[0].name=a", "--set", "notifications.webhooks[0].pools={a/*}", "--set", "notifications.webhooks[0].urlSecretRef.name=s", "--set", "notifications.webhooks[0].urlSecretRef.key=k", "--set", "notifications.webhooks[0].events={started}"},
		"no url":                   {"--set", "notifications.webhooks[0].name=a", "--set", "notifications.webhooks[0].pools={a/*}"},
	} {
		_, err := render(t, "internal-redis-values.yaml", args...)
		assert.Error(t, err, name)
	}
}
