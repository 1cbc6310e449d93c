// Package poolcreds gives every pool a Redis user of its own, confined to
// the pool's keys (slots.PoolACL), and hands its agents a URL with that
// user's credentials through one Secret per pool namespace.
//
// Passwords are derived, never stored: HMAC-SHA256(master key,
// "<prefix>|<namespace>/<name>"). Every janitor replica and restart computes
// the same password, so the janitor never reads a Secret. Rotation is a new
// master key with the previous one kept: the user accepts the passwords of
// both while pods started with the old one run (a pod reads its REDIS_URL
// when it starts), and new pods get the new one.
//
// ACL users are per node: Redis neither replicates them nor keeps runtime
// changes across a restart without an ACL file. The Manager sets the user
// on every node it can reach (each node of a Cluster; a primary and the
// replicas it reports) and the janitor does it on every pass over the pool,
// so a Redis that restarted empty, or a replica promoted by a failover, has
// the user again within one sync interval.
package poolcreds

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// DefaultSecretName is the Secret in each pool namespace holding one key per
// pool: the pool's agent REDIS_URL.
const DefaultSecretName = "slotscaler-pool-redis"

// MinKeyLen is the shortest master key accepted, in bytes.
const MinKeyLen = 32

// Keys are the master keys passwords derive from. Previous, when set, is
// the key before a rotation: its passwords keep working until it is dropped.
type Keys struct {
	Current, Previous []byte
}

// LoadKeys reads the master keys from files (surrounding whitespace is not
// part of a key). previousFile may be empty, missing or hold nothing: no
// rotation is under way (the chart mounts the key Secret whole, and its
// previousKey exists only during a rotation).
func LoadKeys(currentFile, previousFile string) (Keys, error) {
	var k Keys
	var err error
	if k.Current, err = readKey(currentFile); err != nil {
		return Keys{}, err
	}
	if previousFile != "" {
		b, err := os.ReadFile(previousFile)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && len(bytes.TrimSpace(b)) == 0) {
			return k, nil
		}
		if k.Previous, err = readKey(previousFile); err != nil {
			return Keys{}, err
		}
		if bytes.Equal(k.Previous, k.Current) {
			k.Previous = nil // the rotation is over, or not begun
		}
	}
	return k, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading pool credentials key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("pool credentials key in %s: %d bytes, want at least %d", path, len(b), MinKeyLen)
	}
	return b, nil
}

// UserName is the Redis user of a pool: the installation's prefix is part of
// it, so installations sharing a Redis keep their users apart.
func UserName(prefix string, pool slots.PoolID) string {
	return prefix + ":pool:" + pool.String()
}

// Password derives a pool's password from a master key.
func Password(key []byte, prefix string, pool slots.PoolID) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(prefix + "|" + pool.String()))
	return hex.EncodeToString(m.Sum(nil))
}

// passwordHash is the form ACL SETUSER takes (#<sha256>): the password
// itself never travels to Redis when the user is set.
func passwordHash(pw string) string {
	h := sha256.Sum256([]byte(pw))
	return hex.EncodeToString(h[:])
}

// Options configure a Manager.
type Options struct {
	// Prefix is the installation's key prefix.
	Prefix string
	Keys   Keys
	// AgentURL is the Redis URL agents use, its user and password replaced
	// by the pool's; the janitor's own URL when empty.
	AgentURL string
	// SecretName is the Secret in each pool namespace (DefaultSecretName
	// when empty).
	SecretName string
	// FieldManager prefixes the server-side apply field managers, one per
	// pool, so each pool's key in the shared Secret has its own owner.
	FieldManager string
	// SecretRefresh is how often a pool's Secret is applied again although
	// its URL did not change (someone may have deleted it; the janitor
	// cannot read it to know). Default 10 minutes.
	SecretRefresh time.Duration
	Logger        *slog.Logger
}

// Manager sets pool users in Redis and their URLs in Secrets.
type Manager struct {
	rdb  redis.UniversalClient
	kube kubernetes.Interface
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	applied  map[slots.PoolID]applied // the Secret key last applied per pool
	replicas map[string]*redis.Client // clients of the replicas a primary reports, by address
	listed   time.Time                // when replicas was refreshed
	warned   map[string]bool          // replicas already warned about
	now      func() time.Time
}

type applied struct {
	url string
	at  time.Time
}

