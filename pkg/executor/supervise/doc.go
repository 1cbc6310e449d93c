// Package supervise is the executor's supervisor: the process that runs
// one task phase's executor and ends its whole process tree with it. It
// imports only the standard library, so the dedicated supervisor binary
// (cmd/slotscaler-supervisor) that links it starts in about a millisecond;
// the agent falls back to running itself again as the supervisor (argv[0]
// Arg0, picked up by an init hook in pkg/executor) when that binary is
// not installed.
//
// Protocol (the agent's side is pkg/executor):
//
//	slotscaler-executor-supervisor <agent pid> <program> <args>...
//
// It makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): every
// process the executor starts that loses its parent, a setsid or
// double-forked daemon included, is reparented to the supervisor instead
// of init, so the supervisor can always find and end it. It runs the
// executor as the leader of its own process group, and:
//
//   - when the executor exits on its own, SIGKILLs every descendant still
//     alive and reaps them all, then reports and exits;
//   - on Term (a timeout or cancel), sends SIGTERM to the executor's
//     group, waits for the executor to exit and its group to empty, then
//     does the same;
//   - on Kill (the grace ran out) or AgentGone (its parent-death signal:
//     the agent died), SIGKILLs everything at once.
//
// It reports on fd 3, one line each: "pid <executor pid>", then
// "exit <code>", "signal <n>" or "error <why it could not start>".
//
// Why a subreaper rather than a cgroup (cgroup.kill): a pod's agent can
// rarely create cgroups (cgroupfs is read-only in most containers, and
// delegation needs the runtime's cooperation), while a subreaper needs no
// privilege anywhere. A process group alone is not enough: setsid leaves
// it. What remains out of reach: a process of the same user that is not a
// descendant (another slot's executor) and the supervisor itself, which an
// executor can kill (same user); the supervisor is non-dumpable so it
// cannot be ptraced.
package supervise

// Arg0 is the supervisor's argv[0], whichever binary runs it: the agent
// re-executed selects the supervisor with it, and ps shows it either way.
const Arg0 = "slotscaler-executor-supervisor"
