package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/poolcreds"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// paPayload is a plan_and_apply whose plan leaves a file in its workspace
// and whose apply prints it and leaves a marker in the test directory:
// the marker is evidence the apply's executor ran.
const paPayload = `if [ "$TASK_PHASE" = plan ]; then
  echo "planned by $TASK_ID" > "$TASK_WORKDIR/plan.out"
else
  echo "apply sees: $(cat "$TASK_WORKDIR/plan.out")"
  echo "apply cwd: $(pwd)"
  mark "applied-$TASK_ID"
fi`

func gone(path string) func() bool {
	return func() bool { _, err := os.Lstat(path); return os.IsNotExist(err) }
}

func (e *testEnv) workdir(t *testing.T, root, task string) string {
	t.Helper()
	return filepath.Join(root, "task-"+task)
}

// A plan in another slot of the same agent (same user) finds a reserved
// task's workspace by listing the workspace root and rewrites the plan's
// file: the approved apply must not run on it.
func TestApplyRefusesAWorkspaceAnotherSlotsPlanChanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	root := workspaceRoot(t)
	r := e.start(t, map[string]string{"WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)

	e.submit(t, "pa", slots.PlanAndApply, paPayload)
	tk := e.waitTask(t, "pa", slots.StateReserved)
	require.True(t, strings.HasPrefix(tk.WorkspaceDigest, "sha256:"), "the plan's workspace digest is kept with the task: %q", tk.WorkspaceDigest)

	e.submit(t, "evil", slots.Plan, `for d in "$(dirname "$TASK_WORKDIR")"/*; do
  [ "$d" = "$TASK_WORKDIR" ] && continue
  [ -f "$d/plan.out" ] && echo "tampered" > "$d/plan.out" && echo "tampered with $d"
done
true`)
	evil := e.waitTask(t, "evil", slots.StateSucceeded)
	require.Contains(t, evil.Output, "tampered with "+e.workdir(t, root, "pa"), "the other plan found and changed the reserved workspace")

	_, err := e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)
	tk = e.waitTask(t, "pa", slots.StateFailed)
	assert.Equal(t, "workspace-changed", tk.Reason)
	assert.Contains(t, tk.Output, "the apply did not run: its workspace changed")
	assert.NoFileExists(t, filepath.Join(e.dir, "applied-pa"), "the apply's executor never ran")
	assert.NotContains(t, strings.Join(e.starts(t), "\n"), "pa apply")
	var reasons []string
	for _, h := range tk.History {
		reasons = append(reasons, h.State+":"+h.Detail)
	}
	assert.Contains(t, reasons, "failed:workspace-changed", "the reason is in the task's history")
	assert.Contains(t, r.logs.String(), "refusing to run the apply: its workspace is not the one its plan left")
	require.Eventually(t, gone(e.workdir(t, root, "pa")), patience, 10*time.Millisecond, "the refused apply's workspace is removed")
}

