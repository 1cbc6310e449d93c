package executor

import (
	"os"

	"github.com/slotscaler/slotscaler/pkg/executor/supervise"
)

// The fallback supervisor: any binary that links this package (the agent,
// a test binary) run again with argv[0] supervise.Arg0 is the supervisor,
// when no dedicated one is installed (Options.Supervisor empty).
func init() {
	if len(os.Args) > 0 && os.Args[0] == supervise.Arg0 {
		os.Exit(supervise.Main(os.Args[1:]))
	}
}
