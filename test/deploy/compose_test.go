package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"
)

// loadCompose parses and validates a compose file the way `docker compose`
// does (Compose JSON schema, interpolation of ${VAR:-default} from env,
// normalisation), as if it were docker-compose.yml in root.
func loadCompose(ctx context.Context, root string, content []byte, env map[string]string) (*types.Project, error) {
	if env == nil {
		env = map[string]string{}
	}
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml"), Content: content}},
		Environment: env,
	})
}

// defaultKeyPrefix is the binaries' --key-prefix default (slots.DefaultPrefix;
// this module does not import the root one).
const defaultKeyPrefix = "ss"

// composeFacts is what the compose checks compare the stack against.
type composeFacts struct {
	Root     string     // the repo root: the build context
	Binaries []string   // what `make binaries` builds
	Image    imageFacts // the Dockerfile's final image
}

func env(s types.ServiceConfig, name string) (string, bool) {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// argv is what a service runs: its entrypoint (or the image's) and command.
func argv(s types.ServiceConfig, f composeFacts) []string {
	ep := []string(s.Entrypoint)
	if ep == nil && s.Build != nil {
		ep = f.Image.Entrypoint
	}
	return append(slices.Clone(ep), s.Command...)
}

// binaryOf is the slotscaler binary a service built from the Dockerfile
// runs ("" if it runs something else).
func binaryOf(s types.ServiceConfig, f composeFacts) string {
	a := argv(s, f)
	if s.Build == nil || len(a) == 0 {
		return ""
	}
	if b, ok := f.Image.Binaries[a[0]]; ok {
		return b
	}
	if !strings.Contains(a[0], "/") && slices.Contains(f.Binaries, a[0]) {
		return a[0] // found in PATH
	}
	return ""
}

// flagValue finds `--name value` or `--name=value` in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// setting is what a slotscaler binary run by s sees for one of its flags,
// in pkg/config's order: the flag in its arguments, else the flag's
// environment twin (--key-prefix: KEY_PREFIX), else def.
func setting(s types.ServiceConfig, f composeFacts, name, def string) string {
	a := argv(s, f)
	if v, ok := flagValue(a, "--"+name); ok {
		return v
	}
	if v, ok := flagValue(a, "-"+name); ok {
		return v
	}
	if v, ok := env(s, strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
		return v
	}
	return def
}

// boolSetting is setting for a boolean flag, which may be given bare.
func boolSetting(s types.ServiceConfig, f composeFacts, name string) (bool, error) {
	a := argv(s, f)
	if slices.Contains(a, "--"+name) || slices.Contains(a, "-"+name) {
		return true, nil
	}
	v := setting(s, f, name, "false")
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("--%s %q is not a boolean", name, v)
	}
	return b, nil
}

// declaresPool says whether s runs `scaler declare-pool` from the image
// (the scaler dispatches on its first argument).
func declaresPool(s types.ServiceConfig, f composeFacts) bool {
	a := argv(s, f)
	return binaryOf(s, f) == "scaler" && len(a) > 1 && a[1] == "declare-pool"
}

// declaredFor checks that something declares agent's static pool before
// the agents give up on it (--register-timeout): a service they wait for,
// finished, that runs `scaler declare-pool` on the same Redis, key prefix
// and pool, as a static pool.
func declaredFor(p *types.Project, f composeFacts, agent types.ServiceConfig) []string {
	want := map[string]string{
		"redis-url":  setting(agent, f, "redis-url", ""),
		"key-prefix": setting(agent, f, "key-prefix", defaultKeyPrefix),
		"pool":       setting(agent, f, "pool-namespace", "") + "/" + setting(agent, f, "pool-name", ""),
	}
	var why []string
	for _, dep := range slices.Sorted(maps.Keys(agent.DependsOn)) {
		ds, ok := p.Services[dep]
		if !ok || !declaresPool(ds, f) {
			continue
		}
		if c := agent.DependsOn[dep].Condition; c != types.ServiceConditionCompletedSuccessfully {
			why = append(why, fmt.Sprintf("%s: waits for %s only until %s (want %s)", agent.Name, dep, c, types.ServiceConditionCompletedSuccessfully))
			continue
		}
		got := map[string]string{
			"redis-url":  setting(ds, f, "redis-url", ""),
			"key-prefix": setting(ds, f, "key-prefix", defaultKeyPrefix),
			"pool":       setting(ds, f, "pool-namespace", "") + "/" + setting(ds, f, "pool-name", ""),
		}
		var wrong []string
		for _, k := range []string{"pool", "key-prefix", "redis-url"} {
			if got[k] != want[k] {
				wrong = append(wrong, fmt.Sprintf("%s: %s declares with %s %q, not the agents' %q", agent.Name, dep, k, got[k], want[k]))
			}
		}
		managed, err := boolSetting(ds, f, "managed")
		switch {
		case err != nil:
			wrong = append(wrong, fmt.Sprintf("%s: %s: %v", agent.Name, dep, err))
		case managed:
			wrong = append(wrong, fmt.Sprintf("%s: %s declares a managed pool (its agents register only against the janitor's records; want a static one)", agent.Name, dep))
		}
		if len(wrong) == 0 {
			return nil
		}
		why = append(why, wrong...)
	}
	return append(why, fmt.Sprintf("%s: no service_completed_successfully dependency runs scaler declare-pool for pool %s", agent.Name, want["pool"]))
}

func sortedServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range p.ServiceNames() {
		out = append(out, p.Services[name])
	}
	slices.SortFunc(out, func(a, b types.ServiceConfig) int { return strings.Compare(a.Name, b.Name) })
	return out
}

type composeCheck func(p *types.Project, f composeFacts) []string

var composeChecks = map[string]composeCheck{
	"redis persists and never evicts": func(p *types.Project, _ composeFacts) []string {
		r, ok := p.Services["redis"]
		if !ok {
			return []string{"no redis service"}
		}
		var problems []string
		args := append(slices.Clone([]string(r.Entrypoint)), r.Command...)
		if v, _ := flagValue(args, "--appendonly"); v != "yes" {
			problems = append(problems, "redis: no --appendonly yes (a restart would lose the slot store)")
		}
		if v, _ := flagValue(args, "--maxmemory-policy"); v != "noeviction" {
			problems = append(problems, "redis: no --maxmemory-policy noeviction (evicted keys are lost state)")
		}
		if !slices.ContainsFunc(r.Volumes, func(v types.ServiceVolumeConfig) bool {
			_, named := p.Volumes[v.Source]
			return v.Type == types.VolumeTypeVolume && named && v.Target == "/data"
		}) {
			problems = append(problems, "redis: /data is not a named volume")
		}
		if r.HealthCheck == nil || r.HealthCheck.Disable || !strings.Contains(strings.Join(r.HealthCheck.Test, " "), "redis-cli ping") {
			problems = append(problems, "redis: no redis-cli ping healthcheck")
		}
		return problems
	},
	"every build uses the repo Dockerfile": func(p *types.Project, f composeFacts) []string {
		var problems []string
		for _, s := range sortedServices(p) {
			if s.Build == nil {
				continue
			}
			if s.Build.DockerfileInline != "" {
				problems = append(problems, s.Name+": builds an inline Dockerfile")
				continue
			}
			df := s.Build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(s.Build.Context, df)
			}
			if filepath.Clean(s.Build.Context) != f.Root || df != filepath.Join(f.Root, "Dockerfile") {
				problems = append(problems, fmt.Sprintf("%s: builds %s in %s, want the repo's Dockerfile", s.Name, df, s.Build.Context))
			}
			if s.Build.Target != "" {
				problems = append(problems, fmt.Sprintf("%s: builds target %q, not the final image", s.Name, s.Build.Target))
			}
		}
		return problems
	},
	"every pulled image is pinned by digest": func(p *types.Project, _ composeFacts) []string {
		var problems []string
		for _, s := range sortedServices(p) {
			if s.Build == nil && !strings.Contains(s.Image, "@sha256:") {
				problems = append(problems, fmt.Sprintf("%s: image %s is pulled by tag only (want image:tag@sha256:…)", s.Name, s.Image))
			}
		}
		return problems
	},
	"every Go service runs a binary make binaries builds": func(p *types.Project, f composeFacts) []string {
		var problems []string
		for _, s := range sortedServices(p) {
			if s.Build != nil && binaryOf(s, f) == "" {
				problems = append(problems, fmt.Sprintf("%s: runs %q, not one of the image's binaries %v (make binaries: %v)",
					s.Name, argv(s, f), keys(f.Image.Binaries), f.Binaries))
			}
		}
		return problems
	},
	"every service runs as a non-root user": func(p *types.Project, f composeFacts) []string {
		var problems []string
		for _, s := range sortedServices(p) {
			switch {
			case s.User != "":
				if ok, why := isNonRootUser(s.User); !ok {
					problems = append(problems, s.Name+": "+why)
				}
			case s.Build != nil:
				if ok, why := isNonRootUser(f.Image.User); !ok {
					problems = append(problems, s.Name+": no user: and the image's USER: "+why)
				}
			default:
				problems = append(problems, fmt.Sprintf("%s: no user: set, and image %s's default user is not known to be non-root", s.Name, s.Image))
			}
		}
		return problems
	},
	"every service has a read-only root filesystem": func(p *types.Project, _ composeFacts) []string {
		var problems []string
		for _, s := range sortedServices(p) {
			if !s.ReadOnly {
				problems = append(problems, s.Name+": root filesystem is writable (read_only: true)")
			}
		}
		return problems
	},
	"REDIS_URL names the redis service, after it is healthy": func(p *types.Project, _ composeFacts) []string {
		var problems []string
		users := 0
		for _, s := range sortedServices(p) {
			raw, ok := env(s, "REDIS_URL")
			if !ok {
				if s.Build != nil {
					problems = append(problems, s.Name+": no REDIS_URL (an empty one runs an embedded in-memory Redis)")
				}
				continue
			}
			users++
			u, err := url.Parse(raw)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: REDIS_URL %q: %v", s.Name, raw, err))
				continue
			}
			host := u.Hostname()
			r, isService := p.Services[host]
			if u.Scheme != "redis" || !isService || !strings.HasPrefix(r.Image, "redis:") || (u.Port() != "" && u.Port() != "6379") {
				problems = append(problems, fmt.Sprintf("%s: REDIS_URL %q does not point at the redis service (redis://redis:6379/…)", s.Name, raw))
				continue
			}
			if d, ok := s.DependsOn[host]; !ok || d.Condition != types.ServiceConditionHealthy {
				problems = append(problems, fmt.Sprintf("%s: does not depend on %s with condition service_healthy", s.Name, host))
			}
		}
		if users == 0 {
			problems = append(problems, "no service sets REDIS_URL")
		}
		return problems
	},
	"one key prefix": func(p *types.Project, _ composeFacts) []string {
		prefixes := map[string][]string{}
		for _, s := range sortedServices(p) {
			if _, ok := env(s, "REDIS_URL"); !ok {
				continue
			}
			prefix, ok := env(s, "KEY_PREFIX")
			if !ok {
				prefix = defaultKeyPrefix
			}
			prefixes[prefix] = append(prefixes[prefix], s.Name)
		}
		if len(prefixes) > 1 {
			return []string{fmt.Sprintf("services use different KEY_PREFIXes: %v", prefixes)}
		}
		return nil
	},
	"a declared static pool of builtin-executor agents": func(p *types.Project, f composeFacts) []string {
		var problems []string
		replicas := 0
		for _, s := range sortedServices(p) {
			if binaryOf(s, f) != "agent" {
				continue
			}
			replicas += s.GetScale()
			ns, name := setting(s, f, "pool-namespace", ""), setting(s, f, "pool-name", "")
			if ns == "" || name == "" {
				problems = append(problems, s.Name+": POOL_NAMESPACE and POOL_NAME must be set")
			}
			if ex, _ := env(s, "EXECUTOR"); !strings.HasPrefix(ex, "builtin:sleep?") {
				problems = append(problems, fmt.Sprintf("%s: EXECUTOR %q is not the builtin sleep executor (the image has no other program)", s.Name, ex))
			}
			if pod, ok := env(s, "POD_NAME"); ok && s.GetScale() > 1 {
				problems = append(problems, fmt.Sprintf("%s: POD_NAME %q is shared by %d replicas (leave it unset: each uses its host name)", s.Name, pod, s.GetScale()))
			}
			if uid, ok := env(s, "POD_UID"); ok {
				problems = append(problems, fmt.Sprintf("%s: POD_UID %q is fixed (a static pool generates one per start)", s.Name, uid))
			}
			problems = append(problems, declaredFor(p, f, s)...)
		}
		if replicas < 2 {
			problems = append(problems, fmt.Sprintf("%d agent replica(s): want at least 2 (a pool of several pods)", replicas))
		}
		return problems
	},
	"the dashboard is published on loopback only": func(p *types.Project, f composeFacts) []string {
		for _, s := range sortedServices(p) {
			if binaryOf(s, f) != "dashboard" {
				continue
			}
			for _, port := range s.Ports {
				if port.Target == 8080 && port.Published == "8080" && port.HostIP == "127.0.0.1" {
					return nil
				}
			}
			return []string{s.Name + ": port 8080 is not published as 127.0.0.1:8080 (its write token has a public default)"}
		}
		return []string{"no dashboard service"}
	},
}

