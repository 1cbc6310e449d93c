package janitor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/slotscaler/slotscaler/pkg/apis/v1alpha1"
	"github.com/slotscaler/slotscaler/pkg/notify"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Defaults of AgentPool fields left empty.
const (
	DefaultIdleFor               = 60 * time.Second
	DefaultMaxDeletionsPerMinute = 60
	DefaultPhaseTimeout          = time.Hour
	// graceMargin is added to the longest phase timeout for the pod's
	// termination grace period: the agent's kill grace plus time to record.
	graceMargin = 60 * time.Second
	// MaxPoolName keeps pod names ("<pool>-xxxxx") DNS labels and the pool
	// label value within 63 characters.
	MaxPoolName = 57
)

// settings is an AgentPool's spec with defaults applied and checked.
type settings struct {
	Store                 slots.PoolConfig
	Replicas              int
	IdleFor               time.Duration
	MaxDeletionsPerMinute int
	PlanTimeout           time.Duration
	ApplyTimeout          time.Duration
	// DeletionTimeout: spec.deletion.timeout, else the longer phase timeout.
	DeletionTimeout time.Duration
	// Recycle: pods are replaced after this many tasks or this age (0: not
	// by that measure).
	RecycleAfterTasks int
	RecycleAfterAge   time.Duration
	// Webhooks: spec.notifications, as references to Secret keys (the
	// janitor never reads a Secret; the scaler's notifier does).
	Webhooks []notify.PoolWebhook
}

// settingsOf applies defaults and validates an AgentPool's spec. An error
// names the field.
func settingsOf(ap *v1alpha1.AgentPool) (settings, error) {
	sp := ap.Spec
	cfg := slots.DefaultPoolConfig()
	cfg.Managed = true
	s := settings{
		IdleFor:               DefaultIdleFor,
		MaxDeletionsPerMinute: DefaultMaxDeletionsPerMinute,
		PlanTimeout:           DefaultPhaseTimeout,
		ApplyTimeout:          DefaultPhaseTimeout,
	}
	var errs []error
	if len(validation.IsDNS1123Label(ap.Name)) > 0 || len(ap.Name) > MaxPoolName {
		return settings{}, fmt.Errorf("metadata.name %q: want a DNS label of at most %d characters (pod names are <pool>-xxxxx)", ap.Name, MaxPoolName)
	}
	if sp.Replicas != nil {
		s.Replicas = int(*sp.Replicas)
	}
	if s.Replicas < 0 {
		errs = append(errs, fmt.Errorf("spec.replicas %d must not be negative", s.Replicas))
	}
	if len(sp.Template.Spec.Containers) == 0 {
		errs = append(errs, errors.New("spec.template.spec.containers must name the agent container"))
	}
	if len(sp.Slots) > 0 {
		cfg.Policy = slots.SlotPolicy{}
		for i, sl := range sp.Slots {
			types := make([]slots.TaskType, len(sl.Types))
			for j, t := range sl.Types {
				types[j] = slots.TaskType(t)
				if !slices.Contains(slots.TaskTypes, types[j]) {
					errs = append(errs, fmt.Errorf("spec.slots[%d]: unknown task type %q (want one of %v)", i, t, slots.TaskTypes))
				}
			}
			if len(types) == 0 {
				errs = append(errs, fmt.Errorf("spec.slots[%d]: no task type", i))
			}
			cfg.Policy.Slots = append(cfg.Policy.Slots, types)
		}
	}
	duration := func(field string, d *metav1.Duration, into *time.Duration) {
		if d == nil {
			return
		}
		if d.Duration < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s %v must be positive (at least 1ms)", field, d.Duration))
			return
		}
		*into = d.Duration
	}
	duration("spec.idleFor", sp.IdleFor, &s.IdleFor)
	duration("spec.reservationTTL", sp.ReservationTTL, &cfg.ReservationTTL)
	duration("spec.heartbeatTimeout", sp.HeartbeatTimeout, &cfg.HeartbeatTimeout)
	duration("spec.phaseTimeouts.plan", sp.PhaseTimeouts.Plan, &s.PlanTimeout)
	duration("spec.phaseTimeouts.apply", sp.PhaseTimeouts.Apply, &s.ApplyTimeout)
	duration("spec.queue.maxAge", sp.Queue.MaxAge, &cfg.MaxQueueAge)
	duration("spec.deletion.timeout", sp.Deletion.Timeout, &s.DeletionTimeout)
	if r := sp.Recycle; r != nil {
		duration("spec.recycle.afterAge", r.AfterAge, &s.RecycleAfterAge)
	}
	positive := func(field string, v *int32, into *int) {
		if v == nil {
			return
		}
		if *v < 1 {
			errs = append(errs, fmt.Errorf("%s %d must be at least 1", field, *v))
			return
		}
		*into = int(*v)
	}
	positive("spec.maxDeletionsPerMinute", sp.MaxDeletionsPerMinute, &s.MaxDeletionsPerMinute)
	positive("spec.maxAttempts", sp.MaxAttempts, &cfg.MaxAttempts)
	positive("spec.queue.limit", sp.Queue.Limit, &cfg.QueueLimit)
	if r := sp.Recycle; r != nil {
		positive("spec.recycle.afterTasks", r.AfterTasks, &s.RecycleAfterTasks)
	}
	if len(errs) > 0 {
		return settings{}, errors.Join(errs...)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("spec: %w", err))
	} else if !slices.ContainsFunc(cfg.Policy.Slots, func(ts []slots.TaskType) bool { return slices.Contains(ts, slots.Plan) }) {
		errs = append(errs, errors.New("spec.slots: no slot runs plan, so no task could ever run"))
	}
	s.Store = cfg
	if s.DeletionTimeout == 0 {
		s.DeletionTimeout = s.longestPhase()
	}
	if n := sp.Notifications; n != nil {
		for _, w := range n.Webhooks {
			h := notify.PoolWebhook{Name: w.Name, Format: w.Format,
				URL: notify.SecretRef{Name: w.URLSecretRef.Name, Key: w.URLSecretRef.Key}}
			for _, e := range w.Events {
				h.Events = append(h.Events, string(e))
			}
			if r := w.SigningSecretRef; r != nil {
				h.SigningSecret = &notify.SecretRef{Name: r.Name, Key: r.Key}
			}
			s.Webhooks = append(s.Webhooks, h)
		}
	}
	return s, errors.Join(errs...)
}

// storeKey identifies the store config last declared, so a pass declares
// the pool again only when it changed.
func (s settings) storeKey() string { return fmt.Sprintf("%+v", s.Store) }

// longestPhase is the longest a phase may run.
func (s settings) longestPhase() time.Duration { return max(s.PlanTimeout, s.ApplyTimeout) }

// templateHash identifies what a pod is built from: the template and the
// settings injected into it. Pods with another hash are replaced.
func templateHash(ap *v1alpha1.AgentPool, s settings, inject Injection) string {
	// These types always marshal (no channels, funcs or cyclic values).
	b, _ := json.Marshal(struct {
		T      any
		P, A   time.Duration
		Inject Injection
	}{ap.Spec.Template, s.PlanTimeout, s.ApplyTimeout, inject})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:10]
}
