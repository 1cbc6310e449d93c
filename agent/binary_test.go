package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// agentProcess is the agent binary (this test binary running main()) as a
// real process.
type agentProcess struct {
	cmd  *exec.Cmd
	logs *testutil.SyncBuffer
	done chan struct{}
}

// startProcess runs the agent as a process with exactly env (plus what
// makes the test binary run main()). asNobody runs it as uid/gid 65534
// when the tests run as root, so it is an ordinary user like in a pod.
func startProcess(t testing.TB, binary string, env map[string]string, asNobody bool) *agentProcess {
	t.Helper()
	cmd := exec.Command(binary)
	cmd.Env = []string{mainEnv + "=1", "PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if env["LISTEN_ADDRESS"] == "" {
		cmd.Env = append(cmd.Env, "LISTEN_ADDRESS=127.0.0.1:0")
	}
	p := &agentProcess{cmd: cmd, logs: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asNobody && os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	require.NoError(t, cmd.Start())
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("agent process logs:\n%s", p.logs.String())
		}
	})
	return p
}

// openDir is a directory any user can read and run files from (a test's
// TempDir is private to root when the tests run as root).
func openDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "slotscaler-agent-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// binaryIn copies this test binary into dir, so another user can run it.
func binaryIn(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	path := filepath.Join(dir, "agent")
	testutil.WriteExecutable(t, path, src)
	return path
}

func (e *testEnv) waitPodState(t testing.TB, pod string, st slots.PodState) {
	t.Helper()
	require.Eventually(t, func() bool { return e.podState(t, pod) == st }, patience, 10*time.Millisecond, "pod %s never %s", pod, st)
}

func TestExecutorCannotReadTheAgentsRedisCredentials(t *testing.T) {
	t.Parallel()
	const password = "s3cret-redis-pw"
	srv := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	require.NoError(t, admin.ConfigSet(context.Background(), "requirepass", password).Err())
	admin.Close()
	e := newEnv(t, fmt.Sprintf("redis://:%s@%s/0", password, srv.Addr()))

	dir := openDir(t)
	script := filepath.Join(dir, "run-task")
	// The executor looks everywhere it could: its own environment, the
	// agent's environment and the agent's command line.
	testutil.WriteExecutable(t, script, strings.NewReader(`#!/bin/sh
echo "--- env"; env
echo "--- agent environ"; tr '\0' '\n' < /proc/$PPID/environ
echo "--- agent cmdline"; tr '\0' ' ' < /proc/$PPID/cmdline; echo
`))
	env := e.settings(t, map[string]string{"EXECUTOR": script, "EXECUTOR_ENV": "ALLOWED_VAR"})
	env["ALLOWED_VAR"] = "visible-value"
	env["AWS_SECRET_ACCESS_KEY"] = "aws-secret-value"
	startProcess(t, binaryIn(t, dir), env, true)
	e.waitPodState(t, "agent-1", slots.PodActive)

	e.submit(t, "peek", slots.Plan, "")
	out := e.waitTask(t, "peek", slots.StateSucceeded, slots.StateFailed).Output
	assert.Contains(t, out, "\nALLOWED_VAR=visible-value\n", "--executor-env passes what the operator allows")
	assert.Contains(t, out, "\nTASK_ID=peek\n")
	assert.Contains(t, out, "\nPATH=")
	assert.NotContains(t, out, password, "the Redis password is nowhere the executor can look")
	assert.NotContains(t, out, "REDIS_URL")
	assert.NotContains(t, out, "aws-secret-value", "nothing outside the allow-list is passed")
	assert.Contains(t, out, "/environ: Permission denied", "the agent is not dumpable: another process of its user cannot read its environment")
}

func TestKill9OfTheAgentThenPodRemovalRequeuesItsPlanAndFailsItsApply(t *testing.T) {
	t.Parallel()
	e := newEnv(t, redistest.Standalone(t), func(c *slots.PoolConfig) { c.Managed = true })
	require.NoError(t, e.store.ExpectPod(context.Background(), e.pool, "agent-1", "uid-1"))
	self, err := os.Executable()
	require.NoError(t, err)
	p := startProcess(t, self, e.settings(t, nil), false)
	e.waitPodState(t, "agent-1", slots.PodActive)

	e.submit(t, "pa", slots.PlanAndApply, `if [ "$TASK_PHASE" = apply ]; then echo $$ > "$D/apply.pid"; while :; do sleep 1; done; fi`)
	e.waitTask(t, "pa", slots.StateReserved)
	_, err = e.store.Approve(context.Background(), e.pool, "pa", "alice")
	require.NoError(t, err)
	e.submit(t, "p", slots.Plan, `echo $$ > "$D/plan.pid"; while :; do sleep 1; done`)
	applyPid, planPid := e.pid(t, "apply.pid"), e.pid(t, "plan.pid")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
	requireDead(t, applyPid, "the apply's executor (parent-death signal)")
	requireDead(t, planPid, "the plan's executor (parent-death signal)")

	// The janitor sees the pod object gone and removes its record.
	require.NoError(t, e.store.RemovePod(context.Background(), e.pool, "agent-1", "uid-1", "pod-deleted"))
	plan := e.task(t, "p")
	assert.Equal(t, slots.StateQueued, plan.State, "a started plan is requeued once its pod is gone")
	assert.Equal(t, 1, plan.Attempt, "its attempt was spent")
	apply := e.task(t, "pa")
	assert.Equal(t, slots.StateFailed, apply.State, "an apply never runs twice")
	assert.Equal(t, slots.ReasonAgentLost, apply.Reason)
}
