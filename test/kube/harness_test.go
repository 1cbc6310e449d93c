package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/scale"
	"sigs.k8s.io/yaml"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The chart's release the tests install: the janitor runs as its
// ServiceAccount, with its RBAC.
const (
	releaseNamespace = "slotscaler"
	janitorSA        = "slotscaler-janitor"
	repoRoot         = "../.."
)

// agentBin and scalerBin are the root module's binaries, as they ship.
var agentBin, scalerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "slotscaler-kube-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin, scalerBin = filepath.Join(dir, "agent"), filepath.Join(dir, "scaler")
	if err := testutil.BuildBinaries(dir, "./agent", "./cmd/slotscaler-supervisor", "./scaler"); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is one test's Kubernetes API server, slot store and fake kubelet.
type cluster struct {
	t       testing.TB
	ctx     context.Context
	admin   *rest.Config
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	scales  scale.ScalesGetter
	store   *slots.Store
	rdb     redis.UniversalClient
	redis   string
	prefix  string
	kubelet *kubelet
	audit   *audit
	// scriptDelay (ns) slows every script call: a slow Redis.
	scriptDelay atomic.Int64
}

// slowScripts delays EVALSHA calls by *d.
type slowScripts struct{ d *atomic.Int64 }

func (slowScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h slowScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if d := time.Duration(h.d.Load()); d > 0 && cmd.Name() == "evalsha" {
			time.Sleep(d)
		}
		return next(ctx, cmd)
	}
}

func (slowScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	return newClusterWith(t, clusterOptions{})
}

// clusterOptions change what newClusterWith sets up.
type clusterOptions struct {
	redisURL string // the slot store's Redis (default: the shared test server)
	auditLog string // where the API server writes its audit log of pod DELETEs
}

func newClusterWith(t testing.TB, o clusterOptions) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var flags []string
	if o.auditLog != "" {
		flags = auditFlags(t, o.auditLog)
	}
	admin := startAPIServer(t, flags...)
	if o.redisURL == "" {
		o.redisURL = redistest.Standalone(t)
	}
	c := &cluster{t: t, ctx: ctx, admin: admin, redis: o.redisURL, prefix: redistest.Prefix(t)}
	c.kube = kubernetes.NewForConfigOrDie(admin)
	c.dyn = dynamic.NewForConfigOrDie(admin)
	installCRDs(t, admin)
	c.createNamespace(releaseNamespace)
	c.apply(renderChart(t, "--show-only", "templates/janitor-rbac.yaml"))

	disc := discovery.NewDiscoveryClientForConfigOrDie(admin)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	sc, err := scale.NewForConfig(admin, mapper, dynamic.LegacyAPIPathResolverFunc, scale.NewDiscoveryScaleKindResolver(disc))
	require.NoError(t, err)
	c.scales = sc

	opts, err := redis.ParseURL(c.redis)
	require.NoError(t, err)
	c.rdb = redis.NewClient(opts)
	t.Cleanup(func() { _ = c.rdb.Close() })
	c.rdb.AddHook(slowScripts{&c.scriptDelay})
	c.store, err = slots.New(ctx, c.rdb, slots.Options{Prefix: c.prefix, Logger: quiet()})
	require.NoError(t, err)
	c.audit = &audit{c: c}
	c.kubelet = startKubelet(t, c)
	return c
}

// janitorLog is the janitor's logger: info and up, to a file kept when the
// test fails, whose warnings and errors the test then prints (CI shows only
// the test's output; its failing lines alone rarely say why a pool stalled).
func (c *cluster) janitorLog() *slog.Logger {
	if os.Getenv("SLOTSCALER_TEST_VERBOSE") != "" {
		return quiet()
	}
	f, err := os.CreateTemp("", "slotscaler-janitor-*.log")
	require.NoError(c.t, err)
	c.t.Cleanup(func() {
		_ = f.Close()
		if !c.t.Failed() {
			_ = os.Remove(f.Name())
			return
		}
		c.t.Logf("janitor log: %s", f.Name())
		b, err := os.ReadFile(f.Name())
		if err != nil {
			return
		}
		var notable []string
		for l := range strings.Lines(string(b)) {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				notable = append(notable, strings.TrimSuffix(l, "\n"))
			}
		}
		for _, l := range notable[max(len(notable)-20, 0):] {
			c.t.Logf("janitor: %s", l)
		}
	})
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func quiet() *slog.Logger {
	if os.Getenv("SLOTSCALER_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (c *cluster) createNamespace(name string) {
	_, err := c.kube.CoreV1().Namespaces().Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(c.t, err)
	}
}

