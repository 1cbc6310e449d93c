package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// mainEnv makes the test binary run the agent's main() instead of the
// tests: the tests that SIGKILL an agent or change its user run the binary
// as a real process this way.
const mainEnv = "SLOTSCALER_AGENT_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// patience bounds every wait, only so a broken test cannot hang; nothing
// asserts how long anything takes.
const patience = 60 * time.Second

// testEnv is one pool in a real Redis, a directory for executor scripts and
// their marker files, and the store as the platform and janitor use it.
type testEnv struct {
	url    string
	prefix string
	pool   slots.PoolID
	store  *slots.Store
	dir    string
}

// newEnv declares a pool (static, default policy unless mutated) under a
// prefix of its own on the Redis at url.
func newEnv(t testing.TB, url string, mutate ...func(*slots.PoolConfig)) *testEnv {
	t.Helper()
	e := &testEnv{url: url, prefix: redistest.Prefix(t), pool: slots.PoolID{Namespace: "team-a", Name: "pool-a"}, dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	conn, err := redisconn.Open(ctx, url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	e.store, err = slots.New(ctx, conn.Client, slots.Options{Prefix: e.prefix, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	cfg := slots.DefaultPoolConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	_, err = e.store.DeclarePool(ctx, e.pool, cfg)
	require.NoError(t, err)
	return e
}

// executor writes the executor every test agent runs: it logs each start to
// DIR/starts, then evaluates the task's payload (read from stdin) as shell,
// so each task says how it behaves. mark NAME touches DIR/NAME; await NAME
// waits for it.
func (e *testEnv) executor(t testing.TB) string {
	t.Helper()
	p := filepath.Join(e.dir, "run-task")
	body := fmt.Sprintf(`#!/bin/sh
D=%q
mark() { touch "$D/$1"; }
await() { while [ ! -e "$D/$1" ]; do sleep 0.02; done; }
echo "$TASK_ID $TASK_PHASE slot=$SLOT attempt=$TASK_ATTEMPT" >> "$D/starts"
payload=$(cat)
eval "$payload"
`, e.dir)
	testutil.WriteExecutable(t, p, strings.NewReader(body))
	return p
}

func (e *testEnv) mark(t testing.TB, name string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, name), nil, 0o644))
}

func (e *testEnv) await(t testing.TB, name string) {
	t.Helper()
	require.Eventually(t, func() bool { _, err := os.Stat(filepath.Join(e.dir, name)); return err == nil },
		patience, 10*time.Millisecond, "marker %s never appeared", name)
}

// starts lists the executor starts, "<task> <phase> slot=<n> attempt=<n>".
func (e *testEnv) starts(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "starts"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (e *testEnv) pid(t testing.TB, name string) int {
	t.Helper()
	e.await(t, name)
	var pid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(e.dir, name))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, patience, 10*time.Millisecond)
	return pid
}

func (e *testEnv) submit(t testing.TB, id string, typ slots.TaskType, payload string) slots.SubmitResult {
	t.Helper()
	res, err := e.store.Submit(context.Background(), e.pool, slots.TaskSpec{ID: id, Type: typ, Payload: []byte(payload)})
	require.NoError(t, err)
	return res
}

func (e *testEnv) task(t testing.TB, id string) slots.Task {
	t.Helper()
	tk, err := e.store.Task(context.Background(), e.pool, id)
	require.NoError(t, err)
	return tk
}

// waitTask waits until the task is in one of the states and returns it.
func (e *testEnv) waitTask(t testing.TB, id string, states ...slots.TaskState) slots.Task {
	t.Helper()
	var last slots.Task
	require.Eventually(t, func() bool {
		tk, err := e.store.Task(context.Background(), e.pool, id)
		if err != nil {
			return false
		}
		last = tk
		for _, s := range states {
			if tk.State == s {
				return true
			}
		}
		return false
	}, patience, 10*time.Millisecond, "task %s never reached %v", id, states)
	return last
}

func (e *testEnv) podState(t testing.TB, pod string) slots.PodState {
	t.Helper()
	snap, err := e.store.Snapshot(context.Background(), e.pool)
	require.NoError(t, err)
	for _, p := range snap.Pods {
		if p.Name == pod {
			return p.State
		}
	}
	return ""
}

// agentRun is the agent's run() going in this process.
type agentRun struct {
	built  chan *agent
	addr   string
	pool   slots.PoolID
	logs   *testutil.SyncBuffer
	stop   context.CancelFunc // what SIGTERM does
	done   chan error
	result *error
}

