package slots

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
)

// TestPoolACLCoversScripts fails when a script calls a command a pool's
// Redis user may not run: the agent's scripts would fail with an error
// inside the script.
func TestPoolACLCoversScripts(t *testing.T) {
	callRe := regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'`)
	for file, src := range luaCode(t) {
		for _, m := range callRe.FindAllStringSubmatch(src, -1) {
			assert.Contains(t, poolACLCommands, strings.ToLower(m[1]), "%s calls %s, which PoolACL does not allow", file, m[1])
		}
	}
	for file, src := range luaCode(t) {
		assert.NotRegexp(t, `redis\.p?call\(\s*[^'\s]`, src, "%s: a command named by a variable cannot be checked against PoolACL", file)
	}
}

func TestPoolACLRules(t *testing.T) {
	pool := PoolID{Namespace: "team-a", Name: "pool.1"}
	rules, err := PoolACL("ss", pool)
	require.NoError(t, err)
	assert.Equal(t, "reset", rules[0], "reset first: applying the rules again replaces what the user had")
	assert.Contains(t, rules, "~ss:v1:{team-a/pool.1}:*")
	assert.Contains(t, rules, "%R~ss:datamodel")
	for _, r := range rules {
		assert.NotContains(t, []string{"+@all", "allkeys", "~*", "allcommands", "+@dangerous", "allchannels", "&*"}, r)
	}

	rules, err = PoolACL(`a*b?c[d]\e`, pool)
	require.NoError(t, err)
	assert.Contains(t, rules, `~a\*b\?c\[d\]\\e:v1:{team-a/pool.1}:*`, "glob characters in the prefix match themselves only")

	for _, bad := range []struct {
		prefix string
		pool   PoolID
	}{{"", pool}, {"a{b", pool}, {"a b", pool}, {"ss", PoolID{Namespace: "Team", Name: "x"}}, {"ss", PoolID{Namespace: "ns", Name: "*"}}} {
		_, err := PoolACL(bad.prefix, bad.pool)
		assert.Error(t, err, "prefix %q pool %v", bad.prefix, bad.pool)
	}
}

