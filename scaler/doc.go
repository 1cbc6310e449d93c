// Command scaler is slotscaler's control plane: one binary, three roles,
// chosen by its first argument.
//
//   - scaler [flags]: the KEDA external scaler. KEDA calls it over gRPC to
//     learn how many agent pods each pool needs, which it reads from the
//     slot store.
//   - scaler janitor [flags]: the pool controller (package janitor). It
//     makes each AgentPool's pods match spec.replicas: it creates agent pods
//     from the pool's template and removes only pods it has drained in the
//     slot store (proven idle, none reserved). It declares each AgentPool in
//     the slot store too.
//   - scaler declare-pool [flags]: declares a static pool, one whose agents
//     run outside Kubernetes, in the slot store, and exits.
//
// The pool controller is named janitor, though it creates pods as much as
// it removes them, because the name is part of every installation: the
// command (`scaler janitor`), its metrics (slotscaler_janitor_*), its
// Lease, user agent and event source (slotscaler-janitor) are what the Helm
// chart, dashboards, alerts and RBAC refer to, and a rename would break
// them on upgrade.
//
// One binary, not three, because the roles share the slot-store client,
// its configuration and its version: the scaler, the janitor and the
// agents must agree on the store's data model.
package main
