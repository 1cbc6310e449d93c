// Package deploy checks the container image (Dockerfile) and the local stack
// (docker-compose.yml) without Docker: it parses them with the tools Docker
// itself uses (BuildKit's Dockerfile parser and linter, compose-go's loader
// and the Compose JSON schema) and checks what the rest of the repo relies
// on, against the binaries the Makefile's `binaries` target really builds.
//
// Every check is a function returning the problems it finds, so each is also
// fed mutated copies of the files and must report the mutation.
package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mattn/go-shellwords"
	"github.com/stretchr/testify/require"
)

const rootModule = "github.com/slotscaler/slotscaler"

// repoRoot is the root of the checkout: two levels up, holding the root
// module's go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repo root's go.mod")
	require.Contains(t, string(mod), "module "+rootModule+"\n", "%s is not the repo root", root)
	return root
}

func readRepoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), name))
	require.NoError(t, err)
	return b
}

// goMinor is the root go.mod's go directive as major.minor ("1.26").
func goMinor(t *testing.T) string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, "go.mod")))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go "); ok {
			parts := strings.Split(strings.TrimSpace(v), ".")
			require.GreaterOrEqual(t, len(parts), 2, "go directive %q", v)
			return parts[0] + "." + parts[1]
		}
	}
	t.Fatal("root go.mod has no go directive")
	return ""
}

// buildOutput is what one `go build` command line of a make target produces.
type buildOutput struct {
	Dir      string   // the -o directory, cleaned ("bin")
	Binaries []string // base names of the built commands, sorted
	Packages []string // the built packages as named ("./cmd/slotscaler-supervisor"), sorted
	Static   bool     // CGO_ENABLED=0
	Trimpath bool
}

// goBuildValueFlags are the go build flags that take a separate value.
var goBuildValueFlags = []string{"-o", "-ldflags", "-gcflags", "-asmflags", "-tags", "-mod", "-modfile",
	"-p", "-C", "-pgo", "-buildmode", "-overlay", "-pkgdir", "-toolexec", "-compiler", "-installsuffix"}

// parseMakeBinaries reads `make -n binaries` output: the one `go build` line
// building commands into a directory.
func parseMakeBinaries(out string) (buildOutput, []string) {
	var (
		bo       buildOutput
		problems []string
		builds   int
	)
	for line := range strings.Lines(out) {
		words, err := shellwords.Parse(line)
		if err != nil {
			problems = append(problems, "cannot split "+strconv.Quote(line)+": "+err.Error())
			continue
		}
		i := slices.IndexFunc(words, func(w string) bool { return path.Base(w) == "go" })
		if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
			continue
		}
		builds++
		bo.Static = slices.Contains(words[:i], "CGO_ENABLED=0")
		args := words[i+2:]
		for j := 0; j < len(args); j++ {
			a := args[j]
			if !strings.HasPrefix(a, "-") {
				bo.Binaries = append(bo.Binaries, path.Base(a))
				bo.Packages = append(bo.Packages, a)
				continue
			}
			name, value, hasValue := strings.Cut(a, "=")
			name = "-" + strings.TrimLeft(name, "-")
			if !hasValue && slices.Contains(goBuildValueFlags, name) && j+1 < len(args) {
				j++
				value = args[j]
			}
			switch name {
			case "-o":
				if !strings.HasSuffix(value, "/") {
					problems = append(problems, "go build -o "+value+" is not a directory (no trailing /)")
				}
				bo.Dir = path.Clean(value)
			case "-trimpath":
				bo.Trimpath = true
			}
		}
	}
	switch {
	case builds == 0:
		problems = append(problems, "no go build command in the make output")
	case builds > 1:
		problems = append(problems, "more than one go build command in the make output")
	case bo.Dir == "":
		problems = append(problems, "go build has no -o directory")
	case len(bo.Binaries) == 0:
		problems = append(problems, "go build names no packages")
	}
	slices.Sort(bo.Binaries)
	slices.Sort(bo.Packages)
	return bo, problems
}

// makeBinaries runs `make -n binaries` in the repo root (prints, builds
// nothing) and parses it.
func makeBinaries(t *testing.T) buildOutput {
	t.Helper()
	cmd := exec.Command("make", "-n", "binaries", "GO=go")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make -n binaries:\n%s", out)
	bo, problems := parseMakeBinaries(string(out))
	require.Empty(t, problems, "make -n binaries:\n%s", out)
	return bo
}

