package deploy

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/stretchr/testify/require"
)

// imagePorts are the ports the binaries listen on by default (their --help):
// scaler gRPC 9090, gRPC health 9091, metrics 8081; dashboard 8080 and
// metrics 8082; agent health and metrics 8082.
var imagePorts = []string{"8080", "8081", "8082", "9090", "9091"}

// dockerfile is a parsed Dockerfile.
type dockerfile struct {
	Stages []instructions.Stage
	Lint   []string // BuildKit linter warnings ("Rule: message (line n)")
}

func parseDockerfile(src []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("parsing Dockerfile: %w", err)
	}
	df := &dockerfile{}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		df.Lint = append(df.Lint, fmt.Sprintf("%s: %s (line %d)", rule, msg, line))
	}})
	for _, w := range res.Warnings {
		df.Lint = append(df.Lint, w.Short)
	}
	df.Stages, _, err = instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("parsing Dockerfile instructions: %w", err)
	}
	return df, nil
}

// final is the stage an unqualified `docker build` produces.
func (d *dockerfile) final() *instructions.Stage {
	if len(d.Stages) == 0 {
		return nil
	}
	return &d.Stages[len(d.Stages)-1]
}

// stage finds a stage by its name or index, as COPY --from names it.
func (d *dockerfile) stage(ref string) *instructions.Stage {
	for i := range d.Stages {
		if strings.EqualFold(d.Stages[i].Name, ref) || strconv.Itoa(i) == ref {
			return &d.Stages[i]
		}
	}
	return nil
}

