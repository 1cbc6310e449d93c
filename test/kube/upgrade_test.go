package kube

// `helm upgrade` from an older chart on a real kube-apiserver: the AgentPool
// CRD that Helm installed from crds/ (and never updates) is adopted once and
// then applied by the upgrade, AgentPools survive it, and neither an upgrade
// without the CRD nor `helm uninstall` deletes the CRD.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// previousChartRev is the revision whose chart TestChartUpgrade upgrades
// from: a chart from before the CRD was rendered on upgrades, whose CRD also
// lacks status.queuedTasks (added by the next commit), so the upgrade must
// change the schema the API server serves. The test needs the repository's
// history (a shallow clone does not have it).
const previousChartRev = "fd046a5df899910e6a9ffa641a6528bf96dc7689"

const agentPoolCRD = "agentpools.slotscaler.io"

var agentPoolsGVR = schema.GroupVersionResource{Group: "slotscaler.io", Version: "v1alpha1", Resource: "agentpools"}

func TestChartUpgradeAppliesTheCRDAndKeepsPools(t *testing.T) {
	admin := startAPIServer(t)
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(admin)
	c := &cluster{t: t, ctx: ctx, admin: admin, kube: kube, dyn: dynamic.NewForConfigOrDie(admin)}
	crds := apiextensionsclient.NewForConfigOrDie(admin).ApiextensionsV1().CustomResourceDefinitions()
	pools := c.dyn.Resource(agentPoolsGVR)
	c.createNamespace("team-a")
	c.createNamespace("team-b")
	helmCmd := helmAgainst(t, admin)

	previous := previousChart(t)
	current := filepath.Join(repoRoot, "charts/slotscaler")
	// No KEDA, and the chart's own Redis: everything is created, nothing
	// runs (the API server has no kubelet).
	values := []string{"--namespace", "slotscaler", "--set", "keda.enabled=false,redis.internal.enabled=true",
		"--set", "pools[0].name=pool-a,pools[0].namespace=team-a"}

	_, err := helmCmd(append([]string{"install", "slotscaler", previous, "--create-namespace"}, values...)...)
	require.NoError(t, err)
	crd, err := crds.Get(ctx, agentPoolCRD, metav1.GetOptions{})
	require.NoError(t, err, "the previous chart installs the CRD from crds/")
	require.NotContains(t, statusProperties(crd), "queuedTasks", "the previous chart's CRD must be older than the current one")
	chartPool := getPool(t, c, "team-a", "pool-a")
	// A pool the chart does not render, as users create them.
	userPool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "slotscaler.io/v1alpha1", "kind": "AgentPool",
		"metadata": map[string]any{"name": "pool-b", "namespace": "team-b"},
		"spec": map[string]any{"replicas": int64(1), "template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": "agent", "image": "ghcr.io/slotscaler/slotscaler:dev"}}}}},
	}}
	userPool, err = pools.Namespace("team-b").Create(ctx, userPool, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(t, err)
	assert.False(t, writeQueuedTasks(t, c, "team-b", "pool-b"), "the old schema prunes status.queuedTasks")
	deployments := deploymentUIDs(t, kube)
	require.NotEmpty(t, deployments)

	// The first upgrade meets the CRD Helm created from crds/, without
	// ownership metadata: Helm refuses it, and changes nothing.
	_, err = helmCmd(append([]string{"upgrade", "slotscaler", current}, values...)...)
	require.Error(t, err, "Helm must not take over a CRD it does not own")
	assert.Contains(t, err.Error(), `CustomResourceDefinition "agentpools.slotscaler.io" in namespace "" exists and cannot be imported into the current release`)
	crd, err = crds.Get(ctx, agentPoolCRD, metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, statusProperties(crd), "queuedTasks")

	// The one-time adoption docs/upgrading.md prints (kubectl label and
	// annotate), then the upgrade applies the CRD.
	adoptCRD(t, admin, "slotscaler", "slotscaler")
	_, err = helmCmd(append([]string{"upgrade", "slotscaler", current}, values...)...)
	require.NoError(t, err)
	updated, err := crds.Get(ctx, agentPoolCRD, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, crd.UID, updated.UID, "the CRD is updated in place, never recreated")
	assert.Contains(t, statusProperties(updated), "queuedTasks", "helm upgrade applies the current CRD")
	assert.Equal(t, chartCRD(t).Spec.Versions, updated.Spec.Versions, "templates/crds.yaml renders crds/ unchanged")
	assert.Equal(t, "keep", updated.Annotations["helm.sh/resource-policy"])
	assert.Equal(t, "Helm", updated.Labels["app.kubernetes.io/managed-by"])
	waitEstablished(t, apiextensionsclient.NewForConfigOrDie(admin), agentPoolCRD)
	assert.Equal(t, chartPool.GetUID(), getPool(t, c, "team-a", "pool-a").GetUID(), "the chart's pool survives the upgrade")
	assert.Equal(t, userPool.GetUID(), getPool(t, c, "team-b", "pool-b").GetUID(), "a user's pool survives the upgrade")
	assert.True(t, writeQueuedTasks(t, c, "team-b", "pool-b"), "the new schema keeps status.queuedTasks")
	assert.Equal(t, deployments, deploymentUIDs(t, kube), "the upgrade replaces no Deployment")

	// crds.install=false drops the CRD from the release; the keep policy
	// leaves it in the cluster. Turning it back on adopts it again.
	_, err = helmCmd(append([]string{"upgrade", "slotscaler", current, "--set", "crds.install=false"}, values...)...)
	require.NoError(t, err)
	got, err := crds.Get(ctx, agentPoolCRD, metav1.GetOptions{})
	require.NoError(t, err, "an upgrade without the CRD must not delete it")
	assert.Equal(t, crd.UID, got.UID)
	_, err = helmCmd(append([]string{"upgrade", "slotscaler", current}, values...)...)
	require.NoError(t, err)

	// helm uninstall deletes the release's objects, its AgentPool among
	// them (no janitor ran, so no finalizer holds it), but not the CRD: the
	// user's pool stays.
	// --no-hooks: the pre-delete hook's Job (scaler delete-pools) needs a
	// kubelet to run, and this test has none.
	_, err = helmCmd("uninstall", "slotscaler", "--namespace", "slotscaler", "--wait", "--no-hooks")
	require.NoError(t, err)
	got, err = crds.Get(ctx, agentPoolCRD, metav1.GetOptions{})
	require.NoError(t, err, "helm uninstall must keep the CRD")
	assert.Equal(t, crd.UID, got.UID)
	assert.Equal(t, userPool.GetUID(), getPool(t, c, "team-b", "pool-b").GetUID(), "a user's pool survives helm uninstall")
	_, err = pools.Namespace("team-a").Get(ctx, "pool-a", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the chart's own pool goes with the release (%v)", err)
}

// helmAgainst returns a runner of the helm CLI against the API server, as
// its admin, with Helm's own folders private to the test.
func helmAgainst(t *testing.T, admin *rest.Config) func(args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	kubeconfig := filepath.Join(home, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"test": {Server: admin.Host, CertificateAuthorityData: admin.CAData, TLSServerName: admin.ServerName}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"admin": {Token: admin.BearerToken}},
		Contexts:       map[string]*clientcmdapi.Context{"test": {Cluster: "test", AuthInfo: "admin"}},
		CurrentContext: "test",
	}, kubeconfig))
	return func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(testutil.HelmBinary(t), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HELM_CACHE_HOME="+home+"/cache",
			"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), errors.New(string(out))
		}
		return string(out), nil
	}
}