// Untouched, the apply runs in the workspace its plan left, which is
// private (0700), the executor's working directory, and removed once the
// task ends; a plan's own workspace goes with its phase.
func TestApplyRunsInThePlansPrivateWorkspaceWhichIsRemovedAfterwards(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	root := workspaceRoot(t)
	r := e.start(t, map[string]string{"WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)

	e.submit(t, "pa", slots.PlanAndApply, paPayload)
	tk := e.waitTask(t, "pa", slots.StateReserved)
	dir := e.workdir(t, root, "pa")
	fi, err := os.Stat(dir)
	require.NoError(t, err, "the workspace waits for the apply")
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	b, err := os.ReadFile(filepath.Join(dir, "plan.out"))
	require.NoError(t, err)
	assert.Equal(t, "planned by pa\n", string(b))
	digest := tk.WorkspaceDigest
	require.True(t, strings.HasPrefix(digest, "sha256:"))

	_, err = e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)
	tk = e.waitTask(t, "pa", slots.StateSucceeded, slots.StateFailed)
	require.Equal(t, slots.StateSucceeded, tk.State, tk.Output)
	assert.Contains(t, tk.Output, "apply sees: planned by pa\n")
	assert.Contains(t, tk.Output, "apply cwd: "+dir+"\n")
	assert.FileExists(t, filepath.Join(e.dir, "applied-pa"))
	assert.Equal(t, digest, tk.WorkspaceDigest, "the plan's digest stays with the task")
	require.Eventually(t, gone(dir), patience, 10*time.Millisecond, "the workspace is removed after the apply")

	e.submit(t, "p", slots.Plan, `echo "workdir=$TASK_WORKDIR"; echo "cwd=$(pwd)"; stat -c "mode=%a" "$TASK_WORKDIR"; touch "$TASK_WORKDIR/left-behind"`)
	tk = e.waitTask(t, "p", slots.StateSucceeded)
	pdir := e.workdir(t, root, "p")
	assert.Contains(t, tk.Output, "workdir="+pdir+"\n")
	assert.Contains(t, tk.Output, "cwd="+pdir+"\n")
	assert.Contains(t, tk.Output, "mode=700\n")
	require.Eventually(t, gone(pdir), patience, 10*time.Millisecond, "a plan's workspace goes with its phase")
}

// A reservation that ends without an apply (rejected, expired) takes its
// workspace with it: the agent learns of it from the store.
func TestRejectedOrExpiredReservationsWorkspaceIsRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.ReservationTTL = time.Second })
	root := workspaceRoot(t)
	r := e.start(t, map[string]string{"WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)

	e.submit(t, "rejected", slots.PlanAndApply, paPayload)
	e.waitTask(t, "rejected", slots.StateReserved)
	require.DirExists(t, e.workdir(t, root, "rejected"))
	require.NoError(t, e.store.Reject(context.Background(), e.pool, "rejected", "bob"))
	require.Eventually(t, gone(e.workdir(t, root, "rejected")), patience, 10*time.Millisecond, "a rejected reservation's workspace is removed")

	e.submit(t, "expires", slots.PlanAndApply, paPayload)
	e.waitTask(t, "expires", slots.StateReserved)
	require.DirExists(t, e.workdir(t, root, "expires"))
	require.Eventually(t, func() bool {
		res, err := e.store.Reap(context.Background(), e.pool, slots.ReapOptions{})
		require.NoError(t, err)
		return res.Reservations == 1
	}, patience, 50*time.Millisecond)
	require.Eventually(t, gone(e.workdir(t, root, "expires")), patience, 10*time.Millisecond, "an expired reservation's workspace is removed")
	v, ok := r.metric(t, "slotscaler_agent_reserved_slots")
	require.True(t, ok)
	assert.Equal(t, 0.0, v)
}

// Whatever lands in the root that no task of the agent owns (a stray, a
// workspace whose removal failed) is swept; a second agent cannot share
// the root.
func TestStaleWorkspacesAreSweptAndARootHasOneAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	root := workspaceRoot(t)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "task-left-over", "sub"), 0o700))
	r := e.start(t, map[string]string{"WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)
	require.Eventually(t, gone(filepath.Join(root, "task-left-over")), patience, 10*time.Millisecond)

	require.NoError(t, os.MkdirAll(filepath.Join(root, "task-stray"), 0o700))
	require.Eventually(t, gone(filepath.Join(root, "task-stray")), patience, 10*time.Millisecond, "a sweep removes it")

	var logs strings.Builder
	err := run(context.Background(), nil, &logs, lookupIn(e.settings(t, map[string]string{"WORKSPACE_ROOT": root, "POD_NAME": "agent-2"})), &runOptions{listener: listen(t)})
	require.ErrorContains(t, err, "in use by another agent")
}

func TestWorkspaceNamesNeverLeaveTheRoot(t *testing.T) {
	for _, id := range []string{"a/b", "../x", "", strings.Repeat("a", 129), "a\x00b"} {
		_, err := workspaceName(id)
		assert.Error(t, err, "%q", id)
	}
	for _, id := range []string{"..", ".", "a.b-c_d"} {
		n, err := workspaceName(id)
		require.NoError(t, err)
		assert.Equal(t, "task-"+id, n, "a valid id is one path element")
	}
}

// The apply is checked against the digest the store kept, not against
// anything the agent remembers: with the workspace untouched, a record
// that says otherwise (or says nothing: a plan recorded without one) stops
// the apply all the same.
func TestTheApplyIsCheckedAgainstTheStoresDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t))
	root := workspaceRoot(t)
	r := e.start(t, map[string]string{"WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)
	conn, err := redisconn.Open(context.Background(), e.url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })

	for id, record := range map[string]func(key string) error{
		"other-digest": func(key string) error {
			return conn.Client.HSet(context.Background(), key, "wsd", "sha256:"+strings.Repeat("0", 64)).Err()
		},
		"no-digest": func(key string) error { return conn.Client.HDel(context.Background(), key, "wsd").Err() },
	} {
		e.submit(t, id, slots.PlanAndApply, paPayload)
		require.True(t, strings.HasPrefix(e.waitTask(t, id, slots.StateReserved).WorkspaceDigest, "sha256:"))
		keys, err := conn.Client.Keys(context.Background(), e.prefix+"*t:"+id).Result()
		require.NoError(t, err)
		require.Len(t, keys, 1, "the task's hash")
		require.NoError(t, record(keys[0]))

		_, err = e.store.Approve(context.Background(), e.pool, id, "alice")
		require.NoError(t, err)
		tk := e.waitTask(t, id, slots.StateFailed, slots.StateSucceeded)
		assert.Equal(t, slots.StateFailed, tk.State, id)
		assert.Equal(t, "workspace-changed", tk.Reason, id)
		assert.NoFileExists(t, filepath.Join(e.dir, "applied-"+id))
	}
}

