package janitor

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
)

// defaultSettings are the settings of agentPool() (phase timeouts 1h).
func defaultSettings(t *testing.T) settings {
	t.Helper()
	s, err := settingsOf(agentPool())
	require.NoError(t, err)
	return s
}

func withContainers(cs ...corev1.Container) func(*v1alpha1.AgentPool) {
	return func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.Containers = cs }
}

func withEnv(env ...corev1.EnvVar) func(*v1alpha1.AgentPool) {
	return func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.Containers[0].Env = env }
}

// envOf maps a container's variables by name, failing on a duplicate name
// (the kubelet lets the last one win, which would hide the janitor's).
func envOf(t *testing.T, c corev1.Container) map[string]corev1.EnvVar {
	t.Helper()
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		_, dup := m[e.Name]
		require.Falsef(t, dup, "container %s sets %s twice", c.Name, e.Name)
		m[e.Name] = e
	}
	return m
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func TestNewPodLabelsAndOwner(t *testing.T) {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Labels = map[string]string{"app": "agent", "team": "infra"}
		ap.Spec.Template.Annotations = map[string]string{"note": "kept"}
	})
	p := newPod(ap, defaultSettings(t), "abc123", "gen-1", Injection{})

	require.Equal(t, "team", p.Namespace)
	require.Equal(t, map[string]string{
		"app": "agent", "team": "infra",
		LabelPool: "pool-a", LabelTemplateHash: "abc123",
	}, p.Labels)
	require.Equal(t, map[string]string{"note": "kept", AnnotationGeneration: "gen-1"}, p.Annotations)
	require.Equal(t, []metav1.OwnerReference{{
		APIVersion:         "slotscaler.io/v1alpha1",
		Kind:               "AgentPool",
		Name:               "pool-a",
		UID:                "ap-uid",
		Controller:         ptrTo(true),
		BlockOwnerDeletion: ptrTo(true),
	}}, p.OwnerReferences)
	ref := metav1.GetControllerOf(p)
	require.NotNil(t, ref)
	require.Equal(t, ap.UID, ref.UID)
}

func ptrTo[T any](v T) *T { return &v }

func TestNewPodTemplateLabelsCannotOverrideJanitorLabels(t *testing.T) {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Labels = map[string]string{LabelPool: "other", LabelTemplateHash: "forged"}
	})
	p := newPod(ap, defaultSettings(t), "abc123", "gen-1", Injection{})
	require.Equal(t, "pool-a", p.Labels[LabelPool])
	require.Equal(t, "abc123", p.Labels[LabelTemplateHash])
}

// The generation annotation is the janitor's evidence that a pod was
// created after the pool's current generation was declared: a template
// must not be able to forge it (a forged one would hide a data loss).
func TestNewPodGenerationAnnotationComesFromTheStore(t *testing.T) {
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Annotations = map[string]string{AnnotationGeneration: "forged"}
	})
	require.Equal(t, "gen-1", newPod(ap, defaultSettings(t), "h", "gen-1", Injection{}).Annotations[AnnotationGeneration])
	require.NotContains(t, newPod(ap, defaultSettings(t), "h", "", Injection{}).Annotations, AnnotationGeneration,
		"no generation known: no annotation, so the pod counts as predating any generation")
	require.Equal(t, "forged", ap.Spec.Template.Annotations[AnnotationGeneration], "the template is not changed")
}

func TestNewPodRestartPolicyIsNever(t *testing.T) {
	for name, policy := range map[string]corev1.RestartPolicy{
		"unset": "", "always": corev1.RestartPolicyAlways, "on failure": corev1.RestartPolicyOnFailure, "never": corev1.RestartPolicyNever,
	} {
		t.Run(name, func(t *testing.T) {
			ap := agentPool(func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.RestartPolicy = policy })
			require.Equal(t, corev1.RestartPolicyNever, newPod(ap, defaultSettings(t), "h", "gen-1", Injection{}).Spec.RestartPolicy)
		})
	}
}

