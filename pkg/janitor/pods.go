package janitor

import (
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/podpolicy"
)

// Identity variables: the pod's identity from sources the template cannot
// change (the pod's own metadata and the pool label the janitor sets). The
// agent refuses to start when the identity it was configured with (flags
// or env, which the template can set) disagrees with them.
const (
	EnvIdentityNamespace = "SLOTSCALER_POD_IDENTITY_NAMESPACE"
	EnvIdentityPool      = "SLOTSCALER_POD_IDENTITY_POOL"
	EnvIdentityName      = "SLOTSCALER_POD_IDENTITY_NAME"
	EnvIdentityUID       = "SLOTSCALER_POD_IDENTITY_UID"
)

// templateField is where the pod spec lies in an AgentPool: the policy's
// messages name fields under it.
var templateField = field.NewPath("spec", "template", "spec")

// allowedPod is the pod newPod builds, with the policy's defaults, or the
// policy's refusal.
func allowedPod(ap *v1alpha1.AgentPool, s settings, hash, generation string, inj Injection, pol podpolicy.Policy) (*corev1.Pod, error) {
	pod := newPod(ap, s, hash, generation, inj)
	pol.Default(&pod.Spec)
	if err := pol.Check(&pod.ObjectMeta, &pod.Spec, templateField).Err(); err != nil {
		return nil, err
	}
	return pod, nil
}

// Injection is what the janitor adds to every agent container besides the
// pool's identity.
type Injection struct {
	// KeyPrefix is the installation's Redis key prefix (KEY_PREFIX).
	KeyPrefix string
	// RedisURL is set as REDIS_URL unless the template sets REDIS_URL. Prefer
	// RedisSecret: a URL with a password would sit in every pod spec.
	RedisURL string
	// RedisSecret, "name/key" of a Secret in the pool's namespace, is
	// referenced as REDIS_URL unless the template sets REDIS_URL.
	RedisSecretName, RedisSecretKey string
	// PoolSecretName, set when pools have Redis users of their own
	// (Options.Credentials), is the Secret in the pool's namespace whose key
	// <pool name> holds the pool's URL; referenced as REDIS_URL, before
	// RedisSecret and RedisURL, unless the template sets REDIS_URL. Empty
	// leaves the template hash of existing pods as it was.
	PoolSecretName string `json:",omitempty"`
	// ReplicaAcks, when above 0, is set as REDIS_REPLICA_ACKS: the agents
	// need as many replica acknowledgements for their claims as the
	// janitor for its drains. 0 leaves the template hash as it was.
	ReplicaAcks int `json:",omitempty"`
}

// AgentContainer is the container the janitor injects the agent's settings
// into; a template without a container of that name gets them in its first.
const AgentContainer = "agent"

// newPod builds an agent pod from the pool's template. generation is the
// pool's slot-store generation, read before the pod is created.
func newPod(ap *v1alpha1.AgentPool, s settings, hash, generation string, inj Injection) *corev1.Pod {
	t := ap.Spec.Template.DeepCopy()
	labels := make(map[string]string, len(t.Labels)+2)
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[LabelPool] = ap.Name
	labels[LabelTemplateHash] = hash
	annotations := make(map[string]string, len(t.Annotations)+1)
	for k, v := range t.Annotations {
		annotations[k] = v
	}
	// The generation the pod was created under: after a data loss, pods of
	// another generation hold removals while their agents re-register
	// (dataLossHold). The template cannot set it.
	delete(annotations, AnnotationGeneration)
	if generation != "" {
		annotations[AnnotationGeneration] = generation
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			// Named here rather than by generateName: one scheme for the API
			// server and the in-memory clientset of the local demo.
			Name:        podName(ap.Name),
			Namespace:   ap.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(ap, v1alpha1.GroupVersionKind),
			},
		},
		Spec: t.Spec,
	}
	// One pod is one incarnation: a crashed agent's pod is replaced, never
	// restarted in place next to orphaned executors.
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	grace := int64((s.longestPhase() + graceMargin).Seconds())
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < grace {
		pod.Spec.TerminationGracePeriodSeconds = &grace
	}
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == AgentContainer })
	if i < 0 {
		i = 0
	}
	c := &pod.Spec.Containers[i]
	// The pool's identity always comes from the janitor: a template must not
	// be able to make an agent register as another pod or pool.
	setEnv(c, corev1.EnvVar{Name: "POOL_NAMESPACE", ValueFrom: fieldRef("metadata.namespace")})
	setEnv(c, corev1.EnvVar{Name: "POOL_NAME", Value: ap.Name})
	setEnv(c, corev1.EnvVar{Name: "POD_NAME", ValueFrom: fieldRef("metadata.name")})
	setEnv(c, corev1.EnvVar{Name: "POD_UID", ValueFrom: fieldRef("metadata.uid")})
	// The same identity again, from sources only the janitor controls: the
	// template's args may override the variables above (a flag wins over its
	// env twin), never these.
	setEnv(c, corev1.EnvVar{Name: EnvIdentityNamespace, ValueFrom: fieldRef("metadata.namespace")})
	setEnv(c, corev1.EnvVar{Name: EnvIdentityPool, ValueFrom: fieldRef("metadata.labels['" + LabelPool + "']")})
	setEnv(c, corev1.EnvVar{Name: EnvIdentityName, ValueFrom: fieldRef("metadata.name")})
	setEnv(c, corev1.EnvVar{Name: EnvIdentityUID, ValueFrom: fieldRef("metadata.uid")})
	setEnv(c, corev1.EnvVar{Name: "PLAN_TIMEOUT", Value: s.PlanTimeout.String()})
	setEnv(c, corev1.EnvVar{Name: "APPLY_TIMEOUT", Value: s.ApplyTimeout.String()})
	if inj.KeyPrefix != "" {
		setEnv(c, corev1.EnvVar{Name: "KEY_PREFIX", Value: inj.KeyPrefix})
	}
	if inj.ReplicaAcks > 0 {
		setEnv(c, corev1.EnvVar{Name: "REDIS_REPLICA_ACKS", Value: strconv.Itoa(inj.ReplicaAcks)})
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "REDIS_URL" }) {
		switch {
		case inj.PoolSecretName != "":
			setEnv(c, corev1.EnvVar{Name: "REDIS_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: inj.PoolSecretName},
					Key:                  ap.Name,
				},
			}})
		case inj.RedisSecretName != "":
			setEnv(c, corev1.EnvVar{Name: "REDIS_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: inj.RedisSecretName},
					Key:                  inj.RedisSecretKey,
				},
			}})
		case inj.RedisURL != "":
			setEnv(c, corev1.EnvVar{Name: "REDIS_URL", Value: inj.RedisURL})
		}
	}
	return pod
}

// podName is the pool's name and a random suffix. Pool names are at most
// MaxPoolName long DNS labels (settingsOf, and the CRD), so the pod name is
// a DNS label too: the pod's host name is its name.
func podName(pool string) string {
	return pool + "-" + utilrand.String(5)
}

func fieldRef(path string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
}

// setEnv sets a variable, replacing every one of the same name (the
// kubelet would use the last of duplicates).
func setEnv(c *corev1.Container, v corev1.EnvVar) {
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == v.Name })
	c.Env = append(c.Env, v)
}
