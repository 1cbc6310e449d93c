package executor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SupervisorBinary is the dedicated supervisor's file name
// (cmd/slotscaler-supervisor), looked for next to the running binary.
const SupervisorBinary = "slotscaler-supervisor"

// SupervisorSelf asks FindSupervisor for this binary run again.
const SupervisorSelf = "self"

// FindSupervisor resolves the supervisor to run phases under, for
// Options.Supervisor: "" (the result, too) means this binary run again.
//
//   - want "": SupervisorBinary next to this binary (os.Executable) when
//     that file exists, else "" — binaries built without it (go test, a
//     lone `go build ./agent`) keep working, only slower to start phases;
//   - want SupervisorSelf: "";
//   - any other want: that file, which must be an executable regular
//     file: an operator who named one gets it or a clear error.
func FindSupervisor(want string) (string, error) {
	switch want {
	case SupervisorSelf:
		return "", nil
	case "":
		self, err := os.Executable()
		if err != nil {
			return "", nil // no way to look next to us: fall back
		}
		p := filepath.Join(filepath.Dir(self), SupervisorBinary)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return checkSupervisor(p)
	default:
		return checkSupervisor(want)
	}
}

func checkSupervisor(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("supervisor %s: %w", p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("supervisor: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("supervisor %s: not an executable file (mode %v)", abs, fi.Mode())
	}
	return abs, nil
}
