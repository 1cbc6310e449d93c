// Package janitor is the pool controller: it makes each AgentPool's live
// agent pods match spec.replicas, creating pods from the template and
// removing only pods it has atomically drained in the slot store (the README,
// "Pod lifecycle" and "The janitor (pool controller)").
//
// The controller follows client-go's sample-controller: shared informers for
// AgentPools and pods, one rate-limited workqueue of pool keys, listers (never
// a List per pass), ReplicaSet-style expectations so informer lag never
// creates or deletes too many, events on the pods and pools it acts on.
//
// Each pass over a pool reads the pool's slot-store snapshot (one script),
// decides with plan (pure, no I/O) and carries the decisions out. Removal is
// always: pick the pod, Drain it in Redis (which succeeds only if every slot
// is idle and none reserved, and from then on the store never gives it work),
// wait for a replica to have the drain, delete the pod object with a UID
// precondition, and only after the object is gone remove its record.
package janitor
