//go:build !linux

package supervise

import (
	"fmt"
	"os"
)

// Main refuses: the supervisor needs Linux's child subreaper; elsewhere
// the agent runs executors itself.
func Main(args []string) int {
	fmt.Fprintln(os.Stderr, Arg0+": needs Linux")
	return 2
}
