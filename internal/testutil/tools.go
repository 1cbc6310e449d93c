package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// HelmVersion is the Helm every test renders the chart with.
const HelmVersion = "v3.22.0"

// FreeAddr returns a loopback address that was free a moment ago (a
// process that must be told its address before it listens).
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// RepoRoot is the folder of the repository's root go.mod, found upward from
// the working directory (a test runs in its package's folder).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.HasPrefix(b, []byte("module github.com/slotscaler/slotscaler\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no root go.mod of github.com/slotscaler/slotscaler above the working directory")
		}
		dir = parent
	}
}

// BuildBinaries builds commands of the root module (e.g. "./scaler") into
// dir in one go build, so shared packages compile once. It builds in the
// root module, with its dependency versions: a test module's tests then
// run the binaries that ship, not ones built against the test module's
// pins. It takes no testing.TB so TestMain can call it.
func BuildBinaries(dir string, pkgs ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

var helm struct {
	once sync.Once
	path string
	err  error
}

// HelmBinary builds Helm HelmVersion from the Go module proxy into a
// per-user cache folder, once per test binary (go install is a quick no-op
// once it is there).
func HelmBinary(t testing.TB) string {
	t.Helper()
	helm.once.Do(func() {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "slotscaler-test", "helm-"+HelmVersion)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			helm.err = err
			return
		}
		module := "helm.sh/helm/v3/cmd/helm@" + HelmVersion
		cmd := exec.Command("go", "install", module)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			helm.err = fmt.Errorf("go install %s: %v\n%s", module, err, out)
			return
		}
		helm.path = filepath.Join(dir, "helm")
	})
	if helm.err != nil {
		t.Fatal(helm.err)
	}
	return helm.path
}

// Helm runs helm with args and returns its stdout; the error carries its
// stderr.
func Helm(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(HelmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}