// installCRDs creates the chart's CRDs and waits until they are served.
func installCRDs(t testing.TB, cfg *rest.Config) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "charts/slotscaler/crds/*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	cs := apiextensionsclient.NewForConfigOrDie(cfg)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		crd := &apiextensionsv1.CustomResourceDefinition{}
		require.NoError(t, yaml.UnmarshalStrict(b, crd), f)
		_, err = cs.ApiextensionsV1().CustomResourceDefinitions().Create(context.Background(), crd, metav1.CreateOptions{FieldValidation: "Strict"})
		require.NoError(t, err, f)
		waitEstablished(t, cs, crd.Name)
	}
}

// waitEstablished waits until a CRD is served.
func waitEstablished(t testing.TB, cs apiextensionsclient.Interface, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "CRD %s not established", name)
}

// renderChart runs `helm template` on the chart (Helm built from the Go
// module proxy, cached after the first build).
func renderChart(t testing.TB, args ...string) []byte {
	t.Helper()
	full := append([]string{"template", "slotscaler", filepath.Join(repoRoot, "charts/slotscaler"), "--namespace", releaseNamespace}, args...)
	out, err := testutil.Helm(t, full...)
	require.NoError(t, err)
	return out
}

// apply creates every object of a multi-document YAML with strict field
// validation.
func (c *cluster) apply(manifests []byte) {
	c.t.Helper()
	disc := discovery.NewDiscoveryClientForConfigOrDie(c.admin)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(c.t, err)
		if obj == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		require.NoError(c.t, err, "mapping %s", gvk)
		var ri dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := u.GetNamespace()
			if ns == "" {
				ns = releaseNamespace
			}
			c.createNamespace(ns)
			ri = c.dyn.Resource(m.Resource).Namespace(ns)
		}
		_, err = ri.Create(c.ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		require.NoError(c.t, err, "creating %s %s", gvk.Kind, u.GetName())
	}
}

// janitorConfig is a client config that acts as the chart's janitor
// ServiceAccount (impersonation: the chart's RBAC is what it may do), with
// every request passing through the audit.
func (c *cluster) janitorConfig() *rest.Config {
	cfg := rest.CopyConfig(c.admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + releaseNamespace + ":" + janitorSA}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &auditTransport{next: rt, a: c.audit} })
	return cfg
}

type janitorOpt func(*janitor.Options)

// startJanitor runs the pool controller in-process as the chart's
// ServiceAccount until the test ends.
func (c *cluster) startJanitor(opts ...janitorOpt) *janitor.Controller {
	c.t.Helper()
	return c.startJanitorWith(nil, opts...)
}

// startJanitorWith also adjusts the janitor's client config (QPS, burst).
func (c *cluster) startJanitorWith(client func(*rest.Config), opts ...janitorOpt) *janitor.Controller {
	c.t.Helper()
	cfg := c.janitorConfig()
	if client != nil {
		client(cfg)
	}
	o := janitor.Options{
		SyncInterval: 200 * time.Millisecond,
		Inject:       janitor.Injection{KeyPrefix: c.prefix, RedisURL: c.redis},
		Logger:       c.janitorLog(),
		Reports:      janitorreport.NewStore(c.rdb, c.prefix),
		Identity:     "test-janitor",
	}
	for _, f := range opts {
		f(&o)
	}
	ctrl, err := janitor.New(kubernetes.NewForConfigOrDie(cfg), dynamic.NewForConfigOrDie(cfg), c.store, o)
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan error, 1)
	// `scaler janitor` (and the scaler) run a reaper beside the controller:
	// it turns silent agents into lost pods.
	go c.store.RunReaper(ctx, 100*time.Millisecond, slots.ReapOptions{})
	go func() { done <- ctrl.Run(ctx) }()
	c.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(c.t, err)
		case <-time.After(30 * time.Second):
			c.t.Error("janitor did not stop within 30s")
		}
	})
	return ctrl
}