// Agents sharing a host each get a root of their own by default; a root
// another user could swap is refused.
func TestDefaultWorkspaceRootsAreOnePerAgentAndForeignRootsAreRefused(t *testing.T) {
	a := Config{PoolNamespace: "team-a", PoolName: "pool-a", PodName: "agent-1"}
	b := Config{PoolNamespace: "team-a", PoolName: "pool-a", PodName: "agent-2"}
	assert.NotEqual(t, resolveWorkspaceRoot(a), resolveWorkspaceRoot(b))
	assert.Equal(t, filepath.Join(os.TempDir(), "slotscaler-workspaces", "team-a_pool-a_agent-1"), resolveWorkspaceRoot(a))
	a.WorkspaceRoot = "/somewhere"
	assert.Equal(t, "/somewhere", resolveWorkspaceRoot(a))

	dir := t.TempDir()
	require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(dir, "link")))
	_, err := openWorkspaces(filepath.Join(dir, "link"), slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "symbolic link is refused")
	if os.Geteuid() == 0 {
		foreign := filepath.Join(dir, "foreign")
		require.NoError(t, os.Mkdir(foreign, 0o700))
		require.NoError(t, os.Chown(foreign, 65534, 65534))
		_, err = openWorkspaces(foreign, slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, "belongs to uid 65534")
		_, err = openWorkspaces(filepath.Join(foreign, "ws"), slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, "belongs to uid 65534, who could replace what it holds")
	}
}

// The agent learns that a reservation ended with what its pool's Redis
// user may do: held over many heartbeats and then rejected, the workspace
// goes and Redis refused the agent nothing.
func TestReservationWatchNeedsNothingBeyondThePoolsRedisUser(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { admin.Close() })
	e := newEnv(t, srv.URL())
	_, agentURL := poolUser(t, e, admin)
	root := workspaceRoot(t)
	r := e.start(t, map[string]string{"REDIS_URL": agentURL, "WORKSPACE_ROOT": root}, hooks{})
	r.waitReady(t)

	e.submit(t, "pa", slots.PlanAndApply, paPayload)
	e.waitTask(t, "pa", slots.StateReserved)
	time.Sleep(time.Second) // five heartbeats, each followed by a sweep reading the reservation
	require.DirExists(t, e.workdir(t, root, "pa"), "a held reservation keeps its workspace")
	require.NoError(t, e.store.Reject(context.Background(), e.pool, "pa", "bob"))
	require.Eventually(t, gone(e.workdir(t, root, "pa")), patience, 10*time.Millisecond)
	assert.Empty(t, aclDenials(t, admin, poolcreds.UserName(e.prefix, e.pool)))
}