func TestNewPodGracePeriodCoversLongestPhase(t *testing.T) {
	for name, tc := range map[string]struct {
		template    *int64
		plan, apply time.Duration
		wantSeconds int64
	}{
		"unset: longest phase plus 60s":       {plan: time.Hour, apply: time.Hour, wantSeconds: 3660},
		"too short in the template is raised": {template: ptrTo[int64](30), plan: time.Hour, apply: time.Hour, wantSeconds: 3660},
		"longer in the template is kept":      {template: ptrTo[int64](99999), plan: time.Hour, apply: time.Hour, wantSeconds: 99999},
		"plan is the longest phase":           {plan: 2 * time.Hour, apply: 10 * time.Minute, wantSeconds: 7260},
		"apply is the longest phase":          {plan: 10 * time.Minute, apply: 3 * time.Hour, wantSeconds: 10860},
		"exactly long enough in the template": {template: ptrTo[int64](660), plan: 10 * time.Minute, apply: time.Minute, wantSeconds: 660},
	} {
		t.Run(name, func(t *testing.T) {
			ap := agentPool(func(ap *v1alpha1.AgentPool) { ap.Spec.Template.Spec.TerminationGracePeriodSeconds = tc.template })
			s := defaultSettings(t)
			s.PlanTimeout, s.ApplyTimeout = tc.plan, tc.apply
			p := newPod(ap, s, "h", "gen-1", Injection{})
			require.NotNil(t, p.Spec.TerminationGracePeriodSeconds)
			require.Equal(t, tc.wantSeconds, *p.Spec.TerminationGracePeriodSeconds)
		})
	}
}

func TestNewPodInjectsEnvIntoAgentContainer(t *testing.T) {
	for name, tc := range map[string]struct {
		containers []corev1.Container
		into       string
	}{
		"the container named agent": {
			containers: []corev1.Container{{Name: "sidecar", Image: "s"}, {Name: AgentContainer, Image: "a"}},
			into:       AgentContainer,
		},
		"the first container when none is named agent": {
			containers: []corev1.Container{{Name: "main", Image: "m"}, {Name: "sidecar", Image: "s"}},
			into:       "main",
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPod(agentPool(withContainers(tc.containers...)), defaultSettings(t), "h", "gen-1",
				Injection{KeyPrefix: "ss", RedisURL: "redis://redis:6379"})
			for _, c := range p.Spec.Containers {
				if c.Name != tc.into {
					require.Emptyf(t, c.Env, "container %s", c.Name)
					continue
				}
				require.Equal(t, map[string]corev1.EnvVar{
					"POOL_NAMESPACE":     fieldEnv("POOL_NAMESPACE", "metadata.namespace"),
					"POOL_NAME":          {Name: "POOL_NAME", Value: "pool-a"},
					"POD_NAME":           fieldEnv("POD_NAME", "metadata.name"),
					"POD_UID":            fieldEnv("POD_UID", "metadata.uid"),
					EnvIdentityNamespace: fieldEnv(EnvIdentityNamespace, "metadata.namespace"),
					EnvIdentityPool:      fieldEnv(EnvIdentityPool, "metadata.labels['slotscaler.io/pool']"),
					EnvIdentityName:      fieldEnv(EnvIdentityName, "metadata.name"),
					EnvIdentityUID:       fieldEnv(EnvIdentityUID, "metadata.uid"),
					"PLAN_TIMEOUT":       {Name: "PLAN_TIMEOUT", Value: "1h0m0s"},
					"APPLY_TIMEOUT":      {Name: "APPLY_TIMEOUT", Value: "1h0m0s"},
					"KEY_PREFIX":         {Name: "KEY_PREFIX", Value: "ss"},
					"REDIS_URL":          {Name: "REDIS_URL", Value: "redis://redis:6379"},
				}, envOf(t, c))
			}
		})
	}
}

// The agents' claims need as many replica acknowledgements as the janitor's
// drains; the default (automatic) adds nothing, so upgrading does not
// replace every pod.
func TestNewPodInjectsReplicaAcks(t *testing.T) {
	ap := agentPool()
	env := envOf(t, newPod(ap, defaultSettings(t), "h", "gen-1", Injection{ReplicaAcks: 2}).Spec.Containers[0])
	require.Equal(t, corev1.EnvVar{Name: "REDIS_REPLICA_ACKS", Value: "2"}, env["REDIS_REPLICA_ACKS"])
	require.Equal(t, templateHash(ap, defaultSettings(t), Injection{KeyPrefix: "ss"}),
		templateHash(ap, defaultSettings(t), Injection{KeyPrefix: "ss", ReplicaAcks: 0}))
	require.NotEqual(t, templateHash(ap, defaultSettings(t), Injection{}),
		templateHash(ap, defaultSettings(t), Injection{ReplicaAcks: 1}))
}

