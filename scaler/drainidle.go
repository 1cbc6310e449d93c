package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/janitor"
	"github.com/slotscaler/slotscaler/pkg/logging"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DrainIdleConfig is every setting of `scaler drain-idle`.
type DrainIdleConfig struct {
	config.Common
	Pool        slots.PoolID
	Selector    string
	Kubeconfig  string
	Interval    time.Duration
	ReplicaWait time.Duration
	Once        bool
}

func parseDrainIdleConfig(args []string, stderr io.Writer, lookup func(string) (string, bool)) (DrainIdleConfig, error) {
	var c DrainIdleConfig
	fs := flag.NewFlagSet("scaler drain-idle", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Common.Register(fs, "slot store Redis (required): redis://, rediss://, redis+cluster://, redis+sentinel://")
	fs.StringVar(&c.Pool.Namespace, "pool-namespace", "", "namespace of the pool (required)")
	fs.StringVar(&c.Pool.Name, "pool-name", "", "name of the pool (required)")
	fs.StringVar(&c.Selector, "selector", "", "label `selector` of the pods to remove (default: slotscaler.io/pool=<pool-name>, the pods the deleted AgentPool made); pods with a controller are never removed")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	fs.DurationVar(&c.Interval, "interval", 5*time.Second, "how often busy pods are looked at again")
	fs.DurationVar(&c.ReplicaWait, "replica-wait", 5*time.Second, "how long a drain waits for a Redis replica to acknowledge it before the pod may be deleted")
	fs.BoolVar(&c.Once, "once", false, "one round, then exit (non-zero while busy pods are left); default: repeat until every selected pod is removed")
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			fmt.Fprint(stderr, drainIdleHelp)
		}
		return DrainIdleConfig{}, err
	}
	if c.Selector == "" && c.Pool.Name != "" {
		c.Selector = janitor.LabelPool + "=" + c.Pool.Name
	}
	return c, c.validate()
}

const drainIdleHelp = `
Removes, the idle-only way, the pods an AgentPool deleted with
--cascade=orphan left behind, when a pool goes back from an AgentPool to a
Deployment (docs/migration.md). Each selected pod without a controller whose
record the slot store holds is cordoned while busy (running phases finish, a
reservation can still be approved and its apply runs there); once idle it is
drained in Redis, then deleted with a UID precondition, and its record
removed. Pods with a controller and pods the store has no record of are
never touched. Records the managed pool left whose pod object is gone (lost,
drained or never registered) are removed too: a lost pod's plans are
requeued then. Runs until every selected pod is removed (or one round with
--once).
`

func (c DrainIdleConfig) validate() error {
	if c.RedisURL == "" {
		return errors.New("--redis-url (REDIS_URL) is required")
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
	if c.Interval <= 0 || c.ReplicaWait <= 0 {
		return errors.New("--interval and --replica-wait must be positive")
	}
	return nil
}

// runDrainIdle is `scaler drain-idle`.
func runDrainIdle(ctx context.Context, args []string, stderr io.Writer, lookup func(string) (string, bool)) error {
	cfg, err := parseDrainIdleConfig(args, stderr, lookup)
	if err != nil {
		return err
	}
	base, err := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	log := base.With("component", "drain-idle", "pool", cfg.Pool.String())
	rc, err := kubeConfig(cfg.Kubeconfig, "slotscaler-drain-idle")
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	conn, store, err := openStore(ctx, cfg.Redis, base)
	if err != nil {
		return err
	}
	defer conn.Close()
	for {
		res, err := janitor.DrainIdle(ctx, kube, store, cfg.Pool, janitor.DrainIdleOptions{
			Selector: cfg.Selector, ReplicaWait: cfg.ReplicaWait, Logger: log})
		if err != nil {
			return err
		}
		log.Info("round done", "removed", len(res.Removed), "busy", len(res.Busy), "skipped", len(res.Skipped), "forgotten", len(res.Forgotten))
		if res.Left() == 0 {
			return nil
		}
		if cfg.Once {
			return fmt.Errorf("%d busy pods left: %v", res.Left(), res.Busy)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(cfg.Interval):
		}
	}
}
