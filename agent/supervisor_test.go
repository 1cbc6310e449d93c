package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/internal/testutil"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// The agent runs each phase under slotscaler-supervisor when it is
// installed next to it, and under itself run again when it is not: the
// executor's parent, as the kernel names it (/proc/$PPID/exe), is the one
// the agent's start-up log line announced.
func TestTheAgentRunsPhasesUnderTheSupervisorNextToIt(t *testing.T) {
	t.Parallel()
	for name, installed := range map[string]bool{"installed": true, "absent: the agent itself": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, redistest.Standalone(t))
			dir := openDir(t)
			agent := binaryIn(t, dir)
			want, logged := agent, `supervisor=self`
			if installed {
				require.NoError(t, testutil.BuildBinaries(dir, "./cmd/slotscaler-supervisor"))
				want = filepath.Join(dir, "slotscaler-supervisor")
				logged = "supervisor=" + want
			}
			p := startProcess(t, agent, e.settings(t, map[string]string{"LOG_FORMAT": "text"}), false)
			e.waitPodState(t, "agent-1", slots.PodActive)

			e.submit(t, "p", slots.Plan, `readlink /proc/$PPID/exe`)
			tk := e.waitTask(t, "p", slots.StateSucceeded)
			assert.Equal(t, want, strings.TrimSpace(tk.Output))
			assert.Contains(t, p.logs.String(), logged)
		})
	}
}
