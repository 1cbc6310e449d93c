// Package notify delivers webhooks for pool events: a plan_and_apply
// awaiting approval, a reservation about to expire, a task that succeeded,
// failed or expired. It runs inside the scaler binary (scaler --notify-config).
//
// # Delivery: at least once, from the pool's own event stream
//
// Every pool already writes its state changes to an event stream (the slot
// store's lib.lua emit, slots.Store.EventStreamKey). Each (pool, webhook)
// pair has a Redis consumer group on that stream, named after the webhook
// (Group). A worker per pair reads new entries with XREADGROUP, posts the
// ones its webhook wants and XACKs an entry only after a 2xx or after giving
// up on it (a dead letter). Entries a crashed scaler left pending are taken
// over by another (or the restarted) one with XAUTOCLAIM once idle for
// ClaimIdle; the worker holding an entry touches it (XCLAIM to itself) before
// each attempt so a slow, retried delivery is not taken over. So an event is
// delivered once across scaler replicas, twice only when a scaler died
// between the receiver's 2xx and its XACK: at least once, and every body
// carries a stable id (also in the X-Slotscaler-Event-Id header) receivers
// deduplicate with.
//
// One group per webhook (not one per pool) gives each webhook its own
// position: a receiver that is down holds back its own deliveries only;
// every pair has its own goroutine, so neither other webhooks nor other
// pools wait for it.
//
// reservation-expiring is not a state change, so it is not in the pool's
// stream: a periodic check (Expiring) reads the pools' reservations and, for
// each one ending within the lead time, adds one entry to the notifier's own
// stream of the pool (a Lua script: SET NX of a "sent" marker that lives
// until the reservation's deadline, then XADD, atomically, so replicas
// checking at once add it once). Workers read both streams with one
// XREADGROUP (both keys carry the pool's hash tag).
//
// # At rest
//
// A worker with nothing to do sends nothing (watch.go): every PollInterval
// one round trip per Redis node, whatever the number of pools, finds the
// pools whose event stream moved (one XREAD of them all after the last ids
// seen; on a Cluster, each stream's last entry, pipelined) and wakes their
// workers; every ClaimIdle/3 one
// pipeline lists the groups of both streams of every pool, so only workers
// whose group holds pending entries run XAUTOCLAIM, and a worker whose
// group lags its stream (a notice another replica queued) is woken. Each
// worker still reads every SafetyPollInterval on its own.
//
// # Removed webhooks
//
// A webhook removed from the config file or from an AgentPool leaves
// groups behind on both streams of each of its pools. A sync (groups.go)
// lists the groups and destroys those named like the notifier's own
// (Group) whose webhook this replica would deliver if configured, once the
// webhook has been missing from its configuration for GroupGrace and no
// notifier has written the webhook's status header (rewritten at least
// every GroupGrace/2 by every replica delivering it) for as long: during a
// rollout the replica that still has the webhook keeps its groups. The
// check, the XGROUP DESTROY and the removal of the webhook's delivery
// status (so the pool page stops listing it) are one script. Groups of declared webhooks
// ("notify:pool:*") are judged only by replicas reading declarations.
//
// # Keys
//
// Defined here and only here (keys.go):
//
//	<prefix>:notify:v1:{ns/name}:ev           the notifier's own stream (reservation-expiring)
//	<prefix>:notify:v1:{ns/name}:sent:<task>:<deadline-ms>   marker: that expiring notice was queued
//	<prefix>:notify:v1:{ns/name}:webhooks     set of the pool's webhook names (for the dashboard)
//	<prefix>:notify:v1:{ns/name}:wh:<webhook> hash: delivery status of one webhook
//
// Like the janitor's report (pkg/janitorreport) they are outside
// "<prefix>:v1:{ns/name}:*", the only keys a pool's agents may use
// (slots.PoolACL): agents can neither read the delivery status nor forge
// notices. No key holds a URL or a secret: those stay in the notifier's
// config file (and the Secrets it is built from); the status holds the
// receiver's host only.
//
// # Signature
//
// With a signing secret, every request carries
//
//	X-Slotscaler-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// as GitHub and Stripe do: the timestamp is signed with the body, so a
// captured request cannot be replayed later than the receiver's tolerance.
// Receivers check it with Verify.
package notify
