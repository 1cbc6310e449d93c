package executor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/testutil"
)

// script writes an executable /bin/sh script into dir and returns its path.
func script(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "run.sh")
	testutil.WriteExecutable(t, p, strings.NewReader("#!/bin/sh\n"+body+"\n"))
	return p
}

func command(t *testing.T, path string, opts Options) *Command {
	t.Helper()
	opts.Supervisor = supervisorUnderTest
	c, err := NewCommand([]string{path}, opts)
	require.NoError(t, err)
	return c
}

// waitFile waits (generously, only so a broken test cannot hang) until path exists.
func waitFile(t *testing.T, path string) {
	t.Helper()
	require.Eventually(t, func() bool { _, err := os.Stat(path); return err == nil },
		30*time.Second, 10*time.Millisecond, "%s never appeared", path)
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return pid
}

// alive reports whether pid is a live process (a zombie is dead: it waits
// only for its parent to reap it).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// eventuallyDead allows for the reparenting of an orphan to take a moment.
func eventuallyDead(t *testing.T, pid int, what string) {
	t.Helper()
	require.Eventually(t, func() bool { return !alive(pid) }, 30*time.Second, 10*time.Millisecond, "%s (pid %d) still runs", what, pid)
}

func TestSplitIsShellFree(t *testing.T) {
	cases := map[string]struct {
		in   string
		want []string
		err  bool
	}{
		"plain words":          {in: "/usr/local/bin/run-task --mode fast", want: []string{"/usr/local/bin/run-task", "--mode", "fast"}},
		"extra blanks":         {in: "  a \t b\n", want: []string{"a", "b"}},
		"single quotes":        {in: `run 'a b' 'it''s'`, want: []string{"run", "a b", "its"}},
		"double quotes":        {in: `run "a \"b\" \\ c" "$HOME"`, want: []string{"run", `a "b" \ c`, "$HOME"}},
		"backslash":            {in: `run a\ b`, want: []string{"run", "a b"}},
		"empty quoted word":    {in: `run ''`, want: []string{"run", ""}},
		"no expansion":         {in: "run * $(id) | tee x; rm -rf /", want: []string{"run", "*", "$(id)", "|", "tee", "x;", "rm", "-rf", "/"}},
		"empty":                {in: "", want: nil},
		"unterminated single":  {in: "run 'a", err: true},
		"unterminated double":  {in: `run "a`, err: true},
		"trailing backslash":   {in: `run a\`, err: true},
		"quotes join one word": {in: `a"b"'c'd`, want: []string{"abcd"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Split(tc.in)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestTailKeepsTheEndAndSaysWhatItDropped(t *testing.T) {
	tl := NewTail(100)
	for i := range 50 {
		_, _ = tl.Write([]byte(strconv.Itoa(i%10) + "abcdefghi\n")) // 10 bytes each, 500 in all
	}
	out := tl.Bytes("[note]\n")
	assert.LessOrEqual(t, len(out), 100)
	assert.True(t, bytes.HasPrefix(out, []byte("[slotscaler: ")), "%q", out)
	assert.Contains(t, string(out), "earlier bytes of output dropped]\n")
	assert.True(t, bytes.HasSuffix(out, []byte("9abcdefghi\n[note]\n")), "%q", out)

	small := NewTail(100)
	_, _ = small.Write([]byte("hello\n"))
	assert.Equal(t, "hello\n[n]\n", string(small.Bytes("[n]\n")), "nothing dropped: no marker")

	huge := NewTail(10)
	_, _ = huge.Write(bytes.Repeat([]byte("x"), 1000))
	assert.LessOrEqual(t, len(huge.Bytes("a note longer than ten bytes")), 10, "the bound holds whatever the note")
}

func testCommandSeesOnlyTheGivenEnvironmentAndReadsThePayload(t *testing.T) {
	t.Setenv("SLOTSCALER_TEST_SECRET", "hunter2")
	dir := t.TempDir()
	c := command(t, script(t, dir, `env; echo "--- stdin:"; cat`), Options{})
	var started time.Time
	res := c.Run(context.Background(), Job{
		Env:     []string{"PATH=/usr/bin:/bin", "TASK_ID=t1"},
		Stdin:   []byte("the payload"),
		Started: func(at time.Time) { started = at },
	})
	require.NoError(t, res.Err)
	assert.Equal(t, Success, res.Outcome, "%s", res.Output)
	assert.Equal(t, 0, res.ExitCode)
	out := string(res.Output)
	assert.Contains(t, out, "TASK_ID=t1\n")
	assert.Contains(t, out, "--- stdin:\nthe payload")
	assert.NotContains(t, out, "hunter2", "nothing is inherited from the agent's environment")
	assert.NotContains(t, out, "HOME=")
	assert.False(t, started.IsZero())
	assert.Equal(t, started, res.Started)
	assert.False(t, res.Exited.Before(res.Started))
}

func testCommandFailureKeepsExitCodeAndTheTailOfTheOutput(t *testing.T) {
	dir := t.TempDir()
	c := command(t, script(t, dir, `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise noise noise noise noise"; i=$((i+1)); done; echo "error: the last words" >&2; exit 3`),
		Options{MaxOutput: 4096})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Failure, res.Outcome)
	assert.Equal(t, 3, res.ExitCode)
	assert.Zero(t, res.Signal)
	assert.LessOrEqual(t, len(res.Output), 4096)
	assert.True(t, bytes.HasSuffix(res.Output, []byte("line 1999 of noise noise noise noise noise\nerror: the last words\n")), "stdout and stderr in one stream, ending with the last line: %q", res.Output[max(0, len(res.Output)-200):])
	assert.True(t, bytes.HasPrefix(res.Output, []byte("[slotscaler: ")), "the dropped head is marked")
}