func checkCompose(p *types.Project, f composeFacts) []string {
	var problems []string
	for _, name := range keys(composeChecks) {
		problems = append(problems, composeChecks[name](p, f)...)
	}
	return problems
}

func realComposeFacts(t *testing.T) composeFacts {
	t.Helper()
	d, err := parseDockerfile(readRepoFile(t, "Dockerfile"))
	require.NoError(t, err)
	bo := makeBinaries(t)
	return composeFacts{Root: repoRoot(t), Binaries: bo.Binaries, Image: d.facts()}
}

func TestCompose(t *testing.T) {
	f := realComposeFacts(t)
	p, err := loadCompose(t.Context(), f.Root, readRepoFile(t, "docker-compose.yml"), nil)
	require.NoError(t, err)
	for name, check := range composeChecks {
		t.Run(name, func(t *testing.T) {
			require.Empty(t, check(p, f))
		})
	}
	t.Run("services", func(t *testing.T) {
		require.ElementsMatch(t, []string{"redis", "pool-init", "scaler", "dashboard", "agent"}, p.ServiceNames())
		for name, bin := range map[string]string{"scaler": "scaler", "dashboard": "dashboard", "agent": "agent"} {
			require.Equal(t, bin, binaryOf(p.Services[name], f), name)
		}
		require.True(t, declaresPool(p.Services["pool-init"], f), "pool-init runs scaler declare-pool: %q", argv(p.Services["pool-init"], f))
	})
}

