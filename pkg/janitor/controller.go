package janitor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/podpolicy"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Store is the part of the slot store the janitor uses.
type Store interface {
	DeclarePool(ctx context.Context, id slots.PoolID, cfg slots.PoolConfig) (slots.Declaration, error)
	Snapshot(ctx context.Context, id slots.PoolID) (slots.Snapshot, error)
	Version(ctx context.Context, id slots.PoolID) (slots.Version, error)
	ExpectPod(ctx context.Context, id slots.PoolID, pod, uid string) error
	ExpectStoppingPod(ctx context.Context, id slots.PoolID, pod, uid string) error
	DrainReplicated(ctx context.Context, id slots.PoolID, pod, uid string, wait time.Duration) (int, error)
	Cordon(ctx context.Context, id slots.PoolID, pod, uid string) error
	Uncordon(ctx context.Context, id slots.PoolID, pod, uid string) error
	RemovePod(ctx context.Context, id slots.PoolID, pod, uid, reason string) error
	BeginDeletion(ctx context.Context, id slots.PoolID) (slots.Deletion, error)
	Abandon(ctx context.Context, id slots.PoolID, pod, uid string) ([]string, error)
	Purge(ctx context.Context, id slots.PoolID) (int, error)
}

// Options tune a Controller.
type Options struct {
	// Namespaces limits the janitor to these namespaces (none: all). Each
	// gets informers of its own: client-go lists and watches one namespace
	// or all, and a janitor bound by per-namespace Roles may not list all.
	Namespaces []string
	// Workers is how many pools are worked on at once (one pool is never
	// worked on by two workers).
	Workers int
	// SyncInterval is how often a pool is looked at without a Kubernetes
	// event: slots becoming idle are Redis changes the informers don't see.
	SyncInterval time.Duration
	// FullPassInterval: a pool at rest (its last pass did nothing, and
	// neither Redis, Kubernetes nor the clock says anything changed since)
	// gets a pass that reads only its change token, O(1), instead of the
	// whole pool (rest.go); a full pass still runs at least this often, a
	// safety net. 0: DefaultFullPassInterval; negative: every pass is full.
	FullPassInterval time.Duration
	// DryRun decides and logs but changes nothing: no Kubernetes write (pods,
	// status, events) and no slot-store write.
	DryRun bool
	// Inject is added to every agent container.
	Inject Injection
	// PodPolicy is what every pod must satisfy before the janitor creates
	// it; a pool whose template it refuses gets no pod. The zero value is
	// podpolicy.Default() (restricted, only the default ServiceAccount, no
	// token).
	PodPolicy podpolicy.Policy
	// Credentials, when set, gives each pool a Redis user of its own and its
	// agents that user's URL (credentials.go); nil: agents get Inject's.
	Credentials PoolCredentials
	// ReplicaWait bounds the WAIT for a replica after a drain.
	ReplicaWait time.Duration
	// Parallelism bounds concurrent API calls within one pass (creates,
	// deletes, patches).
	Parallelism int
	// IgnoreHPAs: do not watch HorizontalPodAutoscalers (for RBAC without
	// them). The janitor then finds nothing on a pool's HPA: no
	// HPAToleranceHonoured condition, and the scaler's nudge follows the
	// trigger alone. Otherwise New watches them (get, list, watch on
	// autoscaling horizontalpodautoscalers) and waits for their cache.
	IgnoreHPAs bool
	// Reports, when set, is where each pool's janitor report goes (what
	// the janitor waits for and did last, for the dashboard: report.go);
	// nil: none is written. Identity names this janitor in them.
	Reports Reports
	// Webhooks, when set, is where each pool's spec.notifications goes, as
	// references to Secret keys (notify.Declarations): the scaler's
	// notifier reads them and the Secrets. nil: none is written.
	Webhooks WebhookDeclarations
	Identity string
	Logger   *slog.Logger
	Metrics  *Metrics
}

// Controller is the janitor.
type Controller struct {
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	store Store
	opts  Options
	log   *slog.Logger
	m     *Metrics

	// watches are the informers of each watched namespace.
	watches  []watch
	queue    workqueue.TypedRateLimitingInterface[string]
	exp      *expectations
	events   record.EventBroadcaster
	recorder record.EventRecorder

	mu    sync.Mutex
	state map[string]*poolState
	// changed holds the pools an informer event concerned since their
	// last pass began: their next pass is full (rest.go).
	changed map[string]bool
	// reportRefresh: an unchanged report is written again this long after
	// the last write (janitorreport.RefreshInterval).
	reportRefresh time.Duration
}