// New returns a Manager using rdb (a connection allowed ManagerACL) and kube (allowed to create
// Secrets and patch the one named SecretName).
func New(rdb redis.UniversalClient, kube kubernetes.Interface, opts Options) (*Manager, error) {
	if len(opts.Keys.Current) < MinKeyLen {
		return nil, fmt.Errorf("pool credentials: current key of %d bytes, want at least %d", len(opts.Keys.Current), MinKeyLen)
	}
	if opts.Prefix == "" {
		opts.Prefix = slots.DefaultPrefix
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	if opts.FieldManager == "" {
		opts.FieldManager = "slotscaler-janitor"
	}
	if opts.SecretRefresh <= 0 {
		opts.SecretRefresh = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u, err := url.Parse(opts.AgentURL)
	if err != nil || !strings.HasPrefix(u.Scheme, "redis") {
		return nil, fmt.Errorf("pool credentials: agent redis url %s: want redis://, rediss://, redis+cluster:// or redis+sentinel://", redisconn.Redact(opts.AgentURL))
	}
	// The rules must be valid for this prefix before any pool needs them.
	if _, err := slots.PoolACL(opts.Prefix, slots.PoolID{Namespace: "ns", Name: "pool"}); err != nil {
		return nil, fmt.Errorf("pool credentials: %w", err)
	}
	return &Manager{rdb: rdb, kube: kube, opts: opts, log: opts.Logger.With("component", "poolcreds"),
		applied: map[slots.PoolID]applied{}, replicas: map[string]*redis.Client{}, warned: map[string]bool{}, now: time.Now}, nil
}

// SecretName is the Secret each pool namespace gets; agent pods reference
// key <pool name> of it.
func (m *Manager) SecretName() string { return m.opts.SecretName }

// URL is the REDIS_URL of a pool's agents.
func (m *Manager) URL(pool slots.PoolID) (string, error) {
	u, err := url.Parse(m.opts.AgentURL)
	if err != nil {
		return "", fmt.Errorf("agent redis url: %w", err)
	}
	u.User = url.UserPassword(UserName(m.opts.Prefix, pool), Password(m.opts.Keys.Current, m.opts.Prefix, pool))
	return u.String(), nil
}

// Ensure sets the pool's user on every node and its URL in the pool
// namespace's Secret. Idempotent; the janitor calls it on every pass.
func (m *Manager) Ensure(ctx context.Context, pool slots.PoolID) error {
	if err := m.EnsureUser(ctx, pool); err != nil {
		return err
	}
	return m.ensureSecret(ctx, pool)
}

// EnsureUser sets the pool's user, its rules replaced whole (they start
// with reset), on every node.
func (m *Manager) EnsureUser(ctx context.Context, pool slots.PoolID) error {
	rules, err := slots.PoolACL(m.opts.Prefix, pool)
	if err != nil {
		return fmt.Errorf("redis user for pool %s: %w", pool, err)
	}
	args := []any{"ACL", "SETUSER", UserName(m.opts.Prefix, pool)}
	for _, r := range rules {
		args = append(args, r)
	}
	args = append(args, "on", "#"+passwordHash(Password(m.opts.Keys.Current, m.opts.Prefix, pool)))
	if m.opts.Keys.Previous != nil {
		args = append(args, "#"+passwordHash(Password(m.opts.Keys.Previous, m.opts.Prefix, pool)))
	}
	if err := m.onEveryNode(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.Do(ctx, args...).Err()
	}); err != nil {
		return fmt.Errorf("ensuring redis user for pool %s: %w", pool, err)
	}
	return nil
}

// Remove deletes the pool's user from every node (best effort: a node that
// restarted since has none) and its key from the Secret.
func (m *Manager) Remove(ctx context.Context, pool slots.PoolID) error {
	user := UserName(m.opts.Prefix, pool)
	errUser := m.onEveryNode(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.Do(ctx, "ACL", "DELUSER", user).Err()
	})
	if errUser != nil {
		errUser = fmt.Errorf("deleting redis user of pool %s: %w", pool, errUser)
	}
	// Applied with the pool's own field manager and no data: the key it
	// owned goes, the other pools' keys stay.
	sec := corev1ac.Secret(m.opts.SecretName, pool.Namespace)
	_, errSecret := m.kube.CoreV1().Secrets(pool.Namespace).Apply(ctx, sec, metav1.ApplyOptions{FieldManager: m.fieldManager(pool), Force: true})
	if errSecret != nil {
		errSecret = fmt.Errorf("removing pool %s from secret %s/%s: %w", pool, pool.Namespace, m.opts.SecretName, errSecret)
	}
	m.mu.Lock()
	delete(m.applied, pool)
	m.mu.Unlock()
	return errors.Join(errUser, errSecret)
}

// fieldManager is the pool's own server-side apply manager: applies by
// another pool's manager leave this pool's key alone.
func (m *Manager) fieldManager(pool slots.PoolID) string {
	return m.opts.FieldManager + "/" + pool.Name
}

