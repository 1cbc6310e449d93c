package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DeclareConfig is every setting of `scaler declare-pool`; each flag has an
// environment twin. The pool is named like the agent names it
// (POOL_NAMESPACE, POOL_NAME), so a static pool's agents and the command
// that declares it can share one environment.
type DeclareConfig struct {
	config.Common
	Pool  slots.PoolID
	Store slots.PoolConfig
	// Unmanage allows declaring a managed pool static again.
	Unmanage bool
}

func parseDeclareConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (DeclareConfig, error) {
	def := slots.DefaultPoolConfig()
	c := DeclareConfig{Store: def}
	policy := formatPolicy(def.Policy)
	fs := flag.NewFlagSet("scaler declare-pool", flag.ContinueOnError)
	// The flag package prints the whole usage with every parse error: keep
	// bad input to the one line main prints, and the usage for --help.
	fs.SetOutput(io.Discard)
	c.Common.Register(fs, "slot store Redis (required): redis://, rediss://, redis+cluster://, redis+sentinel://")
	fs.StringVar(&c.Pool.Namespace, "pool-namespace", "", "namespace of the pool (required; the agents' --pool-namespace)")
	fs.StringVar(&c.Pool.Name, "pool-name", "", "name of the pool (required; the agents' --pool-name)")
	fs.StringVar(&policy, "slots", policy, "slot `policy`: the task types each slot of a pod may run, slots separated by ';', types by ',' (types: "+typeList()+")")
	fs.DurationVar(&c.Store.HeartbeatTimeout, "heartbeat-timeout", def.HeartbeatTimeout, "an agent silent this long is lost (agents' --heartbeat-interval must be at most a third of it)")
	fs.DurationVar(&c.Store.ReservationTTL, "reservation-ttl", def.ReservationTTL, "how long slot 0 stays reserved after a plan_and_apply's plan, waiting for approval")
	fs.IntVar(&c.Store.MaxAttempts, "max-attempts", def.MaxAttempts, "how many times a plan phase may start before agent loss fails it")
	fs.IntVar(&c.Store.QueueLimit, "queue-limit", def.QueueLimit, "queued tasks beyond this are refused")
	fs.DurationVar(&c.Store.MaxQueueAge, "max-queue-age", def.MaxQueueAge, "a task waiting longer than this expires (0: never)")
	fs.DurationVar(&c.Store.Retention, "retention", def.Retention, "how long finished tasks are kept")
	fs.IntVar(&c.Store.RetentionCount, "retention-count", def.RetentionCount, "at most this many finished tasks are kept")
	fs.BoolVar(&c.Store.Managed, "managed", def.Managed, "declare a managed pool, whose agents register only against pod records the janitor writes; false (the default) declares a static pool, whose agents self-register. Kubernetes pools are declared by the janitor (scaler janitor) from their AgentPool, not by this command")
	fs.BoolVar(&c.Unmanage, "unmanage", false, "make a managed pool static again, moving it back from an AgentPool to a Deployment: only once its AgentPool was deleted with --cascade=orphan (docs/migration.md); its registered agents keep their work")
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			fmt.Fprint(stderr, declareHelp)
		}
		return DeclareConfig{}, err
	}
	var err error
	if c.Store.Policy, err = parsePolicy(policy); err != nil {
		return DeclareConfig{}, fmt.Errorf("--slots %q: %w", policy, err)
	}
	return c, c.validate()
}

const declareHelp = `
Declares (creates or updates) a static pool in the slot store and exits: run it
before the pool's agents start, e.g. as a one-shot container. Re-running it is
safe: the pool keeps its generation, and settings change in place, except the
slot policy: while the pool has pods a change waits (the other settings are
applied, and the command exits non-zero saying the slot change is pending).
Kubernetes pools are
declared by ` + "`scaler janitor`" + ` from their AgentPool; this command refuses to
turn one into a static pool, unless --unmanage says its AgentPool is gone.
`

// validate checks everything that needs no Redis, so bad input fails with
// one line before anything is written.
func (c DeclareConfig) validate() error {
	if c.RedisURL == "" {
		return errors.New("--redis-url (REDIS_URL) is required: the pool is declared in the slot store the scaler and agents share (an embedded Redis would vanish with this command)")
	}
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if c.Pool.Namespace == "" || c.Pool.Name == "" {
		return errors.New("--pool-namespace (POOL_NAMESPACE) and --pool-name (POOL_NAME) are required")
	}
	if err := c.Pool.Validate(); err != nil {
		return fmt.Errorf("pool %s: %w", c.Pool, err)
	}
	if err := c.Store.Validate(); err != nil {
		return fmt.Errorf("pool %s: %w", c.Pool, err)
	}
	return nil
}

