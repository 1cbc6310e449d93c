// Package childproc starts child processes whose parent-death signal
// (Linux's Pdeathsig) fires only when this process ends.
package childproc

import (
	"os/exec"
	"runtime"
	"sync"
)

// Start starts cmd from one goroutine locked to its OS thread for the life
// of the process.
//
// Pdeathsig is tied to the thread that forked the child, not to the
// process: started from an arbitrary thread that later exits (the runtime
// ends a thread whose goroutine exits while locked with
// runtime.LockOSThread), the child would be killed mid-run. The spawner
// goroutine never returns, so its thread ends only with the whole process,
// which is exactly when the children should die.
func Start(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan request)
		go func() {
			runtime.LockOSThread() // never unlocked
			for r := range spawner.reqs {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- request{cmd, errc}
	return <-errc
}

var spawner struct {
	once sync.Once
	reqs chan request
}

type request struct {
	cmd  *exec.Cmd
	errc chan error
}
