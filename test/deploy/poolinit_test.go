package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
)

// The pool-init service stands in for a pool declaration the binaries do not
// make yet: a shell script that EVALs the store's own declare_pool.lua with
// the arguments pkg/slots DeclarePool(DefaultPoolConfig()) sends. This runs
// that script, as compose resolves it, against a real redis-server.

// testRedisURL is scripts/test.sh's shared standalone Redis, or a private
// redis-server started for this test (never skipped for lack of Redis).
func testRedisURL(t *testing.T) string {
	t.Helper()
	if u := os.Getenv("SLOTSCALER_TEST_REDIS_URL"); u != "" {
		return u
	}
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "redis-server not found: run `make test` (it installs it) or apt-get install redis-server")
	for range 5 { // a free port can be taken between the probe and redis' bind
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		require.NoError(t, l.Close())
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		u := "redis://127.0.0.1:" + port + "/0"
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if out, err := exec.Command("redis-cli", "-u", u, "PING").Output(); err == nil && strings.TrimSpace(string(out)) == "PONG" {
				return u
			}
			if cmd.ProcessState != nil {
				break
			}
		}
		_ = cmd.Process.Kill()
	}
	t.Fatal("could not start a private redis-server")
	return ""
}

func redisCLI(t *testing.T, url string, args ...string) string {
	t.Helper()
	out, err := exec.Command("redis-cli", append([]string{"-e", "-u", url}, args...)...).CombinedOutput()
	require.NoError(t, err, "redis-cli %v: %s", args, out)
	return strings.TrimSuffix(string(out), "\n")
}

func randomPrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "deploytest-" + hex.EncodeToString(b)
}

// poolInit is the service's script as a command, with /lua pointing at the
// repo's scripts, against url under prefix.
func poolInit(t *testing.T, s types.ServiceConfig, root, url, prefix string) *exec.Cmd {
	t.Helper()
	require.Equal(t, []string{"/bin/sh", "-euc"}, []string(s.Entrypoint))
	require.Len(t, s.Command, 1, "one script")
	lua := filepath.Join(root, "pkg", "slots", "lua")
	require.True(t, slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeBind && v.Source == lua && v.Target == "/lua" && v.ReadOnly
	}), "the store's Lua scripts mounted read-only at /lua: %+v", s.Volumes)
	cmd := exec.Command("/bin/sh", "-euc", strings.ReplaceAll(s.Command[0], "/lua/", lua+"/"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "REDIS_URL=" + url, "KEY_PREFIX=" + prefix}
	for _, k := range []string{"POOL_NAMESPACE", "POOL_NAME"} {
		v, ok := env(s, k)
		require.True(t, ok, k)
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func runPoolInit(t *testing.T, s types.ServiceConfig, root, url, prefix string) string {
	t.Helper()
	cmd := poolInit(t, s, root, url, prefix)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "pool-init script:\n%s\noutput:\n%s", cmd.Args[2], out)
	return string(out)
}

func TestComposePoolInitDeclaresTheAgentsStaticPool(t *testing.T) {
	_, err := exec.LookPath("redis-cli")
	require.NoError(t, err, "redis-cli (package redis-tools, installed with redis-server)")
	root := repoRoot(t)
	p, err := loadCompose(t.Context(), root, readRepoFile(t, "docker-compose.yml"), nil)
	require.NoError(t, err)
	initSvc, agent := p.Services["pool-init"], p.Services["agent"]
	for _, k := range []string{"REDIS_URL", "KEY_PREFIX", "POOL_NAMESPACE", "POOL_NAME"} {
		want, _ := env(agent, k)
		got, _ := env(initSvc, k)
		require.Equal(t, want, got, "pool-init and the agents agree on %s", k)
	}
	ns, _ := env(agent, "POOL_NAMESPACE")
	name, _ := env(agent, "POOL_NAME")

	url, prefix := testRedisURL(t), randomPrefix(t)
	t.Cleanup(func() {
		redisCLI(t, url, "EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end", "0", prefix+":*")
	})
	out := runPoolInit(t, initSvc, root, url, prefix)
	require.Contains(t, out, "pool "+ns+"/"+name+" declared, generation ")

	cfgKey := prefix + ":v1:{" + ns + "/" + name + "}:cfg"
	cfg := map[string]string{}
	lines := strings.Split(redisCLI(t, url, "HGETALL", cfgKey), "\n")
	require.Zero(t, len(lines)%2, "HGETALL: field/value lines")
	for i := 0; i+1 < len(lines); i += 2 {
		cfg[lines[i]] = lines[i+1]
	}
	require.Regexp(t, `^[0-9a-f]{12}$`, cfg["gen"])
	require.Contains(t, out, "generation "+cfg["gen"])
	require.Equal(t, "0", cfg["managed"], "a static pool: agents self-register")
	require.Equal(t, "3", cfg["nslots"])
	require.Equal(t, `[["plan","plan_and_apply"],["plan"],["plan"]]`, cfg["policy"], "the default slot policy")
	require.Equal(t, cfg["policy"], cfg["sig"])
	hbto, err := strconv.Atoi(cfg["hbto"])
	require.NoError(t, err)
	hb := 5 * time.Second // the agent's default --heartbeat-interval
	if v, ok := env(agent, "HEARTBEAT_INTERVAL"); ok {
		hb, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	require.LessOrEqual(t, 3*hb, time.Duration(hbto)*time.Millisecond,
		"the agents' heartbeat interval must be at most a third of the pool's heartbeat timeout (they refuse to start otherwise)")
	require.Equal(t, "1", redisCLI(t, url, "GET", prefix+":datamodel"))
	require.Equal(t, ns+"/"+name, redisCLI(t, url, "SMEMBERS", prefix+":v1:pools"))

	// A restart of the stack runs it again: same pool, same generation.
	runPoolInit(t, initSvc, root, url, prefix)
	require.Equal(t, cfg["gen"], redisCLI(t, url, "HGET", cfgKey, "gen"))

	// A Redis holding another data-model version is refused, not overwritten.
	redisCLI(t, url, "SET", prefix+":datamodel", "2")
	require.Error(t, poolInit(t, initSvc, root, url, prefix).Run(), "pool-init must fail on another data-model version")
}