// poolState is what the controller remembers about a pool between passes.
type poolState struct {
	declared string // the store config last declared
	// policyPending says why the slot policy of the declared config is not
	// applied yet ("" when it is): the store keeps the old one while the
	// pool has pods, so every pass declares again until it lands.
	policyPending string
	// policyEventFor is the config whose pending policy was reported.
	policyEventFor string
	// heldGeneration is the generation whose data-loss hold was reported
	// (the hold itself is derived from every snapshot, not remembered).
	heldGeneration string
	// deletionSeen: the pool's deletion was reported (once per janitor).
	deletionSeen bool
	// finalizerFailed: adding the finalizer failed (reported once).
	finalizerFailed bool
	// rest is what the last full pass left when it did nothing: the next
	// passes may skip on it (rest.go). nil otherwise.
	rest *restMemo
	// expectedSince: when each pod's record was first seen expected, in an
	// unbroken run of snapshots (observeExpected). Losing it only delays.
	expectedSince map[types.UID]time.Time
	limiter       *rate.Limiter
	limit         int
	// streak is the start-failure streak plan carries from pass to pass.
	streak startStreak
	// refusedHash is the template hash whose refusal by the pod policy was
	// reported ("" while the template is allowed).
	refusedHash string
	// hpaReported is the HPA verdict last logged ("reason|message").
	hpaReported string
	// report is the janitor report last written (or read, by a janitor
	// that just started), nil when none; reportActions the actions to
	// report, newest first, written or not. reportRead: the report was
	// read from Redis (once per janitor); reportFailing: the last write
	// failed (logged once per streak).
	report        *janitorreport.Report
	reportActions []janitorreport.Action
	reportRead    bool
	reportFailing bool
	// webhooks is the spec.notifications last written (JSON) and when;
	// webhooksFailing: the last write failed (logged once per streak).
	webhooks        string
	webhooksAt      time.Time
	webhooksFailing bool
}

const byPool = "pool"

// watch is the informers of one watched namespace ("": all).
type watch struct {
	ns          string
	pods, pools cache.SharedIndexInformer
	hpas        cache.SharedIndexInformer  // nil with Options.IgnoreHPAs
	start       func(stop <-chan struct{}) // nil when the caller owns the informers
	shutdown    func()
}

// watchOf is the watch holding namespace ns, or nil when it is not watched.
func (c *Controller) watchOf(ns string) *watch {
	for i := range c.watches {
		if w := &c.watches[i]; w.ns == ns || w.ns == metav1.NamespaceAll {
			return w
		}
	}
	return nil
}

// startInformers starts the informers New built.
func (c *Controller) startInformers(stop <-chan struct{}) {
	for _, w := range c.watches {
		if w.start != nil {
			w.start(stop)
		}
	}
}

func (c *Controller) shutdownInformers() {
	for _, w := range c.watches {
		if w.shutdown != nil {
			w.shutdown()
		}
	}
}

func (c *Controller) informersSynced() []cache.InformerSynced {
	var synced []cache.InformerSynced
	for _, w := range c.watches {
		synced = append(synced, w.pods.HasSynced, w.pools.HasSynced)
		if w.hpas != nil {
			synced = append(synced, w.hpas.HasSynced)
		}
	}
	return synced
}