func TestComposeDashboardTokenComesFromTheEnvironment(t *testing.T) {
	root := repoRoot(t)
	src := readRepoFile(t, "docker-compose.yml")
	tests := map[string]struct {
		env  map[string]string
		want string
	}{
		"unset: the local-only placeholder": {want: "local=local-only-change-me"},
		"empty: the placeholder too":        {env: map[string]string{"SLOTSCALER_API_TOKENS": ""}, want: "local=local-only-change-me"},
		"set":                               {env: map[string]string{"SLOTSCALER_API_TOKENS": "ci=s3cret"}, want: "ci=s3cret"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := loadCompose(t.Context(), root, src, tc.env)
			require.NoError(t, err)
			got, ok := env(p.Services["dashboard"], "API_TOKENS")
			require.True(t, ok)
			require.Equal(t, tc.want, got)
		})
	}
	require.Contains(t, string(src), "FOR LOCAL USE ONLY", "the placeholder is marked as such")
}

// TestComposeChecksReportMutations feeds broken copies of docker-compose.yml
// (edited as YAML, then loaded like the real one) to the same checks.
func TestComposeChecksReportMutations(t *testing.T) {
	tests := map[string]struct {
		mutate func(t *testing.T, doc map[string]any)
		facts  func(composeFacts) composeFacts
		want   string
	}{
		"redis may evict": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "redis")["command"] = []any{"redis-server", "--appendonly", "yes"}
			},
			want: "--maxmemory-policy noeviction",
		},
		"redis evicts LRU": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "redis")["command"] = []any{"redis-server", "--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"}
			},
			want: "--maxmemory-policy noeviction",
		},
		"redis without persistence": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "redis")["command"] = "redis-server --appendonly no --maxmemory-policy noeviction"
			},
			want: "--appendonly yes",
		},
		"redis data in the container": {
			mutate: func(t *testing.T, doc map[string]any) { delete(service(t, doc, "redis"), "volumes") },
			want:   "/data is not a named volume",
		},
		"redis without healthcheck": {
			mutate: func(t *testing.T, doc map[string]any) { delete(service(t, doc, "redis"), "healthcheck") },
			want:   "no redis-cli ping healthcheck",
		},
		"redis by tag only": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "redis")["image"] = "redis:7.4" },
			want:   "redis: image redis:7.4 is pulled by tag only",
		},
		"redis as root": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "redis")["user"] = "0:0" },
			want:   `redis: user "0:0" is root`,
		},
		"redis on the image's default (root) user": {
			mutate: func(t *testing.T, doc map[string]any) { delete(service(t, doc, "redis"), "user") },
			want:   "redis: no user: set",
		},
		"agent as root": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "agent")["user"] = "root" },
			want:   `agent: user "root" is root`,
		},
		"image USER becomes root": {
			facts: func(f composeFacts) composeFacts { f.Image.User = "0"; return f },
			want:  "scaler: no user: and the image's USER: user \"0\" is root",
		},
		"writable root filesystem": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "dashboard")["read_only"] = false },
			want:   "dashboard: root filesystem is writable",
		},
		"scaler built from its own folder": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "scaler")["build"] = "./scaler" },
			want:   "scaler: builds",
		},
		"dashboard built from another Dockerfile": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "dashboard")["build"] = map[string]any{"context": ".", "dockerfile": "dashboard.Dockerfile"}
			},
			want: "want the repo's Dockerfile",
		},
		"agent built from the build stage": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "agent")["build"] = map[string]any{"context": ".", "target": "build"}
			},
			want: `agent: builds target "build"`,
		},
		"a binary the image lacks": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "scaler")["entrypoint"] = []any{"/usr/local/bin/janitor"}
			},
			want: `scaler: runs ["/usr/local/bin/janitor"]`,
		},
		"make stops building the agent": {
			facts: func(f composeFacts) composeFacts {
				delete(f.Image.Binaries, "/usr/local/bin/agent")
				f.Binaries = slices.DeleteFunc(slices.Clone(f.Binaries), func(b string) bool { return b == "agent" })
				return f
			},
			want: `agent: runs ["/usr/local/bin/agent"]`,
		},
		"REDIS_URL at localhost": {
			mutate: func(t *testing.T, doc map[string]any) {
				environment(t, doc, "agent")["REDIS_URL"] = "redis://localhost:6379/0"
			},
			want: `agent: REDIS_URL "redis://localhost:6379/0" does not point at the redis service`,
		},
		"REDIS_URL empty: embedded Redis": {
			mutate: func(t *testing.T, doc map[string]any) { delete(environment(t, doc, "dashboard"), "REDIS_URL") },
			want:   "dashboard: no REDIS_URL",
		},
		"scaler starts before redis is healthy": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "scaler")["depends_on"] = map[string]any{"redis": map[string]any{"condition": "service_started"}}
			},
			want: "scaler: does not depend on redis with condition service_healthy",
		},
		"dashboard without depends_on": {
			mutate: func(t *testing.T, doc map[string]any) { delete(service(t, doc, "dashboard"), "depends_on") },
			want:   "dashboard: does not depend on redis",
		},
		"two key prefixes": {
			mutate: func(t *testing.T, doc map[string]any) { environment(t, doc, "dashboard")["KEY_PREFIX"] = "other" },
			want:   "different KEY_PREFIXes",
		},
		"one agent": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "agent")["deploy"] = map[string]any{"replicas": 1}
			},
			want: "1 agent replica(s)",
		},
		"replicas sharing a pod name": {
			mutate: func(t *testing.T, doc map[string]any) { environment(t, doc, "agent")["POD_NAME"] = "agent-0" },
			want:   `POD_NAME "agent-0" is shared by 2 replicas`,
		},
		"agents with a command executor": {
			mutate: func(t *testing.T, doc map[string]any) {
				environment(t, doc, "agent")["EXECUTOR"] = "/usr/bin/terraform"
			},
			want: "is not the builtin sleep executor",
		},
		"agents of another pool than pool-init's": {
			mutate: func(t *testing.T, doc map[string]any) { environment(t, doc, "agent")["POOL_NAME"] = "other" },
			want:   `agent: pool-init declares with pool "demo/static", not the agents' "demo/other"`,
		},
		"agents naming another pool by flag": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "agent")["command"] = []any{"--pool-name=other"}
			},
			want: "no service_completed_successfully dependency runs scaler declare-pool for pool demo/other",
		},
		"pool-init declaring another pool": {
			mutate: func(t *testing.T, doc map[string]any) { environment(t, doc, "pool-init")["POOL_NAMESPACE"] = "other" },
			want:   `agent: pool-init declares with pool "other/static", not the agents' "demo/static"`,
		},
		"pool-init naming another pool by flag (flags win)": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "pool-init")["command"] = []any{"--pool-name", "other"}
			},
			want: `agent: pool-init declares with pool "demo/other", not the agents' "demo/static"`,
		},
		"pool-init under another key prefix": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "pool-init")["command"] = []any{"--key-prefix=other"}
			},
			want: `agent: pool-init declares with key-prefix "other", not the agents' "ss"`,
		},
		"pool-init on another Redis database": {
			mutate: func(t *testing.T, doc map[string]any) {
				environment(t, doc, "pool-init")["REDIS_URL"] = "redis://redis:6379/1"
			},
			want: `agent: pool-init declares with redis-url "redis://redis:6379/1", not the agents' "redis://redis:6379/0"`,
		},
		"pool-init declaring a managed pool": {
			mutate: func(t *testing.T, doc map[string]any) { environment(t, doc, "pool-init")["MANAGED"] = "true" },
			want:   "agent: pool-init declares a managed pool",
		},
		"pool-init declaring a managed pool by a bare flag": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "pool-init")["command"] = []any{"--managed"} },
			want:   "agent: pool-init declares a managed pool",
		},
		"pool-init running the scaler instead of declare-pool": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "pool-init")["entrypoint"] = []any{"/usr/local/bin/scaler"}
			},
			want: "agent: no service_completed_successfully dependency runs scaler declare-pool for pool demo/static",
		},
		"pool-init back to a redis-cli script": {
			mutate: func(t *testing.T, doc map[string]any) {
				svc := service(t, doc, "pool-init")
				delete(svc, "build")
				svc["image"] = "redis:7"
				svc["user"] = "999:999"
				svc["entrypoint"] = []any{"/bin/sh", "-euc"}
				svc["command"] = []any{"redis-cli -u \"$$REDIS_URL\" EVAL \"$$(cat /lua/declare_pool.lua)\" 1 cfg"}
			},
			want: "agent: no service_completed_successfully dependency runs scaler declare-pool for pool demo/static",
		},
		"agents not waiting for pool-init": {
			mutate: func(t *testing.T, doc map[string]any) {
				delete(service(t, doc, "agent")["depends_on"].(map[string]any), "pool-init")
			},
			want: "no service_completed_successfully dependency runs scaler declare-pool for pool demo/static",
		},
		"agents starting as pool-init starts": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "agent")["depends_on"].(map[string]any)["pool-init"] = map[string]any{"condition": "service_started"}
			},
			want: "agent: waits for pool-init only until service_started (want service_completed_successfully)",
		},
		"dashboard on every interface": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "dashboard")["ports"] = []any{"8080:8080"} },
			want:   "port 8080 is not published as 127.0.0.1:8080",
		},
	}
	real := realComposeFacts(t)
	src := readRepoFile(t, "docker-compose.yml")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var doc map[string]any
			require.NoError(t, yaml.Unmarshal(src, &doc))
			if tc.mutate != nil {
				tc.mutate(t, doc)
			}
			out, err := yaml.Marshal(doc)
			require.NoError(t, err)
			f := real
			f.Image.Binaries = maps.Clone(real.Image.Binaries)
			if tc.facts != nil {
				f = tc.facts(f)
			}
			p, err := loadCompose(t.Context(), f.Root, out, nil)
			require.NoError(t, err, "the mutated file must still be a valid compose file:\n%s", out)
			requireProblem(t, checkCompose(p, f), tc.want)
		})
	}
}