// setACLUser creates or replaces user on every node (ACLs are per node, not
// replicated) and deletes it at cleanup.
func setACLUser(t testing.TB, rdb redis.UniversalClient, user, password string, rules []string) {
	t.Helper()
	args := []any{"ACL", "SETUSER", user}
	for _, r := range rules {
		args = append(args, r)
	}
	args = append(args, "on", ">"+password)
	each := func(f func(c *redis.Client) error) {
		switch c := rdb.(type) {
		case *redis.ClusterClient:
			require.NoError(t, c.ForEachShard(context.Background(), func(_ context.Context, n *redis.Client) error { return f(n) }))
		case *redis.Client:
			require.NoError(t, f(c))
		}
	}
	each(func(c *redis.Client) error { return c.Do(context.Background(), args...).Err() })
	t.Cleanup(func() {
		each(func(c *redis.Client) error { return c.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	})
}

// poolUserClient connects as user to the same Redis as admin.
func poolUserClient(t testing.TB, admin redis.UniversalClient, user, password string) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	switch a := admin.(type) {
	case *redis.ClusterClient:
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.ClusterAddrs(t), Username: user, Password: password})
	case *redis.Client:
		c = redis.NewClient(&redis.Options{Addr: a.Options().Addr, Username: user, Password: password})
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// aclDenials are the ACL LOG entries of user on every node: each is a
// command or key the user was refused.
func aclDenials(t testing.TB, rdb redis.UniversalClient, user string) []string {
	t.Helper()
	var out []string
	var mu sync.Mutex // ForEachShard reads the nodes concurrently
	read := func(c *redis.Client) error {
		entries, err := c.ACLLog(context.Background(), 100).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range entries {
			if e.Username == user {
				out = append(out, fmt.Sprintf("%s %s %s", e.Reason, e.Context, e.Object))
			}
		}
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		require.NoError(t, c.ForEachShard(context.Background(), func(_ context.Context, n *redis.Client) error { return read(n) }))
	case *redis.Client:
		require.NoError(t, read(c))
	}
	return out
}

// TestAPoolUserDoesAllOfItsAgentsWorkAndNothingElse runs every store call an
// agent makes as the pool's Redis user (PoolACL) and proves the same user is
// refused another pool's keys, writing the data-model version and every
// dangerous command.
func TestAPoolUserDoesAllOfItsAgentsWorkAndNothingElse(t *testing.T) {
	for _, backend := range []string{"redis", "cluster"} {
		t.Run(backend, func(t *testing.T) {
			e := newEnv(t, backend)
			other := PoolID{Namespace: "team-b", Name: "pool-1"}
			_, err := e.s.DeclarePool(e.ctx, other, DefaultPoolConfig())
			require.NoError(t, err)
			user := "pool-" + e.s.prefix
			rules, err := PoolACL(e.s.prefix, e.pool)
			require.NoError(t, err)
			setACLUser(t, e.rdb, user, "pw-"+user, rules)
			rdb := poolUserClient(t, e.rdb, user, "pw-"+user)

			// The agent's work, as the pool user.
			as, err := New(e.ctx, rdb, Options{Prefix: e.s.prefix, Logger: quietLogger()})
			require.NoError(t, err, "opening the store: GET of the data model, SCRIPT LOAD")
			_, _, err = as.Pool(e.ctx, e.pool)
			require.NoError(t, err)
			_, err = as.RegisterPod(e.ctx, e.pool, "agent-0", "uid-0")
			require.NoError(t, err)
			_, err = as.HeartbeatNumbered(e.ctx, e.pool, "agent-0", "uid-0", 1, nil)
			require.NoError(t, err)
			e.submit("pa", PlanAndApply)
			m, err := as.Take(e.ctx, e.pool, "agent-0", "uid-0", time.Second, nil)
			require.NoError(t, err)
			require.NotNil(t, m)
			require.Equal(t, "pa", m.Task)
			st, err := as.Complete(e.ctx, e.pool, Result{Task: "pa", Epoch: m.Epoch, Outcome: OutcomeSuccess, Output: []byte("plan")})
			require.NoError(t, err)
			require.Equal(t, StateReserved, st)
			_, err = e.s.Approve(e.ctx, e.pool, "pa", "alice") // the control plane approves
			require.NoError(t, err)
			m, err = as.Take(e.ctx, e.pool, "agent-0", "uid-0", time.Second, nil)
			require.NoError(t, err)
			require.NotNil(t, m)
			require.Equal(t, PhaseApply, m.Assignment.Phase)
			st, err = as.Complete(e.ctx, e.pool, Result{Task: "pa", Epoch: m.Epoch, Outcome: OutcomeSuccess})
			require.NoError(t, err)
			require.Equal(t, StateSucceeded, st)
			e.submit("pa2", PlanAndApply)
			m, err = as.Take(e.ctx, e.pool, "agent-0", "uid-0", time.Second, nil)
			require.NoError(t, err)
			require.NotNil(t, m)
			_, err = as.Complete(e.ctx, e.pool, Result{Task: "pa2", Epoch: m.Epoch, Outcome: OutcomeSuccess})
			require.NoError(t, err)
			require.NoError(t, as.ReleaseReservation(e.ctx, e.pool, "pa2", "agent-stopping"))
			require.NoError(t, as.CordonSelf(e.ctx, e.pool, "agent-0", "uid-0"))
			_, err = as.HandBack(e.ctx, e.pool, "agent-0", "uid-0")
			require.NoError(t, err)
			_, err = as.RegisterStoppingPod(e.ctx, e.pool, "agent-0", "uid-0")
			require.NoError(t, err)
			require.NoError(t, as.RemovePod(e.ctx, e.pool, "agent-0", "uid-0", "agent-stopped"))
			require.Empty(t, aclDenials(t, e.rdb, user), "the agent's work needs nothing PoolACL refuses")

			// Another pool: through the store, a script and plain commands.
			_, err = as.RegisterPod(e.ctx, other, "agent-0", "uid-0")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "NOPERM")
			otherCfg := e.s.cfgKey(other)
			for name, call := range map[string]func() error{
				"store approve": func() error { _, err := as.Approve(e.ctx, other, "t", "mallory"); return err },
				"evalsha":       func() error { return e.s.scripts["reject"].EvalSha(e.ctx, rdb, []string{otherCfg}, "t", "x").Err() },
				"get":           func() error { return rdb.HGetAll(e.ctx, otherCfg).Err() },
				"del":           func() error { return rdb.Del(e.ctx, otherCfg).Err() },
				"script reaching past KEYS": func() error {
					return rdb.Eval(e.ctx, "return redis.call('HGETALL', ARGV[1])", []string{e.s.cfgKey(e.pool)}, otherCfg).Err()
				},
				"pools set": func() error { return rdb.SAdd(e.ctx, e.s.poolsKey(), "x/y").Err() },
				"write data model": func() error {
					return rdb.Set(e.ctx, e.s.prefix+":datamodel", "2", 0).Err()
				},
			} {
				err := call()
				require.Error(t, err, name)
				assert.True(t, aclRefusal(err), "%s: %v", name, err)
			}
			v, err := rdb.Get(e.ctx, e.s.prefix+":datamodel").Result()
			require.NoError(t, err, "the data-model version stays readable")
			assert.Equal(t, DataModelVersion, v)
			h, err := e.rdb.HGetAll(e.ctx, otherCfg).Result()
			require.NoError(t, err)
			assert.NotEmpty(t, h, "the other pool is untouched")

			for _, cmd := range dangerousCommands {
				err := rdb.Do(e.ctx, cmd...).Err()
				require.Error(t, err, "%v", cmd)
				// DEBUG is refused before the ACL when it is disabled: ask
				// the ACL itself too.
				dry, derr := aclDryRun(e.ctx, e.rdb, user, cmd)
				require.NoError(t, derr)
				assert.NotEqual(t, "OK", dry, "%v", cmd)
				if !strings.HasPrefix(fmt.Sprint(cmd[0]), "DEBUG") {
					assert.True(t, aclRefusal(err), "%v: %v", cmd, err)
				}
			}
			err = rdb.Eval(e.ctx, "return redis.call('FLUSHALL')", []string{e.s.cfgKey(e.pool)}).Err()
			require.Error(t, err)
			assert.True(t, aclRefusal(err), "%v", err)
			for _, k := range []string{otherCfg, e.s.prefix + ":datamodel"} {
				n, err := e.rdb.Exists(e.ctx, k).Result()
				require.NoError(t, err)
				assert.EqualValues(t, 1, n, "%s: nothing was flushed", k)
			}
		})
	}
}