func commandsOf[T any](s *instructions.Stage) []T {
	var out []T
	if s == nil {
		return nil
	}
	for _, c := range s.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// imageFacts is what the final image holds, as far as the Dockerfile says.
type imageFacts struct {
	User       string            // the final stage's last USER ("" if none)
	Entrypoint []string          // exec-form ENTRYPOINT of the final stage
	Binaries   map[string]string // path in the image -> base name, COPY'd from a build stage
}

func (d *dockerfile) facts() imageFacts {
	f := imageFacts{Binaries: map[string]string{}}
	fin := d.final()
	if u := commandsOf[*instructions.UserCommand](fin); len(u) > 0 {
		f.User = u[len(u)-1].User
	}
	if e := commandsOf[*instructions.EntrypointCommand](fin); len(e) > 0 {
		f.Entrypoint = e[len(e)-1].CmdLine
	}
	for _, c := range commandsOf[*instructions.CopyCommand](fin) {
		if c.From == "" || d.stage(c.From) == nil {
			continue
		}
		for _, src := range c.SourcePaths {
			dst := c.DestPath
			if strings.HasSuffix(dst, "/") || len(c.SourcePaths) > 1 {
				dst = path.Join(dst, path.Base(src))
			}
			f.Binaries[path.Clean(dst)] = path.Base(src)
		}
	}
	return f
}

type dockerfileCheck func(d *dockerfile, bo buildOutput, goVersion string) []string

var dockerfileChecks = map[string]dockerfileCheck{
	"multi-stage": func(d *dockerfile, _ buildOutput, _ string) []string {
		if len(d.Stages) < 2 {
			return []string{fmt.Sprintf("%d stage(s): want a build stage and a separate final stage", len(d.Stages))}
		}
		return nil
	},
	"build stage uses the go.mod Go version": func(d *dockerfile, _ buildOutput, goVersion string) []string {
		var problems []string
		for _, ref := range buildStages(d) {
			s := d.stage(ref)
			if !strings.HasPrefix(s.BaseName, "golang:"+goVersion+"-") && s.BaseName != "golang:"+goVersion {
				problems = append(problems, fmt.Sprintf("build stage %q is FROM %s, want golang:%s (go.mod)", s.Name, s.BaseName, goVersion))
			}
		}
		return problems
	},
	"base images pinned by digest": func(d *dockerfile, _ buildOutput, _ string) []string {
		// A tag can be moved to other bytes; a digest cannot. The tag stays
		// in front of it for people.
		var problems []string
		for _, s := range d.Stages {
			if d.stage(s.BaseName) == nil && !strings.Contains(s.BaseName, "@sha256:") {
				problems = append(problems, fmt.Sprintf("stage %q: base image %s is not pinned by digest (image:tag@sha256:…)", s.Name, s.BaseName))
			}
		}
		return problems
	},
	"build stage runs make binaries": func(d *dockerfile, _ buildOutput, _ string) []string {
		refs := buildStages(d)
		if len(refs) == 0 {
			return []string{"the final stage copies nothing from a build stage"}
		}
		var problems []string
		for _, ref := range refs {
			s := d.stage(ref)
			runs := commandsOf[*instructions.RunCommand](s)
			if !slices.ContainsFunc(runs, func(r *instructions.RunCommand) bool {
				return strings.Join(strings.Fields(strings.Join(r.CmdLine, " ")), " ") == "make binaries"
			}) {
				problems = append(problems, fmt.Sprintf("build stage %q does not RUN make binaries", s.Name))
			}
			// go.mod and go.sum before the source: the module download is
			// its own layer.
			copies := commandsOf[*instructions.CopyCommand](s)
			if len(copies) < 2 || !slices.Equal(copies[0].SourcePaths, []string{"go.mod", "go.sum"}) {
				problems = append(problems, fmt.Sprintf("build stage %q does not COPY go.mod go.sum before the source", s.Name))
			}
		}
		return problems
	},
	"final stage runs as a numeric non-root user": func(d *dockerfile, _ buildOutput, _ string) []string {
		if ok, why := isNonRootUser(d.facts().User); !ok {
			return []string{"final stage: " + why}
		}
		return nil
	},
	"every copied binary is built by make binaries": func(d *dockerfile, bo buildOutput, _ string) []string {
		var problems []string
		copied := map[string]bool{}
		for _, c := range commandsOf[*instructions.CopyCommand](d.final()) {
			if c.From == "" || d.stage(c.From) == nil {
				continue
			}
			for _, src := range c.SourcePaths {
				name := path.Base(src)
				copied[name] = true
				if !slices.Contains(bo.Binaries, name) || path.Base(path.Dir(src)) != bo.Dir {
					problems = append(problems, fmt.Sprintf("COPY --from=%s %s: not a binary make binaries builds (%s/%v)", c.From, src, bo.Dir, bo.Binaries))
				}
			}
		}
		for _, b := range bo.Binaries {
			if !copied[b] {
				problems = append(problems, fmt.Sprintf("binary %s is built but not copied into the final image", b))
			}
		}
		return problems
	},
	"entrypoint is a copied binary": func(d *dockerfile, _ buildOutput, _ string) []string {
		f := d.facts()
		eps := commandsOf[*instructions.EntrypointCommand](d.final())
		switch {
		case len(eps) == 0:
			return []string{"final stage has no ENTRYPOINT"}
		case eps[len(eps)-1].PrependShell:
			return []string{"ENTRYPOINT is in shell form (the image has no shell; signals must reach the binary)"}
		case len(f.Entrypoint) == 0:
			return []string{"ENTRYPOINT is empty"}
		}
		if _, ok := f.Binaries[f.Entrypoint[0]]; !ok {
			return []string{fmt.Sprintf("ENTRYPOINT %s is not one of the copied binaries %v", f.Entrypoint[0], keys(f.Binaries))}
		}
		return nil
	},
	"exposes the documented ports": func(d *dockerfile, _ buildOutput, _ string) []string {
		var exposed []string
		for _, e := range commandsOf[*instructions.ExposeCommand](d.final()) {
			for _, p := range e.Ports {
				exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
			}
		}
		var problems []string
		for _, p := range imagePorts {
			if !slices.Contains(exposed, p) {
				problems = append(problems, "port "+p+" is not EXPOSEd")
			}
		}
		return problems
	},
	"no lint warnings": func(d *dockerfile, _ buildOutput, _ string) []string {
		return d.Lint
	},
}

// buildStages are the stages the final stage copies from.
func buildStages(d *dockerfile) []string {
	var refs []string
	for _, c := range commandsOf[*instructions.CopyCommand](d.final()) {
		if c.From != "" && d.stage(c.From) != nil && !slices.Contains(refs, c.From) {
			refs = append(refs, c.From)
		}
	}
	return refs
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func checkDockerfile(d *dockerfile, bo buildOutput, goVersion string) []string {
	var problems []string
	for _, name := range keys(dockerfileChecks) {
		problems = append(problems, dockerfileChecks[name](d, bo, goVersion)...)
	}
	return problems
}

func TestDockerfile(t *testing.T) {
	d, err := parseDockerfile(readRepoFile(t, "Dockerfile"))
	require.NoError(t, err)
	bo, goVersion := makeBinaries(t), goMinor(t)
	for name, check := range dockerfileChecks {
		t.Run(name, func(t *testing.T) {
			require.Empty(t, check(d, bo, goVersion))
		})
	}
	t.Run("image facts", func(t *testing.T) {
		f := d.facts()
		require.Equal(t, "65532:65532", f.User)
		require.Equal(t, []string{"/usr/local/bin/scaler"}, f.Entrypoint)
		require.Equal(t, map[string]string{
			"/usr/local/bin/agent": "agent", "/usr/local/bin/dashboard": "dashboard", "/usr/local/bin/scaler": "scaler",
			// next to the agent, which looks for it there
			"/usr/local/bin/slotscaler-supervisor": "slotscaler-supervisor",
		}, f.Binaries)
	})
}

// TestDockerfileChecksReportMutations feeds broken copies of the Dockerfile
// (and of the make target's output) to the same checks.
func TestDockerfileChecksReportMutations(t *testing.T) {
	const (
		finalFrom = "FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639\n"
		copyBins  = "COPY --from=build /src/bin/scaler /src/bin/agent /src/bin/slotscaler-supervisor /src/bin/dashboard /usr/local/bin/\n"
	)
	real := makeBinaries(t)
	tests := map[string]struct {
		mutate func(*testing.T, string) string
		bo     func(buildOutput) buildOutput
		want   string
	}{
		"single stage": {
			mutate: swap(finalFrom+copyBins, "RUN cp bin/scaler bin/agent bin/slotscaler-supervisor bin/dashboard /usr/local/bin/\n"),
			want:   "1 stage(s)",
		},
		"USER root":    {mutate: swap("USER 65532:65532", "USER root"), want: `user "root" is root`},
		"USER 0:0":     {mutate: swap("USER 65532:65532", "USER 0:0"), want: "is root (uid 0)"},
		"USER by name": {mutate: swap("USER 65532:65532", "USER nonroot"), want: "is not numeric"},
		"no USER":      {mutate: swap("USER 65532:65532\n", ""), want: "final stage: no user"},
		"USER only in the build stage": {
			mutate: func(t *testing.T, s string) string {
				s = swap("USER 65532:65532\n", "")(t, s)
				return swap("RUN make binaries\n", "RUN make binaries\nUSER 65532:65532\n")(t, s)
			},
			want: "final stage: no user",
		},
		"go build instead of make binaries": {
			mutate: swap("RUN make binaries", "RUN CGO_ENABLED=0 go build -o bin/ ./scaler ./agent ./cmd/slotscaler-supervisor ./dashboard"),
			want:   "does not RUN make binaries",
		},
		"source copied before the module download": {
			mutate: swap("COPY go.mod go.sum ./\nRUN go mod download\nCOPY . .\n", "COPY . .\nRUN go mod download\n"),
			want:   "does not COPY go.mod go.sum before the source",
		},
		"older Go than go.mod": {mutate: swap("FROM golang:1.26-bookworm", "FROM golang:1.25-bookworm"), want: "want golang:"},
		"copies a binary make does not build": {
			mutate: swap("/src/bin/dashboard /usr/local/bin/", "/src/bin/dashboard /src/bin/janitor /usr/local/bin/"),
			want:   "/src/bin/janitor: not a binary make binaries builds",
		},
		"copies from another folder": {
			mutate: swap("/src/bin/dashboard /usr/local/bin/", "/src/out/dashboard /usr/local/bin/"),
			want:   "/src/out/dashboard: not a binary make binaries builds",
		},
		"make stops building the dashboard": {
			bo: func(bo buildOutput) buildOutput {
				bo.Binaries = slices.DeleteFunc(slices.Clone(bo.Binaries), func(b string) bool { return b == "dashboard" })
				return bo
			},
			want: "/src/bin/dashboard: not a binary make binaries builds",
		},
		"a built binary left out of the image": {
			mutate: swap(" /src/bin/agent /src/bin/slotscaler-supervisor", " /src/bin/slotscaler-supervisor"),
			want:   "binary agent is built but not copied",
		},
		"the supervisor left out of the image": {
			mutate: swap(" /src/bin/slotscaler-supervisor /src/bin/dashboard", " /src/bin/dashboard"),
			want:   "binary slotscaler-supervisor is built but not copied",
		},
		"entrypoint not copied": {
			mutate: swap(`ENTRYPOINT ["/usr/local/bin/scaler"]`, `ENTRYPOINT ["/usr/local/bin/janitor"]`),
			want:   "ENTRYPOINT /usr/local/bin/janitor is not one of the copied binaries",
		},
		"entrypoint in shell form": {
			mutate: swap(`ENTRYPOINT ["/usr/local/bin/scaler"]`, `ENTRYPOINT /usr/local/bin/scaler`),
			want:   "shell form",
		},
		"no entrypoint": {mutate: swap(`ENTRYPOINT ["/usr/local/bin/scaler"]`+"\n", ""), want: "no ENTRYPOINT"},
		"final image by tag only": {
			mutate: swap("nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639", "nonroot"),
			want:   "not pinned by digest",
		},
		"scaler port hidden": {mutate: swap("EXPOSE 8080 8081 8082 9090 9091", "EXPOSE 8080 8081 8082 9091"), want: "port 9090 is not EXPOSEd"},
		"lint: lower-case as": {
			mutate: swap(" AS build", " as build"),
			want:   "FromAsCasing",
		},
	}
	src := string(readRepoFile(t, "Dockerfile"))
	goVersion := goMinor(t)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, bo := src, real
			if tc.mutate != nil {
				s = tc.mutate(t, s)
			}
			if tc.bo != nil {
				bo = tc.bo(bo)
			}
			d, err := parseDockerfile([]byte(s))
			require.NoError(t, err, "mutated Dockerfile:\n%s", s)
			requireProblem(t, checkDockerfile(d, bo, goVersion), tc.want)
		})
	}
}