func TestNewPodIdentityOverridesTemplateEnv(t *testing.T) {
	ap := agentPool(withEnv(
		corev1.EnvVar{Name: "FOO", Value: "bar"},
		corev1.EnvVar{Name: "POOL_NAMESPACE", Value: "other-ns"},
		corev1.EnvVar{Name: "POOL_NAME", Value: "other-pool"},
		corev1.EnvVar{Name: "POD_NAME", Value: "someone-else"},
		corev1.EnvVar{Name: "POD_UID", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "uid"}}},
		corev1.EnvVar{Name: "PLAN_TIMEOUT", Value: "1s"},
		corev1.EnvVar{Name: EnvIdentityPool, Value: "other-pool"},
		corev1.EnvVar{Name: EnvIdentityName, Value: "someone-else"},
	))
	env := envOf(t, newPod(ap, defaultSettings(t), "h", "gen-1", Injection{}).Spec.Containers[0])
	require.Equal(t, fieldEnv(EnvIdentityPool, "metadata.labels['slotscaler.io/pool']"), env[EnvIdentityPool])
	require.Equal(t, fieldEnv(EnvIdentityName, "metadata.name"), env[EnvIdentityName])
	require.Equal(t, corev1.EnvVar{Name: "FOO", Value: "bar"}, env["FOO"])
	require.Equal(t, fieldEnv("POOL_NAMESPACE", "metadata.namespace"), env["POOL_NAMESPACE"])
	require.Equal(t, corev1.EnvVar{Name: "POOL_NAME", Value: "pool-a"}, env["POOL_NAME"])
	require.Equal(t, fieldEnv("POD_NAME", "metadata.name"), env["POD_NAME"])
	require.Equal(t, fieldEnv("POD_UID", "metadata.uid"), env["POD_UID"])
	require.Equal(t, corev1.EnvVar{Name: "PLAN_TIMEOUT", Value: "1h0m0s"}, env["PLAN_TIMEOUT"])
	require.NotContains(t, env, "KEY_PREFIX", "no key prefix injected when empty")
	require.NotContains(t, env, "REDIS_REPLICA_ACKS", "automatic replica acknowledgements: nothing injected, the template hash unchanged")
	require.NotContains(t, env, "REDIS_URL", "no Redis URL injected when neither URL nor secret is set")
}

// A template listing an identity variable twice must not keep its own
// value beside the janitor's: the kubelet lets the last definition win.
func TestNewPodIdentityOverridesDuplicatedTemplateEnv(t *testing.T) {
	ap := agentPool(withEnv(
		corev1.EnvVar{Name: "POD_NAME", Value: "someone-else"},
		corev1.EnvVar{Name: "POD_NAME", Value: "someone-else"},
		corev1.EnvVar{Name: "POOL_NAME", Value: "other-pool"},
		corev1.EnvVar{Name: "POOL_NAME", Value: "other-pool"},
	))
	c := newPod(ap, defaultSettings(t), "h", "gen-1", Injection{}).Spec.Containers[0]
	for _, e := range c.Env {
		switch e.Name {
		case "POD_NAME":
			require.Equal(t, fieldEnv("POD_NAME", "metadata.name"), e)
		case "POOL_NAME":
			require.Equal(t, corev1.EnvVar{Name: "POOL_NAME", Value: "pool-a"}, e)
		}
	}
}

