package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"reflect"
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
	// PollInterval: how often the notifier looks for pools whose event
	// stream moved, all pools in one round trip per Redis node (default
	// 1s; see watch.go); only those pools' workers read their groups.
	// Reads do not block, so workers hold no connection while idle.
	PollInterval time.Duration
	// SafetyPollInterval: how often each worker reads its groups even
	// without news (default 2m, jittered between half and all of it). What
	// the watch misses is caught every ClaimIdle/3 (the groups' lag); this
	// read is the last resort.
	SafetyPollInterval time.Duration
	// GroupGrace: the consumer groups of a webhook no longer configured for
	// a pool are destroyed once it has been missing from this replica's
	// configuration for this long and no notifier has written its status
	// header for as long (default 10m; at least four SyncIntervals). Every
	// replica delivering a webhook rewrites its header at least every
	// GroupGrace/2 (HeaderRefresh at most): replicas sharing a Redis
	// should share this setting.
	GroupGrace time.Duration
	// SyncInterval: how often the declared pools are listed to start and
	// stop workers (default 15s).
	SyncInterval time.Duration
	// ExpiringInterval: how often reservations are checked for
	// reservation-expiring (default 30s).
	ExpiringInterval time.Duration
	// Secrets reads the Secrets of the webhooks AgentPools declare
	// (spec.notifications, copied into Redis by the janitor as references).
	// nil: only the config file's webhooks are delivered.
	Secrets SecretReader
	// ClaimIdle: an entry pending this long with nobody touching it is
	// taken over (its replica died). Default: a minute more than twice the
	// longest webhook timeout. Must exceed twice every timeout: the holder
	// touches its entries at least every ClaimIdle/3 and before each attempt.
	ClaimIdle time.Duration
}

// Notifier delivers the configured webhooks of every declared pool.
type Notifier struct {
	store         *slots.Store
	rdb           redis.UniversalClient
	prefix        string
	cfg           Config
	opts          Options
	log           *slog.Logger
	metrics       *metrics
	script        *redis.Script
	destroyScript *redis.Script

	declared *Declarations

	mu      sync.Mutex
	workers map[pairKey]*worker
	// headers: what this replica last wrote of each pair's status header,
	// and when (writeHeader skips an unchanged one until HeaderRefresh).
	headers map[pairKey]headerWrite

	// Used by Run's goroutine only: when each removed webhook's groups were
	// first seen unconfigured, and when groups were last swept.
	orphans   map[groupRef]time.Time
	lastSweep time.Time
	// lastIDs: the last entry id of each watched event stream ("" when
	// empty), by watch.
	lastIDs map[slots.PoolID]string
}

type headerWrite struct {
	content string
	at      time.Time
}

// HeaderRefresh: a replica writes an unchanged status header (host,
// format, events, seen) again this often (or every GroupGrace/2 if that is
// shorter), not at every sync: a status older than StatusTTL means no
// notifier delivers that webhook any more, one not seen for GroupGrace
// lets its groups go.
const HeaderRefresh = 5 * time.Minute

// pair is one webhook of one pool, resolved.
type pair struct {
	pool slots.PoolID
	wh   Webhook
}

func (p pair) key() pairKey { return pairKey{p.pool, p.wh.Name} }