func TestComposeRejectsInvalidFiles(t *testing.T) {
	tests := map[string]struct {
		mutate func(t *testing.T, doc map[string]any)
		want   string
	}{
		"unknown service key": {
			mutate: func(t *testing.T, doc map[string]any) { service(t, doc, "redis")["restart_policy"] = "always" },
			want:   "services.redis.restart_policy",
		},
		"depends on a missing service": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "scaler")["depends_on"] = map[string]any{"valkey": map[string]any{"condition": "service_healthy"}}
			},
			want: "depends on undefined service",
		},
		"bad depends_on condition": {
			mutate: func(t *testing.T, doc map[string]any) {
				service(t, doc, "scaler")["depends_on"] = map[string]any{"redis": map[string]any{"condition": "healthy"}}
			},
			want: "condition",
		},
	}
	root := repoRoot(t)
	src := readRepoFile(t, "docker-compose.yml")
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var doc map[string]any
			require.NoError(t, yaml.Unmarshal(src, &doc))
			tc.mutate(t, doc)
			out, err := yaml.Marshal(doc)
			require.NoError(t, err)
			_, err = loadCompose(t.Context(), root, out, nil)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func service(t *testing.T, doc map[string]any, name string) map[string]any {
	t.Helper()
	services, ok := doc["services"].(map[string]any)
	require.True(t, ok, "services")
	s, ok := services[name].(map[string]any)
	require.True(t, ok, "service %s", name)
	return s
}

func environment(t *testing.T, doc map[string]any, name string) map[string]any {
	t.Helper()
	e, ok := service(t, doc, name)["environment"].(map[string]any)
	require.True(t, ok, "service %s: environment as a mapping", name)
	return e
}
