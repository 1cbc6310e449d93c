package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AgentPool is a pool of agent pods. KEDA's HPA writes spec.replicas through
// the scale subresource; the janitor makes the pool's live pods match it,
// removing only pods it has proven idle in the slot store.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ap;apool,categories=slotscaler
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.busyReplicas`
// +kubebuilder:printcolumn:name="Idle",type=integer,JSONPath=`.status.idleReplicas`
// +kubebuilder:printcolumn:name="Cordoned",type=integer,JSONPath=`.status.cordonedReplicas`,priority=1
// +kubebuilder:printcolumn:name="Draining",type=integer,JSONPath=`.status.drainingReplicas`,priority=1
// +kubebuilder:printcolumn:name="Queued",type=integer,JSONPath=`.status.queuedTasks`
// +kubebuilder:printcolumn:name="Awaiting",type=integer,JSONPath=`.status.awaitingApproval`,description="plan_and_apply tasks whose plan ran, holding their slot until approved"
// +kubebuilder:printcolumn:name="Slots",type=string,JSONPath=`.status.slotPolicy`,priority=1
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 57 && !self.metadata.name.contains('.')",message="metadata.name: a DNS label of at most 57 characters (pod names are <pool>-xxxxx)"
type AgentPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AgentPoolSpec   `json:"spec"`
	Status AgentPoolStatus `json:"status,omitempty"`
}

// AgentPoolSpec is what the pool should be. Every field but template has a
// default, given in its description.
type AgentPoolSpec struct {
	// Replicas is how many agent pods the pool should run. KEDA sets it.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Template is the agent pod. The janitor adds the pool's labels, an owner
	// reference, restartPolicy Never, the agent's environment (pool, pod name,
	// namespace and UID from the downward API, and REDIS_URL unless the
	// template sets it) and a termination grace period covering the phase
	// timeouts.
	Template corev1.PodTemplateSpec `json:"template"`

	// Slots lists, per slot index, the task types it may run. Default: three
	// slots, slot 0 runs plan and plan_and_apply, slots 1-2 only plan. A
	// change waits until the pool has no pods (condition SlotPolicyPending);
	// the other fields of the same edit apply at once.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Slots []SlotSpec `json:"slots,omitempty"`

	// IdleFor is how long a pod must have been idle (since its last busy
	// slot freed) before it may be removed. Default 60s.
	// +optional
	IdleFor *metav1.Duration `json:"idleFor,omitempty"`

	// MaxDeletionsPerMinute caps how many pods the janitor removes from this
	// pool per minute. Default 60.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxDeletionsPerMinute *int32 `json:"maxDeletionsPerMinute,omitempty"`

	// ReservationTTL is how long slot 0 stays reserved after a plan_and_apply's
	// plan, waiting for approval. Default 1h.
	// +optional
	ReservationTTL *metav1.Duration `json:"reservationTTL,omitempty"`

	// HeartbeatTimeout: an agent silent this long is lost; its pod is deleted
	// and its work requeued or failed. Default 30s.
	// +optional
	HeartbeatTimeout *metav1.Duration `json:"heartbeatTimeout,omitempty"`

	// PhaseTimeouts bound how long a plan or apply phase may run (passed to
	// the agent). The pod's termination grace period covers the longer one.
	// +optional
	PhaseTimeouts PhaseTimeouts `json:"phaseTimeouts,omitempty"`

	// MaxAttempts is how many times a plan may start before losing its agent
	// fails it. Default 3.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxAttempts *int32 `json:"maxAttempts,omitempty"`

	// Queue bounds the pool's queue.
	// +optional
	Queue QueueSpec `json:"queue,omitempty"`

	// Deletion bounds how long deleting the pool waits for its work.
	// +optional
	Deletion DeletionSpec `json:"deletion,omitempty"`

	// Recycle replaces long-lived pods. Off unless set (an empty recycle is
	// off too).
	// +optional
	Recycle *RecycleSpec `json:"recycle,omitempty"`

	// Notifications are webhooks for the pool's events, delivered by the
	// scaler's notifier when it reads AgentPools' webhooks
	// (--notify-agentpools). The janitor copies only the references into
	// Redis, never a Secret's value; the notifier reads the Secrets, in the
	// pool's namespace only.
	// +optional
	Notifications *NotificationsSpec `json:"notifications,omitempty"`
}

// NotificationsSpec lists the pool's webhooks.
type NotificationsSpec struct {
	// Webhooks get the pool's events (at most 8, names unique).
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	// +optional
	Webhooks []WebhookSpec `json:"webhooks,omitempty"`
}

// WebhookSpec is one webhook of a pool. The request's body is JSON (or
// Slack's {"text": ...}); with a signing secret it carries
// X-Slotscaler-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
type WebhookSpec struct {
	// Name identifies the webhook in its status on the dashboard and in
	// the metrics (shown as "pool:<name>").
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,56}[a-z0-9])?$`
	Name string `json:"name"`
	// Events the webhook gets. Default: all of them.
	// +kubebuilder:validation:MaxItems=5
	// +listType=set
	// +optional
	Events []WebhookEvent `json:"events,omitempty"`
	// Format of the body: json (default) or slack.
	// +kubebuilder:validation:Enum=json;slack
	// +optional
	Format string `json:"format,omitempty"`
	// URLSecretRef is the key of a Secret in the pool's namespace holding
	// the webhook's URL (URLs often carry their credential).
	URLSecretRef SecretKeyRef `json:"urlSecretRef"`
	// SigningSecretRef is the key of a Secret in the pool's namespace
	// holding the HMAC-SHA256 signing secret. None: requests are unsigned.
	// +optional
	SigningSecretRef *SecretKeyRef `json:"signingSecretRef,omitempty"`
}

