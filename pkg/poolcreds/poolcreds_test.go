package poolcreds

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newKey(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, MinKeyLen)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// nodeClients are clients of every node (the default user, which the tests
// use as the Redis administrator).
func nodeClients(t testing.TB, addrs ...string) []*redis.Client {
	var out []*redis.Client
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		out = append(out, c)
	}
	return out
}

// janitorURL creates the user the janitor manages pool users as
// (ManagerACL) on every node and returns url with its credentials: the
// Manager runs with exactly the rights the chart gives it.
func janitorURL(t testing.TB, rawURL, prefix string, nodes []*redis.Client) string {
	t.Helper()
	user, pw := "janitor-"+prefix, "pw-janitor-"+prefix
	args := []any{"ACL", "SETUSER", user}
	for _, r := range ManagerACL() {
		args = append(args, r)
	}
	args = append(args, "on", ">"+pw)
	for _, n := range nodes {
		require.NoError(t, n.Do(context.Background(), args...).Err())
		t.Cleanup(func() { n.Do(context.Background(), "ACL", "DELUSER", user) })
	}
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	u.User = url.UserPassword(user, pw)
	return u.String()
}

type fixture struct {
	ctx    context.Context
	prefix string
	pool   slots.PoolID
	url    string          // the control plane's (the default user: the tests' administrator)
	conn   *redisconn.Conn // the janitor's pool-user manager's (ManagerACL)
	store  *slots.Store    // the janitor's
	kube   *fake.Clientset
	nodes  []*redis.Client
}

func newFixture(t *testing.T, rawURL string, addrs ...string) *fixture {
	t.Helper()
	f := &fixture{ctx: context.Background(), prefix: redistest.Prefix(t), pool: slots.PoolID{Namespace: "team-a", Name: "pool-1"},
		kube: fake.NewClientset(), nodes: nodeClients(t, addrs...)}
	f.url = rawURL
	var err error
	f.conn, err = redisconn.Open(f.ctx, janitorURL(t, rawURL, f.prefix, f.nodes), nil)
	require.NoError(t, err)
	t.Cleanup(func() { f.conn.Close() })
	cp, err := redisconn.Open(f.ctx, rawURL, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cp.Close() })
	// The control plane declares the pool (and writes the data-model version).
	f.store, err = slots.New(f.ctx, cp.Client, slots.Options{Prefix: f.prefix, Logger: quiet()})
	require.NoError(t, err)
	_, err = f.store.DeclarePool(f.ctx, f.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, n := range f.nodes {
			n.Do(context.Background(), "ACL", "DELUSER", UserName(f.prefix, f.pool))
		}
	})
	return f
}

