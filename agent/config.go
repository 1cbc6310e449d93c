package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Config is every setting of the agent; each flag has an environment twin
// (--redis-url / REDIS_URL). The chart fills POOL_NAMESPACE, POD_NAME and
// POD_UID from the downward API.
type Config struct {
	config.Common
	PoolNamespace     string
	PoolName          string
	PodName           string
	PodUID            string
	Executor          string
	ExecutorEnv       []string
	PlanTimeout       time.Duration
	ApplyTimeout      time.Duration
	KillGrace         time.Duration
	Supervisor        string
	ListenAddress     string
	HeartbeatInterval time.Duration
	RegisterTimeout   time.Duration
	RedisTimeout      time.Duration
	// WorkspaceRoot holds a private directory per task (TASK_WORKDIR).
	WorkspaceRoot string

	Pool slots.PoolID // from PoolNamespace and PoolName
	// Warnings are settings that work but should change; logged at start.
	Warnings []string
}

// alwaysPassed are the variables every executor gets from the agent's
// environment (when set); --executor-env adds to them.
var alwaysPassed = []string{"PATH", "HOME", "LANG", "TZ"}

// taskVars are set by the agent for each phase.
var taskVars = []string{"TASK_ID", "TASK_TYPE", "TASK_PHASE", "TASK_ATTEMPT", "TASK_EPOCH", "SLOT", "POOL", "POD_NAME", "TASK_WORKDIR"}

var (
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// hostname is os.Hostname, replaceable in tests.
var (
	hostname        = os.Hostname
	defaultHostname = os.Hostname
)

func parseConfig(args []string, lookup func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	var executorEnv string
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.PoolNamespace, "pool-namespace", "", "namespace of the AgentPool this agent serves (the chart: the pod's namespace)")
	fs.StringVar(&c.PoolName, "pool-name", "", "name of the AgentPool this agent serves")
	fs.StringVar(&c.PodName, "pod-name", "", "this pod's name (the chart: metadata.name); empty: the host name")
	fs.StringVar(&c.PodUID, "pod-uid", "", "this pod's UID (the chart: metadata.uid); required in managed pools, generated at start in static pools when empty")
	c.Common.Register(fs, "slot store Redis: redis://, rediss://, redis+cluster://, redis+sentinel:// (never passed to executors)")
	fs.StringVar(&c.Executor, "executor", "", "what runs each task phase: a command line split without a shell (e.g. \"/usr/local/bin/run-task --verbose\"), or builtin:sleep?min=1s&max=5s&fail=0.1")
	fs.StringVar(&executorEnv, "executor-env", "", "comma-separated names of further variables passed from the agent's environment to executors (PATH, HOME, LANG and TZ always are)")
	fs.DurationVar(&c.PlanTimeout, "plan-timeout", time.Hour, "a plan phase running longer is stopped (SIGTERM, then SIGKILL after --kill-grace) and fails with reason timeout")
	fs.DurationVar(&c.ApplyTimeout, "apply-timeout", time.Hour, "the same for an apply phase")
	fs.StringVar(&c.Supervisor, "supervisor", "", "the executor supervisor binary each phase runs under (it ends the phase's whole process tree); empty: slotscaler-supervisor next to the agent's own executable, or the agent itself run again when that file is absent (slower to start a phase); \"self\": the agent itself")
	fs.DurationVar(&c.KillGrace, "kill-grace", 10*time.Second, "time between SIGTERM and SIGKILL when a phase is stopped (timeout, cancel)")
	fs.StringVar(&c.ListenAddress, "listen-address", ":8082", "HTTP address of /healthz, /readyz and /metrics")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "time between heartbeats; at most a third of the pool's heartbeat timeout")
	fs.DurationVar(&c.RegisterTimeout, "register-timeout", 2*time.Minute, "how long start-up waits for Redis, the pool and (managed pools) the janitor's expected record before giving up")
	fs.DurationVar(&c.RedisTimeout, "redis-timeout", 5*time.Second, "bound on each Redis call (failed calls are retried)")
	fs.StringVar(&c.WorkspaceRoot, "workspace-root", "", "directory holding each task's private workspace (TASK_WORKDIR, mode 0700); one agent per directory, whose other contents it deletes; empty: $TMPDIR/slotscaler-workspaces/NAMESPACE_POOL_POD (this agent's pool namespace, pool name and pod name)")
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, oneLine(err)
	}
	for _, n := range strings.Split(executorEnv, ",") {
		if n = strings.TrimSpace(n); n != "" {
			c.ExecutorEnv = append(c.ExecutorEnv, n)
		}
	}
	if c.PodName == "" {
		if h, err := hostname(); err == nil {
			c.PodName = strings.ToLower(h)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		if u, err := url.Parse(c.RedisURL); f.Name == "redis-url" && err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				c.Warnings = append(c.Warnings, "--redis-url carries a password on the command line, which every process on the host can read in /proc/<pid>/cmdline: set REDIS_URL instead")
			}
		}
	})
	var own []string
	fs.VisitAll(func(f *flag.Flag) { own = append(own, config.EnvName(f.Name)) })
	if err := c.validate(own); err != nil {
		return c, err
	}
	return c, c.checkIdentity(lookup)
}