func (m *Manager) ensureSecret(ctx context.Context, pool slots.PoolID) error {
	u, err := m.URL(pool)
	if err != nil {
		return err
	}
	m.mu.Lock()
	last, ok := m.applied[pool]
	m.mu.Unlock()
	if ok && last.url == u && m.now().Sub(last.at) < m.opts.SecretRefresh {
		return nil
	}
	sec := corev1ac.Secret(m.opts.SecretName, pool.Namespace).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "slotscaler-janitor", "app.kubernetes.io/component": "pool-redis-credentials"}).
		WithData(map[string][]byte{pool.Name: []byte(u)})
	if _, err := m.kube.CoreV1().Secrets(pool.Namespace).Apply(ctx, sec, metav1.ApplyOptions{FieldManager: m.fieldManager(pool), Force: true}); err != nil {
		return fmt.Errorf("writing redis url of pool %s to secret %s/%s: %w", pool, pool.Namespace, m.opts.SecretName, err)
	}
	m.mu.Lock()
	m.applied[pool] = applied{url: u, at: m.now()}
	m.mu.Unlock()
	m.log.Info("pool redis credentials written", "pool", pool.String(), "secret", pool.Namespace+"/"+m.opts.SecretName, "user", UserName(m.opts.Prefix, pool))
	return nil
}

// onEveryNode runs fn on every node: each node of a Cluster (masters and
// replicas), or the primary and, best effort, the replicas it reports. A
// replica that cannot be reached is warned about once and skipped: it gets
// the users once it can be, and a failover promoting it meanwhile leaves
// agents retrying for at most a sync interval.
func (m *Manager) onEveryNode(ctx context.Context, fn func(context.Context, *redis.Client) error) error {
	switch c := m.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachShard(ctx, fn)
	case *redis.Client:
		if err := fn(ctx, c); err != nil {
			return err
		}
		for addr, r := range m.replicaClients(ctx, c) {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := fn(rctx, r)
			cancel()
			m.mu.Lock()
			warn := err != nil && !m.warned[addr]
			m.warned[addr] = err != nil
			m.mu.Unlock()
			if warn {
				m.log.Warn("cannot set pool users on a replica; skipping it until it answers", "replica", addr, "err", err)
			}
		}
		return nil
	}
	return fmt.Errorf("unsupported redis client %T", m.rdb)
}

// replicaClients are clients of the replicas the primary reports in INFO
// replication, listed again at most every 30 seconds.
func (m *Manager) replicaClients(ctx context.Context, primary *redis.Client) map[string]*redis.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.now().Sub(m.listed) < 30*time.Second {
		return m.replicas
	}
	info, err := primary.Info(ctx, "replication").Result()
	if err != nil {
		return m.replicas // the primary answered fn; keep the last list
	}
	m.listed = m.now()
	seen := map[string]bool{}
	for _, line := range strings.Split(info, "\n") {
		addr, ok := replicaAddr(strings.TrimSpace(line))
		if !ok {
			continue
		}
		seen[addr] = true
		if _, ok := m.replicas[addr]; !ok {
			o := primary.Options()
			m.replicas[addr] = redis.NewClient(&redis.Options{
				Addr: addr, Username: o.Username, Password: o.Password, CredentialsProvider: o.CredentialsProvider,
				CredentialsProviderContext: o.CredentialsProviderContext, TLSConfig: o.TLSConfig,
				DialTimeout: 2 * time.Second, ContextTimeoutEnabled: true, PoolSize: 1, MaxRetries: -1, DisableIdentity: true,
				MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
			})
		}
	}
	for addr, c := range m.replicas {
		if !seen[addr] {
			_ = c.Close()
			delete(m.replicas, addr)
		}
	}
	return m.replicas
}

// replicaAddr parses "slave0:ip=10.0.0.5,port=6379,state=online,...".
func replicaAddr(line string) (string, bool) {
	name, rest, ok := strings.Cut(line, ":")
	if !ok || !strings.HasPrefix(name, "slave") {
		return "", false
	}
	var ip, port string
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			ip = v
		case "port":
			port = v
		}
	}
	if ip == "" || port == "" {
		return "", false
	}
	return net.JoinHostPort(ip, port), true
}

// Close closes the replica clients.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for addr, c := range m.replicas {
		_ = c.Close()
		delete(m.replicas, addr)
	}
	return nil
}

// ControlPlaneACL are the rules (after ACL SETUSER <user>, before "on" and
// the password) of the scaler's, dashboard's and janitor's slot-store user:
// every key of the installation, every command but @dangerous ones, except
// INFO (a drain counts replicas with INFO replication before it waits for
// one). Redis 7 or later.
func ControlPlaneACL(prefix string) []string {
	return []string{"reset", "~" + globEscape(prefix) + ":*", "resetchannels",
		"+@all", "-@dangerous", "+info", "-script|flush", "-function|flush", "-function|delete", "-function|restore"}
}

// ManagerACL are the rules of the user the janitor manages pool users as
// (--pool-credentials-redis-url): ACL SETUSER, DELUSER and GETUSER, INFO
// (to find a primary's replicas), what a client needs to connect, and no
// key. A user that may set users may give one every permission: these
// credentials are as sensitive as an administrator's, and only the
// janitor has them.
func ManagerACL() []string {
	return []string{"reset", "resetchannels", "-@all", "+acl|setuser", "+acl|deluser", "+acl|getuser",
		"+info", "+ping", "+select", "+client|setname", "+command", "+cluster|slots", "+cluster|shards"}
}

// globEscape escapes what Redis's glob treats as special.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