// parsePolicy reads "plan,plan_and_apply;plan;plan": one group of task types
// per slot, in slot order.
func parsePolicy(s string) (slots.SlotPolicy, error) {
	var p slots.SlotPolicy
	if strings.TrimSpace(s) == "" {
		return p, errors.New("no slots (want e.g. " + formatPolicy(slots.DefaultPolicy()) + ")")
	}
	for i, group := range strings.Split(s, ";") {
		var types []slots.TaskType
		for _, word := range strings.Split(group, ",") {
			t := slots.TaskType(strings.TrimSpace(word))
			switch {
			case t == "":
				return slots.SlotPolicy{}, fmt.Errorf("slot %d: empty task type (slots are separated by ';', types by ',')", i)
			case !slices.Contains(slots.TaskTypes, t):
				return slots.SlotPolicy{}, fmt.Errorf("slot %d: unknown task type %q (want %s)", i, t, typeList())
			case slices.Contains(types, t):
				return slots.SlotPolicy{}, fmt.Errorf("slot %d: task type %q listed twice", i, t)
			}
			types = append(types, t)
		}
		p.Slots = append(p.Slots, types)
	}
	if len(p.Slots) > slots.MaxSlots {
		return slots.SlotPolicy{}, fmt.Errorf("%d slots: at most %d", len(p.Slots), slots.MaxSlots)
	}
	return p, nil
}

// formatPolicy writes a policy the way --slots reads it.
func formatPolicy(p slots.SlotPolicy) string {
	groups := make([]string, len(p.Slots))
	for i, types := range p.Slots {
		words := make([]string, len(types))
		for j, t := range types {
			words[j] = string(t)
		}
		groups[i] = strings.Join(words, ",")
	}
	return strings.Join(groups, ";")
}

func typeList() string {
	words := make([]string, len(slots.TaskTypes))
	for i, t := range slots.TaskTypes {
		words[i] = string(t)
	}
	return strings.Join(words, ", ")
}

// runDeclarePool is `scaler declare-pool`: it declares one pool and exits.
func runDeclarePool(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool)) error {
	cfg, err := parseDeclareConfig(args, stderr, lookup)
	if err != nil {
		return err
	}
	base, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log := base.With("component", "declare-pool")
	// The connection and the store log their routine steps at info; this
	// command's one line says it all, so they speak only when something is
	// wrong (or at debug).
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // checked by logging.New
	infra := base
	if level > slog.LevelDebug && level < slog.LevelWarn {
		infra, _ = logging.New(stderr, cfg.LogFormat, "warn")
	}

	// go-redis reports each failed dial through its global logger before
	// Open returns the same failure as its error: only at debug here (a
	// successful Open routes it to infra).
	redisconn.RouteLogs(base, slog.LevelDebug)

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, store, err := openStore(ctx, cfg.Redis, infra)
	if err != nil {
		return err
	}
	defer conn.Close()

	before, oldGen, err := store.Pool(ctx, cfg.Pool)
	exists := err == nil
	if err != nil && !errors.Is(err, slots.ErrPoolNotFound) {
		return err
	}
	if exists && before.Managed && !cfg.Store.Managed && !cfg.Unmanage {
		return fmt.Errorf("pool %s is managed (the janitor declares it from its AgentPool): refusing to make it static, where agents register without the janitor (--unmanage once its AgentPool is deleted with --cascade=orphan)", cfg.Pool)
	}
	decl, err := store.DeclarePool(ctx, cfg.Pool, cfg.Store)
	if err != nil {
		return err
	}
	gen := decl.Generation
	msg := "pool declared"
	if exists && gen == oldGen {
		msg = "pool already declared; generation kept"
	}
	log.Info(msg, "pool", cfg.Pool.String(), "generation", gen, "slots", formatPolicy(cfg.Store.Policy),
		"managed", cfg.Store.Managed, "heartbeat_timeout", cfg.Store.HeartbeatTimeout.String(), "key_prefix", cfg.KeyPrefix)
	return nil
}