// WebhookEvent is an event a webhook can get.
// +kubebuilder:validation:Enum=awaiting-approval;reservation-expiring;succeeded;failed;expired
type WebhookEvent string

// SecretKeyRef names one key of a Secret in the pool's namespace.
type SecretKeyRef struct {
	// Name of the Secret, in the pool's namespace.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key of the Secret's data whose value is used (surrounding blanks trimmed).
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// DeletionSpec is how a pool is deleted. Deleting an AgentPool fails its
// queued tasks at once (pool-deleted) and refuses submits; running phases
// finish and reservations may still be approved or rejected while the pods
// are removed as they become idle. After Timeout what still runs or is
// reserved fails (pool-deleted) and its pods are deleted; then the pool's
// Redis state, then the AgentPool.
type DeletionSpec struct {
	// Timeout is the longest the deletion waits for running phases and
	// reservations. Default: the longer phase timeout.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// RecycleSpec replaces a pod once it started afterTasks tasks or lived
// afterAge, whichever comes first, the way a template change replaces pods:
// an idle pod is drained and deleted, a busy one is cordoned (it finishes
// its work, reservations and applies included, and gets no new work) and
// deleted once idle; either way a successor is created beside it. Pods are
// taken out no faster than maxDeletionsPerMinute: each pass recycles at
// most as many pods as the deletion budget has left, less the recycled
// pods still cordoned and waiting to be idle.
type RecycleSpec struct {
	// AfterTasks: a pod that started this many tasks is replaced. Tasks,
	// not phases: a task counts once, when its plan starts on the pod; the
	// apply of a plan_and_apply runs on the same pod and is not counted
	// again. The count lives in the slot store: pods registered before the
	// counter existed, or rebuilt after Redis lost its data, count from 0.
	// +kubebuilder:validation:Minimum=1
	// +optional
	AfterTasks *int32 `json:"afterTasks,omitempty"`

	// AfterAge: a pod that has existed this long (since its
	// creationTimestamp) is replaced, e.g. 24h.
	// +optional
	AfterAge *metav1.Duration `json:"afterAge,omitempty"`
}

// SlotSpec is one slot of every pod.
type SlotSpec struct {
	// Types the slot may run.
	// +kubebuilder:validation:MinItems=1
	// +listType=set
	Types []TaskType `json:"types"`
}

// TaskType is a kind of task.
// +kubebuilder:validation:Enum=plan;plan_and_apply
type TaskType string

// PhaseTimeouts bounds task phases. Default 1h each.
type PhaseTimeouts struct {
	// Plan bounds a plan phase. Default 1h.
	// +optional
	Plan *metav1.Duration `json:"plan,omitempty"`
	// Apply bounds an apply phase. Default 1h.
	// +optional
	Apply *metav1.Duration `json:"apply,omitempty"`
}

// QueueSpec bounds the pool's queue.
type QueueSpec struct {
	// Limit: submitting beyond this many queued tasks is refused. Default 10000.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Limit *int32 `json:"limit,omitempty"`
	// MaxAge: a task queued longer expires. Default: never.
	// +optional
	MaxAge *metav1.Duration `json:"maxAge,omitempty"`
}

// AgentPoolStatus is what the janitor observed.
type AgentPoolStatus struct {
	// Replicas counts pods that are not terminating and not surplus (pending
	// ones included): pods draining, lost, failed, or cordoned for removal or
	// replacement are left out. The HPA divides by it.
	// +optional
	Replicas int32 `json:"replicas"`
	// ReadyReplicas counts pods in Replicas whose agent registered and whose
	// pod is Ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// BusyReplicas counts live pods with a running, assigned or reserved slot.
	// +optional
	BusyReplicas int32 `json:"busyReplicas"`
	// IdleReplicas counts registered live pods with every slot idle.
	// +optional
	IdleReplicas int32 `json:"idleReplicas"`
	// CordonedReplicas counts pods taking no new work until they are idle.
	// +optional
	CordonedReplicas int32 `json:"cordonedReplicas"`
	// DrainingReplicas counts pods proven idle and being deleted.
	// +optional
	DrainingReplicas int32 `json:"drainingReplicas"`
	// QueuedTasks counts tasks waiting in the pool's queue for a slot, as of
	// queueObservedTime.
	// +optional
	QueuedTasks int32 `json:"queuedTasks"`
	// QueuedByType counts the queued tasks of each task type (types with
	// none are left out).
	// +optional
	QueuedByType map[TaskType]int32 `json:"queuedByType,omitempty"`
	// AwaitingApproval counts plan_and_apply tasks whose plan ran and which
	// wait for approval, each holding (reserving) the slot that ran it, as
	// of queueObservedTime. A pod with a reserved slot is not removed.
	// +optional
	AwaitingApproval int32 `json:"awaitingApproval"`
	// QueueObservedTime is when the slot store was read for the queuedTasks,
	// queuedByType and awaitingApproval shown (Redis's clock). The janitor
	// reads them on every pass but, when nothing else in the status
	// changed, writes them at most once per --sync-interval (5s by
	// default): a busy queue does not make every pass a status write.
	// +optional
	QueueObservedTime *metav1.Time `json:"queueObservedTime,omitempty"`
	// SlotPolicy is the slot policy the pool runs, by slot index, e.g.
	// "3 slots: 0=plan,plan_and_apply 1-2=plan". While a spec.slots change
	// is pending (condition SlotPolicyPending) it still shows the old one
	// (empty until the janitor has seen one applied).
	// +optional
	SlotPolicy string `json:"slotPolicy,omitempty"`
	// Selector is the label selector of the pool's pods (scale subresource).
	// +optional
	Selector string `json:"selector,omitempty"`
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (the pool runs spec.replicas ready pods), Degraded
	// (pods of the template cannot start), Deleting (the pool was
	// deleted and waits for its pods' work), SlotPolicyPending (spec.slots
	// changed while the pool has pods: the old slot policy stays until it
	// has none), TemplateAllowed (the janitor's pod policy accepts
	// spec.template) and HPAToleranceHonoured (whether the HPA targeting the
	// pool sets behavior.scaleUp.tolerance 0; when it does not, the scaler
	// nudges the pool's scale-ups past its band).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types.
const (
	ConditionReady    = "Ready"
	ConditionDegraded = "Degraded"
	// ConditionSlotPolicyPending is True while a spec.slots change waits for
	// the pool to have no pods.
	ConditionSlotPolicyPending = "SlotPolicyPending"
	// ConditionTemplateAllowed is False while the janitor's pod policy
	// refuses spec.template: no pod is created from it, existing pods stay.
	ConditionTemplateAllowed = "TemplateAllowed"
	// ConditionDeleting is True while a deleted pool waits for its pods'
	// work (DeletionSpec); its message says what is left and until when.
	ConditionDeleting = "Deleting"
	// ConditionHPAToleranceHonoured is True when the HorizontalPodAutoscaler
	// targeting the pool (KEDA's) sets behavior.scaleUp.tolerance 0, False
	// when it sets none (the cluster dropped the field: Kubernetes before
	// 1.35 without the HPAConfigurableTolerance feature gate, or an older
	// KEDA) or a non-zero one, and Unknown when no HPA targets the pool.
	// While False the scaler nudges the pool's scale-ups past the HPA's
	// band, whatever the trigger's nudgeTolerance says.
	ConditionHPAToleranceHonoured = "HPAToleranceHonoured"
)

// Finalizer is the janitor's finalizer on every AgentPool it manages: a
// deleted pool stays until its pods were removed idle (or its deletion
// timed out) and its Redis state is gone.
const Finalizer = "slotscaler.io/drain-pods"

// AgentPoolList is a list of AgentPools.
//
// +kubebuilder:object:root=true
type AgentPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentPool `json:"items"`
}
