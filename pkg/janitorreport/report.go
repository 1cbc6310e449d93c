// Package janitorreport is the janitor's report of each pool, kept in Redis
// for the dashboard: how many pods the pool wants and has, what the janitor
// waits for before it can get there (busy pods, idleFor, the deletion
// budget, a data-loss hold, a create back-off, agents registering) and what
// it did last. The janitor (pkg/janitor) writes it, the dashboard reads it;
// the dashboard never talks to the Kubernetes API, and the janitor's logs
// and events are where an operator would otherwise have to look.
//
// # Key
//
// One string per pool, its key defined here and only here (Key):
//
//	<prefix>:janitor:v1:{<namespace>/<name>}   the report as JSON
//
// The pool's hash tag puts it on the node of the pool's own keys. Like the
// pool's history it is outside "<prefix>:v1:{ns/name}:*", the only keys a
// pool's agents may use (slots.PoolACL): agents can neither read nor forge
// it; the control plane's user ("~<prefix>:*") writes and reads it.
//
// # When it is written
//
// At the end of a pass over a pool, only when its content changed (Due): the
// janitor keeps the last report it wrote of each pool in memory and
// compares, so a pool at rest costs no write per pass. The content holds no
// number that moves by itself: a wait says until when (Wait.Until), never
// for how much longer, so a pool waiting for idleFor is one write, not one
// per pass. An unchanged report is written again once RefreshInterval has
// passed, only to move its time: a report older than its StaleAfter means no
// janitor is working on the pool (stopped, not leading, Redis writes
// failing), which the dashboard says. Every write sets a TTL (at least
// DefaultTTL), so the report of a deleted pool goes by itself.
//
// Times are Redis's clock: the janitor stamps the report with the time of
// the pass's slot-store snapshot, the clock of every time the pass decides
// from, and the dashboard compares it with Redis's clock too. The one
// exception is the report of a pool whose spec is invalid, for which no
// snapshot is read: the janitor's clock. A dry-run janitor writes no
// report (it writes nothing to Redis).
package janitorreport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// keySpace is the report's namespace under the installation's prefix:
// outside the pools' own key spaces (see the package doc).
const keySpace = "janitor:v1"

// Key is the Redis key of a pool's report.
func Key(prefix string, pool slots.PoolID) string {
	if prefix == "" {
		prefix = slots.DefaultPrefix
	}
	return prefix + ":" + keySpace + ":{" + pool.String() + "}"
}

const (
	// DefaultTTL is the least a written report lives: the report of a
	// deleted pool (which nobody refreshes) goes an hour after the last
	// write.
	DefaultTTL = time.Hour
	// RefreshInterval: an unchanged report is written again this long
	// after the last write, to move its time (staleness).
	RefreshInterval = time.Minute
	// MaxActions is how many of the janitor's last actions a report keeps.
	MaxActions = 10
	// MaxPodNames is how many pod names an action lists; Count says how
	// many pods it concerned.
	MaxPodNames = 5
)

// Kinds of Wait.
const (
	// WaitBusy: busy pods that no longer count (surplus, outdated, due for
	// recycling, foreign, stopping) are cordoned and go once idle.
	WaitBusy = "busy"
	// WaitIdleFor: surplus pods are idle, not yet for the pool's idleFor.
	WaitIdleFor = "idle-for"
	// WaitDeletionBudget: idle pods that could go wait for the pool's
	// maxDeletionsPerMinute.
	WaitDeletionBudget = "deletion-budget"
	// WaitDataLossHold: Redis lost the pool's data; nothing is removed
	// until the agents registered again.
	WaitDataLossHold = "data-loss-hold"
	// WaitCreateBackoff: pods of the template ended before their agent
	// registered; creating replacements backs off.
	WaitCreateBackoff = "create-backoff"
	// WaitCannotStart: pods cannot start (image pull, crash loop…).
	WaitCannotStart = "cannot-start"
	// WaitRegistration: a pod to remove has an expected record while its
	// agent runs, maybe a registration Redis lost; it is not removed until
	// that is settled.
	WaitRegistration = "registration"
	// WaitStarting: the pool's pods whose agent has not registered yet.
	WaitStarting = "starting"
	// WaitTemplateRefused: the pod policy refuses the template; no pod is
	// created.
	WaitTemplateRefused = "template-refused"
	// WaitDeleting: the pool is deleted; its pods go once idle.
	WaitDeleting = "deleting"
	// WaitInvalidSpec: the AgentPool's spec is invalid; nothing is done.
	WaitInvalidSpec = "invalid-spec"
)

