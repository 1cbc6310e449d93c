package janitorreport

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/slotscaler/slotscaler/internal/redistest"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

var pool = slots.PoolID{Namespace: "ci", Name: "tf"}

func client(t *testing.T) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(redistest.Standalone(t))
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, redistest.Prefix(t)
}

func TestKeyIsOutsideThePoolsKeySpaceOnItsNode(t *testing.T) {
	assert.Equal(t, "ss:janitor:v1:{ci/tf}", Key("ss", pool))
	assert.Equal(t, "ss:janitor:v1:{ci/tf}", Key("", pool), "the default prefix")
	assert.False(t, strings.HasPrefix(Key("ss", pool), "ss:v1:"), "not under the pool's own keys")
	assert.Contains(t, Key("ss", pool), "{"+pool.String()+"}", "the pool's hash tag: the report lives on the pool's node")
}

func sample(at time.Time) Report {
	until := at.Add(40 * time.Second)
	return Report{At: at, Changed: at.Add(-time.Minute), StaleAfter: at.Add(3 * time.Minute), Content: Content{
		Pool: "ci/tf", Janitor: "janitor-0", Replicas: 3, Live: 2, Summary: "2 of 3 desired pods live.",
		Waiting: []Wait{{Kind: WaitIdleFor, Pods: 1, Until: &until, Text: "1 surplus pod is idle, not yet for idleFor 1m0s."}},
		Actions: []Action{{At: at, Kind: ActionCreated, Pods: []string{"tf-abcde"}, Count: 1, Reason: "3 desired, 2 live"}},
	}}
}

func TestWriteThenRead(t *testing.T) {
	rdb, prefix := client(t)
	s := NewStore(rdb, prefix)
	ctx := t.Context()

	_, found, err := s.Read(ctx, pool)
	require.NoError(t, err)
	assert.False(t, found, "no report yet")

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := sample(at)
	require.NoError(t, s.Write(ctx, pool, want))
	got, found, err := s.Read(ctx, pool)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, want, got)

	ttl, err := rdb.PTTL(ctx, Key(prefix, pool)).Result()
	require.NoError(t, err)
	assert.Positive(t, ttl, "a report expires: a deleted pool's goes by itself")
	assert.LessOrEqual(t, ttl, DefaultTTL)

	long := sample(at)
	long.StaleAfter = at.Add(2 * time.Hour) // a janitor syncing every 40 minutes
	require.NoError(t, s.Write(ctx, pool, long))
	ttl, err = rdb.PTTL(ctx, Key(prefix, pool)).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 2*time.Hour, "a report outlives its freshness")

	require.NoError(t, rdb.Set(ctx, Key(prefix, pool), "{not json", 0).Err())
	_, _, err = s.Read(ctx, pool)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "decoding the janitor report of ci/tf")

	_, _, err = s.Read(ctx, slots.PoolID{Namespace: "CI", Name: "x"})
	require.ErrorIs(t, err, slots.ErrInvalidPool)
	require.ErrorIs(t, s.Write(ctx, slots.PoolID{Namespace: "ci", Name: "*"}, want), slots.ErrInvalidPool)
}

func TestDueOnlyOnChangeOrRefresh(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	last := sample(at)
	moved := sample(at)
	moved.Live = 3
	// The same content, built again by a later pass.
	same := sample(at)
	for _, tc := range []struct {
		name           string
		last           *Report
		next           Content
		now            time.Time
		write, changed bool
	}{
		{"no report yet", nil, last.Content, at, true, true},
		{"unchanged, fresh", &last, same.Content, at.Add(59 * time.Second), false, false},
		{"unchanged, due for a refresh", &last, same.Content, at.Add(time.Minute), true, false},
		{"changed", &last, moved.Content, at.Add(time.Second), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write, changed := Due(tc.last, tc.next, tc.now, RefreshInterval)
			assert.Equal(t, tc.write, write, "write")
			assert.Equal(t, tc.changed, changed, "changed")
		})
	}
}

func TestMergeKeepsTheNewestActions(t *testing.T) {
	act := func(n int) Action { return Action{Kind: ActionCreated, Count: n} }
	var earlier []Action
	for i := range MaxActions {
		earlier = append(earlier, act(100+i))
	}
	got := Merge([]Action{act(1), act(2)}, earlier)
	require.Len(t, got, MaxActions)
	assert.Equal(t, []Action{act(1), act(2), act(100), act(101)}, got[:4], "newest first")
	assert.Equal(t, act(107), got[MaxActions-1])
	assert.Equal(t, []Action{act(1)}, Merge([]Action{act(1)}, nil))
	assert.Empty(t, Merge(nil, nil))
}

// The control plane's Redis user (the chart's "~<prefix>:*") writes and
// reads the report; a pool's user (its agents, slots.PoolACL) can neither.
func TestTheControlPlaneWritesTheReportAndAgentsCannotTouchIt(t *testing.T) {
	rdb, prefix := client(t)
	ctx := t.Context()
	setUser := func(user string, rules []string) {
		args := []any{"ACL", "SETUSER", user}
		for _, r := range rules {
			args = append(args, r)
		}
		require.NoError(t, rdb.Do(ctx, append(args, "on", ">pw")...).Err())
		t.Cleanup(func() { _ = rdb.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	}
	dryrun := func(user string, cmd ...any) string {
		t.Helper()
		res, err := rdb.Do(ctx, append([]any{"ACL", "DRYRUN", user}, cmd...)...).Text()
		if err != nil {
			return err.Error()
		}
		return res
	}
	agent, control := prefix+"-agent", prefix+"-control"
	rules, err := slots.PoolACL(prefix, pool)
	require.NoError(t, err)
	setUser(agent, rules)
	setUser(control, []string{"reset", "~" + prefix + ":*", "resetchannels", "+@all", "-@dangerous"})

	key := Key(prefix, pool)
	require.Equal(t, "OK", dryrun(agent, "HGETALL", prefix+":v1:{"+pool.String()+"}:cfg"), "the agent may use its pool's keys (the check works)")
	for _, cmd := range [][]any{{"GET", key}, {"SET", key, "{}"}, {"DEL", key}} {
		assert.Contains(t, strings.ToLower(dryrun(agent, cmd...)), "no permissions", "agent: %v", cmd)
		assert.Equal(t, "OK", dryrun(control, cmd...), "control plane: %v", cmd)
	}

	// Through the store, as the control-plane user.
	opt := rdb.Options()
	cc := redis.NewClient(&redis.Options{Addr: opt.Addr, DB: opt.DB, Username: control, Password: "pw"})
	t.Cleanup(func() { _ = cc.Close() })
	s := NewStore(cc, prefix)
	require.NoError(t, s.Write(ctx, pool, sample(time.Now().UTC())))
	_, found, err := s.Read(ctx, pool)
	require.NoError(t, err)
	assert.True(t, found)
}
