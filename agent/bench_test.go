package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// BenchmarkTaskOverhead measures what the agent adds around an executor
// that does nothing (/bin/true), one plan at a time on a real Redis:
// take→start (Take returned the assignment → the process runs: claim
// bookkeeping, environment, fork/exec) and exit→free (the process exited →
// Complete recorded, so the slot is free: output collection, process-group
// clean-up, the complete script). It also reports the agent's memory with
// three busy slots, measured on the agent as a process (this test binary
// running main(); a release build is smaller).
//
// Each phase runs under a supervisor: the dedicated slotscaler-supervisor
// (what ships next to the agent) or, when it is absent, the agent itself
// run again (here: this test binary).
func BenchmarkTaskOverhead(b *testing.B) {
	dir := b.TempDir()
	require.NoError(b, testutil.BuildBinaries(dir, "./cmd/slotscaler-supervisor"))
	for _, sup := range []struct{ name, path string }{
		{"supervisor=dedicated", filepath.Join(dir, "slotscaler-supervisor")},
		{"supervisor=self", "self"},
	} {
		b.Run(sup.name, func(b *testing.B) { benchmarkTaskOverhead(b, sup.path) })
	}
}

func benchmarkTaskOverhead(b *testing.B, supervisor string) {
	e := newEnv(b, redistest.Standalone(b))
	timings := make(chan phaseTiming, 1)
	r := e.start(b, map[string]string{"EXECUTOR": "/bin/true", "LOG_LEVEL": "warn", "SUPERVISOR": supervisor}, hooks{
		recorded: func(pt phaseTiming) { timings <- pt },
	})
	r.waitReady(b)
	var takeToStart, exitToFree, total []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		e.submit(b, "b"+strconv.Itoa(i), slots.Plan, "")
		select {
		case pt := <-timings:
			takeToStart = append(takeToStart, pt.Started.Sub(pt.Taken))
			exitToFree = append(exitToFree, pt.Recorded.Sub(pt.Exited))
			total = append(total, time.Since(start))
		case <-time.After(patience):
			b.Fatal("no result recorded")
		}
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(ds[min(len(ds)-1, len(ds)*99/100)].Microseconds()), name+"-p99-µs")
	}
	report("take-to-start", takeToStart)
	report("exit-to-free", exitToFree)
	report("submit-to-free", total)

	rss, heap := busyAgentMemory(b)
	b.ReportMetric(float64(rss)/(1<<20), "rss-3-busy-MiB")
	b.ReportMetric(float64(heap)/(1<<20), "heap-inuse-3-busy-MiB")
}

// busyAgentMemory runs the agent as a process with three slots busy and
// returns its resident set and its Go heap in use (from its /metrics).
func busyAgentMemory(b *testing.B) (rss, heap int64) {
	e := newEnv(b, redistest.Standalone(b))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	require.NoError(b, err)
	p := startProcess(b, self, e.settings(b, map[string]string{"LISTEN_ADDRESS": addr, "LOG_LEVEL": "warn"}), false)
	e.waitPodState(b, "agent-1", slots.PodActive)
	for _, id := range []string{"m1", "m2", "m3"} {
		e.submit(b, id, slots.Plan, `mark started-$TASK_ID; await release`)
		e.await(b, "started-"+id)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	require.NoError(b, err)
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(b, err)
			rss = kb << 10
		}
	}
	r := &agentRun{addr: addr}
	if v, ok := r.metric(b, "go_memstats_heap_inuse_bytes"); ok {
		heap = int64(v)
	}
	e.mark(b, "release")
	for _, id := range []string{"m1", "m2", "m3"} {
		e.waitTask(b, id, slots.StateSucceeded)
	}
	return rss, heap
}
