package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
)

// The pool-init service declares the agents' static pool with the image's
// own `scaler declare-pool`. This runs that service's command line and
// environment, as compose resolves them, with a scaler built from this
// checkout against a real redis-server, and reads back what it wrote.

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

// buildScaler builds this checkout's scaler (what the image holds at
// /usr/local/bin/scaler) into a temporary directory.
func buildScaler(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "scaler")
	cmd := exec.Command("go", "build", "-o", bin, "./scaler")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./scaler:\n%s", out)
	return bin
}

// serviceCommand returns what the service runs in its container, as a new
// command each call: the image's scaler replaced by bin, only the service's
// environment (as in the container), with REDIS_URL and KEY_PREFIX pointing
// at this test's store.
func serviceCommand(t *testing.T, s types.ServiceConfig, f composeFacts, bin, url, prefix string) func() *exec.Cmd {
	t.Helper()
	a := argv(s, f)
	require.Equal(t, "scaler", binaryOf(s, f), "%s runs the image's scaler: %q", s.Name, a)
	var environ []string
	for k, v := range s.Environment {
		if v != nil && k != "REDIS_URL" && k != "KEY_PREFIX" {
			environ = append(environ, k+"="+*v)
		}
	}
	environ = append(environ, "REDIS_URL="+url, "KEY_PREFIX="+prefix)
	return func() *exec.Cmd {
		cmd := exec.Command(bin, a[1:]...)
		cmd.Env = environ
		return cmd
	}
}

func runService(t *testing.T, newCmd func() *exec.Cmd) string {
	t.Helper()
	cmd := newCmd()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%q:\n%s", cmd.Args, out)
	return string(out)
}

func TestComposePoolInitDeclaresTheAgentsStaticPool(t *testing.T) {
	_, err := exec.LookPath("redis-cli")
	require.NoError(t, err, "redis-cli (package redis-tools, installed with redis-server)")
	f := realComposeFacts(t)
	p, err := loadCompose(t.Context(), f.Root, readRepoFile(t, "docker-compose.yml"), nil)
	require.NoError(t, err)
	initSvc, agent := p.Services["pool-init"], p.Services["agent"]
	require.True(t, declaresPool(initSvc, f), "pool-init runs scaler declare-pool: %q", argv(initSvc, f))
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
	declare := serviceCommand(t, initSvc, f, buildScaler(t), url, prefix)
	out := runService(t, declare)
	require.Contains(t, out, `msg="pool declared"`)
	require.Contains(t, out, "pool="+ns+"/"+name)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "one log line:\n%s", out)

	cfgKey := prefix + ":v1:{" + ns + "/" + name + "}:cfg"
	cfg := map[string]string{}
	lines := strings.Split(redisCLI(t, url, "HGETALL", cfgKey), "\n")
	require.Zero(t, len(lines)%2, "HGETALL: field/value lines")
	for i := 0; i+1 < len(lines); i += 2 {
		cfg[lines[i]] = lines[i+1]
	}
	require.Regexp(t, `^[0-9a-f]{12}$`, cfg["gen"])
	require.Contains(t, out, "generation="+cfg["gen"])
	require.Equal(t, "0", cfg["managed"], "a static pool: agents self-register")
	require.Equal(t, `[["plan","plan_and_apply"],["plan"],["plan"]]`, cfg["policy"], "the default slot policy")
	hbto, err := strconv.Atoi(cfg["hbto"])
	require.NoError(t, err)
	hb := 5 * time.Second // the agent's default --heartbeat-interval
	if v, ok := env(agent, "HEARTBEAT_INTERVAL"); ok {
		hb, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	require.LessOrEqual(t, 3*hb, time.Duration(hbto)*time.Millisecond,
		"the agents' heartbeat interval must be at most a third of the pool's heartbeat timeout (they refuse to start otherwise)")
	require.Equal(t, ns+"/"+name, redisCLI(t, url, "SMEMBERS", prefix+":v1:pools"))

	// A restart of the stack runs it again: same pool, same generation.
	out = runService(t, declare)
	require.Contains(t, out, "generation kept")
	require.Equal(t, cfg["gen"], redisCLI(t, url, "HGET", cfgKey, "gen"))

	// A Redis holding another data-model version is refused, not overwritten:
	// exit 1 (restart: on-failure), the agents never start.
	redisCLI(t, url, "SET", prefix+":datamodel", "2")
	bad, err := declare().CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "pool-init must fail on another data-model version:\n%s", bad)
	require.Equal(t, 1, exit.ExitCode())
	require.Contains(t, string(bad), "incompatible slotscaler data model")
}
