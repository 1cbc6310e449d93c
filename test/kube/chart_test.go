package kube

// The Helm chart on a real kube-apiserver (1.37): every object it renders for
// the CI values files is created with strict field validation, next to the
// AgentPool CRD and KEDA's own CRDs, and the HPA KEDA would build from each
// ScaledObject keeps behavior.scaleUp.tolerance: 0.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// kedaModule is the KEDA release whose CRDs the chart's ScaledObjects are
// created against (test/keda requires the same version).
const kedaModule = "github.com/kedacore/keda/v2@v2.20.2"

func TestChartObjectsAreAcceptedStrictlyAndHPAKeepsToleranceZero(t *testing.T) {
	admin := startAPIServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kube, dyn := kubernetes.NewForConfigOrDie(admin), dynamic.NewForConfigOrDie(admin)
	installCRDs(t, admin) // the chart's crds/ (helm template leaves them out)
	createCRDs(t, admin, kedaCRDs(t)...)
	createCRDs(t, admin, serviceMonitorCRD())

	// Each values file as its own release (its own namespace and name
	// prefix), so cluster-scoped objects and the pools' Secrets don't collide.
	files := map[string]struct {
		release      string
		hpaTolerance bool
	}{
		"multi-pool-values.yaml":       {"multi", true},
		"internal-redis-values.yaml":   {"internal", true},
		"single-namespace-values.yaml": {"single", false},
	}
	for file, tc := range files {
		t.Run(file, func(t *testing.T) {
			// Only the API server: no Redis, janitor or kubelet.
			c := &cluster{t: t, ctx: ctx, admin: admin, kube: kube, dyn: dyn}
			ns := "chart-" + tc.release
			out := renderChart(t, "--namespace", ns, "--set", "fullnameOverride="+tc.release,
				"-f", filepath.Join(repoRoot, "charts/slotscaler/ci", file))
			objs := splitManifests(t, out)
			require.NotEmpty(t, objs)

			c.apply(out) // fieldValidation=Strict; fails on the first refusal

			// Every object is there, as rendered.
			mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(admin)))
			kinds := map[string]int{}
			for _, u := range objs {
				gvk := u.GroupVersionKind()
				m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				require.NoError(t, err)
				var ri dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
				if m.Scope.Name() == meta.RESTScopeNameNamespace {
					require.NotEmpty(t, u.GetNamespace(), "%s %s names no namespace", gvk.Kind, u.GetName())
					ri = c.dyn.Resource(m.Resource).Namespace(u.GetNamespace())
				}
				_, err = ri.Get(ctx, u.GetName(), metav1.GetOptions{})
				require.NoError(t, err, "%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
				kinds[gvk.Kind]++
			}
			t.Logf("created %d objects: %v", len(objs), kinds)
			require.NotZero(t, kinds["ScaledObject"])
			require.Equal(t, kinds["AgentPool"], kinds["ScaledObject"])

			for _, so := range objs {
				if so.GetKind() != "ScaledObject" {
					continue
				}
				hpa := hpaFor(t, so)
				created, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(so.GetNamespace()).Create(ctx, hpa, metav1.CreateOptions{FieldValidation: "Strict"})
				require.NoError(t, err, "the HPA KEDA builds from ScaledObject %s/%s", so.GetNamespace(), so.GetName())
				got, err := c.kube.AutoscalingV2().HorizontalPodAutoscalers(so.GetNamespace()).Get(ctx, created.Name, metav1.GetOptions{})
				require.NoError(t, err)
				require.NotNil(t, got.Spec.Behavior, "behavior dropped")
				require.NotNil(t, got.Spec.Behavior.ScaleUp, "behavior.scaleUp dropped")
				if tc.hpaTolerance {
					require.NotNil(t, got.Spec.Behavior.ScaleUp.Tolerance, "%s: the API server dropped behavior.scaleUp.tolerance", hpa.Name)
					assert.True(t, got.Spec.Behavior.ScaleUp.Tolerance.Equal(resource.MustParse("0")),
						"%s: tolerance %s, want 0", hpa.Name, got.Spec.Behavior.ScaleUp.Tolerance)
				} else {
					assert.Nil(t, got.Spec.Behavior.ScaleUp.Tolerance, "%s: no tolerance where the chart cannot set it", hpa.Name)
				}
			}
		})
	}
}