// isNonRootUser says whether a USER / user: value is a numeric, non-zero uid
// (optionally with a gid): only a number can be checked without the image's
// /etc/passwd, and it is what Kubernetes' runAsNonRoot can verify.
func isNonRootUser(u string) (bool, string) {
	uid, _, _ := strings.Cut(u, ":")
	n, err := strconv.Atoi(uid)
	switch {
	case u == "":
		return false, "no user"
	case uid == "root":
		return false, "user " + strconv.Quote(u) + " is root"
	case err != nil:
		return false, "user " + strconv.Quote(u) + " is not numeric"
	case n == 0:
		return false, "user " + strconv.Quote(u) + " is root (uid 0)"
	case n < 0:
		return false, "user " + strconv.Quote(u) + " has a negative uid"
	}
	return true, ""
}

func TestMakeBinariesBuildsStaticTrimmedCommands(t *testing.T) {
	bo := makeBinaries(t)
	require.Equal(t, "bin", bo.Dir)
	require.Equal(t, []string{"agent", "dashboard", "scaler", "slotscaler-supervisor"}, bo.Binaries)
	require.True(t, bo.Static, "CGO_ENABLED=0")
	require.True(t, bo.Trimpath, "-trimpath")
	for _, p := range bo.Packages {
		require.DirExists(t, filepath.Join(repoRoot(t), p), "a package main folder per binary")
	}
}

func TestParseMakeBinariesReportsBrokenTargets(t *testing.T) {
	tests := map[string]struct {
		out       string
		want      buildOutput
		wantProbl string
	}{
		"the real shape": {
			out: "CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/ ./scaler ./agent ./cmd/slotscaler-supervisor ./dashboard\n",
			want: buildOutput{Dir: "bin", Binaries: []string{"agent", "dashboard", "scaler", "slotscaler-supervisor"},
				Packages: []string{"./agent", "./cmd/slotscaler-supervisor", "./dashboard", "./scaler"}, Static: true, Trimpath: true},
		},
		"flag values given separately": {
			out:  "/usr/local/go/bin/go build -ldflags '-s -w' -tags netgo -o out/ ./scaler\n",
			want: buildOutput{Dir: "out", Binaries: []string{"scaler"}, Packages: []string{"./scaler"}},
		},
		"no go build":         {out: "echo nothing\n", wantProbl: "no go build command"},
		"-o is a file":        {out: "go build -o bin/scaler ./scaler\n", wantProbl: "not a directory"},
		"no -o":               {out: "go build ./scaler\n", wantProbl: "no -o directory"},
		"two go builds":       {out: "go build -o bin/ ./scaler\ngo build -o bin/ ./agent\n", wantProbl: "more than one"},
		"unbalanced quotes":   {out: "go build -ldflags='-s -o bin/ ./scaler\n", wantProbl: "cannot split"},
		"a package-less line": {out: "go build -o bin/\n", wantProbl: "names no packages"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, problems := parseMakeBinaries(tc.out)
			if tc.wantProbl == "" {
				require.Empty(t, problems)
				require.Equal(t, tc.want, got)
				return
			}
			requireProblem(t, problems, tc.wantProbl)
		})
	}
}

func TestIsNonRootUser(t *testing.T) {
	tests := map[string]bool{
		"65532:65532": true, "999:999": true, "1000": true,
		"": false, "0": false, "0:0": false, "root": false, "root:root": false, "nonroot": false, "-1": false,
	}
	for u, want := range tests {
		t.Run(strconv.Quote(u), func(t *testing.T) {
			got, why := isNonRootUser(u)
			require.Equal(t, want, got, why)
		})
	}
}

// requireProblem asserts that one of the problems mentions want.
func requireProblem(t *testing.T, problems []string, want string) {
	t.Helper()
	for _, p := range problems {
		if strings.Contains(p, want) {
			return
		}
	}
	require.Failf(t, "problem not reported", "want a problem containing %q, got %q", want, problems)
}

// swap returns a mutation replacing old (which must occur exactly once) by new.
func swap(old, new string) func(*testing.T, string) string {
	return func(t *testing.T, s string) string {
		t.Helper()
		require.Equal(t, 1, strings.Count(s, old), "mutation anchor %q must occur once", old)
		return strings.Replace(s, old, new, 1)
	}
}