// identityVars are the pod's identity as the janitor injects it, from
// sources a pool's template cannot change (the downward API: the pod's
// namespace, name, UID and the pool label the janitor sets), paired with
// the setting each must agree with. The template can set the agent's
// flags; without this check, args could make an agent serve another
// pool, or register as another pod.
var identityVars = []struct{ env, flag string }{
	{"SLOTSCALER_POD_IDENTITY_NAMESPACE", "pool-namespace"},
	{"SLOTSCALER_POD_IDENTITY_POOL", "pool-name"},
	{"SLOTSCALER_POD_IDENTITY_NAME", "pod-name"},
	{"SLOTSCALER_POD_IDENTITY_UID", "pod-uid"},
}

// checkIdentity refuses settings that disagree with the identity the
// janitor injected. Static pools (no janitor) have no such variables and
// are not checked.
func (c *Config) checkIdentity(lookup func(string) (string, bool)) error {
	effective := map[string]string{"pool-namespace": c.PoolNamespace, "pool-name": c.PoolName, "pod-name": c.PodName, "pod-uid": c.PodUID}
	var errs []error
	for _, v := range identityVars {
		want, ok := lookup(v.env)
		if !ok || want == "" {
			continue
		}
		if got := effective[v.flag]; got != want {
			errs = append(errs, fmt.Errorf("--%s %q disagrees with this pod's identity %q (%s, set by the janitor): the pool's template must not override the identity the janitor gives its agents",
				v.flag, got, want, v.env))
		}
	}
	return oneLine(errors.Join(errs...))
}

// validate reports every bad setting, on one line.
func (c *Config) validate(ownVars []string) error {
	var errs []error
	missing := func(flagName string) error {
		return fmt.Errorf("missing --%s (env %s)", flagName, config.EnvName(flagName))
	}
	if c.PoolNamespace == "" {
		errs = append(errs, missing("pool-namespace"))
	}
	if c.PoolName == "" {
		errs = append(errs, missing("pool-name"))
	}
	if c.PoolNamespace != "" && c.PoolName != "" {
		c.Pool = slots.PoolID{Namespace: c.PoolNamespace, Name: c.PoolName}
		if err := c.Pool.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--pool-namespace/--pool-name: %w", err))
		}
	}
	if c.PodName == "" {
		errs = append(errs, missing("pod-name"))
	} else if len(c.PodName) > slots.MaxNameLen || !dnsSubdomain.MatchString(c.PodName) {
		errs = append(errs, fmt.Errorf("--pod-name %q must be a DNS-1123 subdomain (a Kubernetes pod name)", c.PodName))
	}
	if c.PodUID != "" {
		if err := slots.ValidateTaskID(c.PodUID); err != nil {
			errs = append(errs, fmt.Errorf("--pod-uid %q must be 1-128 characters of [A-Za-z0-9._-]", c.PodUID))
		}
	}
	if c.RedisURL == "" {
		errs = append(errs, missing("redis-url"))
	} else if u, err := url.Parse(c.RedisURL); err != nil {
		errs = append(errs, errors.New("--redis-url is not a URL"))
	} else if !slices.Contains([]string{"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"}, u.Scheme) {
		errs = append(errs, fmt.Errorf("--redis-url scheme %q: want redis, rediss, redis+cluster or redis+sentinel (an agent must share the slot store with the scaler)", u.Scheme))
	}
	errs = append(errs, c.Common.Validate())
	if strings.TrimSpace(c.Executor) == "" {
		errs = append(errs, missing("executor"))
	}
	for _, n := range c.ExecutorEnv {
		switch {
		case !envName.MatchString(n):
			errs = append(errs, fmt.Errorf("--executor-env: %q is not a variable name", n))
		case slices.Contains(ownVars, n):
			errs = append(errs, fmt.Errorf("--executor-env: %s is one of the agent's own settings and is never passed to executors", n))
		case slices.Contains(taskVars, n):
			errs = append(errs, fmt.Errorf("--executor-env: %s is set by the agent for each phase", n))
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"plan-timeout", c.PlanTimeout}, {"apply-timeout", c.ApplyTimeout}, {"kill-grace", c.KillGrace},
		{"heartbeat-interval", c.HeartbeatInterval}, {"register-timeout", c.RegisterTimeout}, {"redis-timeout", c.RedisTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("--%s %v must be positive", d.flag, d.v))
		}
	}
	if c.ListenAddress == "" {
		errs = append(errs, missing("listen-address"))
	}
	return oneLine(errors.Join(errs...))
}

// oneLine joins a multi-error into one line: start-up failures are one
// clear line.
func oneLine(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}

// checkHeartbeat refuses an interval that is not well inside the pool's
// heartbeat timeout: three heartbeats must fit in it, so one lost or slow
// heartbeat never costs the pod its work.
func checkHeartbeat(interval time.Duration, pool slots.PoolID, cfg slots.PoolConfig) error {
	if limit := cfg.HeartbeatTimeout / 3; interval > limit {
		return fmt.Errorf("--heartbeat-interval %v is not well inside pool %s's heartbeat timeout %v: want at most %v", interval, pool, cfg.HeartbeatTimeout, limit)
	}
	return nil
}