// previousChart extracts the chart of previousChartRev into a temporary
// folder and returns its path.
func previousChart(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("git", "-C", repoRoot, "cat-file", "-e", previousChartRev+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("revision %s is not in the repository (a shallow clone? fetch its history): %v %s", previousChartRev, err, out)
	}
	archive, err := exec.Command("git", "-C", repoRoot, "archive", "--format=tar", previousChartRev, "charts/slotscaler").Output()
	require.NoError(t, err, "git archive %s", previousChartRev)
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
	return filepath.Join(dir, "charts/slotscaler")
}

// adoptCRD gives the AgentPool CRD the ownership metadata Helm requires
// before it updates an object it did not create: what docs/upgrading.md
// and the chart's NOTES say to do with kubectl label and annotate.
func adoptCRD(t *testing.T, admin *rest.Config, release, namespace string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels":      map[string]string{"app.kubernetes.io/managed-by": "Helm"},
		"annotations": map[string]string{"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
	}})
	require.NoError(t, err)
	_, err = apiextensionsclient.NewForConfigOrDie(admin).ApiextensionsV1().CustomResourceDefinitions().
		Patch(context.Background(), agentPoolCRD, types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(t, err)
}

// chartCRD is the current chart's AgentPool CRD.
func chartCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "charts/slotscaler/crds/slotscaler.io_agentpools.yaml"))
	require.NoError(t, err)
	crd := &apiextensionsv1.CustomResourceDefinition{}
	require.NoError(t, yaml.UnmarshalStrict(b, crd))
	return crd
}

// statusProperties are the fields of the AgentPool status the CRD serves.
func statusProperties(crd *apiextensionsv1.CustomResourceDefinition) map[string]apiextensionsv1.JSONSchemaProps {
	for _, v := range crd.Spec.Versions {
		if v.Name == "v1alpha1" && v.Schema != nil && v.Schema.OpenAPIV3Schema != nil {
			return v.Schema.OpenAPIV3Schema.Properties["status"].Properties
		}
	}
	return nil
}

func getPool(t *testing.T, c *cluster, ns, name string) *unstructured.Unstructured {
	t.Helper()
	p, err := c.dyn.Resource(agentPoolsGVR).Namespace(ns).Get(c.ctx, name, metav1.GetOptions{})
	require.NoError(t, err, "AgentPool %s/%s", ns, name)
	return p
}

// writeQueuedTasks writes status.queuedTasks as the janitor does and says
// whether the API server kept it (a schema without the field prunes it).
func writeQueuedTasks(t *testing.T, c *cluster, ns, name string) bool {
	t.Helper()
	patch := []byte(`{"status":{"queuedTasks":3}}`)
	p, err := c.dyn.Resource(agentPoolsGVR).Namespace(ns).Patch(c.ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	require.NoError(t, err)
	_, found, err := unstructured.NestedFieldNoCopy(p.Object, "status", "queuedTasks")
	require.NoError(t, err)
	return found
}

// deploymentUIDs maps the release namespace's Deployments to their UIDs.
func deploymentUIDs(t *testing.T, kube kubernetes.Interface) map[string]types.UID {
	t.Helper()
	list, err := kube.AppsV1().Deployments(releaseNamespace).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	out := map[string]types.UID{}
	for _, d := range list.Items {
		out[d.Name] = d.UID
	}
	return out
}