// aclRefusal reports whether Redis refused err's command by its ACL: NOPERM
// for a command, or a script's call refused.
func aclRefusal(err error) bool {
	return redis.IsPermissionError(err) || strings.Contains(err.Error(), "The user executing the script can't")
}

// aclDryRun asks Redis whether user may run cmd (ACL DRYRUN). On a
// Cluster it asks every node (ForEachShard calls them concurrently) and
// requires one answer: the users must be the same on every node.
func aclDryRun(ctx context.Context, rdb redis.UniversalClient, user string, cmd []any) (string, error) {
	args := append([]any{"ACL", "DRYRUN", user}, cmd...)
	if c, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		answers := map[string]bool{}
		err := c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			out, err := n.Do(ctx, args...).Text()
			mu.Lock()
			answers[out] = true
			mu.Unlock()
			return err
		})
		if err != nil {
			return "", err
		}
		if len(answers) != 1 {
			return "", fmt.Errorf("the nodes disagree on %v: %v", cmd, answers)
		}
		for out := range answers {
			return out, nil
		}
	}
	return rdb.Do(ctx, args...).Text()
}

// dangerousCommands must all be refused to a pool's user.
var dangerousCommands = [][]any{
	{"FLUSHALL"}, {"FLUSHDB"}, {"CONFIG", "SET", "maxmemory", "1"}, {"CONFIG", "GET", "*"}, {"KEYS", "*"},
	{"SCAN", "0"}, {"RANDOMKEY"}, {"DEBUG", "SLEEP", "0"}, {"SCRIPT", "FLUSH"}, {"SCRIPT", "KILL"},
	{"FUNCTION", "FLUSH"}, {"ACL", "SETUSER", "x"}, {"ACL", "LIST"}, {"ACL", "WHOAMI"}, {"SHUTDOWN", "NOSAVE"},
	{"MONITOR"}, {"SWAPDB", "0", "1"}, {"INFO"}, {"INFO", "keyspace"}, {"ROLE"}, {"CLIENT", "LIST"}, {"CLIENT", "KILL", "ID", "1"},
	{"REPLICAOF", "NO", "ONE"}, {"SAVE"}, {"BGSAVE"}, {"BGREWRITEAOF"}, {"MIGRATE", "h", "1", "k", "0", "1"},
	{"CLUSTER", "RESET"}, {"PUBLISH", "c", "m"}, {"MODULE", "LIST"}, {"SLOWLOG", "GET"}, {"LATENCY", "RESET"},
	{"FAILOVER"}, {"SYNC"}, {"PSYNC", "?", "-1"}, {"OBJECT", "FREQ", "k"}, {"DBSIZE"}, {"MEMORY", "USAGE", "k"},
}

