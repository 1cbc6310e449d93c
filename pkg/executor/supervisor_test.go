package executor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/testutil"
)

// dedicatedSupervisor is cmd/slotscaler-supervisor, built once for the
// package's tests.
var dedicatedSupervisor string

// supervisorUnderTest is what command() runs phases under: "" is the
// fallback (this test binary run again).
var supervisorUnderTest string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "slotscaler-supervisor-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := testutil.BuildBinaries(dir, "./cmd/slotscaler-supervisor"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dedicatedSupervisor = filepath.Join(dir, SupervisorBinary)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// supervisors are both ways a phase runs: the binary that ships next to
// the agent, and the agent run again when it is not installed.
func supervisors() []struct{ name, path string } {
	return []struct{ name, path string }{{"dedicated", dedicatedSupervisor}, {"self", ""}}
}

// Every rule of a run (the process tree, the stop, the report) holds
// under either supervisor.
func TestEveryRunRuleHoldsUnderEachSupervisor(t *testing.T) {
	rules := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"TheSupervisorIsTheOneAskedFor", testTheSupervisorIsTheOneAskedFor},
		{"CommandSeesOnlyTheGivenEnvironmentAndReadsThePayload", testCommandSeesOnlyTheGivenEnvironmentAndReadsThePayload},
		{"CommandFailureKeepsExitCodeAndTheTailOfTheOutput", testCommandFailureKeepsExitCodeAndTheTailOfTheOutput},
		{"TimeoutTermsThenKillsAGroupThatIgnoresTERMChildrenIncluded", testTimeoutTermsThenKillsAGroupThatIgnoresTERMChildrenIncluded},
		{"CancelSendsTERMAndAGracefulExecutorExitsOnIt", testCancelSendsTERMAndAGracefulExecutorExitsOnIt},
		{"CancelKillsTheWholeGroupAfterTheGrace", testCancelKillsTheWholeGroupAfterTheGrace},
		{"ExecutorKilledBySignal9IsAFailure", testExecutorKilledBySignal9IsAFailure},
		{"WhatTheExecutorLeavesBehindIsKilledAndDoesNotHoldTheRun", testWhatTheExecutorLeavesBehindIsKilledAndDoesNotHoldTheRun},
		{"APayloadTheExecutorNeverReadsDoesNotBlock", testAPayloadTheExecutorNeverReadsDoesNotBlock},
		{"AnExecutorThatCannotStartIsAFailure", testAnExecutorThatCannotStartIsAFailure},
		{"AnExecutorThatDiesOnTERMIsNotWaitedForUntilTheGraceEnds", testAnExecutorThatDiesOnTERMIsNotWaitedForUntilTheGraceEnds},
		{"ASetsidDaemonOfTheExecutorDoesNotOutliveTheRun", testASetsidDaemonOfTheExecutorDoesNotOutliveTheRun},
		{"ADoubleForkedDaemonDoesNotOutliveTheRun", testADoubleForkedDaemonDoesNotOutliveTheRun},
		{"AKilledSupervisorIsReported", testAKilledSupervisorIsReported},
	}
	for _, sup := range supervisors() {
		t.Run(sup.name, func(t *testing.T) {
			supervisorUnderTest = sup.path
			t.Cleanup(func() { supervisorUnderTest = "" })
			for _, r := range rules {
				t.Run(r.name, r.fn)
			}
		})
	}
}

// The executor's parent is the supervisor: the kernel's /proc/<pid>/exe
// names the binary it runs, the dedicated one or this test binary.
func testTheSupervisorIsTheOneAskedFor(t *testing.T) {
	want := supervisorUnderTest
	if want == "" {
		self, err := os.Executable()
		require.NoError(t, err)
		want = self
	}
	c := command(t, script(t, t.TempDir(), `readlink /proc/$PPID/exe; tr '\0' ' ' < /proc/$PPID/cmdline`), Options{})
	res := c.Run(context.Background(), Job{Env: []string{"PATH=/usr/bin:/bin"}})
	require.Equal(t, Success, res.Outcome, string(res.Output))
	lines := strings.Split(strings.TrimSpace(string(res.Output)), "\n")
	require.Len(t, lines, 2, string(res.Output))
	assert.Equal(t, want, lines[0])
	assert.True(t, strings.HasPrefix(lines[1], "slotscaler-executor-supervisor "), "ps shows the supervisor by name: %q", lines[1])
}

func TestFindSupervisor(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "sup")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	cases := map[string]struct {
		want    string
		path    string
		wantErr string
	}{
		// go test binaries have no slotscaler-supervisor next to them.
		"default, none installed: self": {want: "", path: ""},
		"self asked for":                {want: SupervisorSelf, path: ""},
		"an executable file":            {want: exe, path: exe},
		"a missing file":                {want: filepath.Join(dir, "nope"), wantErr: "no such file"},
		"not executable":                {want: plain, wantErr: "not an executable file"},
		"a directory":                   {want: dir, wantErr: "not an executable file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := FindSupervisor(tc.want)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.path, got)
		})
	}
}

// BenchmarkRunTrue is the cost of one phase that does nothing (/bin/true)
// under each supervisor: the dedicated binary starts in about a
// millisecond, the agent (here: this test binary) run again in tens.
func BenchmarkRunTrue(b *testing.B) {
	for _, sup := range supervisors() {
		b.Run(sup.name, func(b *testing.B) {
			c, err := NewCommand([]string{"/bin/true"}, Options{Supervisor: sup.path})
			require.NoError(b, err)
			for b.Loop() {
				if res := c.Run(context.Background(), Job{}); res.Outcome != Success {
					b.Fatalf("%v: %s", res.Outcome, res.Output)
				}
			}
		})
	}
}