// hpaFor is the HorizontalPodAutoscaler KEDA creates for a ScaledObject of
// the chart: it targets the AgentPool's scale subresource with the trigger's
// External metric (AverageValue 1) and the ScaledObject's behavior.
func hpaFor(t *testing.T, so *unstructured.Unstructured) *autoscalingv2.HorizontalPodAutoscaler {
	t.Helper()
	spec, _, err := unstructured.NestedMap(so.Object, "spec")
	require.NoError(t, err)
	ref, _, _ := unstructured.NestedStringMap(spec, "scaleTargetRef")
	minReplicas := intField(t, spec, "minReplicaCount")
	maxReplicas := intField(t, spec, "maxReplicaCount")
	behavior := &autoscalingv2.HorizontalPodAutoscalerBehavior{}
	if raw, found, err := unstructured.NestedMap(spec, "advanced", "horizontalPodAutoscalerConfig", "behavior"); found {
		require.NoError(t, err)
		// Strict: a field the HPA type lacks fails here, not silently.
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(raw, behavior, true))
	}
	if behavior.ScaleUp == nil {
		behavior.ScaleUp = &autoscalingv2.HPAScalingRules{} // so the read-back can look at it
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "keda-hpa-" + so.GetName(), Namespace: so.GetNamespace()},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: ref["apiVersion"], Kind: ref["kind"], Name: ref["name"]},
			MinReplicas:    ptrTo(int32(max(minReplicas, 1))),
			MaxReplicas:    int32(maxReplicas),
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ExternalMetricSourceType,
				External: &autoscalingv2.ExternalMetricSource{
					Metric: autoscalingv2.MetricIdentifier{
						Name:     "s0-slotscaler-" + so.GetNamespace() + "-" + ref["name"],
						Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"scaledobject.keda.sh/name": so.GetName()}},
					},
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: ptrTo(resource.MustParse("1"))},
				},
			}},
			Behavior: behavior,
		},
	}
}

func ptrTo[T any](v T) *T { return &v }

// intField reads a whole number of a decoded manifest (JSON numbers decode
// as float64 or int64, depending on the decoder).
func intField(t *testing.T, obj map[string]any, key string) int64 {
	t.Helper()
	switch v := obj[key].(type) {
	case int64:
		return v
	case float64:
		require.Equal(t, float64(int64(v)), v, "%s is not a whole number", key)
		return int64(v)
	default:
		require.Failf(t, "not a number", "%s: %T %v", key, v, v)
		return 0
	}
}

// splitManifests decodes helm's output into objects (comment-only documents dropped).
func splitManifests(t *testing.T, out []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return objs
		}
		require.NoError(t, err)
		if obj != nil {
			objs = append(objs, &unstructured.Unstructured{Object: obj})
		}
	}
}

// kedaCRDs reads KEDA's CRDs from its Go module (config/crd/bases).
func kedaCRDs(t *testing.T) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", kedaModule)
	cmd.Dir = filepath.Join(repoRoot, "test", "keda") // the module that requires KEDA
	out, err := cmd.Output()
	require.NoError(t, err, "go mod download %s: %s", kedaModule, out)
	var mod struct{ Dir, Error string }
	require.NoError(t, json.Unmarshal(out, &mod))
	require.Empty(t, mod.Error)
	files, err := filepath.Glob(filepath.Join(mod.Dir, "config", "crd", "bases", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no CRDs under %s", mod.Dir)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		crd := &apiextensionsv1.CustomResourceDefinition{}
		require.NoError(t, yaml.UnmarshalStrict(b, crd), f)
		crds = append(crds, crd)
	}
	return crds
}

// serviceMonitorCRD stands in for the Prometheus Operator's CRD (its module is
// not in this repository's graph): a structural schema of exactly the
// ServiceMonitor fields the chart sets, shaped as upstream's, so strict field
// validation refuses anything else.
func serviceMonitorCRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	strList := apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &str}}
	obj := func(props map[string]apiextensionsv1.JSONSchemaProps) apiextensionsv1.JSONSchemaProps {
		return apiextensionsv1.JSONSchemaProps{Type: "object", Properties: props}
	}
	list := func(item apiextensionsv1.JSONSchemaProps) apiextensionsv1.JSONSchemaProps {
		return apiextensionsv1.JSONSchemaProps{Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &item}}
	}
	spec := obj(map[string]apiextensionsv1.JSONSchemaProps{
		"jobLabel":          str,
		"namespaceSelector": obj(map[string]apiextensionsv1.JSONSchemaProps{"any": {Type: "boolean"}, "matchNames": strList}),
		"selector": obj(map[string]apiextensionsv1.JSONSchemaProps{
			"matchLabels":      {Type: "object", AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &str}},
			"matchExpressions": list(obj(map[string]apiextensionsv1.JSONSchemaProps{"key": str, "operator": str, "values": strList})),
		}),
		"endpoints": list(obj(map[string]apiextensionsv1.JSONSchemaProps{
			"port": str, "path": str, "scheme": str, "interval": str, "scrapeTimeout": str,
		})),
	})
	spec.Required = []string{"selector", "endpoints"}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type:       "object",
					Properties: map[string]apiextensionsv1.JSONSchemaProps{"apiVersion": str, "kind": str, "metadata": {Type: "object"}, "spec": spec},
					Required:   []string{"spec"},
				}},
			}},
		},
	}
}