// declaredDefaults are the delivery settings of the webhooks AgentPools
// declare (the AgentPool names where to post, not how hard to try).
func declaredDefaults() Webhook {
	return Webhook{Timeout: DefaultTimeout, MaxAttempts: DefaultMaxAttempts, MaxAge: DefaultMaxAge,
		InitialBackoff: DefaultInitialBackoff, MaxBackoff: DefaultMaxBackoff}
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
	if opts.Secrets != nil {
		longest = declaredDefaults().Timeout
	}
	for _, w := range cfg.Webhooks {
		longest = max(longest, w.Timeout)
	}
	def(&opts.ClaimIdle, 2*longest+DefaultClaimIdleMargin)
	if opts.ClaimIdle <= 2*longest {
		return nil, fmt.Errorf("notifier: claim idle %v must exceed twice the longest webhook timeout (%v)", opts.ClaimIdle, longest)
	}
	def(&opts.SafetyPollInterval, DefaultSafetyPoll)
	def(&opts.GroupGrace, DefaultGroupGrace)
	if opts.GroupGrace < 4*opts.SyncInterval {
		// Headers are written at syncs: a replica still delivering the
		// webhook must rewrite its header well within the grace, or its
		// groups could go under it.
		return nil, fmt.Errorf("notifier: group grace %v must be at least four sync intervals (%v)", opts.GroupGrace, opts.SyncInterval)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("registering notifier metrics: %w", err)
	}
	return &Notifier{
		store: store, rdb: rdb, prefix: store.Prefix(), cfg: cfg, opts: opts, declared: NewDeclarations(rdb, store.Prefix()),
		log: opts.Logger.With("component", "notifier"), metrics: m,
		script: redis.NewScript(queueExpiringLua), destroyScript: redis.NewScript(destroyGroupsLua),
		workers: map[pairKey]*worker{}, headers: map[pairKey]headerWrite{},
		orphans: map[groupRef]time.Time{}, lastIDs: map[slots.PoolID]string{},
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
	syncTick := time.NewTicker(n.opts.SyncInterval)
	defer syncTick.Stop()
	expiring := time.NewTicker(n.opts.ExpiringInterval)
	defer expiring.Stop()
	poll := time.NewTicker(n.opts.PollInterval)
	defer poll.Stop()
	claims := time.NewTicker(max(n.opts.ClaimIdle/3, time.Millisecond))
	defer claims.Stop()
	n.syncWorkers(ctx, wctx, &wg)
	n.checkExpiring(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-syncTick.C:
			n.syncWorkers(ctx, wctx, &wg)
		case <-expiring.C:
			n.checkExpiring(ctx)
		case <-poll.C:
			n.watch(ctx)
		case <-claims.C:
			n.checkGroups(ctx)
		}
	}
}

// Sync creates the consumer groups of every (pool, webhook) pair that has
// none yet and writes each pair's status header (host, format, events). A
// new group starts at the end of its stream: a webhook hears of events
// after it was configured (or its pool declared), not of a pool's past.
// The pairs are the config file's webhooks matching each declared pool and
// the webhooks each pool's AgentPool declares (with Options.Secrets).
func (n *Notifier) Sync(ctx context.Context) error {
	_, err := n.pairs(ctx)
	return err
}

// configuration is what one sync found: the pairs to run workers for, and
// for removing groups, every pool, the pairs configured (their groups may
// exist even when creating them failed this time) and the pools whose
// configuration did not read completely.
type configuration struct {
	pairs      []pair
	pools      []slots.PoolID
	configured map[groupRef]bool
	uncertain  map[slots.PoolID]bool
}