// New builds a controller with its own informers, over the pods labelled
// with LabelPool, the AgentPools and (unless opts.IgnoreHPAs) the
// HorizontalPodAutoscalers of opts.Namespaces (one set of informers per
// namespace, or one for all). Run starts them.
func New(kube kubernetes.Interface, dyn dynamic.Interface, store Store, opts Options) (*Controller, error) {
	namespaces := slices.Compact(slices.Sorted(slices.Values(opts.Namespaces)))
	if len(namespaces) == 0 || slices.Contains(namespaces, metav1.NamespaceAll) {
		namespaces = []string{metav1.NamespaceAll}
	}
	var watches []watch
	for _, ns := range namespaces {
		podFactory := informers.NewSharedInformerFactoryWithOptions(kube, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelPool }))
		poolFactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, ns, nil)
		// HPAs carry no label of ours: a factory of their own, unfiltered.
		hpaFactory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns))
		w := watch{
			ns:    ns,
			pods:  podFactory.Core().V1().Pods().Informer(),
			pools: poolFactory.ForResource(v1alpha1.GroupVersionResource).Informer(),
			start: func(stop <-chan struct{}) {
				podFactory.Start(stop)
				poolFactory.Start(stop)
				hpaFactory.Start(stop)
			},
			shutdown: func() {
				podFactory.Shutdown()
				poolFactory.Shutdown()
				hpaFactory.Shutdown()
			},
		}
		if !opts.IgnoreHPAs {
			w.hpas = hpaFactory.Autoscaling().V2().HorizontalPodAutoscalers().Informer()
		}
		watches = append(watches, w)
	}
	return newController(kube, dyn, watches, store, opts)
}

// NewController builds a controller over informers the caller owns, as
// sample-controller's controllers are built: the caller starts them (Run
// only waits for their caches), and a test can fill their indexers and run
// one sync without an API server. pods should hold the pods labelled with
// LabelPool (others are ignored, but cached for nothing); pools is the
// informer of v1alpha1.GroupVersionResource. Both must not have started:
// the controller adds an index and event handlers. It watches no HPAs, as
// with Options.IgnoreHPAs.
func NewController(kube kubernetes.Interface, dyn dynamic.Interface, pods coreinformers.PodInformer, pools informers.GenericInformer,
	store Store, opts Options) (*Controller, error) {
	return newController(kube, dyn, []watch{{ns: metav1.NamespaceAll, pods: pods.Informer(), pools: pools.Informer()}}, store, opts)
}

func newController(kube kubernetes.Interface, dyn dynamic.Interface, watches []watch, store Store, opts Options) (*Controller, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 5 * time.Second
	}
	if opts.ReplicaWait <= 0 {
		opts.ReplicaWait = 5 * time.Second
	}
	if opts.FullPassInterval == 0 {
		opts.FullPassInterval = DefaultFullPassInterval
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PodPolicy.Level == "" {
		opts.PodPolicy = podpolicy.Default()
	}
	if err := opts.PodPolicy.Validate(); err != nil {
		return nil, err
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	c := &Controller{
		kube: kube, dyn: dyn, store: store, opts: opts,
		log:           opts.Logger.With("component", "janitor"),
		m:             opts.Metrics,
		exp:           newExpectations(time.Now),
		state:         map[string]*poolState{},
		changed:       map[string]bool{},
		reportRefresh: janitorreport.RefreshInterval,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "agentpools"},
		),
		watches: watches,
	}
	for _, w := range watches {
		if err := c.handle(w); err != nil {
			return nil, err
		}
		if w.hpas != nil {
			if err := c.handleHPAs(w); err != nil {
				return nil, err
			}
		}
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	c.events = record.NewBroadcaster(record.WithContext(context.Background()))
	c.recorder = c.events.NewRecorder(scheme, corev1.EventSource{Component: "slotscaler-janitor"})
	return c, nil
}

