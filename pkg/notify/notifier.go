package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// Options tune a Notifier; zero values take the defaults.
type Options struct {
	// Consumer is this replica's name in the consumer groups (default: the
	// host name, a pod's name). A restarted replica with the same name
	// picks up what it left pending at once; any other replica takes it
	// over after ClaimIdle.
	Consumer string
	Logger   *slog.Logger
	// Registerer gets the delivery metrics (nil: not exported).
	Registerer prometheus.Registerer
	// Client posts the deliveries (default: a client without redirects;
	// each attempt's timeout is the webhook's).
	Client *http.Client
	// PollInterval: how often each (pool, webhook) worker reads new
	// entries when there were none (default 1s). Reads do not block, so
	// workers hold no connection while idle.
	PollInterval time.Duration
	// SyncInterval: how often the declared pools are listed to start and
	// stop workers (default 15s).
	SyncInterval time.Duration
	// ExpiringInterval: how often reservations are checked for
	// reservation-expiring (default 30s).
	ExpiringInterval time.Duration
	// ClaimIdle: an entry pending this long with nobody touching it is
	// taken over (its replica died). Default: a minute more than twice the
	// longest webhook timeout. Must exceed twice every timeout: the holder
	// touches its entries at least every ClaimIdle/3 and before each attempt.
	ClaimIdle time.Duration
}

// Notifier delivers the configured webhooks of every declared pool.
type Notifier struct {
	store   *slots.Store
	rdb     redis.UniversalClient
	prefix  string
	cfg     Config
	opts    Options
	log     *slog.Logger
	metrics *metrics
	script  *redis.Script

	mu      sync.Mutex
	workers map[pairKey]*worker
}

type pairKey struct {
	pool    slots.PoolID
	webhook string
}

// New returns a notifier of cfg's webhooks over the store's pools.
func New(store *slots.Store, rdb redis.UniversalClient, cfg Config, opts Options) (*Notifier, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Consumer == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("notifier: no consumer name and no host name: %v", err)
		}
		opts.Consumer = h
	}
	if opts.Client == nil {
		opts.Client = &http.Client{
			// A receiver's redirect is not followed: the signature and
			// body are for the configured URL only.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&opts.PollInterval, DefaultPollInterval)
	def(&opts.SyncInterval, DefaultSyncInterval)
	def(&opts.ExpiringInterval, DefaultExpiringEvery)
	var longest time.Duration
	for _, w := range cfg.Webhooks {
		longest = max(longest, w.Timeout)
	}
	def(&opts.ClaimIdle, 2*longest+DefaultClaimIdleMargin)
	if opts.ClaimIdle <= 2*longest {
		return nil, fmt.Errorf("notifier: claim idle %v must exceed twice the longest webhook timeout (%v)", opts.ClaimIdle, longest)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("registering notifier metrics: %w", err)
	}
	return &Notifier{
		store: store, rdb: rdb, prefix: store.Prefix(), cfg: cfg, opts: opts,
		log: opts.Logger.With("component", "notifier"), metrics: m,
		script: redis.NewScript(queueExpiringLua), workers: map[pairKey]*worker{},
	}, nil
}

// Run delivers until ctx ends: it syncs the pools' workers every
// SyncInterval and checks reservations every ExpiringInterval. Workers
// stop with ctx; an entry in delivery stays pending for the next replica.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.log.Info("delivering webhooks", "webhooks", len(n.cfg.Webhooks), "consumer", n.opts.Consumer)
	sync := time.NewTicker(n.opts.SyncInterval)
	defer sync.Stop()
	expiring := time.NewTicker(n.opts.ExpiringInterval)
	defer expiring.Stop()
	n.syncWorkers(ctx, wctx, &wg)
	n.checkExpiring(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sync.C:
			n.syncWorkers(ctx, wctx, &wg)
		case <-expiring.C:
			n.checkExpiring(ctx)
		}
	}
}

// Sync creates the consumer groups of every (pool, webhook) pair that has
// none yet and writes each pair's status header (host, format, events). A
// new group starts at the end of its stream: a webhook hears of events
// after it was configured (or its pool declared), not of a pool's past.
func (n *Notifier) Sync(ctx context.Context) ([]pairKey, error) {
	pools, err := n.store.Pools(ctx)
	if err != nil {
		return nil, err
	}
	var pairs []pairKey
	var errs []error
	for _, p := range pools {
		for _, w := range n.cfg.Webhooks {
			if !w.Matches(p) {
				continue
			}
			k := pairKey{p, w.Name}
			n.mu.Lock()
			_, running := n.workers[k]
			n.mu.Unlock()
			if !running {
				if err := n.ensureGroups(ctx, p, w.Name, "$"); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if err := n.writeHeader(ctx, p, w); err != nil {
				errs = append(errs, err)
			}
			pairs = append(pairs, k)
		}
	}
	return pairs, errors.Join(errs...)
}

func (n *Notifier) syncWorkers(ctx, wctx context.Context, wg *sync.WaitGroup) {
	pairs, err := n.Sync(ctx)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("syncing webhook workers", "err", err)
	}
	if pairs == nil && err != nil {
		return // the pool list was not read: keep the workers as they are
	}
	want := map[pairKey]bool{}
	for _, k := range pairs {
		want[k] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, w := range n.workers {
		if !want[k] {
			w.stop()
			delete(n.workers, k)
			n.metrics.forget(k.pool.String(), k.webhook)
		}
	}
	for _, k := range pairs {
		if _, ok := n.workers[k]; ok {
			continue
		}
		w := n.newWorker(wctx, k)
		n.workers[k] = w
		wg.Add(1)
		go func() { defer wg.Done(); w.run() }()
	}
}

func (n *Notifier) webhook(name string) Webhook {
	for _, w := range n.cfg.Webhooks {
		if w.Name == name {
			return w
		}
	}
	return Webhook{}
}

// ensureGroups creates the webhook's group on both streams of the pool
// (MKSTREAM: a pool without events yet has no stream), starting at start.
func (n *Notifier) ensureGroups(ctx context.Context, pool slots.PoolID, webhook, start string) error {
	for _, key := range []string{n.store.EventStreamKey(pool), StreamKey(n.prefix, pool)} {
		err := n.rdb.XGroupCreateMkStream(ctx, key, Group(webhook), start).Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("creating consumer group of webhook %s on pool %s: %w", webhook, pool, err)
		}
	}
	return nil
}

func (n *Notifier) writeHeader(ctx context.Context, pool slots.PoolID, w Webhook) error {
	now := time.Now()
	key := StatusKey(n.prefix, pool, w.Name)
	pipe := n.rdb.TxPipeline()
	pipe.HSet(ctx, key, fHost, w.Host(), fFormat, w.Format, fEvents, strings.Join(w.Events, ","), fSeen, ms(now))
	pipe.Expire(ctx, key, StatusTTL)
	pipe.SAdd(ctx, WebhooksKey(n.prefix, pool), w.Name)
	pipe.Expire(ctx, WebhooksKey(n.prefix, pool), StatusTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("writing status of webhook %s of pool %s: %w", w.Name, pool, err)
	}
	return nil
}