// settings are the agent's environment in a test: an executor, fast
// heartbeats and a short kill grace, overridable per test.
func (e *testEnv) settings(t testing.TB, over map[string]string) map[string]string {
	env := map[string]string{
		"REDIS_URL":          e.url,
		"KEY_PREFIX":         e.prefix,
		"POOL_NAMESPACE":     e.pool.Namespace,
		"POOL_NAME":          e.pool.Name,
		"POD_NAME":           "agent-1",
		"POD_UID":            "uid-1",
		"EXECUTOR":           e.executor(t),
		"HEARTBEAT_INTERVAL": "200ms",
		"KILL_GRACE":         "500ms",
		"REDIS_TIMEOUT":      "2s",
		"LOG_LEVEL":          "debug",
		"WORKSPACE_ROOT":     workspaceRoot(t),
	}
	for k, v := range over {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	return env
}

// workspaceRoot is a fresh workspace root for one agent, in a directory
// any user may create it in (an agent running as nobody too), like /tmp.
func workspaceRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "slotscaler-ws-test-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o777|os.ModeSticky))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "ws")
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// start runs an agent in this process with the test settings (over: ""
// removes a setting).
func (e *testEnv) start(t testing.TB, over map[string]string, h hooks) *agentRun {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	env := e.settings(t, over)
	ctx, cancel := context.WithCancel(context.Background())
	r := &agentRun{addr: ln.Addr().String(), pool: slots.PoolID{Namespace: env["POOL_NAMESPACE"], Name: env["POOL_NAME"]}, logs: &testutil.SyncBuffer{}, stop: cancel, done: make(chan error, 1), built: make(chan *agent, 1)}
	built := func(a *agent) { r.built <- a }
	go func() {
		r.done <- run(ctx, nil, r.logs, lookupIn(env), &runOptions{listener: ln, hooks: h, built: built})
	}()
	t.Cleanup(func() {
		cancel()
		if r.result == nil {
			select {
			case err := <-r.done:
				r.result = &err
			case <-time.After(patience):
				t.Errorf("agent did not stop")
			}
		}
		if t.Failed() {
			t.Logf("agent logs:\n%s", r.logs.String())
		}
	})
	return r
}

// agent returns the agent run() built.
func (r *agentRun) agent(t testing.TB) *agent {
	t.Helper()
	select {
	case a := <-r.built:
		r.built <- a
		return a
	case <-time.After(patience):
		t.Fatal("run() never built its agent")
		return nil
	}
}

// wait waits for run() to return (after stop, or on its own).
func (r *agentRun) wait(t testing.TB) error {
	t.Helper()
	if r.result != nil {
		return *r.result
	}
	select {
	case err := <-r.done:
		r.result = &err
		return err
	case <-time.After(patience):
		t.Fatalf("agent did not return\n%s", r.logs.String())
		return nil
	}
}

func (r *agentRun) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (r *agentRun) waitReady(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + r.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, patience, 10*time.Millisecond, "agent never became ready")
}

// metric returns the value of one sample line of /metrics ("name{labels}").
// Every slotscaler_agent_ sample carries the agent's pool label
// (pool="<namespace>/<name>"), checked here and left out of sample.
func (r *agentRun) metric(t testing.TB, sample string) (float64, bool) {
	t.Helper()
	_, body := r.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "slotscaler_agent_") {
			pool := `pool="` + r.pool.String() + `"`
			if !strings.Contains(line, pool) {
				t.Fatalf("agent sample without %s: %s", pool, line)
			}
			line = strings.Replace(strings.Replace(strings.Replace(line, ","+pool, "", 1), pool+",", "", 1), "{"+pool+"}", "", 1)
		}
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f, true
		}
	}
	return 0, false
}

// pauser parks the agent's inbox reader before its next Take while paused.
type pauser struct {
	mu     sync.Mutex
	paused bool
	parked chan struct{} // receives when the reader parks
	resume chan struct{}
}

func newPauser() *pauser {
	return &pauser{parked: make(chan struct{}, 1), resume: make(chan struct{})}
}

func (p *pauser) hook(ctx context.Context) {
	p.mu.Lock()
	paused, resume := p.paused, p.resume
	p.mu.Unlock()
	if !paused {
		return
	}
	select {
	case p.parked <- struct{}{}:
	default:
	}
	select {
	case <-resume:
	case <-ctx.Done():
	}
}

// pause parks the reader and waits until it is parked: no Take runs
// until unpause.
func (p *pauser) pause(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	select {
	case <-p.parked:
	case <-time.After(patience):
		t.Fatal("the reader never parked")
	}
}

func (p *pauser) unpause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	close(p.resume)
	p.resume = make(chan struct{})
}