// poolSpec builds an AgentPool whose agents run the test executor: the
// payload is a number of seconds to sleep, or "gate" (wait until the test
// opens the gate file of the task phase), or "fail".
func (c *cluster) newPool(ns, name string, replicas int32, mutate ...func(*v1alpha1.AgentPool)) *v1alpha1.AgentPool {
	c.t.Helper()
	c.createNamespace(ns)
	hb := metav1.Duration{Duration: 2 * time.Second}
	idle := metav1.Duration{Duration: 300 * time.Millisecond}
	ap := &v1alpha1.AgentPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.AgentPoolSpec{
			Replicas:         &replicas,
			IdleFor:          &idle,
			HeartbeatTimeout: &hb,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "agent",
					Image: "slotscaler/agent:test",
					Env: []corev1.EnvVar{
						{Name: "EXECUTOR", Value: "sh -c '" + executorScript + "'"},
						{Name: "EXECUTOR_ENV", Value: "GATE_DIR"},
						{Name: "GATE_DIR", Value: c.kubelet.gateDir},
						{Name: "HEARTBEAT_INTERVAL", Value: "300ms"},
						{Name: "REGISTER_TIMEOUT", Value: "30s"},
						{Name: "KILL_GRACE", Value: "1s"},
					},
				}}},
			},
		},
	}
	for _, m := range mutate {
		m(ap)
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
	require.NoError(c.t, err)
	_, err = c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ns).Create(c.ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{FieldValidation: "Strict"})
	require.NoError(c.t, err)
	return ap
}

// executorScript: payload "gate" waits for $GATE_DIR/<task>.<phase>, "fail"
// exits 1, a number sleeps that long.
const executorScript = `p=$(cat); case "$p" in gate) while [ ! -e "$GATE_DIR/$TASK_ID.$TASK_PHASE" ]; do sleep 0.1; done;; fail) exit 1;; *) sleep "${p:-0}";; esac`

func (c *cluster) getPool(ns, name string) *v1alpha1.AgentPool {
	c.t.Helper()
	u, err := c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ns).Get(c.ctx, name, metav1.GetOptions{})
	require.NoError(c.t, err)
	ap := &v1alpha1.AgentPool{}
	require.NoError(c.t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ap))
	return ap
}

func (c *cluster) updatePool(ns, name string, mutate func(*v1alpha1.AgentPool)) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		ap := c.getPool(ns, name)
		mutate(ap)
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ap)
		require.NoError(c.t, err)
		_, err = c.dyn.Resource(v1alpha1.GroupVersionResource).Namespace(ns).Update(c.ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
}

var agentPoolsGR = schema.GroupResource{Group: v1alpha1.Group, Resource: v1alpha1.Resource}

// scaleTo writes spec.replicas through the scale subresource, as the HPA does.
func (c *cluster) scaleTo(ns, name string, replicas int32) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		s, err := c.scales.Scales(ns).Get(c.ctx, agentPoolsGR, name, metav1.GetOptions{})
		if err != nil {
			c.t.Logf("get scale: %v", err)
			return false
		}
		s.Spec.Replicas = replicas
		_, err = c.scales.Scales(ns).Update(c.ctx, agentPoolsGR, s, metav1.UpdateOptions{})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
}

