package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/slotscaler/slotscaler/pkg/slots"
)

// PoolWebhook is a webhook an AgentPool declares
// (spec.notifications.webhooks): references to Secret keys in the pool's
// namespace, never their values. The janitor writes them (Declarations);
// the notifier reads them and the Secrets (SecretReader).
type PoolWebhook struct {
	Name          string     `json:"name"`
	Events        []string   `json:"events,omitempty"`
	Format        string     `json:"format,omitempty"`
	URL           SecretRef  `json:"url"`
	SigningSecret *SecretRef `json:"signing_secret,omitempty"`
}

// SecretRef is one key of a Secret in the pool's namespace.
type SecretRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// PoolWebhookPrefix starts the name of a webhook an AgentPool declares
// ("pool:<name>"): the config file's names cannot hold ':', so the two
// never share a consumer group, a status or a metric series.
const PoolWebhookPrefix = "pool:"

// DeclaredKey holds the webhooks a pool's AgentPool declares (JSON).
func DeclaredKey(prefix string, pool slots.PoolID) string { return base(prefix, pool) + "declared" }

// DeclaredTTL: declarations live this long after their last write; the
// janitor writes them again well before (DeclaredRefresh), so a deleted
// pool's go by themselves.
const (
	DeclaredTTL     = 24 * time.Hour
	DeclaredRefresh = time.Hour
)

// Declarations keeps the webhooks each pool declares, in Redis.
type Declarations struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewDeclarations keeps them under the installation's prefix.
func NewDeclarations(rdb redis.UniversalClient, prefix string) *Declarations {
	return &Declarations{rdb: rdb, prefix: prefix}
}

// Write replaces the pool's declared webhooks (none: deletes them).
func (d *Declarations) Write(ctx context.Context, pool slots.PoolID, hooks []PoolWebhook) error {
	key := DeclaredKey(d.prefix, pool)
	var err error
	if len(hooks) == 0 {
		err = d.rdb.Del(ctx, key).Err()
	} else {
		b, merr := json.Marshal(hooks)
		if merr != nil {
			return fmt.Errorf("encoding the webhooks of pool %s: %w", pool, merr)
		}
		err = d.rdb.Set(ctx, key, b, DeclaredTTL).Err()
	}
	if err != nil {
		return fmt.Errorf("writing the webhooks of pool %s: %w", pool, err)
	}
	return nil
}

// Read reads the declared webhooks of the given pools (one pipeline); a
// pool without any is absent from the map. An undecodable value is
// skipped and reported in the error, the others are returned.
func (d *Declarations) Read(ctx context.Context, pools []slots.PoolID) (map[slots.PoolID][]PoolWebhook, error) {
	if len(pools) == 0 {
		return nil, nil
	}
	pipe := d.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(pools))
	for i, p := range pools {
		cmds[i] = pipe.Get(ctx, DeclaredKey(d.prefix, p))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading the pools' declared webhooks: %w", err)
	}
	out := map[slots.PoolID][]PoolWebhook{}
	var errs []error
	for i, p := range pools {
		v, err := cmds[i].Result()
		if err != nil {
			continue
		}
		var hooks []PoolWebhook
		if err := json.Unmarshal([]byte(v), &hooks); err != nil {
			errs = append(errs, fmt.Errorf("the declared webhooks of pool %s: %w", p, err))
			continue
		}
		out[p] = hooks
	}
	return out, errors.Join(errs...)
}

// SecretReader reads one key of a Secret (the scaler's reads the Kubernetes
// API). Errors must not quote the value.
type SecretReader interface {
	SecretKey(ctx context.Context, namespace, name, key string) (string, error)
}

// resolvePool builds a pool's declared webhook: its Secrets read in the
// pool's namespace only, so an AgentPool can name no other namespace's.
func resolvePool(ctx context.Context, secrets SecretReader, pool slots.PoolID, h PoolWebhook, defaults Webhook) (Webhook, error) {
	w := defaults
	w.Name = PoolWebhookPrefix + h.Name
	w.Pools = []string{pool.String()}
	w.Events = slices.Clone(h.Events)
	if len(w.Events) == 0 {
		w.Events = slices.Clone(Events)
	}
	w.Format = h.Format
	if w.Format == "" {
		w.Format = FormatJSON
	}
	spec := WebhookSpec{Name: "x", Pools: []string{"a/b"}, Events: w.Events, Format: w.Format, URL: "https://x"}
	if _, err := resolve(spec, nil); err != nil {
		return Webhook{}, fmt.Errorf("webhook %s of pool %s: %w", h.Name, pool, err)
	}
	u, err := secrets.SecretKey(ctx, pool.Namespace, h.URL.Name, h.URL.Key)
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook %s of pool %s: the URL's Secret %s key %s: %w", h.Name, pool, h.URL.Name, h.URL.Key, err)
	}
	if _, err := resolve(WebhookSpec{Name: "x", Pools: []string{"a/b"}, URL: u}, nil); err != nil {
		return Webhook{}, fmt.Errorf("webhook %s of pool %s: Secret %s key %s: %w", h.Name, pool, h.URL.Name, h.URL.Key, err)
	}
	w.URL = strings.TrimSpace(u)
	w.SigningSecret = nil
	if h.SigningSecret != nil {
		s, err := secrets.SecretKey(ctx, pool.Namespace, h.SigningSecret.Name, h.SigningSecret.Key)
		if err != nil {
			return Webhook{}, fmt.Errorf("webhook %s of pool %s: the signing secret's Secret %s key %s: %w", h.Name, pool, h.SigningSecret.Name, h.SigningSecret.Key, err)
		}
		w.SigningSecret = []byte(strings.TrimSpace(s))
	}
	return w, nil
}
