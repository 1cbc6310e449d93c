package janitor

// rest.go: passes over a pool at rest. A pass reads the whole pool from
// Redis (the snapshot, O(pods)) and plans; at rest the plan does nothing,
// pass after pass. So when the last full pass did nothing, a pass first
// reads the pool's change token (slots.Version, O(1)) and skips the
// snapshot and the plan when nothing they depend on can have changed:
//
//   - Redis: the token (generation and change counters) is the one the
//     last full pass's snapshot began with. Every change a snapshot shows
//     moves it, heartbeats that only move deadlines aside (a lost
//     heartbeat is the reaper's event); a new generation (Redis lost the
//     pool's data) changes it too, so the data-loss hold is always decided
//     by a full pass.
//   - Kubernetes: no informer event about the pool, its pods or its HPAs
//     came since that pass (Controller.changed); every such event makes
//     the next pass full.
//   - The clock: no time-based decision falls due. The last full pass said
//     when it wanted to look again (pass.after: idleFor of idle pods,
//     registrations, recycling by age, a deferred status write); a pass
//     after that is full.
//   - And a full pass at least every Options.FullPassInterval, whatever
//     the token says: a safety net for a change that moves nothing.
//
// A skipped pass never acts: it refreshes the pool's Redis credentials and
// the janitor report (both idempotent, neither reading the pool), and
// looks again. Skipping therefore cannot remove a pod or run anything
// twice; a change it missed would only delay an action to the next full
// pass. The promises (no busy or reserved pod removed, no apply run twice)
// rest where they did: on the drain script, which refuses a busy or
// reserved pod atomically, and on the pod object's deletion as the fence.

import (
	"time"

	"github.com/slotscaler/slotscaler/pkg/janitorreport"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DefaultFullPassInterval is Options.FullPassInterval's default.
const DefaultFullPassInterval = 5 * time.Minute

// restMemo is what a full pass that did nothing leaves for the next
// passes to skip on.
type restMemo struct {
	generation, changes string // the snapshot's change token
	settings            string // the spec's store config (settings.storeKey, without the HPA verdict)
	// until (the janitor's clock) is when a time-based decision falls due,
	// or the safety net's full pass.
	until   time.Time
	content janitorreport.Content // the report it wrote, refreshed by skips
}

// atRest says whether a plan does nothing: no pod to create, expect,
// remove, delete, drain, cordon, uncordon or mark, nothing deferred or
// held, no streak ended.
func atRest(out planOutput) bool {
	return len(out.Expect) == 0 && len(out.ExpectStopping) == 0 && len(out.Remove) == 0 && len(out.Dead) == 0 &&
		len(out.Uncordon) == 0 && len(out.Cordon) == 0 && len(out.Drain) == 0 && len(out.Annotate) == 0 &&
		out.Create == 0 && out.Deferred == 0 && out.HoldUntil.IsZero() && out.StreakEnded == 0
}

// rest remembers a full pass that did nothing, so that the next ones may
// skip; any other pass forgets (st.rest is nil from its start).
func (p *pass) rest(specKey string, snap slots.Snapshot, out planOutput, content janitorreport.Content, deleting bool, due time.Duration) {
	every := p.c.opts.FullPassInterval
	if every <= 0 || deleting || p.c.opts.DryRun || !atRest(out) || p.st.policyPending != "" || len(p.done) > 0 ||
		snap.Changes == "" {
		return
	}
	until := p.now.Add(every)
	if due > 0 && p.now.Add(due).Before(until) {
		until = p.now.Add(due)
	}
	p.st.rest = &restMemo{generation: snap.Generation, changes: snap.Changes, settings: specKey, until: until, content: content}
}

// skip is the pass over a pool at rest: it reports whether the pool is
// still at rest (and then when to look again), reading only its change
// token. Any doubt (no memo, a change, an error) answers false: the pass
// goes on in full.
func (p *pass) skip(specKey string) (time.Duration, bool) {
	m := p.st.rest
	if m == nil || m.settings != specKey || !p.now.Before(m.until) {
		return 0, false
	}
	v, err := p.c.store.Version(p.ctx, p.id)
	if err != nil {
		p.log.Debug("reading the pool's change token; passing in full", "err", err)
		return 0, false
	}
	if v.Generation != m.generation || v.Changes != m.changes {
		return 0, false
	}
	p.report(v.At, m.content)
	p.c.m.RestPasses.Inc()
	return min(m.until.Sub(p.now), p.c.opts.SyncInterval), true
}
