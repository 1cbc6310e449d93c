package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStandalonePing(t *testing.T) {
	opt, err := redis.ParseURL(Standalone(t))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
}

func TestClusterSetGet(t *testing.T) {
	ctx := context.Background()
	addrs := ClusterAddrs(t)
	if len(addrs) != 3 {
		t.Fatalf("want 3 cluster addrs, got %v", addrs)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()

	p := Prefix(t)
	masters := map[string]bool{}
	for i := range 20 { // 20 keys spread over the 3 slot ranges
		key := fmt.Sprintf("%s:{%d}", p, i)
		if err := c.Set(ctx, key, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := c.Get(ctx, key).Int(); err != nil || got != i {
			t.Fatalf("GET %s = %v, %v; want %d", key, got, err, i)
		}
		m, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[m.Options().Addr] = true
	}
	if len(masters) != 3 {
		t.Fatalf("keys landed on masters %v, want all 3", masters)
	}
}

func TestStartKillRestartAppendOnly(t *testing.T) {
	ctx := context.Background()
	s := Start(t, WithAppendOnly())
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	if _, err := command(s.Addr(), "PING"); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	s.Restart(t)
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after restart GET k = %q, %v; want \"v\"", got, err)
	}
}

func TestStopRestartWithoutPersistenceLosesData(t *testing.T) {
	ctx := context.Background()
	s := Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Stop(t)
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("restart moved %s to %s", addr, s.Addr())
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("after restart GET k: err = %v, want redis.Nil", err)
	}
}

func TestPrefixUnique(t *testing.T) {
	re := regexp.MustCompile(`^t[0-9a-f]{10}$`)
	seen := map[string]bool{}
	for range 10000 {
		p := Prefix(t)
		if !re.MatchString(p) || seen[p] {
			t.Fatalf("bad or duplicate prefix %q", p)
		}
		seen[p] = true
	}
}

// A server must outlive the thread that asked for it: Pdeathsig fires when the
// forking thread exits, and a goroutine that exits while locked ends its thread.
func TestServerSurvivesCallerThreadExit(t *testing.T) {
	dir := t.TempDir()
	var s *Server
	var err error
	onThreadThatExits(func() { s, err = startNew(config{}, dir) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.signalAndWait(syscall.SIGKILL) })
	time.Sleep(300 * time.Millisecond) // let the runtime end the thread
	if reply, err := command(s.Addr(), "PING"); err != nil || reply != "PONG" {
		t.Fatalf("server died with its caller's thread: %q, %v", reply, err)
	}
}

// onThreadThatExits runs f on an OS thread that the runtime terminates
// afterwards. The main thread is never terminated (the runtime parks it
// instead), so when we land there we hold it and retry on another goroutine.
func onThreadThatExits(f func()) {
	done := make(chan struct{})
	var try func()
	try = func() {
		runtime.LockOSThread()
		if syscall.Gettid() == syscall.Getpid() {
			go try()
			<-done
			runtime.UnlockOSThread()
			return
		}
		f()
		close(done) // and return still locked: this thread exits
	}
	go try()
	<-done
}

// A server must die when the test binary dies without cleanup (os.Exit, crash).
func TestServerDiesWithTestBinary(t *testing.T) {
	if os.Getenv("REDISTEST_HELPER") == "1" {
		s, err := startNew(config{}, os.Getenv("REDISTEST_HELPER_DIR"))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("PID", s.cmd.Process.Pid)
		os.Exit(0) // no cleanup runs
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTestBinary$")
	cmd.Env = append(os.Environ(), "REDISTEST_HELPER=1", "REDISTEST_HELPER_DIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var pid int
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "PID" {
			pid, _ = strconv.Atoi(f[1])
		}
	}
	if pid == 0 {
		t.Fatalf("helper printed no PID:\n%s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("redis-server %d still alive after its test binary exited", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs; a zombie (dead, not yet reaped by a
// container's init) counts as dead.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}