func testTimeoutTermsThenKillsAGroupThatIgnoresTERMChildrenIncluded(t *testing.T) {
	dir := t.TempDir()
	// trap '' sets SIG_IGN, which the background sleep inherits: only
	// SIGKILL ends either of them.
	c := command(t, script(t, dir, `trap '' TERM
echo $$ > `+dir+`/leader.pid
sleep 1000 &
echo $! > `+dir+`/child.pid
echo started
while :; do sleep 1; done`), Options{KillGrace: 300 * time.Millisecond})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}, Timeout: 5 * time.Second})
	assert.Equal(t, Timeout, res.Outcome)
	assert.Equal(t, syscall.SIGKILL, res.Signal, "the leader ignored TERM, so KILL ended it")
	assert.Contains(t, string(res.Output), "started\n")
	assert.Contains(t, string(res.Output), "timed out after 5s: sent SIGTERM to the process group, then SIGKILL after 300ms")
	eventuallyDead(t, readPid(t, dir+"/leader.pid"), "leader")
	eventuallyDead(t, readPid(t, dir+"/child.pid"), "the executor's child")
}

func testCancelSendsTERMAndAGracefulExecutorExitsOnIt(t *testing.T) {
	dir := t.TempDir()
	c := command(t, script(t, dir, `trap 'echo "got TERM, cleaning up"; exit 143' TERM
touch `+dir+`/ready
while :; do sleep 0.05; done`), Options{KillGrace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { waitFile(t, dir+"/ready"); cancel() }()
	res := c.Run(ctx, Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Cancelled, res.Outcome)
	assert.Equal(t, 143, res.ExitCode)
	out := string(res.Output)
	assert.Contains(t, out, "got TERM, cleaning up\n")
	assert.Contains(t, out, "[slotscaler: cancelled: sent SIGTERM to the process group]\n")
	assert.NotContains(t, out, "SIGKILL", "it exited within the grace")
}

func testCancelKillsTheWholeGroupAfterTheGrace(t *testing.T) {
	dir := t.TempDir()
	// The leader exits on TERM at once; its child ignores TERM and must be
	// killed when the grace ends.
	c := command(t, script(t, dir, `(trap '' TERM; echo $$ > /dev/null; exec sleep 1000) &
echo $! > `+dir+`/child.pid
touch `+dir+`/ready
wait`), Options{KillGrace: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { waitFile(t, dir+"/ready"); cancel() }()
	res := c.Run(ctx, Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Cancelled, res.Outcome)
	assert.Contains(t, string(res.Output), "then SIGKILL after 300ms")
	eventuallyDead(t, readPid(t, dir+"/child.pid"), "the executor's child")
}

func testExecutorKilledBySignal9IsAFailure(t *testing.T) {
	dir := t.TempDir()
	c := command(t, script(t, dir, `echo "about to die"; kill -9 $$`), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Failure, res.Outcome)
	assert.Equal(t, 137, res.ExitCode)
	assert.Equal(t, syscall.SIGKILL, res.Signal)
	assert.Contains(t, string(res.Output), "about to die\n[slotscaler: executor died of signal 9 (killed)]\n")
}

func testWhatTheExecutorLeavesBehindIsKilledAndDoesNotHoldTheRun(t *testing.T) {
	dir := t.TempDir()
	// The background sleep keeps the output pipe open: Run must not wait for it.
	c := command(t, script(t, dir, `sleep 1000 &
echo $! > `+dir+`/child.pid
echo done`), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Success, res.Outcome)
	assert.Equal(t, "done\n", string(res.Output))
	eventuallyDead(t, readPid(t, dir+"/child.pid"), "the executor's leftover child")
}

func testAPayloadTheExecutorNeverReadsDoesNotBlock(t *testing.T) {
	c := command(t, script(t, t.TempDir(), `echo ignoring stdin`), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}, Stdin: bytes.Repeat([]byte("p"), 1<<20)})
	assert.Equal(t, Success, res.Outcome)
}

func testAnExecutorThatCannotStartIsAFailure(t *testing.T) {
	_, err := NewCommand([]string{"/nonexistent/run-task"}, Options{})
	require.Error(t, err, "a missing program is refused at start-up")

	dir := t.TempDir()
	p := script(t, dir, "exit 0")
	c := command(t, p, Options{})
	require.NoError(t, os.Remove(p)) // gone after start-up
	res := c.Run(context.Background(), Job{})
	assert.Equal(t, Failure, res.Outcome)
	assert.Equal(t, -1, res.ExitCode)
	require.Error(t, res.Err)
	assert.Contains(t, string(res.Output), "[slotscaler: could not start "+p)
}

func TestNewBuildsRunnersFromSpecs(t *testing.T) {
	good := map[string]string{
		"builtin:sleep":                             "builtin:sleep?min=1s&max=5s&fail=0&exit=1",
		"builtin:sleep?min=1s&max=5s&fail=0.1":      "builtin:sleep?min=1s&max=5s&fail=0.1&exit=1",
		"builtin:sleep?min=10s":                     "builtin:sleep?min=10s&max=10s&fail=0&exit=1",
		"builtin:sleep?min=0s&max=0s&fail=1&exit=7": "builtin:sleep?min=0s&max=0s&fail=1&exit=7",
		"/bin/sh -c 'exit 0'":                       "/bin/sh -c exit 0",
		"true":                                      "", // resolved in PATH
	}
	for spec, want := range good {
		t.Run(spec, func(t *testing.T) {
			r, err := New(spec, Options{})
			require.NoError(t, err)
			if want != "" {
				assert.Equal(t, want, r.String())
			} else {
				assert.True(t, filepath.IsAbs(r.(*Command).Path))
			}
		})
	}
	bad := []string{"", "builtin:nope", "builtin:sleep?min=x", "builtin:sleep?min=5s&max=1s", "builtin:sleep?fail=2",
		"builtin:sleep?color=red", "builtin:sleep?exit=0", "no-such-program-anywhere", "/bin/sh 'unterminated"}
	for _, spec := range bad {
		t.Run("refuses "+spec, func(t *testing.T) {
			_, err := New(spec, Options{})
			require.Error(t, err)
		})
	}
}

func TestBuiltinSleepSucceedsFailsAndHonoursTimeoutAndCancel(t *testing.T) {
	run := func(spec string, ctx context.Context, timeout time.Duration) Result {
		r, err := New(spec, Options{})
		require.NoError(t, err)
		return r.Run(ctx, Job{Timeout: timeout})
	}
	res := run("builtin:sleep?min=1ms&max=5ms", context.Background(), 0)
	assert.Equal(t, Success, res.Outcome)
	assert.Contains(t, string(res.Output), "builtin:sleep: slept ")

	res = run("builtin:sleep?min=0s&max=1ms&fail=1&exit=4", context.Background(), 0)
	assert.Equal(t, Failure, res.Outcome)
	assert.Equal(t, 4, res.ExitCode)

	res = run("builtin:sleep?min=1h", context.Background(), 10*time.Millisecond)
	assert.Equal(t, Timeout, res.Outcome)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res = run("builtin:sleep?min=1h", ctx, 0)
	assert.Equal(t, Cancelled, res.Outcome)
}

func testAnExecutorThatDiesOnTERMIsNotWaitedForUntilTheGraceEnds(t *testing.T) {
	dir := t.TempDir()
	// No trap: the shell dies of TERM at once and its foreground sleep is
	// orphaned as a zombie until init reaps it. A zombie is not a process
	// to wait for.
	c := command(t, script(t, dir, `touch `+dir+`/ready
while :; do sleep 0.02; done`), Options{KillGrace: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { waitFile(t, dir+"/ready"); cancel() }()
	res := c.Run(ctx, Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Cancelled, res.Outcome)
	assert.Equal(t, syscall.SIGTERM, res.Signal)
	assert.NotContains(t, string(res.Output), "SIGKILL")
}

// daemonScript starts a daemon that leaves the executor's process group
// and session (setsid), waits until it wrote its pid, then runs tail.
func daemonScript(dir, tail string) string {
	return `setsid sh -c 'echo $$ > ` + dir + `/daemon.pid.tmp; mv ` + dir + `/daemon.pid.tmp ` + dir + `/daemon.pid; exec sleep 1000' >/dev/null 2>&1 &
while [ ! -e ` + dir + `/daemon.pid ]; do sleep 0.01; done
` + tail
}

// Nothing an executor starts outlives its run, not even a daemon in a
// session of its own: when Run returns it is gone (no waiting here).
func testASetsidDaemonOfTheExecutorDoesNotOutliveTheRun(t *testing.T) {
	cases := map[string]struct {
		tail    string
		timeout time.Duration
		cancel  bool
		want    Outcome
	}{
		"the executor exits": {tail: "echo done", want: Success},
		// The timeout must outlast starting the supervisor, the script and
		// its daemon on a loaded machine (300 ms did not, under a soak):
		// the daemon has to exist before the timeout kills the run.
		"the executor times out":    {tail: "sleep 1000", timeout: 3 * time.Second, want: Timeout},
		"the executor is cancelled": {tail: "touch " + "DIR/ready; sleep 1000", cancel: true, want: Cancelled},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			tail := strings.ReplaceAll(tc.tail, "DIR", dir)
			c := command(t, script(t, dir, daemonScript(dir, tail)), Options{KillGrace: 200 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				go func() { waitFile(t, dir+"/ready"); cancel() }()
			}
			res := c.Run(ctx, Job{Env: []string{"PATH=/usr/bin:/bin"}, Timeout: tc.timeout})
			assert.Equal(t, tc.want, res.Outcome, string(res.Output))
			pid := readPid(t, dir+"/daemon.pid")
			assert.False(t, alive(pid), "the setsid daemon (pid %d) outlived the run", pid)
			assert.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "the daemon is reaped too, not left a zombie")
		})
	}
}

// A double fork (the classic daemon) is reparented to the supervisor, not
// to init, and ends with the run too.
func testADoubleForkedDaemonDoesNotOutliveTheRun(t *testing.T) {
	dir := t.TempDir()
	// The subshell that starts it exits at once: the daemon loses its
	// parent.
	c := command(t, script(t, dir, `( setsid sh -c 'echo $$ > `+dir+`/daemon.pid.tmp; mv `+dir+`/daemon.pid.tmp `+dir+`/daemon.pid; exec sleep 1000' >/dev/null 2>&1 & )
while [ ! -e `+dir+`/daemon.pid ]; do sleep 0.01; done
echo done`), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	assert.Equal(t, Success, res.Outcome, string(res.Output))
	pid := readPid(t, dir+"/daemon.pid")
	assert.False(t, alive(pid), "the double-forked daemon (pid %d) outlived the run", pid)
}

// An executor runs as the agent's user and can kill its own supervisor:
// the run then says that what it started may still run (the one way out of
// the process-tree rule, in the README).
func testAKilledSupervisorIsReported(t *testing.T) {
	dir := t.TempDir()
	c := command(t, script(t, dir, daemonScript(dir, `kill -9 $PPID; exit 3`)), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	pid := readPid(t, dir+"/daemon.pid")
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	assert.Equal(t, Failure, res.Outcome)
	assert.Equal(t, syscall.SIGKILL, res.Signal)
	assert.Contains(t, string(res.Output), "[slotscaler: the executor's supervisor was killed: processes the executor started may still run]")
}
