// Package janitor is the pool controller: it makes each AgentPool's live
// agent pods match spec.replicas, declaring the pool in the slot store,
// creating pods from the template and removing only pods it has atomically
// drained in the slot store (the README, "Pod lifecycle" and "The janitor
// (pool controller)").
//
// It is one of the three control-plane roles of the scaler binary, run as
// `scaler janitor`, beside the KEDA external scaler and declare-pool. It is
// called the janitor although it creates pods as much as it removes them:
// the command, the metrics (slotscaler_janitor_*), the Lease, user agent and
// event source (slotscaler-janitor) are what the Helm chart, dashboards,
// alerts and RBAC refer to, so the name stays rather than break them.
//
// The controller follows client-go's sample-controller: shared informers for
// AgentPools and pods, one rate-limited workqueue of pool keys, listers (never
// a List per pass), ReplicaSet-style expectations so informer lag never
// creates or deletes too many, events on the pods and pools it acts on. New
// builds its own informers; NewController takes informers the caller owns,
// so a test can fill their caches and run one sync without an API server.
//
// Each pass over a pool reads the pool's slot-store snapshot (one script),
// decides with plan (pure, no I/O), carries the decisions out (actions.go)
// and reports them in the pool's status and events (status.go) and, for the
// dashboard, in the pool's janitor report in Redis (report.go,
// pkg/janitorreport).
//
// Removal is always: pick the pod, Drain it in Redis (which succeeds only
// if every slot is idle and none reserved, and from then on the store never
// gives it work), wait for a replica to have the drain, delete the pod
// object with a UID precondition, and only after the object is gone remove
// its record.
//
// Whoever may create an AgentPool chooses the template of pods the janitor
// creates with its own rights, so every pod is checked against the pod
// policy (pkg/podpolicy, Options.PodPolicy) before it is created: a refused
// template gets no pod (TemplateAllowed False, a Warning event naming the
// field), while its existing pods are kept and only idle surplus goes. The
// pod's identity is injected twice, the second time from the downward API
// only (SLOTSCALER_POD_IDENTITY_*), so the agent can refuse template args
// that claim another pool or pod.
package janitor