// createCRDs creates CRDs with strict field validation and waits until each
// is established.
func createCRDs(t *testing.T, cfg *rest.Config, crds ...*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	cs := apiextensionsclient.NewForConfigOrDie(cfg)
	ctx := context.Background()
	for _, crd := range crds {
		_, err := cs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{FieldValidation: "Strict"})
		require.NoError(t, err, crd.Name)
	}
	for _, crd := range crds {
		waitEstablished(t, cs, crd.Name)
	}
	// Discovery must list the new kinds before objects of them are mapped.
	disc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	require.Eventually(t, func() bool {
		for _, crd := range crds {
			gv := crd.Spec.Group + "/" + crd.Spec.Versions[0].Name
			res, err := disc.ServerResourcesForGroupVersion(gv)
			if err != nil || !strings.Contains(fmt.Sprint(res.APIResources), crd.Spec.Names.Plural) {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "CRDs not in discovery")
}

// A real `helm install` and `helm upgrade` against the API server: the chart
// installs its own CRD (crds/), prints how to open the dashboard and how to
// let the release own the CRD (upgrades apply it then), copies the
// Redis URL Secret into a pool's namespace, and keeps the generated Redis
// password across an upgrade (lookup).
func TestChartHelmInstallAndUpgradeKeepTheRedisPassword(t *testing.T) {
	admin := startAPIServer(t)
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(admin)
	createCRDs(t, admin, kedaCRDs(t)...)
	c := &cluster{t: t, ctx: ctx, admin: admin, kube: kube, dyn: dynamic.NewForConfigOrDie(admin)}
	c.createNamespace("team-z") // a pool namespace outside the release's

	home := t.TempDir()
	kubeconfig := filepath.Join(home, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"test": {Server: admin.Host, CertificateAuthorityData: admin.CAData, TLSServerName: admin.ServerName}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"admin": {Token: admin.BearerToken}},
		Contexts:       map[string]*clientcmdapi.Context{"test": {Cluster: "test", AuthInfo: "admin"}},
		CurrentContext: "test",
	}, kubeconfig))
	helmCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(testutil.HelmBinary(t), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HELM_CACHE_HOME="+home+"/cache",
			"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "helm %v:\n%s", args, out)
		return string(out)
	}
	values := []string{"--namespace", "demo", "-f", filepath.Join(repoRoot, "charts/slotscaler/ci/internal-redis-values.yaml"),
		"--set", "pools[1].name=other,pools[1].namespace=team-z"}

	out := helmCmd(append([]string{"install", "demo", filepath.Join(repoRoot, "charts/slotscaler"), "--create-namespace"}, values...)...)
	assert.Contains(t, out, "kubectl --namespace demo port-forward svc/demo-dashboard 8080:8080", "NOTES: how to open the dashboard")
	_, err := apiextensionsclient.NewForConfigOrDie(admin).ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "agentpools.slotscaler.io", metav1.GetOptions{})
	require.NoError(t, err, "helm installs the chart's CRD")
	assert.Contains(t, out, "kubectl annotate crd agentpools.slotscaler.io meta.helm.sh/release-name=demo meta.helm.sh/release-namespace=demo",
		"NOTES: how to let the release own the CRD crds/ created")

	secret := func(ns, name string) map[string]string {
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		out := map[string]string{}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		return out
	}
	// Pool credentials (the default): the internal Redis' control-plane and
	// ACL-manager users, and the master key of the pools' passwords.
	urls := secret("demo", "demo-redis-url")
	require.Len(t, urls["control-password"], 32)
	require.Len(t, urls["manager-password"], 32)
	assert.NotContains(t, urls, "password", "the default user is off: no password of its own")
	assert.Equal(t, "redis://slotscaler-control:"+urls["control-password"]+"@demo-redis.demo.svc:6379/0", urls["url"])
	assert.Equal(t, "redis://slotscaler-acl-manager:"+urls["manager-password"]+"@demo-redis.demo.svc:6379/0", urls["manager-url"])
	keys := secret("demo", "demo-pool-credentials")
	require.GreaterOrEqual(t, len(keys["key"]), 32)
	_, err = kube.CoreV1().Secrets("team-z").Get(ctx, "demo-redis-url", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no shared URL in a pool namespace: its agents get their pool's own (%v)", err)

	adoptCRD(t, admin, "demo", "demo") // before the first upgrade, as NOTES says
	helmCmd(append([]string{"upgrade", "demo", filepath.Join(repoRoot, "charts/slotscaler")}, values...)...)
	assert.Equal(t, urls, secret("demo", "demo-redis-url"), "an upgrade must keep the Redis passwords (the running Redis has them)")
	assert.Equal(t, keys, secret("demo", "demo-pool-credentials"), "an upgrade must keep the master key (pods hold passwords derived from it)")

	// Without pool credentials: one password, the URL copied into every
	// pool namespace.
	values = append(values, "--set", "janitor.poolCredentials.enabled=false")
	helmCmd(append([]string{"upgrade", "demo", filepath.Join(repoRoot, "charts/slotscaler")}, values...)...)
	urls = secret("demo", "demo-redis-url")
	require.Len(t, urls["password"], 32)
	assert.Equal(t, "redis://:"+urls["password"]+"@demo-redis.demo.svc:6379/0", urls["url"])
	assert.Equal(t, urls["url"], secret("team-z", "demo-redis-url")["url"], "agents in team-z reference the Secret in their own namespace")
	helmCmd(append([]string{"upgrade", "demo", filepath.Join(repoRoot, "charts/slotscaler")}, values...)...)
	assert.Equal(t, urls, secret("demo", "demo-redis-url"), "an upgrade must keep the Redis password")
}