// Kinds of Action.
const (
	ActionCreated       = "created"        // pods created from the template
	ActionCordoned      = "cordoned"       // busy pods cordoned: no new work, they go once idle
	ActionUncordoned    = "uncordoned"     // cordoned pods taken back (replicas rose)
	ActionDrained       = "drained"        // idle pods drained in Redis, then deleted
	ActionRecycled      = "recycled"       // pods taken out for recycling (drained and deleted, or cordoned while busy)
	ActionDeleted       = "deleted"        // pods deleted without a drain: their agent is gone
	ActionRemovedRecord = "removed-record" // records removed from Redis: their pod object is gone
)

// Report is the janitor's report of one pool.
type Report struct {
	// At is when the janitor wrote the report (Redis's clock, the time of
	// the pass's snapshot); Changed when its content last changed.
	At      time.Time `json:"at"`
	Changed time.Time `json:"changed"`
	// StaleAfter: the janitor writes the report again before this time
	// while it works on the pool; a report read later is stale.
	StaleAfter time.Time `json:"stale_after"`
	Content
}

// Content is what a report says; Due compares it, not the times.
type Content struct {
	Pool string `json:"pool"`
	// Janitor is the identity of the janitor that wrote it (its Lease
	// identity, the host name without leader election); "" when unknown.
	Janitor string `json:"janitor,omitempty"`
	// Replicas is spec.replicas (0 while the pool is being deleted, -1
	// when the spec is invalid); Live the pods that count toward it
	// (status.replicas: pending ones included, surplus, cordoned,
	// draining and lost ones left out).
	Replicas int `json:"replicas"`
	Live     int `json:"live"`
	// Summary is one line: at the desired size, or how far from it.
	Summary string `json:"summary"`
	// Waiting is what the janitor waits for, most pressing first; empty
	// when nothing.
	Waiting []Wait `json:"waiting"`
	// Actions are its last actions on the pool, newest first, at most
	// MaxActions.
	Actions []Action `json:"actions"`
}

// Wait is one thing the janitor waits for.
type Wait struct {
	Kind string `json:"kind"`
	// Text says it in words, with the numbers.
	Text string `json:"text"`
	// Pods is how many pods wait for it (0 when it is not about pods).
	Pods int `json:"pods,omitempty"`
	// Until is when the wait ends, if the janitor knows (Redis's clock).
	Until *time.Time `json:"until,omitempty"`
}

// Action is what the janitor did to some pods in one pass, for one reason.
type Action struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	// Pods names at most MaxPodNames of the Count pods.
	Pods   []string `json:"pods"`
	Count  int      `json:"count"`
	Reason string   `json:"reason"`
}

// Due says whether a pass whose report has content next must write it
// (last is the report written before, nil when none), and whether that is a
// change of content rather than a refresh.
func Due(last *Report, next Content, now time.Time, refresh time.Duration) (write, changed bool) {
	if last == nil || !Same(last.Content, next) {
		return true, true
	}
	return !now.Before(last.At.Add(refresh)), false
}

// Same reports whether two contents say the same. Compared as JSON, the
// form they are stored in: a monotonic clock reading does not count, a
// location does (the janitor writes every time in UTC).
func Same(a, b Content) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}

// Merge puts a pass's actions before the earlier ones, keeping MaxActions.
func Merge(newest, earlier []Action) []Action {
	out := make([]Action, 0, min(len(newest)+len(earlier), MaxActions))
	for _, a := range [][]Action{newest, earlier} {
		for _, x := range a {
			if len(out) == MaxActions {
				return out
			}
			out = append(out, x)
		}
	}
	return out
}

// Store reads and writes the reports of the installation with one key
// prefix.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewStore returns the reports under prefix (slots.DefaultPrefix when
// empty) in rdb.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = slots.DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix, ttl: DefaultTTL}
}

// Write replaces the pool's report. It lives DefaultTTL, or twice as long
// as the report stays fresh when that is longer.
func (s *Store) Write(ctx context.Context, pool slots.PoolID, r Report) error {
	if err := pool.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding the janitor report of %s: %w", pool, err)
	}
	ttl := max(s.ttl, 2*r.StaleAfter.Sub(r.At))
	if err := s.rdb.Set(ctx, Key(s.prefix, pool), b, ttl).Err(); err != nil {
		return fmt.Errorf("writing the janitor report of %s: %w", pool, err)
	}
	return nil
}

// Read returns the pool's report; found is false when there is none (never
// written, or expired).
func (s *Store) Read(ctx context.Context, pool slots.PoolID) (r Report, found bool, err error) {
	if err := pool.Validate(); err != nil {
		return Report{}, false, err
	}
	b, err := s.rdb.Get(ctx, Key(s.prefix, pool)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Report{}, false, nil
	}
	if err != nil {
		return Report{}, false, fmt.Errorf("reading the janitor report of %s: %w", pool, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, false, fmt.Errorf("decoding the janitor report of %s: %w", pool, err)
	}
	return r, true, nil
}
