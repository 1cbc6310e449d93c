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

// PromtoolVersion is the version of the github.com/prometheus/prometheus
// module (v0.3xx.y is Prometheus 3.xx.y) whose promtool tests the chart's
// alerting rules.
const PromtoolVersion = "v0.316.0"

// tool is a command built once per test binary into a per-user cache
// folder (go install is a quick no-op once it is there).
type tool struct {
	once sync.Once
	path string
	err  error
}

var helm, promtool tool

// build runs `go install [flags] module@version` into the cache folder
// slotscaler-test/<name>-<version> and returns the binary's path.
func (tl *tool) build(t testing.TB, name, module, version string, flags ...string) string {
	t.Helper()
	tl.once.Do(func() {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "slotscaler-test", name+"-"+version)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tl.err = err
			return
		}
		args := append(append([]string{"install"}, flags...), module+"@"+version)
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			tl.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		tl.path = filepath.Join(dir, name)
	})
	if tl.err != nil {
		t.Fatal(tl.err)
	}
	return tl.path
}

// HelmBinary builds Helm HelmVersion from the Go module proxy.
func HelmBinary(t testing.TB) string {
	t.Helper()
	return helm.build(t, "helm", "helm.sh/helm/v3/cmd/helm", HelmVersion)
}

// PromtoolBinary builds Prometheus' promtool PromtoolVersion from the Go
// module proxy, without the service discovery plugins (remove_all_sd: the
// rule tests need none, and they are most of its build: about 4 minutes
// cold instead of 9 on two cores).
func PromtoolBinary(t testing.TB) string {
	t.Helper()
	return promtool.build(t, "promtool", "github.com/prometheus/prometheus/cmd/promtool", PromtoolVersion, "-tags", "remove_all_sd")
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
