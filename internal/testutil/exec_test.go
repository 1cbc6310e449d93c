package testutil

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestWriteExecutableWhileOthersFork writes and runs scripts from many
// goroutines at once, the pattern that fails with "text file busy" when a
// fork inherits another goroutine's write descriptor.
func TestWriteExecutableWhileOthersFork(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				p := filepath.Join(dir, fmt.Sprintf("s%d-%d", g, i))
				WriteExecutable(t, p, strings.NewReader("#!/bin/sh\nexit 0\n"))
				if err := exec.Command(p).Run(); err != nil {
					errs <- fmt.Errorf("running %s: %w", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