func (f *fixture) manager(t *testing.T, keys Keys) *Manager {
	t.Helper()
	m, err := New(f.conn.Client, f.kube, Options{Prefix: f.prefix, Keys: keys, AgentURL: f.url, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// agentStore opens the store as an agent with url would.
func (f *fixture) agentStore(t *testing.T, agentURL string) (*slots.Store, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	conn, err := redisconn.Open(ctx, agentURL, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return slots.New(ctx, conn.Client, slots.Options{Prefix: f.prefix, Logger: quiet()})
}

// authOn says whether user/password is accepted by the node at addr.
func authOn(t *testing.T, addr, user, pw string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: pw, MaxRetries: -1})
	defer c.Close()
	return c.Ping(context.Background()).Err()
}

func TestEnsureReachesEveryClusterNode(t *testing.T) {
	addrs := redistest.ClusterAddrs(t)
	u := "redis+cluster://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	f := newFixture(t, u, addrs...)
	m := f.manager(t, Keys{Current: newKey(t)})
	require.NoError(t, m.Ensure(f.ctx, f.pool))

	agentURL, err := m.URL(f.pool)
	require.NoError(t, err)
	user := UserName(f.prefix, f.pool)
	pw := Password(m.opts.Keys.Current, f.prefix, f.pool)
	for _, a := range addrs {
		assert.NoError(t, authOn(t, a, user, pw), "node %s has the pool's user", a)
	}
	s, err := f.agentStore(t, agentURL)
	require.NoError(t, err)
	_, err = s.RegisterPod(f.ctx, f.pool, "agent-0", "uid-0")
	require.NoError(t, err, "the pool's user works through the cluster")
	_, err = s.RegisterPod(f.ctx, slots.PoolID{Namespace: "team-b", Name: "pool-1"}, "agent-0", "uid-0")
	require.Error(t, err)
	assert.True(t, redis.IsPermissionError(err), "%v", err)

	require.NoError(t, m.Remove(f.ctx, f.pool))
	for _, a := range addrs {
		assert.Error(t, authOn(t, a, user, pw), "node %s: the pool's user is gone", a)
	}
}

func TestRotationAcceptsBothKeysUntilThePreviousIsDropped(t *testing.T) {
	srv := redistest.Start(t)
	f := newFixture(t, srv.URL(), srv.Addr())
	k1, k2 := newKey(t), newKey(t)
	m1 := f.manager(t, Keys{Current: k1})
	require.NoError(t, m1.Ensure(f.ctx, f.pool))
	old, err := m1.URL(f.pool)
	require.NoError(t, err)
	_, err = f.agentStore(t, old)
	require.NoError(t, err)

	m2 := f.manager(t, Keys{Current: k2, Previous: k1})
	require.NoError(t, m2.Ensure(f.ctx, f.pool))
	rotated, err := m2.URL(f.pool)
	require.NoError(t, err)
	require.NotEqual(t, old, rotated)
	_, err = f.agentStore(t, old)
	assert.NoError(t, err, "pods started before the rotation keep working")
	_, err = f.agentStore(t, rotated)
	assert.NoError(t, err, "new pods use the new password")

	m3 := f.manager(t, Keys{Current: k2})
	require.NoError(t, m3.Ensure(f.ctx, f.pool))
	_, err = f.agentStore(t, old)
	require.Error(t, err, "the previous key dropped: its password is refused")
	assert.True(t, redis.IsAuthError(err), "%v", err)
	assert.Equal(t, slots.KindUnavailable, slots.Classify(err))
	_, err = f.agentStore(t, rotated)
	assert.NoError(t, err)

	// Applying the same rules again changes nothing for connected agents.
	s, err := f.agentStore(t, rotated)
	require.NoError(t, err)
	require.NoError(t, m3.Ensure(f.ctx, f.pool))
	_, err = s.RegisterPod(f.ctx, f.pool, "agent-0", "uid-0")
	assert.NoError(t, err)
}

func TestUsersAreBackAfterRedisRestartedEmpty(t *testing.T) {
	srv := redistest.Start(t)
	f := newFixture(t, srv.URL(), srv.Addr())
	m := f.manager(t, Keys{Current: newKey(t)})
	require.NoError(t, m.Ensure(f.ctx, f.pool))
	agentURL, err := m.URL(f.pool)
	require.NoError(t, err)

	srv.Wipe(t) // and the janitor's own user is gone with it: recreate it as the operator's ACL file would
	f.nodes = nodeClients(t, srv.Addr())
	janitorURL(t, srv.URL(), f.prefix, f.nodes)
	_, err = f.agentStore(t, agentURL)
	require.Error(t, err)
	assert.Equal(t, slots.KindUnavailable, slots.Classify(err), "agents wait for their user: %v", err)

	// The janitor's next pass: the pool is missing, declared again, and
	// the user set again.
	_, err = f.store.DeclarePool(f.ctx, f.pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	require.NoError(t, m.Ensure(f.ctx, f.pool))
	s, err := f.agentStore(t, agentURL)
	require.NoError(t, err, "the data-model version is back too: agents may read it, not write it")
	_, err = s.RegisterPod(f.ctx, f.pool, "agent-0", "uid-0")
	assert.NoError(t, err)
}

func TestEnsureReachesTheReplicas(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, redistest.WithReplicaOf(primary))
	f := newFixture(t, primary.URL(), primary.Addr(), replica.Addr())
	require.Eventually(t, func() bool {
		info, err := f.nodes[0].Info(f.ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:1")
	}, 30*time.Second, 50*time.Millisecond)
	m := f.manager(t, Keys{Current: newKey(t)})
	require.NoError(t, m.EnsureUser(f.ctx, f.pool))
	assert.NoError(t, authOn(t, replica.Addr(), UserName(f.prefix, f.pool), Password(m.opts.Keys.Current, f.prefix, f.pool)),
		"a replica promoted by a failover has the pool's user")
}

func TestSecretHoldsOneKeyPerPool(t *testing.T) {
	f := newFixture(t, redistest.Standalone(t), addrOf(t, redistest.Standalone(t)))
	m := f.manager(t, Keys{Current: newKey(t)})
	other := slots.PoolID{Namespace: f.pool.Namespace, Name: "pool-2"}
	require.NoError(t, m.Ensure(f.ctx, f.pool))
	require.NoError(t, m.Ensure(f.ctx, other))
	t.Cleanup(func() { m.Remove(f.ctx, other) })

	sec, err := f.kube.CoreV1().Secrets(f.pool.Namespace).Get(f.ctx, DefaultSecretName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, sec.Data, 2)
	for _, p := range []slots.PoolID{f.pool, other} {
		u, err := url.Parse(string(sec.Data[p.Name]))
		require.NoError(t, err)
		assert.Equal(t, UserName(f.prefix, p), u.User.Username())
		pw, _ := u.User.Password()
		assert.Equal(t, Password(m.opts.Keys.Current, f.prefix, p), pw)
	}

	require.NoError(t, m.Remove(f.ctx, f.pool))
	sec, err = f.kube.CoreV1().Secrets(f.pool.Namespace).Get(f.ctx, DefaultSecretName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Len(t, sec.Data, 1)
	assert.Contains(t, sec.Data, other.Name, "another pool's key stays")
}

func addrOf(t *testing.T, rawURL string) string {
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

func TestPasswordsAndKeys(t *testing.T) {
	k := newKey(t)
	p := slots.PoolID{Namespace: "ns", Name: "a"}
	assert.Equal(t, Password(k, "ss", p), Password(k, "ss", p), "every janitor replica derives the same")
	assert.NotEqual(t, Password(k, "ss", p), Password(k, "ss", slots.PoolID{Namespace: "ns", Name: "b"}))
	assert.NotEqual(t, Password(k, "ss", p), Password(k, "other", p))
	assert.NotEqual(t, Password(k, "ss", p), Password(newKey(t), "ss", p))

	_, err := New(nil, nil, Options{Keys: Keys{Current: []byte("short")}, AgentURL: "redis://h:6379"})
	assert.ErrorContains(t, err, "at least 32")
	_, err = New(nil, nil, Options{Keys: Keys{Current: k}, AgentURL: "http://h"})
	assert.Error(t, err)
	_, err = LoadKeys(t.TempDir()+"/missing", "")
	assert.Error(t, err)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/key", append(k, '\n'), 0o600))
	require.NoError(t, os.WriteFile(dir+"/short", []byte("x"), 0o600))
	require.NoError(t, os.WriteFile(dir+"/empty", nil, 0o600))
	keys, err := LoadKeys(dir+"/key", dir+"/absent")
	require.NoError(t, err)
	assert.Equal(t, Keys{Current: k}, keys, "no previous key: no rotation under way")
	keys, err = LoadKeys(dir+"/key", dir+"/empty")
	require.NoError(t, err)
	assert.Nil(t, keys.Previous)
	_, err = LoadKeys(dir+"/key", dir+"/short")
	assert.ErrorContains(t, err, "at least 32")
	_, err = LoadKeys(dir+"/short", "")
	assert.ErrorContains(t, err, "at least 32")
}

// BenchmarkEnsureUser is the cost of one pass's ACL SETUSER on a
// standalone Redis.
func BenchmarkEnsureUser(b *testing.B) {
	rawURL := redistest.Standalone(b)
	c, err := redisconn.Open(context.Background(), rawURL, nil)
	require.NoError(b, err)
	defer c.Close()
	m, err := New(c.Client, nil, Options{Prefix: redistest.Prefix(b), Keys: Keys{Current: newKey(b)}, AgentURL: rawURL, Logger: quiet()})
	require.NoError(b, err)
	pool := slots.PoolID{Namespace: "bench", Name: "pool"}
	defer c.Client.Do(context.Background(), "ACL", "DELUSER", UserName(m.opts.Prefix, pool))
	b.ResetTimer()
	for range b.N {
		if err := m.EnsureUser(context.Background(), pool); err != nil {
			b.Fatal(err)
		}
	}
}

// The chart's control-plane user (scaler, dashboard, janitor's store) does
// the control plane's work and nothing dangerous; the manager's user can
// manage users and read no key.
func TestControlPlaneAndManagerRules(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	admin := nodeClients(t, srv.Addr())[0]
	prefix := redistest.Prefix(t)
	setUser := func(user string, rules []string) *redis.Client {
		args := []any{"ACL", "SETUSER", user}
		for _, r := range rules {
			args = append(args, r)
		}
		require.NoError(t, admin.Do(ctx, append(args, "on", ">pw")...).Err())
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: user, Password: "pw"})
		t.Cleanup(func() { c.Close() })
		return c
	}
	cp := setUser("control", ControlPlaneACL(prefix))
	s, err := slots.New(ctx, cp, slots.Options{Prefix: prefix, Logger: quiet()})
	require.NoError(t, err)
	pool := slots.PoolID{Namespace: "ns", Name: "p"}
	_, err = s.DeclarePool(ctx, pool, slots.DefaultPoolConfig())
	require.NoError(t, err)
	require.NoError(t, s.ExpectPod(ctx, pool, "a", "uid-a"))
	_, err = s.RegisterPod(ctx, pool, "a", "uid-a")
	require.NoError(t, err)
	_, err = s.DrainReplicated(ctx, pool, "a", "uid-a", time.Second)
	require.NoError(t, err, "a drain counts replicas with INFO")
	_, err = s.Snapshot(ctx, pool)
	require.NoError(t, err)
	for _, cmd := range [][]any{{"FLUSHALL"}, {"CONFIG", "SET", "maxmemory", "1"}, {"KEYS", "*"}, {"ACL", "SETUSER", "x"},
		{"SCRIPT", "FLUSH"}, {"SHUTDOWN"}, {"DEBUG", "SLEEP", "0"}, {"GET", "other:key"}} {
		err := cp.Do(ctx, cmd...).Err()
		require.Error(t, err, "%v", cmd)
		dry, derr := admin.Do(ctx, append([]any{"ACL", "DRYRUN", "control"}, cmd...)...).Text()
		require.NoError(t, derr)
		assert.NotEqual(t, "OK", dry, "%v", cmd)
	}

	mgr := setUser("manager", ManagerACL())
	require.NoError(t, mgr.Do(ctx, "ACL", "SETUSER", "someone", "reset").Err())
	require.NoError(t, mgr.Do(ctx, "ACL", "DELUSER", "someone").Err())
	for _, cmd := range [][]any{{"GET", prefix + ":datamodel"}, {"FLUSHALL"}, {"CONFIG", "SET", "maxmemory", "1"}, {"ACL", "LIST"}, {"KEYS", "*"}} {
		err := mgr.Do(ctx, cmd...).Err()
		require.Error(t, err, "%v", cmd)
		assert.True(t, redis.IsPermissionError(err), "%v: %v", cmd, err)
	}
}