// Found with the pool's ACL: INFO, which counted the replicas, is
// @dangerous. The claim still waits for a replica under the pool's user.
func TestAClaimUnderThePoolUserWaitsForTheReplica(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t)
	replica := redistest.Start(t, redistest.WithReplicaOf(primary))
	admin := redis.NewClient(&redis.Options{Addr: primary.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { _ = rrdb.Close() })
	require.Eventually(t, func() bool {
		info, err := rrdb.Info(ctx, "replication").Result()
		n, werr := admin.Wait(ctx, 0, 0).Result()
		return err == nil && strings.Contains(info, "master_link_status:up") && werr == nil && n == 1
	}, 30*time.Second, 50*time.Millisecond, "replica never in sync")

	prefix := redistest.Prefix(t)
	cs, err := New(ctx, admin, Options{Prefix: prefix, Logger: quietLogger()})
	require.NoError(t, err)
	pool := PoolID{Namespace: "ns", Name: "p"}
	_, err = cs.DeclarePool(ctx, pool, DefaultPoolConfig())
	require.NoError(t, err)
	rules, err := PoolACL(prefix, pool)
	require.NoError(t, err)
	setACLUser(t, admin, "pool-user", "pw", rules)
	pc := redis.NewClient(&redis.Options{Addr: primary.Addr(), Username: "pool-user", Password: "pw"})
	t.Cleanup(func() { _ = pc.Close() })
	s, err := New(ctx, pc, Options{Prefix: prefix, Logger: quietLogger()})
	require.NoError(t, err)

	_, err = s.RegisterPod(ctx, pool, "a", "uid-a")
	require.NoError(t, err)
	_, err = cs.Submit(ctx, pool, TaskSpec{ID: "t1", Type: Plan})
	require.NoError(t, err)
	m, err := s.Take(ctx, pool, "a", "uid-a", time.Second, nil)
	require.NoError(t, err)
	require.NotNil(t, m)
	// WAIT returned: the replica has the claim already.
	st, err := rrdb.HGet(ctx, s.base(pool)+keyTask+"t1", "st").Result()
	require.NoError(t, err)
	assert.Equal(t, "running", st)
	assert.Empty(t, aclDenials(t, admin, "pool-user"))
}

func TestClassifyCredentialsNotAccepted(t *testing.T) {
	ctx := context.Background()
	admin, _ := newClient(t, "redis")
	c := redis.NewClient(&redis.Options{Addr: admin.(*redis.Client).Options().Addr, Username: "no-such-user-" + redistest.Prefix(t), Password: "x"})
	t.Cleanup(func() { _ = c.Close() })
	_, err := New(ctx, c, Options{Prefix: redistest.Prefix(t), Logger: quietLogger()})
	require.Error(t, err)
	assert.Equal(t, KindUnavailable, Classify(err), "WRONGPASS: the janitor has not created the user yet: %v", err)

	user := "noperm-" + redistest.Prefix(t)
	setACLUser(t, admin, user, "pw", []string{"reset", "+ping"})
	c2 := redis.NewClient(&redis.Options{Addr: admin.(*redis.Client).Options().Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { _ = c2.Close() })
	_, err = New(ctx, c2, Options{Prefix: redistest.Prefix(t), Logger: quietLogger()})
	require.Error(t, err)
	assert.Equal(t, KindUnavailable, Classify(err), "NOPERM: the user's rules are not (yet) this release's: %v", err)
}
