package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Common is what every slotscaler command shares: where the slot store is
// and how the command logs. Each command's Config embeds it, so the flags
// have one name, one default and one check everywhere.
type Common struct {
	Redis
	Logs
}

// Register adds the common flags to fs; redisURLUsage says what this
// command does with --redis-url (what an empty one means differs).
func (c *Common) Register(fs *flag.FlagSet, redisURLUsage string) {
	c.Redis.Register(fs, redisURLUsage)
	c.Logs.Register(fs)
}

// Validate checks the common flags.
func (c Common) Validate() error { return errors.Join(c.Redis.Validate(), c.Logs.Validate()) }

// Redis is the slot store's address and this installation's key prefix.
type Redis struct {
	RedisURL  string
	KeyPrefix string
	// ReplicaAcks is slots.Options.ReplicaAcks: how many Redis replicas
	// must acknowledge a claim or a drain (0: one once a replica was seen).
	ReplicaAcks int
}

// Register adds --redis-url and --key-prefix. The key prefix defaults to
// slots.DefaultPrefix unless KeyPrefix is already set (the demo keeps its
// own prefix apart from a real installation's).
func (r *Redis) Register(fs *flag.FlagSet, redisURLUsage string) {
	prefix := r.KeyPrefix
	if prefix == "" {
		prefix = slots.DefaultPrefix
	}
	fs.StringVar(&r.RedisURL, "redis-url", "", redisURLUsage)
	fs.StringVar(&r.KeyPrefix, "key-prefix", prefix, "Redis key prefix of this installation (the same for every component and agent)")
	fs.IntVar(&r.ReplicaAcks, "redis-replica-acks", 0, "Redis replicas that must acknowledge a claim or a drain before it counts, so a failover cannot lose it: 0 = one once the primary has been seen with a replica (none for a lone Redis); N = always N, also while fewer are connected (claims wait)")
}

// StoreOptions are the slot store's options these settings decide.
func (r Redis) StoreOptions(log *slog.Logger) slots.Options {
	return slots.Options{Prefix: r.KeyPrefix, ReplicaAcks: r.ReplicaAcks, Logger: log}
}

// Validate checks the key prefix: every key embeds a pool's {hash tag}, so
// a brace in the prefix would move keys to another Redis Cluster slot.
func (r Redis) Validate() error {
	if r.KeyPrefix == "" || strings.ContainsAny(r.KeyPrefix, "{} ") {
		return fmt.Errorf("--key-prefix %q must be non-empty and must not contain braces or blanks", r.KeyPrefix)
	}
	if r.ReplicaAcks < 0 {
		return fmt.Errorf("--redis-replica-acks %d must be 0 (automatic) or more", r.ReplicaAcks)
	}
	return nil
}

// Logs is how a command logs (pkg/logging).
type Logs struct {
	LogFormat string
	LogLevel  string
}

// Register adds --log-format and --log-level.
func (l *Logs) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&l.LogLevel, "log-level", "info", "debug, info, warn or error")
}

// Validate checks both settings the way logging.New reads them, so a bad
// value is reported with the other flags instead of at the first log line.
func (l Logs) Validate() error {
	_, err := logging.New(nil, l.LogFormat, l.LogLevel)
	if err != nil {
		return fmt.Errorf("--log-format/--log-level: %w", err)
	}
	return nil
}
