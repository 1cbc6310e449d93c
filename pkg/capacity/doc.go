// Package capacity computes how many agent pods a pool needs. It is pure
// math: no I/O, no clocks, no globals.
//
// The model:
//
//   - A pod has slots; a slot policy says which task types each slot may run.
//     Slots allowing the same set of types form a Class (see ClassesOf).
//   - Running work cannot move. Every pod holding work (a running or reserved
//     slot, cordoned or not) must stay, so BusyPods is a floor for the answer.
//   - Queued work can go anywhere it is allowed. It first fills the idle slots
//     of busy, uncordoned pods (FreeOnBusy); what does not fit needs N whole
//     new pods, each bringing the full policy. N is the smallest count for
//     which all queued work fits (Hall's condition on the bipartite graph
//     task types → slot classes).
//   - The answer is an absolute replica count, not a delta: idle pods that
//     already exist and pods yet to be created are interchangeable, so idle
//     pods are never counted as capacity — they are simply among the N.
//     desired = clamp(Min, Max, BusyPods + N + Warm).
//   - Warm (a buffer of idle pods) is added only while the pool is active,
//     i.e. while something is running, reserved or queued. A buffer alone
//     never makes a pool active, otherwise KEDA could never scale it to zero.
//   - Queued work of a type no slot may run is reported, never counted: it
//     could not fit in any number of pods and would grow the pool forever.
//
// Result.Why explains the answer: the Hall constraint that asks for the
// most new pods (the queued work that may run only in some slots, those
// slots per pod and the idle ones on busy pods), or that none is needed,
// and where warm pods and Min/Max come in; Why.String says it in words.
//
// NudgeForTolerance compensates for the HPA's tolerance band by pushing a
// scale-up that the HPA would ignore just outside the band.
package capacity
