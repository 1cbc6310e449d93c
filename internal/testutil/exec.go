// Package testutil holds helpers shared by the tests of several packages.
package testutil

import (
	"io"
	"os"
	"syscall"
	"testing"
)

// WriteExecutable writes an executable file at path from r, safely for
// tests that run in parallel with tests starting processes.
//
// A file open for writing cannot be executed (ETXTBSY). A process forked
// by another goroutine while the write descriptor is open inherits it
// until its exec closes it, so a parallel test that writes a script and
// runs it at once sometimes fails with "text file busy" (golang/go#22315).
// Holding syscall.ForkLock for reading while the descriptor is open keeps
// every fork out of that window.
func WriteExecutable(t testing.TB, path string, r io.Reader) {
	t.Helper()
	if err := writeExecutable(path, r); err != nil {
		t.Fatalf("writing executable %s: %v", path, err)
	}
}

func writeExecutable(path string, r io.Reader) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