// handle indexes one watch's pods by pool and queues the pools their
// events concern.
func (c *Controller) handle(w watch) error {
	if err := w.pods.AddIndexers(cache.Indexers{byPool: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, nil
		}
		return []string{p.Namespace + "/" + p.Labels[LabelPool]}, nil
	}}); err != nil {
		return fmt.Errorf("indexing pods by pool: %w", err)
	}

	if _, err := w.pools.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueuePool,
		UpdateFunc: func(_, obj any) { c.enqueuePool(obj) },
		DeleteFunc: c.enqueuePool,
	}); err != nil {
		return fmt.Errorf("watching AgentPools: %w", err)
	}
	if _, err := w.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if key, _, ok := poolKeyOf(obj); ok {
				c.exp.CreationObserved(key)
				c.enqueue(key)
			}
		},
		UpdateFunc: func(old, obj any) {
			key, p, ok := poolKeyOf(obj)
			if !ok {
				return
			}
			if p.DeletionTimestamp != nil {
				c.exp.DeletionObserved(key, p.UID)
			}
			if o, ok := old.(*corev1.Pod); ok && o.ResourceVersion == p.ResourceVersion {
				return // periodic resync, nothing changed
			}
			c.enqueue(key)
		},
		DeleteFunc: func(obj any) {
			if key, p, ok := poolKeyOf(obj); ok {
				c.exp.DeletionObserved(key, p.UID)
				c.enqueue(key)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	return nil
}

func (c *Controller) enqueuePool(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.enqueue(key)
}

// enqueue queues a pool an informer event concerned, for a full pass.
func (c *Controller) enqueue(key string) {
	c.mu.Lock()
	c.changed[key] = true
	c.mu.Unlock()
	c.queue.Add(key)
}

// takeChanged reports whether an informer event concerned the pool since
// its last pass began, and forgets it: called as a pass begins, before it
// reads the caches, so an event the pass may not see makes the next one
// full.
func (c *Controller) takeChanged(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.changed[key]
	delete(c.changed, key)
	return ch
}

// poolKeyOf returns the pool key of a pod (or a deleted pod's tombstone).
func poolKeyOf(obj any) (string, *corev1.Pod, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Labels[LabelPool] == "" {
		return "", nil, false
	}
	return p.Namespace + "/" + p.Labels[LabelPool], p, true
}

// Run starts the informers New built (NewController's caller starts its
// own), waits for their caches and works pools until ctx ends; then it
// stops taking work and returns once workers finished.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	if !c.opts.DryRun {
		// The sink writes each event into its object's namespace.
		c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events(metav1.NamespaceAll)})
	}
	c.events.StartStructuredLogging(4)
	defer c.events.Shutdown()
	c.startInformers(ctx.Done())
	defer c.shutdownInformers()
	c.log.Info("janitor starting", "namespaces", c.opts.Namespaces, "workers", c.opts.Workers, "dryRun", c.opts.DryRun,
		"podPolicy", c.opts.PodPolicy.Level, "allowedServiceAccounts", c.opts.PodPolicy.AllowedServiceAccounts,
		"allowServiceAccountToken", c.opts.PodPolicy.AllowServiceAccountToken)
	if !cache.WaitForNamedCacheSync("janitor", ctx.Done(), c.informersSynced()...) {
		return fmt.Errorf("waiting for informer caches: %w", context.Cause(ctx))
	}
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	c.log.Info("janitor running")
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.log.Info("janitor stopped")
	return nil
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	next, err := c.sync(ctx, key)
	if err != nil {
		c.m.Syncs.WithLabelValues(resultError).Inc()
		c.log.Error("syncing pool", "pool", key, "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.m.Syncs.WithLabelValues(resultSuccess).Inc()
	c.queue.Forget(key)
	if next > 0 {
		c.queue.AddAfter(key, next)
	}
	return true
}

func (c *Controller) poolState(key string) *poolState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.state[key]
	if !ok {
		st = &poolState{}
		c.state[key] = st
	}
	return st
}

// sync is one pass over a pool.
func (c *Controller) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil // not a key we made; nothing to retry
	}
	w := c.watchOf(ns)
	if w == nil {
		return 0, nil // a namespace not watched: no key we made
	}
	if c.takeChanged(key) {
		c.poolState(key).rest = nil
	}
	obj, exists, err := w.pools.GetIndexer().GetByKey(key)
	if err != nil {
		return 0, fmt.Errorf("reading pool %s from cache: %w", key, err)
	}
	if !exists {
		// Deleted: its pods go with it (owner references); nothing to do.
		c.exp.Forget(key)
		c.mu.Lock()
		delete(c.state, key)
		c.mu.Unlock()
		c.m.Pods.DeletePartialMatch(map[string]string{"namespace": ns, "pool": name})
		c.m.Degraded.DeleteLabelValues(key)
		c.removeCredentials(ctx, slots.PoolID{Namespace: ns, Name: name})
		c.log.Info("pool deleted", "pool", key)
		return 0, nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return 0, fmt.Errorf("pool %s: unexpected cache object %T", key, obj)
	}
	ap := &v1alpha1.AgentPool{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, ap); err != nil {
		return 0, fmt.Errorf("decoding pool %s: %w", key, err)
	}
	ap.SetGroupVersionKind(v1alpha1.GroupVersionKind)
	p := &pass{c: c, w: w, ctx: ctx, key: key, ap: ap, id: slots.PoolID{Namespace: ns, Name: name},
		st: c.poolState(key), now: time.Now(), log: c.log.With("pool", key)}
	return p.run()
}
