// Command slotscaler-supervisor is the agent's executor supervisor as a
// program of its own (see pkg/executor/supervise): the agent starts one
// per task phase, so it links the standard library and nothing else and
// starts in about a millisecond, where re-executing the agent costs tens.
// It is installed next to the agent; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/slotscaler/slotscaler/pkg/executor/supervise"
)

func main() {
	os.Exit(supervise.Main(os.Args[1:]))
}