// livePods lists the pool's pods that are not terminating.
func (c *cluster) livePods(ns, name string) []corev1.Pod {
	c.t.Helper()
	list, err := c.kube.CoreV1().Pods(ns).List(c.ctx, metav1.ListOptions{LabelSelector: janitor.LabelPool + "=" + name})
	require.NoError(c.t, err)
	var live []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// waitPods waits until the pool has n live pods whose agents registered
// (active in the store) and no other records.
func (c *cluster) waitActive(ns, name string, n int) []slots.PodSnapshot {
	c.t.Helper()
	var snap slots.Snapshot
	require.Eventually(c.t, func() bool {
		var err error
		snap, err = c.store.Snapshot(c.ctx, slots.PoolID{Namespace: ns, Name: name})
		if err != nil || len(snap.Pods) != n || len(c.livePods(ns, name)) != n {
			return false
		}
		for _, p := range snap.Pods {
			if p.State != slots.PodActive {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "want %d active pods in %s/%s; have %+v", n, ns, name, podStates(&snap))
	return snap.Pods
}

func podStates(s *slots.Snapshot) []string {
	var out []string
	for _, p := range s.Pods {
		out = append(out, p.Name+"="+string(p.State))
	}
	return out
}

// audit checks every request the janitor sends: a pod it deletes must be
// drained (or lost, or ended) in the slot store at that moment. It also
// counts mutating requests (dry-run sends none).
type audit struct {
	c          *cluster
	watchDelay atomic.Int64 // ns added before each read of a pod watch stream (informer lag)
	total      atomic.Int64
	mutating   atomic.Int64
	mu         sync.Mutex
	violations []string
	deleted    map[string]string // pod name -> record state when the janitor deleted it
	firstDel   time.Time         // when the janitor first deleted a pod
}

type auditTransport struct {
	next http.RoundTripper
	a    *audit
}

func (t *auditTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.a.total.Add(1)
	if req.Method != http.MethodGet {
		t.a.mutating.Add(1)
	}
	if req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/pods/") {
		t.a.checkDeletion(req.URL.Path)
	}
	resp, err := t.next.RoundTrip(req)
	if d := time.Duration(t.a.watchDelay.Load()); d > 0 && err == nil &&
		req.URL.Query().Get("watch") == "true" && strings.HasSuffix(req.URL.Path, "/pods") {
		resp.Body = &slowBody{ReadCloser: resp.Body, delay: d}
	}
	return resp, err
}

// slowBody delays every read of a watch stream: the informer sees events late.
type slowBody struct {
	io.ReadCloser
	delay time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	time.Sleep(b.delay)
	return b.ReadCloser.Read(p)
}

// checkDeletion runs before the DELETE reaches the API server.
func (a *audit) checkDeletion(path string) {
	// /api/v1/namespaces/<ns>/pods/<name>
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 6 {
		return
	}
	ns, name := parts[3], parts[5]
	ctx := context.Background()
	pod, err := a.c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return // gone already: the DELETE is a no-op
	}
	pool := pod.Labels[janitor.LabelPool]
	snap, err := a.c.store.Snapshot(ctx, slots.PoolID{Namespace: ns, Name: pool})
	state := "no-record"
	if err == nil {
		for _, r := range snap.Pods {
			if r.Name == name && r.UID == string(pod.UID) {
				state = string(r.State)
				if r.Busy() && r.State != slots.PodLost {
					state += "+busy"
				}
			}
		}
	}
	ended := pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.deleted == nil {
		a.deleted = map[string]string{}
	}
	a.deleted[name] = state
	if a.firstDel.IsZero() {
		a.firstDel = time.Now()
	}
	switch {
	case state == string(slots.PodDraining), state == string(slots.PodLost), ended:
	case state == "no-record" && pod.Status.Phase == corev1.PodPending:
		// Never registered and tombstoned: nothing ran there.
	default:
		a.violations = append(a.violations, fmt.Sprintf("janitor deleted pod %s/%s in state %s (phase %s)", ns, name, state, pod.Status.Phase))
	}
}

func (a *audit) check(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	require.Empty(t, a.violations, "the janitor deleted pods it had not drained")
}

func (a *audit) stateAtDeletion(name string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.deleted[name]
	return s, ok
}