// pairs is Sync, returning the pairs to run workers for.
func (n *Notifier) pairs(ctx context.Context) (configuration, error) {
	pools, err := n.store.Pools(ctx)
	if err != nil {
		return configuration{}, err
	}
	uncertain := map[slots.PoolID]bool{}
	var candidates []pair
	var errs []error
	for _, p := range pools {
		for _, w := range n.cfg.Webhooks {
			if w.Matches(p) {
				candidates = append(candidates, pair{p, w})
			}
		}
	}
	if n.opts.Secrets != nil {
		declared, err := n.declared.Read(ctx, pools)
		if err != nil {
			errs = append(errs, err)
			// Which pool's declaration failed is in the error only: no
			// pool's declared groups are removed this time.
			for _, p := range pools {
				uncertain[p] = true
			}
		}
		for _, p := range pools {
			for _, h := range declared[p] {
				w, err := resolvePool(ctx, n.opts.Secrets, p, h, declaredDefaults())
				if err != nil {
					// Logged; a pair that resolved before keeps its
					// worker as it was (a Secret read failing for a
					// moment must not stop deliveries).
					errs = append(errs, err)
					uncertain[p] = true
					n.mu.Lock()
					if old, ok := n.workers[pairKey{p, PoolWebhookPrefix + h.Name}]; ok {
						candidates = append(candidates, pair{p, old.wh})
					}
					n.mu.Unlock()
					continue
				}
				candidates = append(candidates, pair{p, w})
			}
		}
	}
	conf := configuration{pools: pools, configured: map[groupRef]bool{}, uncertain: uncertain}
	for _, c := range candidates {
		conf.configured[c.key()] = true
	}
	for _, c := range candidates {
		n.mu.Lock()
		_, running := n.workers[c.key()]
		n.mu.Unlock()
		if !running {
			if err := n.ensureGroups(ctx, c.pool, c.wh.Name, "$"); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := n.writeHeader(ctx, c.pool, c.wh); err != nil {
			errs = append(errs, err)
		}
		conf.pairs = append(conf.pairs, c)
	}
	return conf, errors.Join(errs...)
}

func (n *Notifier) syncWorkers(ctx, wctx context.Context, wg *sync.WaitGroup) {
	conf, err := n.pairs(ctx)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("syncing webhook workers", "err", err)
	}
	if conf.pools == nil && err != nil {
		return // the pool list was not read: keep the workers as they are
	}
	pairs := conf.pairs
	defer func() {
		// A quarter of the grace between sweeps: a removed webhook's
		// groups go within 1.25 graces of its removal.
		if time.Since(n.lastSweep) >= n.opts.GroupGrace/4 {
			n.lastSweep = time.Now()
			n.sweepGroups(ctx, conf.pools, conf.configured, conf.uncertain)
		}
	}()
	want := map[pairKey]Webhook{}
	for _, p := range pairs {
		want[p.key()] = p.wh
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, w := range n.workers {
		wh, ok := want[k]
		if ok && reflect.DeepEqual(wh, w.wh) {
			continue
		}
		// Gone, or changed (a rotated Secret, other events): the worker
		// stops; what it held stays pending for this consumer, and its
		// successor reads this consumer's pending entries first.
		w.stop()
		<-w.done
		delete(n.workers, k)
		if !ok {
			n.metrics.forget(k.pool.String(), k.webhook)
			delete(n.headers, k)
		}
	}
	for _, p := range pairs {
		if _, ok := n.workers[p.key()]; ok {
			continue
		}
		w := n.newWorker(wctx, p)
		n.workers[p.key()] = w
		// Woken once: the watch may have seen the stream move before the
		// worker existed.
		w.wake()
		wg.Add(1)
		go func() { defer wg.Done(); defer close(w.done); w.run() }()
	}
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
	// The notifier's own stream goes by itself once nobody adds to it (a
	// deleted pool's); a worker finding its group gone makes it again.
	if err := n.rdb.ExpireNX(ctx, StreamKey(n.prefix, pool), streamTTL).Err(); err != nil {
		return fmt.Errorf("setting the TTL of the notifier's stream of pool %s: %w", pool, err)
	}
	return nil
}

func (n *Notifier) writeHeader(ctx context.Context, pool slots.PoolID, w Webhook) error {
	now := time.Now()
	k := pairKey{pool, w.Name}
	content := w.Host() + "|" + w.Format + "|" + strings.Join(w.Events, ",")
	n.mu.Lock()
	last, ok := n.headers[k]
	n.mu.Unlock()
	// At least every half grace: the header says the webhook is still
	// delivered (sweepGroups on other replicas).
	if ok && last.content == content && now.Sub(last.at) < min(HeaderRefresh, n.opts.GroupGrace/2) {
		return nil
	}
	key := StatusKey(n.prefix, pool, w.Name)
	pipe := n.rdb.TxPipeline()
	pipe.HSet(ctx, key, fHost, w.Host(), fFormat, w.Format, fEvents, strings.Join(w.Events, ","), fSeen, ms(now))
	pipe.Expire(ctx, key, StatusTTL)
	pipe.SAdd(ctx, WebhooksKey(n.prefix, pool), w.Name)
	pipe.Expire(ctx, WebhooksKey(n.prefix, pool), StatusTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("writing status of webhook %s of pool %s: %w", w.Name, pool, err)
	}
	n.mu.Lock()
	n.headers[k] = headerWrite{content, now}
	n.mu.Unlock()
	return nil
}
