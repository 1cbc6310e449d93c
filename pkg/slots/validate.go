package slots

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what callers may send. Pool and pod names follow Kubernetes
// (namespace: DNS-1123 label; AgentPool and pod names: DNS-1123 subdomain),
// so every name that reaches Redis is one Kubernetes would accept, and none
// can contain the key separators ("{", "}", ":", "#", "|").
const (
	MaxNamespaceLen   = 63
	MaxNameLen        = 253
	MaxTaskIDLen      = 128
	MaxUIDLen         = 128
	MaxActorLen       = 256
	MaxNoteLen        = 1024
	DefaultMaxPayload = 1 << 20
	MaxSlots          = 64
)

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	taskIDRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	uidRe        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// Validate checks the pool's namespace and name.
func (p PoolID) Validate() error {
	if len(p.Namespace) == 0 || len(p.Namespace) > MaxNamespaceLen || !dnsLabel.MatchString(p.Namespace) {
		return fmt.Errorf("%w: namespace %q must be a DNS-1123 label (lowercase alphanumerics and '-', at most %d characters)", ErrInvalidPool, p.Namespace, MaxNamespaceLen)
	}
	if len(p.Name) == 0 || len(p.Name) > MaxNameLen || !dnsSubdomain.MatchString(p.Name) {
		return fmt.Errorf("%w: name %q must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most %d characters)", ErrInvalidPool, p.Name, MaxNameLen)
	}
	return nil
}

func validatePod(name, uid string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !dnsSubdomain.MatchString(name) {
		return fmt.Errorf("%w: name %q must be a DNS-1123 subdomain", ErrInvalidPod, name)
	}
	if uid != "" && (len(uid) > MaxUIDLen || !uidRe.MatchString(uid)) {
		return fmt.Errorf("%w: uid %q must be 1-%d characters of [A-Za-z0-9._-]", ErrInvalidPod, uid, MaxUIDLen)
	}
	return nil
}

func validatePodUID(name, uid string) error {
	if uid == "" {
		return fmt.Errorf("%w: pod %s: uid is required", ErrInvalidPod, name)
	}
	return validatePod(name, uid)
}

// ValidateTaskID checks a task id: 1-128 characters of [A-Za-z0-9._-], not
// starting with a punctuation mark.
func ValidateTaskID(id string) error {
	if len(id) == 0 || len(id) > MaxTaskIDLen || !taskIDRe.MatchString(id) {
		return fmt.Errorf("%w: id %q must be 1-%d characters of [A-Za-z0-9._-] starting with a letter or digit", ErrInvalidTask, id, MaxTaskIDLen)
	}
	return nil
}

// ValidateTaskType checks that t is a type the store knows.
func ValidateTaskType(t TaskType) error {
	if !slices.Contains(TaskTypes, t) {
		return fmt.Errorf("%w: unknown type %q (want one of %v)", ErrInvalidTask, t, TaskTypes)
	}
	return nil
}

func validateActor(by string) error {
	if len(by) > MaxActorLen {
		return fmt.Errorf("%w: actor name longer than %d bytes", ErrInvalidTask, MaxActorLen)
	}
	return nil
}

// validateNote bounds a decision's note: text, no control characters but
// newlines and tabs (it is shown in pages and logs).
func validateNote(note string) error {
	if len(note) > MaxNoteLen {
		return fmt.Errorf("%w: note longer than %d bytes", ErrInvalidTask, MaxNoteLen)
	}
	if !utf8.ValidString(note) {
		return fmt.Errorf("%w: note is not UTF-8", ErrInvalidTask)
	}
	if strings.ContainsFunc(note, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) {
		return fmt.Errorf("%w: note holds control characters", ErrInvalidTask)
	}
	return nil
}

// Validate checks a pool configuration.
func (c PoolConfig) Validate() error {
	if len(c.Policy.Slots) == 0 || len(c.Policy.Slots) > MaxSlots {
		return fmt.Errorf("%w: slot policy needs 1-%d slots, has %d", ErrInvalidConfig, MaxSlots, len(c.Policy.Slots))
	}
	for i, types := range c.Policy.Slots {
		if len(types) == 0 {
			return fmt.Errorf("%w: slot %d allows no task type", ErrInvalidConfig, i)
		}
		for _, t := range types {
			if err := ValidateTaskType(t); err != nil {
				return fmt.Errorf("%w: slot %d: %w", ErrInvalidConfig, i, err)
			}
		}
	}
	switch {
	case c.HeartbeatTimeout < 1e6:
		return fmt.Errorf("%w: heartbeat timeout %v must be at least 1ms", ErrInvalidConfig, c.HeartbeatTimeout)
	case c.ReservationTTL < 1e6:
		return fmt.Errorf("%w: reservation TTL %v must be at least 1ms", ErrInvalidConfig, c.ReservationTTL)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: max attempts %d must be at least 1", ErrInvalidConfig, c.MaxAttempts)
	case c.QueueLimit < 1:
		return fmt.Errorf("%w: queue limit %d must be at least 1", ErrInvalidConfig, c.QueueLimit)
	case c.MaxQueueAge < 0:
		return fmt.Errorf("%w: max queue age %v must not be negative", ErrInvalidConfig, c.MaxQueueAge)
	case c.Retention < 1e6:
		return fmt.Errorf("%w: retention %v must be at least 1ms", ErrInvalidConfig, c.Retention)
	case c.RetentionCount < 1:
		return fmt.Errorf("%w: retention count %d must be at least 1", ErrInvalidConfig, c.RetentionCount)
	case c.EventCap < 1:
		return fmt.Errorf("%w: event cap %d must be at least 1", ErrInvalidConfig, c.EventCap)
	case c.HPATolerance.validate() != nil:
		return c.HPATolerance.validate()
	}
	return nil
}