func TestNewPodRedisURL(t *testing.T) {
	secretRef := corev1.EnvVar{Name: "REDIS_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "redis"}, Key: "url",
	}}}
	fromConfigMap := corev1.EnvVar{Name: "REDIS_URL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "redis",
	}}}
	for name, tc := range map[string]struct {
		template []corev1.EnvVar
		inject   Injection
		want     *corev1.EnvVar // nil: no REDIS_URL
	}{
		"template value is kept over URL and secret": {
			template: []corev1.EnvVar{{Name: "REDIS_URL", Value: "redis://mine"}},
			inject:   Injection{RedisURL: "redis://r", RedisSecretName: "redis", RedisSecretKey: "url"},
			want:     &corev1.EnvVar{Name: "REDIS_URL", Value: "redis://mine"},
		},
		"template valueFrom is kept": {
			template: []corev1.EnvVar{fromConfigMap},
			inject:   Injection{RedisURL: "redis://r"},
			want:     &fromConfigMap,
		},
		"secret reference when a secret is set": {
			inject: Injection{RedisSecretName: "redis", RedisSecretKey: "url"},
			want:   &secretRef,
		},
		"secret reference preferred over a plain URL": {
			inject: Injection{RedisURL: "redis://:password@r", RedisSecretName: "redis", RedisSecretKey: "url"},
			want:   &secretRef,
		},
		"plain URL otherwise": {
			inject: Injection{RedisURL: "redis://r:6379"},
			want:   &corev1.EnvVar{Name: "REDIS_URL", Value: "redis://r:6379"},
		},
		"nothing when neither is set": {},
	} {
		t.Run(name, func(t *testing.T) {
			p := newPod(agentPool(withEnv(tc.template...)), defaultSettings(t), "h", "gen-1", tc.inject)
			env := envOf(t, p.Spec.Containers[0])
			if tc.want == nil {
				require.NotContains(t, env, "REDIS_URL")
				return
			}
			require.Equal(t, *tc.want, env["REDIS_URL"])
		})
	}
}

func TestNewPodDoesNotChangeTheTemplate(t *testing.T) {
	grace := int64(5)
	ap := agentPool(func(ap *v1alpha1.AgentPool) {
		ap.Spec.Template.Annotations = map[string]string{"a": "b"}
		ap.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
		ap.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
		ap.Spec.Template.Spec.Containers = []corev1.Container{{
			Name: AgentContainer, Image: "agent:1",
			Env: make([]corev1.EnvVar, 1, 16), // spare capacity: appends must not reach the template's array
		}}
		ap.Spec.Template.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "POD_NAME", Value: "x"}
	})
	before := ap.DeepCopy()

	p := newPod(ap, defaultSettings(t), "h", "gen-1", Injection{KeyPrefix: "ss", RedisURL: "redis://r"})
	require.Equal(t, before, ap)

	// Changing the pod must not reach the template either.
	p.Labels["x"] = "y"
	p.Annotations["a"] = "changed"
	p.Spec.Containers[0].Env[0].Value = "changed"
	p.Spec.Containers[0].Image = "changed"
	*p.Spec.TerminationGracePeriodSeconds = 1
	require.Equal(t, before, ap)
	require.Equal(t, "x", ap.Spec.Template.Spec.Containers[0].Env[:1][0].Value)
	require.Equal(t, "", ap.Spec.Template.Spec.Containers[0].Env[:2][1].Name, "spare capacity untouched")
}

// Pod names are "<pool>-<5 random characters>" (utilrand's alphabet).
var podSuffix = regexp.MustCompile(`^-[bcdfghjklmnpqrstvwxz2456789]{5}$`)

func TestPodNamesAreDNSLabels(t *testing.T) {
	for name, pool := range map[string]string{
		"short":         "pool-a",
		"57 characters": strings.Repeat("a", MaxPoolName),
	} {
		t.Run(name, func(t *testing.T) {
			ap := agentPool(func(ap *v1alpha1.AgentPool) { ap.Name = pool })
			seen := map[string]bool{}
			for range 20 {
				p := newPod(ap, defaultSettings(t), "h", "gen-1", Injection{})
				n := p.Name
				require.True(t, strings.HasPrefix(n, pool), n)
				require.Regexp(t, podSuffix, n[len(pool):])
				require.Empty(t, validation.IsDNS1123Label(n), n)
				for k, v := range p.Labels {
					require.Emptyf(t, validation.IsValidLabelValue(v), "label %s=%s", k, v)
				}
				seen[n] = true
			}
			require.Greater(t, len(seen), 1, "names are random")
		})
	}
}

// Pool names that could not give valid pod names or label values are
// refused before any pod is built.
func TestSettingsOfRefusesPoolNamesThatCannotNamePods(t *testing.T) {
	for name, pool := range map[string]string{
		"58 characters":  strings.Repeat("b", MaxPoolName+1),
		"253 characters": strings.Repeat("d", 253),
		"with dots":      "pool.a.b",
		"dot at the cut": strings.Repeat("a", 56) + ".bbbb",
	} {
		t.Run(name, func(t *testing.T) {
			ap := agentPool(func(ap *v1alpha1.AgentPool) { ap.Name = pool })
			_, err := settingsOf(ap)
			require.ErrorContains(t, err, "metadata.name")
		})
	}
}

func TestTemplateHash(t *testing.T) {
	base := agentPool()
	s := defaultSettings(t)
	inj := Injection{KeyPrefix: "ss", RedisURL: "redis://r"}
	h := templateHash(base, s, inj)
	require.Regexp(t, `^[0-9a-f]{10}$`, h)

	t.Run("stable for equal input", func(t *testing.T) {
		for range 5 {
			require.Equal(t, h, templateHash(base, s, inj))
			require.Equal(t, h, templateHash(base.DeepCopy(), s, Injection{KeyPrefix: "ss", RedisURL: "redis://r"}))
		}
	})

	changes := map[string]func(ap *v1alpha1.AgentPool, s *settings, inj *Injection){
		"image": func(ap *v1alpha1.AgentPool, _ *settings, _ *Injection) {
			ap.Spec.Template.Spec.Containers[0].Image = "agent:2"
		},
		"template label": func(ap *v1alpha1.AgentPool, _ *settings, _ *Injection) { ap.Spec.Template.Labels["v"] = "2" },
		"template env": func(ap *v1alpha1.AgentPool, _ *settings, _ *Injection) {
			ap.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
		},
		"plan timeout":     func(_ *v1alpha1.AgentPool, s *settings, _ *Injection) { s.PlanTimeout = 2 * time.Hour },
		"apply timeout":    func(_ *v1alpha1.AgentPool, s *settings, _ *Injection) { s.ApplyTimeout = time.Minute },
		"key prefix":       func(_ *v1alpha1.AgentPool, _ *settings, inj *Injection) { inj.KeyPrefix = "other" },
		"redis URL":        func(_ *v1alpha1.AgentPool, _ *settings, inj *Injection) { inj.RedisURL = "redis://other" },
		"redis secret":     func(_ *v1alpha1.AgentPool, _ *settings, inj *Injection) { inj.RedisSecretName = "redis" },
		"redis secret key": func(_ *v1alpha1.AgentPool, _ *settings, inj *Injection) { inj.RedisSecretKey = "url" },
	}
	for name, change := range changes {
		t.Run("changes with "+name, func(t *testing.T) {
			ap, s2, inj2 := base.DeepCopy(), s, inj
			change(ap, &s2, &inj2)
			require.NotEqual(t, h, templateHash(ap, s2, inj2))
		})
	}

	unchanged := map[string]func(ap *v1alpha1.AgentPool, s *settings){
		"replicas": func(ap *v1alpha1.AgentPool, s *settings) {
			ap.Spec.Replicas = i32(9)
			s.Replicas = 9
		},
		"idleFor": func(ap *v1alpha1.AgentPool, s *settings) {
			ap.Spec.IdleFor = dur(time.Hour)
			s.IdleFor = time.Hour
		},
		"deletions per minute": func(ap *v1alpha1.AgentPool, s *settings) {
			ap.Spec.MaxDeletionsPerMinute = i32(1)
			s.MaxDeletionsPerMinute = 1
		},
		"status": func(ap *v1alpha1.AgentPool, _ *settings) { ap.Status.Replicas = 4 },
	}
	for name, change := range unchanged {
		t.Run("scaling settings do not replace pods: "+name, func(t *testing.T) {
			ap, s2 := base.DeepCopy(), s
			change(ap, &s2)
			require.Equal(t, h, templateHash(ap, s2, inj))
		})
	}
}
